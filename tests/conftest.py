"""Shared fixtures: a small trained model bundle, and servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from shipway.monitoring.drift import build_reference
from shipway.paths import ShipwayHome
from shipway.serving.bundle import Bundle, write_bundle

TOY_FEATURES = ["amount", "hour_of_day", "customer_txn_count_7d"]


def toy_frame(rows: int, seed: int, amount_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 0.8, rows) * amount_scale,
            "hour_of_day": rng.integers(0, 24, rows).astype(float),
            "customer_txn_count_7d": rng.poisson(5, rows).astype(float),
        }
    )
    frame["is_fraud"] = ((frame["amount"] > 60) & (frame["hour_of_day"] < 6)).astype(int)
    return frame


def toy_bundle(dest: Path, version: str, seed: int) -> Bundle:
    """A real XGBoost model on three features, as the deployment asset would bundle it."""
    frame = toy_frame(2000, seed)
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=seed)
    model.fit(frame[TOY_FEATURES].to_numpy(), frame["is_fraud"].to_numpy())
    dest.mkdir(parents=True, exist_ok=True)
    model_file = dest / f"trained-{version}.ubj"
    model.save_model(model_file)
    reference = build_reference(frame, TOY_FEATURES, bins=10)
    return write_bundle(
        dest / version, "toy_model", version, model_file, reference, "binary_classification", 400
    )


@pytest.fixture
def home(tmp_path: Path) -> ShipwayHome:
    return ShipwayHome(tmp_path / "shipway")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Bundle]]:
    root = tmp_path_factory.mktemp("bundles")
    yield {"1": toy_bundle(root, "1", seed=1), "2": toy_bundle(root, "2", seed=2)}
