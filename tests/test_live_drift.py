"""Drift over time: `<model>_live_drift` on a real prediction log and a real bundle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import xgboost as xgb
from dagster import AssetKey, materialize

from assets.definitions import models
from shipway.defs.monitoring import live_drift_asset
from shipway.defs.resources import ShipwayHomeResource
from shipway.models.catalog import declared_model
from shipway.monitoring.live_drift import daily_drift
from shipway.paths import ShipwayHome
from shipway.serving.bundle import read_bundle
from shipway.serving.prediction_log import ingest, read_predictions
from shipway.serving.prediction_spool import PredictionSpool, Scored
from tests.conftest import TOY_FEATURES, materialization, toy_bundle, toy_copy, toy_frame

MODEL = "fraud_model"  # a declared name; the bundle's own reference says what its features are


def _served(home: ShipwayHome, tmp_path: Path) -> list[str]:
    """v1 served 300 rows on each of three days; amounts tripled on the last; mirrored rows
    (a shadow's) on that day too, which must not count. Returns the days."""
    toy = toy_bundle(tmp_path / "toy", "1", seed=1)
    toy_copy(toy, home.serving / MODEL / "1", MODEL)
    booster = xgb.Booster()
    booster.load_model(str(toy.path / "model.ubj"))
    spool = PredictionSpool(home.served.prediction_spool, MODEL, "1", TOY_FEATURES)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    days = []
    for back, scale in ((2, 1.0), (1, 1.0), (0, 3.0)):
        day = today - timedelta(days=back)
        days.append(day.strftime("%Y-%m-%d"))
        rows = toy_frame(300, seed=10 + back, amount_scale=scale)[TOY_FEATURES].to_numpy()
        scores = np.asarray(booster.inplace_predict(rows), dtype=float)
        for i, (row, score) in enumerate(zip(rows, scores, strict=True)):
            key, at = f"{back}-{i}", day.timestamp() - i
            spool.add(Scored(key, at, True, row[None, :], np.array([score]), [key]))
            if back == 0 and i < 100:
                spool.add(Scored(f"m{key}", at, False, row[None, :] * 0, np.array([0.0]), [key]))
    spool.close()
    ingest(home.served.prediction_spool, home.lake)
    return days


def test_drift_by_day_shows_when_a_feature_moved_and_leaves_mirrored_rows_out(
    tmp_path: Path,
) -> None:
    home = ShipwayHome(tmp_path / "home")
    days = _served(home, tmp_path)
    bundle = read_bundle(home.serving / MODEL / "1")
    predictions = read_predictions(home.lake, MODEL)
    found = daily_drift(predictions, {"1": (bundle.reference, bundle.drift)})
    assert [(d.day, d.rows) for d in found] == [(day, 300) for day in days]
    drifted = [[item.name for item in d.drifted] for d in found]
    assert drifted[:2] == [[], []], [d.line() for d in found[1].found]
    assert "amount" in drifted[2]


def test_the_live_drift_asset_reports_and_plots_each_day(tmp_path: Path) -> None:
    home = ShipwayHome(tmp_path / "home")
    days = _served(home, tmp_path)
    asset = live_drift_asset(declared_model(models, MODEL), AssetKey(f"{MODEL}_deployment"))
    result = materialize(
        [asset], resources={"lake": ShipwayHomeResource(path=str(home.root))}, selection=[asset]
    )
    assert result.success
    values = materialization(result, f"{MODEL}_live_drift")
    assert values["predictions"] == 1000 and values["days"] == 3
    drifted = values["v1_drifted_features"]
    assert isinstance(drifted, int) and drifted >= 1
    report = str(values["report"])
    assert f"| v1 | {days[0]} | 300 | none |" in report
    assert f"| v1 | {days[2]} | 300 | amount (" in report
    assert "`is_night` not compared: derived from hour_of_day" in report
    assert str(values["figure"]).startswith("![drift by day](data:image/png;base64,")
