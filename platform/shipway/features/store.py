"""Features: Feast operations and the model's feature vector, shared by training and serving.

The model sees request-time features of the transaction (amount, hour, channel, category)
joined with the customer's and merchant's feature rows from Feast. `model_frame` builds that
vector from either side (a point-in-time training join or an online lookup), so training and
serving cannot drift apart.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pandas as pd

from shipway.data.events import CATEGORIES
from shipway.errors import ShipwayError
from shipway.paths import FEATURE_REPO_DIR, ShipwayHome

log = logging.getLogger(__name__)

LABEL = "is_fraud"
ENTITY_KEYS = ["customer_id", "merchant_id"]
REQUEST_FEATURES = ["amount", "hour_of_day", "is_night", "is_online", "merchant_category_code"]
CUSTOMER_FEATURES = [
    "customer_txn_count_1d",
    "customer_txn_count_7d",
    "customer_amount_avg_7d",
    "customer_amount_avg_30d",
    "customer_amount_max_30d",
    "customer_night_share_30d",
]
MERCHANT_FEATURES = [
    "merchant_txn_count_7d",
    "merchant_amount_avg_7d",
    "merchant_distinct_customers_7d",
    "merchant_online_share_7d",
]
DERIVED_FEATURES = ["amount_to_customer_avg_30d"]
MODEL_FEATURES = REQUEST_FEATURES + CUSTOMER_FEATURES + MERCHANT_FEATURES + DERIVED_FEATURES

_CATEGORY_CODE = {c: i for i, c in enumerate(CATEGORIES)}


def ensure_delta_extension() -> None:
    """Install DuckDB's delta extension from its PyPI wheel (nothing is downloaded).

    Feast's duckdb offline store reads Delta through it; DuckDB would otherwise try to fetch
    it from the internet on first use.
    """
    import duckdb
    import duckdb_extension_delta

    con = duckdb.connect()
    try:
        installed = con.execute(
            "select installed from duckdb_extensions() where extension_name = 'delta'"
        ).fetchone()
        if installed and installed[0]:
            return
        ext = Path(duckdb_extension_delta.__file__).parent / "extensions"
        files = sorted(ext.glob(f"v{duckdb.__version__}/delta.duckdb_extension"))
        if not files:
            raise ShipwayError(
                f"duckdb-extension-delta has no build for DuckDB {duckdb.__version__}; "
                "reinstall with deploy/setup.sh"
            )
        con.install_extension(str(files[0]))
    finally:
        con.close()


def feast_cli(home: ShipwayHome, *args: str) -> str:
    """Run the Feast CLI against the repository, with Shipway's paths in its environment."""
    home.feast.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **home.environment()}
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "--chdir", str(FEATURE_REPO_DIR), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise ShipwayError(f"feast {' '.join(args)} failed: {tail}")
    return result.stdout


def feature_store(home: ShipwayHome):  # type: ignore[no-untyped-def]  # feast is untyped
    """A FeatureStore on the repository; the registry holds where each source lives."""
    from feast import FeatureStore

    ensure_delta_extension()
    # feature_store.yaml reads the home's paths from the environment when the store is made.
    environment = home.environment()
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        return FeatureStore(repo_path=str(FEATURE_REPO_DIR))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def transaction_features(transactions: pd.DataFrame) -> pd.DataFrame:
    """Request-time features computed from the transaction itself."""
    ts = pd.to_datetime(transactions["event_timestamp"], utc=True)
    unknown = sorted(set(transactions["merchant_category"]) - set(_CATEGORY_CODE))
    if unknown:
        raise ShipwayError(
            f"merchant_category has unknown values {unknown[:5]}; known: {list(CATEGORIES)}"
        )
    return pd.DataFrame(
        {
            "amount": transactions["amount"].astype(float),
            "hour_of_day": ts.dt.hour.astype(int),
            "is_night": (ts.dt.hour < 6).astype(int),
            "is_online": (transactions["channel"] == "online").astype(int),
            "merchant_category_code": transactions["merchant_category"].map(_CATEGORY_CODE),
        },
        index=transactions.index,
    )


def model_frame(transactions: pd.DataFrame, entity_features: pd.DataFrame) -> pd.DataFrame:
    """The model's feature vector, columns in MODEL_FEATURES order.

    `entity_features` holds the customer and merchant features aligned row by row with
    `transactions`; a missing value means no history in the feature window, which is a count
    of zero (the ratio then compares with the amount itself).
    """
    frame = transaction_features(transactions)
    for name in CUSTOMER_FEATURES + MERCHANT_FEATURES:
        frame[name] = pd.to_numeric(entity_features[name], errors="coerce").fillna(0.0).to_numpy()
    avg = frame["customer_amount_avg_30d"].where(frame["customer_amount_avg_30d"] > 0)
    frame["amount_to_customer_avg_30d"] = (frame["amount"] / avg).fillna(1.0)
    return frame[MODEL_FEATURES].astype(float)


def historical_features(store, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Point-in-time join: for each row, the feature values known at its event_timestamp."""
    job = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(service)
    )
    joined: pd.DataFrame = job.to_df()
    return joined


def online_features(store, rows: pd.DataFrame, service: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The latest feature values for each (customer_id, merchant_id) row, from the online store."""
    entity_rows = [
        {"customer_id": int(c), "merchant_id": int(m)}
        for c, m in zip(rows["customer_id"], rows["merchant_id"], strict=True)
    ]
    result: Mapping[str, list[object]] = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=entity_rows
    ).to_dict()
    return pd.DataFrame(dict(result), index=rows.index)


def materialize_online(store, start: datetime, end: datetime) -> None:  # type: ignore[no-untyped-def]
    """Load the latest feature rows stamped in [start, end] into the online store.

    The range is explicit (the data's own time span) rather than "the last ttl before now":
    simulated or backfilled history is older than the wall clock.
    """
    store.materialize(start_date=start, end_date=end)
