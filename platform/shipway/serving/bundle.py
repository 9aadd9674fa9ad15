"""A servable model version on disk: what MLServer loads plus the drift reference.

Layout (`<serving>/<model>/<version>/`): `model.ubj` (XGBoost), `model-settings.json`
(MLServer; its `parameters.extra` carries the version's serving settings from the model's
declaration: problem type and drift window), `reference.json` (feature order + training
distribution). Every version carries its own settings, so two models served side by side each
keep theirs.
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


# What MLServer's XGBoost runtime is asked for: class probabilities, or the forecast.
OUTPUT_OF_PROBLEM = {"binary_classification": "predict_proba", "regression": "predict"}


@dataclass(frozen=True)
class Bundle:
    path: Path
    model: str
    version: str
    problem: str
    drift_window: int

    @property
    def mlserver_output(self) -> str:
        return OUTPUT_OF_PROBLEM[self.problem]

    @property
    def reference(self) -> ReferenceProfile:
        return ReferenceProfile.load(self.path / REFERENCE_FILE)


def write_bundle(
    dest: Path,
    model: str,
    version: str,
    model_file: Path,
    reference: ReferenceProfile,
    problem: str,
    drift_window: int,
) -> Bundle:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, dest / MODEL_FILE)
    reference.save(dest / REFERENCE_FILE)
    settings = {
        "name": model,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {
            "uri": f"./{MODEL_FILE}",
            "version": version,
            "extra": {"problem": problem, "drift_window": drift_window},
        },
    }
    (dest / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    return Bundle(dest, model, version, problem, drift_window)


def read_bundle(path: Path) -> Bundle:
    """Validate a bundle folder before anything is started from it."""
    missing = [f for f in (MODEL_FILE, SETTINGS_FILE, REFERENCE_FILE) if not (path / f).is_file()]
    if missing:
        raise BadRequest(f"bundle {path} is missing {missing}")
    try:
        settings = json.loads((path / SETTINGS_FILE).read_text())
        parameters = settings["parameters"]
        extra = parameters["extra"]
        bundle = Bundle(
            path,
            str(settings["name"]),
            str(parameters["version"]),
            str(extra["problem"]),
            int(extra["drift_window"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"bundle {path}: {SETTINGS_FILE} is malformed ({exc!r})") from None
    if bundle.problem not in OUTPUT_OF_PROBLEM:
        raise BadRequest(
            f"bundle {path}: problem {bundle.problem!r} is not one of {sorted(OUTPUT_OF_PROBLEM)}"
        )
    return bundle
