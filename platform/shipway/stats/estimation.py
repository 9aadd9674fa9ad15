"""Quality estimated before labels: what a model's metrics probably are on rows whose labels
have not landed (fraud labels take 14 days).

- Classifiers, CBPE (confidence-based performance estimation, as NannyML names it): a
  calibrated score is the probability that the row is positive, so each row adds that much to
  the expected positives and the rest to the expected negatives at every threshold. The
  expected confusion matrices give the expected ROC-AUC and average precision, and the expected
  log loss and Brier score follow row by row. The metric code is the gates' own
  (`shipway.stats.metrics`) with the calibrated probability as a fractional label; Brier adds
  each row's own variance p(1 - p), which a fractional label leaves out.
- Regressors, DLE (direct loss estimation): a second model, fitted on the validation rows the
  model never trained on, predicts each row's absolute error and a third its squared error;
  MAE and RMSE are their means. R² needs the labels' variance, which only labels give: the
  estimate takes it as the predictions' variance plus the expected squared error (a model
  without bias), and says so in the README.

Both assume what they learned still holds: calibration for CBPE, the error model for DLE.
Under concept drift (the same features, another truth) they do not see the change; the
estimation error, scored once labels land, is what tells. Pure numpy: fitting is
`shipway.models.estimation`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shipway.stats.metrics import classification_metrics, point_values


@dataclass(frozen=True)
class Calibration:
    """A monotone map from scores to probabilities: linear between the points (isotonic
    regression's thresholds), constant beyond them; no points: the scores themselves."""

    scores: list[float]
    probabilities: list[float]

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        if not self.scores:
            return np.asarray(scores, dtype=np.float64)
        return np.interp(scores, self.scores, self.probabilities)


def expected_classification(probabilities: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """CBPE: the expected ROC-AUC, average precision, log loss and Brier score of `scores`, when
    each row is positive with its calibrated `probabilities`."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    s = np.asarray(scores, dtype=np.float64)
    values = point_values(classification_metrics(p, s), len(s))
    values["brier"] = float(values["brier"] + np.mean(p * (1.0 - p)))
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}


def expected_regression(
    absolute_errors: np.ndarray, squared_errors: np.ndarray, predictions: np.ndarray
) -> dict[str, float]:
    """DLE: MAE, RMSE and R² from each row's predicted absolute and squared error."""
    mae = float(np.mean(np.clip(absolute_errors, 0.0, None)))
    mse = float(np.mean(np.clip(squared_errors, 0.0, None)))
    total = float(np.var(predictions)) + mse
    return {"mae": mae, "rmse": float(np.sqrt(mse)), "r2": 1.0 - mse / total if total > 0 else 0.0}
