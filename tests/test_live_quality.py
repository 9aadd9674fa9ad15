"""Live quality: the prediction log joined with labels as they land, computed by the
`<model>_live_quality` asset on real Delta tables, and exported by serving's control plane."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, materialize
from deltalake import write_deltalake
from prometheus_client import CollectorRegistry, generate_latest

from assets.definitions import models
from shipway.defs.monitoring import live_quality_asset
from shipway.defs.resources import ShipwayHomeResource
from shipway.models.catalog import declared_model
from shipway.models.declaration import CostPolicy, MonitoringPolicy, OutcomeCost, QualityRule
from shipway.models.estimation import QualityEstimator, fit_estimator
from shipway.monitoring.quality import QualityCollector, QualityReport, live_quality
from shipway.paths import ShipwayHome
from shipway.scrape import FileErrors
from shipway.serving.bundle import ESTIMATOR_FILE
from shipway.serving.prediction_log import ingest, read_predictions
from shipway.serving.prediction_spool import PredictionSpool, Scored
from shipway.stats.metrics import metric_functions, point_values
from tests.conftest import materialization

START = datetime(2026, 10, 1, tzinfo=UTC)
POLICY = MonitoringPolicy(
    window_days=14, min_labelled=100, quality=[QualityRule(metric="roc_auc", min=0.8)]
)


def _world(rows: int, seed: int, skill: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions over 4 days and their labels, known 3 days after each event. `skill`: how
    much the score follows the label (1: well, 0: not at all)."""
    rng = np.random.default_rng(seed)
    at = pd.Series([START + timedelta(hours=float(h)) for h in rng.uniform(0, 96, rows)])
    label = (rng.random(rows) < 0.2).astype(float)
    score = np.clip(skill * label * 0.3 + rng.random(rows) * 0.7, 0, 1)
    keys = [f"t{i}" for i in range(rows)]
    predictions = pd.DataFrame(
        {
            "version": "1",
            "at": pd.to_datetime(at, utc=True),
            "day": pd.to_datetime(at, utc=True).dt.strftime("%Y-%m-%d"),
            "row_key": keys,
            "score": score,
        }
    )
    labels = pd.DataFrame(
        {
            "row_key": keys,
            "label": label,
            "available_at": pd.to_datetime(at, utc=True) + timedelta(days=3),
        }
    )
    return predictions, labels


def test_labels_landing_late_move_live_quality() -> None:
    predictions, labels = _world(800, seed=1, skill=1.0)
    early = live_quality(
        "m", "binary_classification", predictions, labels, START + timedelta(days=4), POLICY
    )
    later = live_quality(
        "m", "binary_classification", predictions, labels, START + timedelta(days=8), POLICY
    )
    (first,), (second,) = early.window, later.window
    # Four days in, only the first day's labels have landed.
    assert 0.15 < first.coverage < 0.35 and second.coverage == 1.0
    assert second.labelled == 800 and "roc_auc" in second.metrics
    truth = labels["label"].to_numpy()
    expected = point_values(
        metric_functions("binary_classification", truth, predictions["score"].to_numpy(), None),
        800,
    )
    assert second.metrics["roc_auc"] == pytest.approx(expected["roc_auc"])
    assert [q.day for q in later.daily] == ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]


def _estimator(seed: int) -> QualityEstimator:
    """Fitted on another sample of the same world, as training fits it on validation rows."""
    predictions, labels = _world(3000, seed, skill=1.0)
    return fit_estimator(
        "binary_classification",
        np.empty((3000, 0)),
        predictions["score"].to_numpy(),
        labels["label"].to_numpy(),
        seed,
    )


def test_quality_estimated_before_labels_land_is_what_the_labels_later_say() -> None:
    predictions, labels = _world(800, seed=1, skill=1.0)
    estimators = {"1": _estimator(seed=11)}
    early, later = (
        live_quality(
            "m",
            "binary_classification",
            predictions,
            labels,
            START + timedelta(days=days),
            POLICY,
            estimators,
        )
        for days in (4, 8)
    )
    (first,), (second,) = early.window, later.window
    assert first.labelled < 300 and set(first.estimated) == {
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
    }
    # Made on day 4 from the scores alone, the estimate is what all the labels say on day 8.
    for metric, tolerance in (("roc_auc", 0.03), ("pr_auc", 0.05), ("brier", 0.01)):
        assert first.estimated[metric] == pytest.approx(second.metrics[metric], abs=tolerance)
    # Once labels land, the estimate on the labelled rows is scored against them.
    assert set(second.estimation_error) == set(second.estimated)
    assert all(abs(e) < 0.05 for e in second.estimation_error.values())
    shown = later.markdown()
    assert "roc_auc (est.)" in shown
    assert f"roc_auc {second.estimation_error['roc_auc']:+.4f}" in shown
    # A version without an estimator (trained before them) has none, and nothing breaks.
    bare = live_quality(
        "m", "binary_classification", predictions, labels, START + timedelta(days=4), POLICY
    )
    assert bare.window[0].estimated == {} and bare.window[0].estimation_error == {}


def test_too_few_labels_judge_nothing_and_a_poor_version_breaks_its_limit() -> None:
    few = _world(60, seed=2, skill=1.0)
    report = live_quality("m", "binary_classification", *few, START + timedelta(days=10), POLICY)
    assert report.window[0].labelled == 60 and report.window[0].metrics == {}
    assert report.breaches(POLICY) == []
    poor = live_quality(
        "m", "binary_classification", *_world(800, 3, 0.0), START + timedelta(days=8), POLICY
    )
    (breach,) = poor.breaches(POLICY)
    assert breach.version == "1" and breach.observed < 0.6
    assert breach.line() == f"v1 live roc_auc {breach.observed:.4f}, policy >= 0.8"


def _landed_labels(home: ShipwayHome, labels: pd.DataFrame) -> None:
    """A raw_events-shaped label table: what fraud_model's declaration reads."""
    frame = pd.DataFrame(
        {
            "transaction_id": labels["row_key"],
            "customer_id": 1,
            "merchant_id": 1,
            "event_timestamp": labels["available_at"] - timedelta(days=3),
            "is_fraud": labels["label"].astype(int),
            "amount": 100.0,
            "label_available_at": labels["available_at"],
        }
    )
    write_deltalake(str(home.table("raw_events")), frame, mode="overwrite")


def test_the_live_quality_asset_reports_exports_and_plots_from_real_tables(
    tmp_path: Path,
) -> None:
    home = ShipwayHome(tmp_path)
    predictions, labels = _world(2000, seed=4, skill=1.0)
    spool = PredictionSpool(home.served.prediction_spool, "fraud_model", "1", ["amount"])
    stamps = (predictions["at"].astype("int64") / 1e9).tolist()
    for key, at, score in zip(predictions["row_key"], stamps, predictions["score"], strict=True):
        spool.add(Scored(key, at, True, np.array([[1.0]]), np.array([score]), [key]))
    spool.close()
    ingest(home.served.prediction_spool, home.lake)
    _landed_labels(home, labels)
    # The version's bundle carries its quality estimator, as the deployment writes it.
    bundle = home.served.bundle("fraud_model", "1")
    bundle.mkdir(parents=True)
    _estimator(seed=12).save(bundle / ESTIMATOR_FILE)
    # As of the newest landed event (day 4), labels known 3 days late cover about day 1 only.
    asset = live_quality_asset(
        declared_model(models, "fraud_model"), AssetKey("fraud_model_deployment")
    )
    result = materialize(
        [asset], resources={"lake": ShipwayHomeResource(path=str(home.root))}, selection=[asset]
    )
    assert result.success
    values = materialization(result, "fraud_model_live_quality")
    coverage, roc = values["v1_label_coverage"], values["v1_roc_auc"]
    assert values["predictions"] == 2000
    assert isinstance(coverage, float) and 0.15 < coverage < 0.35
    assert isinstance(roc, float) and roc > 0.8
    assert "| v1 | 2026-10-01 |" in str(values["report"])
    assert str(values["figure"]).startswith("![live roc_auc by day](data:image/png;base64,")
    report = QualityReport.load(home.served.quality_reports / "fraud_model.json")
    assert report.window[0].labelled == values["v1_labelled"]

    registry = CollectorRegistry()
    registry.register(QualityCollector(home.served.quality_reports, FileErrors(home.root)))
    exported = generate_latest(registry).decode()
    assert f'shipway_live_quality{{metric="roc_auc",model="fraud_model",version="1"}} {roc}' in (
        exported
    )
    assert 'shipway_live_labelled_predictions{model="fraud_model",version="1"}' in exported
    # Estimated on all 2,000 predictions: what all their labels will say (a quarter landed).
    estimated = report.window[0].estimated["roc_auc"]
    assert values["v1_estimated_roc_auc"] == estimated
    # fraud_model's cost model prices the labelled decisions: a missed fraud costs its 100,
    # a held payment a 5 review.
    known = report.window[0]
    assert isinstance(values["v1_cost_per_1000"], float) and known.labelled > 0
    assert 'shipway_live_quality{metric="cost_per_1000",model="fraud_model"' in exported
    truth = labels["label"].to_numpy()
    scores = predictions["score"].to_numpy()
    every = point_values(metric_functions("binary_classification", truth, scores, None), 2000)
    assert estimated == pytest.approx(every["roc_auc"], abs=0.03)
    assert (
        f'shipway_estimated_quality{{metric="roc_auc",model="fraud_model",version="1"}} '
        f"{estimated}" in exported
    )
    assert 'shipway_estimated_quality_error{metric="roc_auc",model="fraud_model"' in exported
    assert len(read_predictions(home.lake, "fraud_model")) == 2000, "retention kept recent rows"


def test_live_quality_limits_are_checked_against_the_problem() -> None:
    fraud = declared_model(models, "fraud_model").declaration
    assert [r.metric for r in fraud.monitoring.quality] == ["roc_auc", "pr_auc"]
    with pytest.raises(ValueError, match=r"quality\[0\]\.metric 'mae' is not a live"):
        fraud.model_validate(
            {**fraud.model_dump(), "monitoring": {"quality": [{"metric": "mae", "max": 1.0}]}}
        )
    with pytest.raises(ValueError, match="is not a 5-field cron schedule"):
        MonitoringPolicy(retrain_schedule="weekly")


def test_the_realized_cost_prices_each_labelled_decision_by_the_cost_model() -> None:
    predictions = pd.DataFrame(
        {
            "version": "1",
            "at": pd.to_datetime([START] * 4, utc=True),
            "day": "2026-10-01",
            "row_key": ["a", "b", "c", "d"],
            "score": [0.9, 0.05, 0.3, 0.01],
        }
    )
    labels = pd.DataFrame(
        {
            "row_key": ["a", "b", "c", "d"],
            "label": [1.0, 1.0, 0.0, 0.0],
            "available_at": pd.to_datetime([START] * 4, utc=True),
            "amount": [80.0, 250.0, 40.0, 10.0],
        }
    )
    cost = CostPolicy(
        decision_threshold=0.1,
        true_positive=OutcomeCost(fixed=5.0),
        false_positive=OutcomeCost(fixed=5.0),
        false_negative=OutcomeCost(column="amount"),
    )
    policy = MonitoringPolicy(min_labelled=4)
    report = live_quality(
        "m", "binary_classification", predictions, labels, START, policy, cost=cost
    )
    # a: caught (5), b: missed (250), c: held (5), d: approved (0): 260 over 4 decisions.
    assert report.window[0].metrics["cost_per_1000"] == pytest.approx(65_000.0)
