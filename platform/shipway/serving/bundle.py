"""A servable model version on disk: what MLServer loads plus the drift reference.

Layout (`<serving>/<model>/<version>/`): `model.ubj` (XGBoost), `model-settings.json`
(MLServer), `reference.json` (feature order + training distribution).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from shipway.errors import BadRequest
from shipway.monitoring.drift import ReferenceProfile

MODEL_FILE = "model.ubj"
SETTINGS_FILE = "model-settings.json"
REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class Bundle:
    path: Path
    model: str
    version: str

    @property
    def reference(self) -> ReferenceProfile:
        return ReferenceProfile.load(self.path / REFERENCE_FILE)


def write_bundle(
    dest: Path, model: str, version: str, model_file: Path, reference: ReferenceProfile
) -> Bundle:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, dest / MODEL_FILE)
    reference.save(dest / REFERENCE_FILE)
    settings = {
        "name": model,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": f"./{MODEL_FILE}", "version": version},
    }
    (dest / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    return Bundle(dest, model, version)


def read_bundle(path: Path) -> Bundle:
    """Validate a bundle folder before anything is started from it."""
    missing = [f for f in (MODEL_FILE, SETTINGS_FILE, REFERENCE_FILE) if not (path / f).is_file()]
    if missing:
        raise BadRequest(f"bundle {path} is missing {missing}")
    settings = json.loads((path / SETTINGS_FILE).read_text())
    return Bundle(path, str(settings["name"]), str(settings["parameters"]["version"]))
