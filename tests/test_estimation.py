"""Quality estimated before labels: CBPE for classifiers, DLE for regressors, against the
realized metrics of the same rows once their labels are drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipway.errors import ShipwayError
from shipway.models.estimation import CBPE, DLE, QualityEstimator, fit_estimator
from shipway.stats.estimation import expected_classification
from shipway.stats.metrics import metric_functions, point_values

CLASSIFICATION = "binary_classification"


def _realized(problem: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return point_values(metric_functions(problem, labels, scores, None), len(labels))


def _fraudish(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels drawn from a logistic truth; `shift` moves the population."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    x[:, 0] += shift
    truth = 1 / (1 + np.exp(-(1.5 * x[:, 0] + x[:, 1] - 2.5)))
    return x, (rng.random(rows) < truth).astype(float)


def test_calibrated_scores_estimate_every_live_classification_metric() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(0.6, 4.0, 40_000)
    labels = (rng.random(len(p)) < p).astype(float)
    estimated = expected_classification(p, p)
    realized = _realized(CLASSIFICATION, labels, p)
    assert set(estimated) == {"roc_auc", "pr_auc", "brier", "log_loss"}
    for metric, tolerance in (("roc_auc", 0.01), ("pr_auc", 0.02), ("brier", 0.003)):
        assert estimated[metric] == pytest.approx(realized[metric], abs=tolerance), metric
    assert estimated["log_loss"] == pytest.approx(realized["log_loss"], rel=0.02)


def test_miscalibrated_scores_are_calibrated_first() -> None:
    x, y = _fraudish(12_000, seed=2)
    truth = 1 / (1 + np.exp(-(1.5 * x[:, 0] + x[:, 1] - 2.5)))
    skewed = truth**2  # the ranking is right, the probabilities too low
    estimator = fit_estimator(CLASSIFICATION, x[:6000], skewed[:6000], y[:6000], seed=2)
    assert estimator.method == CBPE and estimator.notes["calibration"] == "isotonic"
    estimated = estimator.estimate(x[6000:], skewed[6000:])
    realized = _realized(CLASSIFICATION, y[6000:], skewed[6000:])
    naive = expected_classification(skewed[6000:], skewed[6000:])
    for metric, tolerance in (("roc_auc", 0.02), ("pr_auc", 0.03), ("brier", 0.01)):
        assert estimated[metric] == pytest.approx(realized[metric], abs=tolerance), metric
    # Taken as probabilities, the skewed scores promise far fewer positives than there are.
    assert naive["roc_auc"] - realized["roc_auc"] > 0.05
    assert realized["brier"] - naive["brier"] > 0.05

    # Scores that are the true probabilities: calibrated or not, the estimate holds.
    calibrated = fit_estimator(CLASSIFICATION, x[:6000], truth[:6000], y[:6000], seed=2)
    estimated = calibrated.estimate(x[6000:], truth[6000:])
    realized = _realized(CLASSIFICATION, y[6000:], truth[6000:])
    for metric, tolerance in (("roc_auc", 0.02), ("pr_auc", 0.03), ("brier", 0.01)):
        assert estimated[metric] == pytest.approx(realized[metric], abs=tolerance), metric


def test_the_estimate_follows_a_shifted_population_but_not_a_changed_truth() -> None:
    x, y = _fraudish(8000, seed=3)
    scores = 1 / (1 + np.exp(-(1.5 * x[:, 0] + x[:, 1] - 2.5)))
    estimator = fit_estimator(CLASSIFICATION, x, scores, y, seed=3)

    shifted_x, shifted_y = _fraudish(8000, seed=4, shift=1.0)
    shifted = 1 / (1 + np.exp(-(1.5 * shifted_x[:, 0] + shifted_x[:, 1] - 2.5)))
    before = estimator.estimate(x, scores)["pr_auc"]
    estimated = estimator.estimate(shifted_x, shifted)["pr_auc"]
    realized = _realized(CLASSIFICATION, shifted_y, shifted)["pr_auc"]
    assert estimated - before > 0.1, "more positives in the population: a higher PR-AUC"
    assert estimated == pytest.approx(realized, abs=0.03)

    # Concept drift: the same scores, a truth that no longer follows them. The estimate cannot
    # see it; the estimation error, once labels land, does.
    flipped = np.random.default_rng(5).permutation(y)
    assert estimator.estimate(x, scores)["roc_auc"] > 0.8
    assert _realized(CLASSIFICATION, flipped, scores)["roc_auc"] < 0.55


def test_dle_estimates_regression_errors_where_the_model_errs_more() -> None:
    rng = np.random.default_rng(6)

    def world(rows: int, noisy_share: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(rows, 2))
        x[:, 1] = rng.random(rows) < noisy_share
        return x, 3 * x[:, 0] + rng.normal(size=rows) * (1 + 4 * x[:, 1])

    x, y = world(8000, 0.2)
    predictions = 3 * x[:, 0]
    estimator = fit_estimator("regression", x, predictions, y, seed=6)
    assert estimator.method == DLE and estimator.needs_vectors
    for share in (0.2, 0.6):
        live_x, live_y = world(6000, share)
        live = 3 * live_x[:, 0]
        estimated = estimator.estimate(live_x, live)
        realized = _realized("regression", live_y, live)
        assert estimated["mae"] == pytest.approx(realized["mae"], rel=0.05), share
        assert estimated["rmse"] == pytest.approx(realized["rmse"], rel=0.05), share
        assert estimated["r2"] == pytest.approx(realized["r2"], abs=0.05), share


def test_an_estimator_round_trips_through_its_file_and_a_broken_one_is_named(
    tmp_path: Path,
) -> None:
    x, y = _fraudish(3000, seed=7)
    regression = fit_estimator("regression", x, x[:, 0], y, seed=7)
    again = QualityEstimator.load(regression.save(tmp_path / "dle.json"))
    assert again.estimate(x[:100], x[:100, 0]) == regression.estimate(x[:100], x[:100, 0])
    (tmp_path / "broken.json").write_text('{"problem": "regression"}')
    with pytest.raises(ShipwayError, match=r"quality estimator .*broken\.json is unreadable"):
        QualityEstimator.load(tmp_path / "broken.json")


def test_too_few_positives_to_judge_calibration_leave_the_scores_as_they_are() -> None:
    scores = np.linspace(0.01, 0.5, 400)
    labels = np.zeros(400)
    labels[[10, 200, 399]] = 1
    estimator = fit_estimator(CLASSIFICATION, np.empty((400, 0)), scores, labels, seed=0)
    assert estimator.notes == {"calibration": "none: too few of a class to judge it"}
    assert estimator.estimate(np.empty((3, 0)), np.array([0.1, 0.2, 0.9]))["brier"] > 0
