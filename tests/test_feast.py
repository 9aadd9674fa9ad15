"""Feast on Delta: point-in-time joins that honour the Delta log, and online lookups."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from deltalake import write_deltalake

from shipway.features.store import (
    CUSTOMER_FEATURES,
    MERCHANT_FEATURES,
    feast_cli,
    feature_store,
    historical_features,
    materialize_online,
    online_features,
)
from shipway.paths import ShipwayHome

pytestmark = pytest.mark.integration
SERVICE = "fraud_model_v1"
DAY = datetime(2026, 9, 2, tzinfo=UTC)


def _customer_rows(txn_count_7d: int) -> pd.DataFrame:
    row = {name: 1.0 for name in CUSTOMER_FEATURES}
    row.update(customer_txn_count_1d=1, customer_txn_count_7d=txn_count_7d)
    return pd.DataFrame(
        [{"customer_id": 1, "feature_date": DAY.date(), "event_timestamp": DAY, **row}]
    ).astype({"customer_txn_count_1d": "int64", "customer_txn_count_7d": "int64"})


def _merchant_rows() -> pd.DataFrame:
    row = {name: 0.5 for name in MERCHANT_FEATURES}
    row.update(merchant_txn_count_7d=40, merchant_distinct_customers_7d=30)
    return pd.DataFrame(
        [{"merchant_id": 7, "feature_date": DAY.date(), "event_timestamp": DAY, **row}]
    ).astype({"merchant_txn_count_7d": "int64", "merchant_distinct_customers_7d": "int64"})


@pytest.fixture
def applied(home: ShipwayHome, monkeypatch: pytest.MonkeyPatch) -> ShipwayHome:
    for key, value in home.environment().items():
        monkeypatch.setenv(key, value)
    write_deltalake(home.table("customer_features"), _customer_rows(5))
    write_deltalake(home.table("merchant_features"), _merchant_rows())
    feast_cli(home, "apply")
    return home


def _entities(*hours_after_day_start: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [1] * len(hours_after_day_start),
            "merchant_id": [7] * len(hours_after_day_start),
            "event_timestamp": [DAY + pd.Timedelta(hours=h) for h in hours_after_day_start],
        }
    )


def test_the_join_is_point_in_time_correct(applied: ShipwayHome) -> None:
    joined = historical_features(feature_store(applied), _entities(-12, 12), SERVICE)
    joined = joined.sort_values("event_timestamp")
    before, after = joined["customer_txn_count_7d"].tolist()
    assert pd.isna(before), "a transaction must not see features stamped after it"
    assert after == 5
    assert joined["merchant_txn_count_7d"].tolist()[1] == 40


def test_an_overwritten_source_returns_no_stale_rows(applied: ShipwayHome) -> None:
    write_deltalake(applied.table("customer_features"), _customer_rows(9), mode="overwrite")
    joined = historical_features(feature_store(applied), _entities(12), SERVICE)
    assert len(joined) == 1
    assert joined["customer_txn_count_7d"].tolist() == [9]


def test_serving_teams_look_features_up_in_the_online_store(applied: ShipwayHome) -> None:
    store = feature_store(applied)
    materialize_online(store, DAY - pd.Timedelta(days=1), DAY + pd.Timedelta(days=1))
    rows = pd.DataFrame({"customer_id": [1, 2], "merchant_id": [7, 7]})
    found = online_features(store, rows, SERVICE)
    known, unknown = found["customer_txn_count_7d"].tolist()
    assert known == 5
    assert pd.isna(unknown), "a customer with no feature row has no value, not a default"
    assert found["merchant_distinct_customers_7d"].tolist() == [30, 30]
