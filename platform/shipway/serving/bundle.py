"""A servable model version on disk: what MLServer loads plus the drift reference.

Layout (`<serving>/<model>/<version>/`): `model.ubj` (XGBoost), `model-settings.json`
(MLServer: Shipway's runtime, the feature inputs, the `score` output and the `contributions`
one a request may ask for as the version's Open Inference Protocol metadata, and in
`parameters.extra` the version's serving settings from the model's declaration: problem type,
the drift rules, the replicas to run, its feature service and prediction keys (what one-call
scoring looks up and names), an optional injected fault), `reference.json` (feature order +
training distribution of the features and the score, and the features' attribution), and
optionally `quality_estimator.json` (what monitoring estimates quality with before labels).
Every version carries its own settings, so two models served side by side each keep theirs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shipway.errors import BadRequest
from shipway.files import write_atomic
from shipway.names import EVENT_TIMESTAMP, SCORE
from shipway.serving.protocol import CONTRIBUTIONS_OUTPUT
from shipway.stats.drift import DriftRules, ReferenceProfile

MODEL_FILE = "model.ubj"
SETTINGS_FILE = "model-settings.json"
REFERENCE_FILE = "reference.json"
# Optional: the version's quality estimator (`shipway.models.estimation`), which monitoring
# applies to the prediction log; serving only carries it.
ESTIMATOR_FILE = "quality_estimator.json"


# An LLM application's version (`shipway.serving.assistant`): its settings and corpus.
APPLICATION_FILE = "application.json"
CORPUS_FILE = "corpus.parquet"
LLM_APPLICATION = "llm_application"
PROBLEMS = ("binary_classification", "regression", LLM_APPLICATION)
RUNTIME = "shipway.serving.mlserver_runtime.ShipwayModel"
APPLICATION_RUNTIME = "shipway.serving.mlserver_application.ShipwayApplication"
QUESTION_INPUT = "question"
ANSWER_OUTPUT = "answer"
# An application keeps no feature drift window; its bundle still names rules, unused.
NO_DRIFT = DriftRules(window_seconds=900.0, min_rows=100, max_rows=1000)
# Model servers per version: each is a process, and this machine has two cores.
MAX_REPLICAS = 8
# Which replica of its version a model server is (0, 1, ...): the first judges drift.
REPLICA_ENV = "SHIPWAY_REPLICA"


Fault = Mapping[str, float | str]
"""An injected fault's settings (`shipway.serving.protocol.InjectedFault`)."""


@dataclass(frozen=True)
class PredictionKeys:
    """Which prediction point a scored row is, as its label row will say it: the label's
    `row_id` where the model declares one, else its entity keys and `event_timestamp`."""

    row_id: str | None
    entity_keys: tuple[str, ...]

    def of(self, frame: pd.DataFrame) -> list[str] | None:
        """Each row's key; None when `frame` lacks the columns (its predictions cannot be
        joined to labels)."""
        if self.row_id is not None:
            return frame[self.row_id].astype(str).tolist() if self.row_id in frame else None
        if not all(k in frame for k in [*self.entity_keys, EVENT_TIMESTAMP]):
            return None
        stamp = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S")
        joined = stamp.radd("at=")
        for key in reversed(self.entity_keys):
            joined = f"{key}=" + frame[key].astype(str) + "|" + joined
        return list(joined)

    def to_dict(self) -> dict[str, Any]:
        return {"row_id": self.row_id, "entity_keys": list(self.entity_keys)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PredictionKeys:
        return cls(raw["row_id"], tuple(str(k) for k in raw["entity_keys"]))


@dataclass(frozen=True)
class Bundle:
    path: Path
    model: str
    version: str
    problem: str
    drift: DriftRules
    fault: Fault | None = None
    feature_service: str | None = None
    """The Feast feature service the version was trained with: what scoring looks up."""
    replicas: int = 1
    """Model servers the control plane runs for this version."""
    prediction_keys: PredictionKeys | None = None
    """How scoring names each row for the prediction log, from the caller's entities."""
    feature_version: str | None = None
    """The digest of what computes its features (`shipway.features.versions`), as trained."""

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
    drift: DriftRules,
    fault: Fault | None = None,
    feature_service: str | None = None,
    replicas: int = 1,
    prediction_keys: PredictionKeys | None = None,
    estimator_file: Path | None = None,
    feature_version: str | None = None,
) -> Bundle:
    """`fault` ({"error_ratio": 0.3, "latency_ms": 50}, `shipway.serving.protocol.InjectedFault`)
    makes a deliberately bad version."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, dest / MODEL_FILE)
    if estimator_file is not None:
        shutil.copyfile(estimator_file, dest / ESTIMATOR_FILE)
    reference.save(dest / REFERENCE_FILE)
    extra: dict[str, object] = {
        "problem": problem,
        "drift": drift.to_dict(),
        "reference": REFERENCE_FILE,
    }
    if fault:
        extra["fault"] = dict(fault)
    if feature_service:
        extra["feature_service"] = feature_service
    if replicas != 1:
        extra["replicas"] = replicas
    if prediction_keys is not None:
        extra["prediction_keys"] = prediction_keys.to_dict()
    if feature_version:
        extra["feature_version"] = feature_version
    settings = {
        "name": model,
        "implementation": RUNTIME,
        "platform": "xgboost",
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [-1]} for name in reference.feature_names
        ],
        "outputs": [
            {"name": SCORE, "datatype": "FP64", "shape": [-1]},
            # Answered only when a request asks (`parameters.contributions`).
            {
                "name": CONTRIBUTIONS_OUTPUT,
                "datatype": "FP64",
                "shape": [-1, len(reference.feature_names) + 1],
            },
        ],
        "parameters": {"uri": f"./{MODEL_FILE}", "version": version, "extra": extra},
    }
    (dest / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    return Bundle(
        dest,
        model,
        version,
        problem,
        drift,
        fault,
        feature_service,
        replicas,
        prediction_keys,
        feature_version,
    )


def write_application_bundle(
    dest: Path,
    model: str,
    version: str,
    application: dict[str, Any],
    corpus: pd.DataFrame,
    fault: Fault | None = None,
    replicas: int = 1,
) -> Bundle:
    """An LLM application's version as MLServer loads it: its settings and corpus, and
    model-settings.json naming Shipway's application runtime, a `question` input (BYTES) and
    an `answer` output. Written corpus first, settings last (what marks the folder whole)."""
    dest.mkdir(parents=True, exist_ok=True)
    # Each file replaced whole: a version served again is rewritten under its running server.
    staged = dest / f".{CORPUS_FILE}.tmp"
    corpus.to_parquet(staged, index=False)
    staged.replace(dest / CORPUS_FILE)
    write_atomic(dest / APPLICATION_FILE, json.dumps(application, indent=1))
    extra: dict[str, object] = {"problem": LLM_APPLICATION, "drift": NO_DRIFT.to_dict()}
    if fault:
        extra["fault"] = dict(fault)
    if replicas != 1:
        extra["replicas"] = replicas
    settings = {
        "name": model,
        "implementation": APPLICATION_RUNTIME,
        "inputs": [{"name": QUESTION_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": ANSWER_OUTPUT, "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"uri": f"./{APPLICATION_FILE}", "version": version, "extra": extra},
    }
    write_atomic(dest / SETTINGS_FILE, json.dumps(settings, indent=1))
    return Bundle(dest, model, version, LLM_APPLICATION, NO_DRIFT, fault, None, replicas, None)


def bundle_files(problem: str | None) -> tuple[str, ...]:
    """The files a bundle of `problem` serves from: what it must hold, and what its contents
    are."""
    if problem == LLM_APPLICATION:
        return (SETTINGS_FILE, APPLICATION_FILE, CORPUS_FILE)
    return (MODEL_FILE, SETTINGS_FILE, REFERENCE_FILE)


def _required(path: Path) -> tuple[str, ...]:
    try:
        problem = json.loads((path / SETTINGS_FILE).read_text())["parameters"]["extra"]["problem"]
    except (OSError, ValueError, KeyError, TypeError):
        problem = None
    return bundle_files(problem)


def read_bundle(path: Path) -> Bundle:
    """Validate a bundle folder before anything is started from it."""
    missing = [f for f in _required(path) if not (path / f).is_file()]
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
            DriftRules.from_dict(extra["drift"]),
            extra.get("fault"),
            extra.get("feature_service"),
            extra.get("replicas", 1),
            PredictionKeys.from_dict(extra["prediction_keys"])
            if "prediction_keys" in extra
            else None,
            extra.get("feature_version"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"bundle {path}: {SETTINGS_FILE} is malformed ({exc!r})") from None
    if bundle.problem not in PROBLEMS:
        raise BadRequest(f"bundle {path}: problem {bundle.problem!r} is not one of {PROBLEMS}")
    replicas = bundle.replicas
    if type(replicas) is not int or not 1 <= replicas <= MAX_REPLICAS:
        raise BadRequest(
            f"bundle {path}: replicas {replicas!r} is not a whole number from 1 to {MAX_REPLICAS}"
        )
    return bundle
