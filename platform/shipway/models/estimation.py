"""Fitting the quality estimator of a version at training, and applying it to logged rows.

It is fitted on the validation rows (the model never trained on them, so their errors are
honest) and travels with the version: logged to its MLflow run (`quality/`), copied into its
serving bundle (`quality_estimator.json`). `shipway.stats.estimation` says what the estimates
are.

- A classifier's scores are calibrated with isotonic regression where that helps, as NannyML
  decides it: the calibration is cross-fitted on the validation rows (3 folds) and kept if it
  lowers the expected calibration error out of fold. On scores already calibrated it changes
  little either way. Too few
  positives or negatives to judge (under 10): the scores as they are.
- A regressor gets two small XGBoost models of each row's absolute and squared error, from its
  features and its prediction.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

from shipway.errors import ShipwayError
from shipway.files import write_atomic
from shipway.serving.bundle import ESTIMATOR_FILE
from shipway.stats.estimation import Calibration, expected_classification, expected_regression
from shipway.stats.metrics import expected_calibration_error

ESTIMATOR_ARTIFACT = f"quality/{ESTIMATOR_FILE}"
CBPE, DLE = "cbpe", "dle"
MIN_CLASS_ROWS = 10
# The error models are small: they learn where the model errs, not the label.
ERROR_MODEL = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "n_jobs": 0}


@dataclass(frozen=True)
class QualityEstimator:
    problem: str
    method: str
    fitted_rows: int
    calibration: Calibration = field(default_factory=lambda: Calibration([], []))
    notes: dict[str, float | str] = field(default_factory=dict)
    """How it was fitted: calibration errors before and after, or the error models' fit."""
    error_models: dict[str, str] = field(default_factory=dict)
    """DLE: `absolute` and `squared` error models, as XGBoost JSON."""

    @property
    def needs_vectors(self) -> bool:
        """Whether `estimate` reads the feature vectors (DLE), or only the scores (CBPE)."""
        return self.method == DLE

    @cached_property
    def _boosters(self) -> dict[str, xgb.Booster]:
        found = {}
        for kind, raw in self.error_models.items():
            booster = xgb.Booster()
            booster.load_model(bytearray(raw.encode()))
            found[kind] = booster
        return found

    def estimate(self, vectors: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """The estimated live metrics of rows scored `scores` from feature `vectors` (n, k)."""
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) == 0:
            return {}
        if self.method == CBPE:
            return expected_classification(self.calibration(scores), scores)
        inputs = xgb.DMatrix(np.column_stack([vectors, scores]))
        return expected_regression(
            self._boosters["absolute"].predict(inputs),
            self._boosters["squared"].predict(inputs),
            scores,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def save(self, path: Path) -> Path:
        return write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> QualityEstimator:
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            return cls(
                problem=raw["problem"],
                method=raw["method"],
                fitted_rows=int(raw["fitted_rows"]),
                calibration=Calibration(**raw["calibration"]),
                notes=dict(raw["notes"]),
                error_models=dict(raw["error_models"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShipwayError(f"quality estimator {path} is unreadable: {exc!r}") from None


def _calibration(scores: np.ndarray, labels: np.ndarray, seed: int) -> tuple[Calibration, dict]:
    positives = int(labels.sum())
    raw_error = float(expected_calibration_error(labels, scores))
    if min(positives, len(labels) - positives) < MIN_CLASS_ROWS:
        return Calibration([], []), {"calibration": "none: too few of a class to judge it"}
    out_of_fold = np.empty(len(scores))
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    for fit, held in folds.split(scores.reshape(-1, 1), labels):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        out_of_fold[held] = iso.fit(scores[fit], labels[fit]).predict(scores[held])
    cross_error = float(expected_calibration_error(labels, out_of_fold))
    notes: dict[str, float | str] = {
        "calibration_error_raw": raw_error,
        "calibration_error_isotonic": cross_error,
    }
    if cross_error >= raw_error:
        return Calibration([], []), {**notes, "calibration": "none: the scores are calibrated"}
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    calibration = Calibration(
        [float(x) for x in iso.X_thresholds_], [float(y) for y in iso.y_thresholds_]
    )
    return calibration, {**notes, "calibration": "isotonic"}


def fit_estimator(
    problem: str, vectors: np.ndarray, scores: np.ndarray, labels: np.ndarray, seed: int
) -> QualityEstimator:
    """The estimator of a model whose validation rows (`vectors`, its `scores`, the true
    `labels`) it never trained on."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if problem == "binary_classification":
        calibration, notes = _calibration(scores, labels, seed)
        return QualityEstimator(problem, CBPE, len(scores), calibration, notes)
    inputs = np.column_stack([vectors, scores])
    errors = labels - scores
    models = {}
    for kind, target in (("absolute", np.abs(errors)), ("squared", errors**2)):
        model = xgb.XGBRegressor(**ERROR_MODEL, random_state=seed).fit(inputs, target)
        models[kind] = bytes(model.get_booster().save_raw("json")).decode()
    return QualityEstimator(problem, DLE, len(scores), error_models=models)
