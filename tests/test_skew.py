"""Training/serving skew: served vectors against Feast's point-in-time offline vectors for the
same requests. The comparison on its own, then on a real Feast repository whose online store
is made stale: the skew is caught, fails the check, is exported and blocks the next release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from assets.definitions import models
from shipway.features.service import registry_spec
from shipway.features.store import (
    apply_repository,
    feast_cli,
    feature_store,
    materialize_incremental,
    online_features,
)
from shipway.features.version_store import Built, version_home
from shipway.features.versions import record
from shipway.models.catalog import DeclaredModel, declared_model
from shipway.models.declaration import SkewPolicy
from shipway.monitoring.live import skew_report
from shipway.monitoring.skew import SkewCollector, SkewReport, feature_skew, latest
from shipway.paths import ShipwayHome
from shipway.release.gate import skew_outcome
from shipway.scrape import FileErrors
from shipway.serving.prediction_log import SCHEMA, table_name
from tests.conftest import customer_feature_rows, merchant_feature_rows

POLICY = SkewPolicy(sample_rows=100, tolerance=1e-6, max_share=0.05, min_rows=5)


def _logged(
    keys: list[str], vectors: np.ndarray, names: list[str], served: bool = True
) -> pd.DataFrame:
    n = len(keys)
    return pd.DataFrame(
        {
            "row_key": keys,
            "features": [names] * n,
            "vector": [list(v) for v in vectors],
            "served": [served] * n,
            "at": pd.date_range("2026-10-01", periods=n, freq="s", tz="UTC"),
        }
    )


def test_served_vectors_equal_to_the_offline_ones_are_no_skew_and_a_drifted_feature_is() -> None:
    rng = np.random.default_rng(0)
    names = ["a", "b"]
    vectors = rng.normal(size=(40, 2))
    keys = [f"t{i}" for i in range(40)]
    rows = pd.DataFrame({"row_key": [*keys, "never-served"]})
    offline_values = pd.DataFrame(np.vstack([vectors, [[0, 0]]]), columns=names)

    def offline(matched: pd.DataFrame) -> pd.DataFrame:
        return offline_values.iloc[[keys.index(k) for k in matched["row_key"]]].set_axis(
            matched.index
        )

    clean = feature_skew("m", _logged(keys, vectors, names), rows, offline, POLICY)
    assert clean.judged and clean.skewed == [] and clean.compared == 40
    assert "no skew on 40 rows" in clean.summary()

    stale = vectors.copy()
    stale[:10, 1] += 1.0  # a quarter of the rows served an old "b"
    found = feature_skew("m", _logged(keys, stale, names), rows, offline, POLICY)
    assert [f.feature for f in found.skewed] == ["b"]
    assert found.skewed[0].share == pytest.approx(0.25)
    assert "b 25.0% differ" in found.summary() and "limit 5.00%" in found.summary()

    # Shadow rows are not what callers were served; rows with no label-table row are counted,
    # not compared; too few comparable rows give no verdict at all.
    mirrored = _logged(keys, stale, names, served=False)
    assert feature_skew("m", mirrored, rows, offline, POLICY).logged == 0
    unknown = _logged([f"x{i}" for i in range(40)], stale, names)
    none = feature_skew("m", unknown, rows, offline, POLICY)
    assert (none.logged, none.compared, none.judged) == (40, 0, False)
    few = feature_skew("m", _logged(keys[:3], stale[:3], names), rows, offline, POLICY)
    assert not few.judged and few.skewed == [] and "no verdict" in few.summary()


def test_a_skew_report_survives_its_file_and_is_exported(tmp_path: Path) -> None:
    report = SkewReport("m", 50, 40, [], 0.01, 20, "2026-10-01T00:00:00")
    report.save(tmp_path)
    assert latest(tmp_path, "m") == report
    assert latest(tmp_path, "other") is None
    (_, family_rows) = list(SkewCollector(tmp_path, FileErrors(tmp_path)).collect())
    assert [s.value for s in family_rows.samples] == [40]


# --- on a real Feast repository -------------------------------------------------------------

DAY = datetime(2026, 9, 2, tzinfo=UTC)
MODEL = "fraud_model"
CUSTOMERS = list(range(1, 31))


def _requests(day: datetime, prefix: str) -> pd.DataFrame:
    """One transaction per customer at midday: what the label table (raw_events) holds."""
    n = 30
    return pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{i}" for i in range(n)],
            "customer_id": list(range(1, n + 1)),
            "merchant_id": [7] * n,
            "event_timestamp": [day + timedelta(hours=12, minutes=i) for i in range(n)],
            "amount": [50.0 + i for i in range(n)],
            "channel": ["online"] * n,
            "merchant_category": ["travel"] * n,
        }
    )


def _serve(home: ShipwayHome, requests: pd.DataFrame, feature_version: str = "") -> None:
    """Log what the online store of `home` serves for `requests`, as the model servers do
    (a version on `feature_version`, whose own store `home` is)."""
    store = feature_store(home)
    spec = registry_spec(store, "fraud_model_v1")
    vectors = online_features(store, requests, spec)
    n = len(requests)
    # Logged when served: now (the log's window is the last monitoring.window_days).
    at = pd.Series(pd.Timestamp.now(tz="UTC").floor("us") - pd.to_timedelta(range(n), unit="s"))
    table = pa.table(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "model": [MODEL] * n,
            "version": ["1"] * n,
            "served": [True] * n,
            "caller": ["serving-team"] * n,
            "rollout": [""] * n,
            "at": at,
            "day": at.dt.strftime("%Y-%m-%d"),
            "row_key": requests["transaction_id"],
            "features": [spec.feature_names] * n,
            "vector": vectors.to_numpy().tolist(),
            "score": [0.1] * n,
            "batch": ["b"] * n,
            "feature_version": [feature_version] * n,
        },
        schema=SCHEMA,
    )
    write_deltalake(home.table(table_name(MODEL)), table, mode="append", schema_mode="merge")


def _working_tree_store(home: ShipwayHome, monkeypatch: pytest.MonkeyPatch) -> DeclaredModel:
    """fraud_model over the home's own store: a day of feature rows (customers with 5
    transactions), applied; the environment pointing at the home."""
    for key, value in home.environment().items():
        monkeypatch.setenv(key, value)
    write_deltalake(home.table("customer_features"), customer_feature_rows(DAY, CUSTOMERS, 5))
    write_deltalake(home.table("merchant_features"), merchant_feature_rows(DAY))
    feast_cli(home, "apply")
    return declared_model(models, MODEL)


@pytest.mark.integration
def test_a_stale_online_store_is_caught_as_skew_and_fails_the_next_release_gate(
    home: ShipwayHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = _working_tree_store(home, monkeypatch)
    materialize_incremental(home)

    # Day 1: the online store holds the day's rows, as the point-in-time join sees them.
    first = _requests(DAY, "a")
    write_deltalake(home.table("raw_events"), first)
    _serve(home, first)
    clean = skew_report(home, declared)
    assert clean.judged and clean.compared == 30 and clean.skewed == [], clean.summary()

    # Day 2 lands in the lake but is never materialized: serving keeps day 1's rows.
    later = DAY + timedelta(days=1)
    write_deltalake(
        home.table("customer_features"), customer_feature_rows(later, CUSTOMERS, 9), mode="append"
    )
    second = _requests(later, "b")
    write_deltalake(home.table("raw_events"), second, mode="append")
    _serve(home, second)
    stale = skew_report(home, declared)
    skewed = {f.feature: f for f in stale.skewed}
    assert "customer_txn_count_7d" in skewed, stale.summary()
    assert skewed["customer_txn_count_7d"].max_abs_diff == 4.0
    assert "merchant_txn_count_7d" not in skewed, "the merchant view did not change"
    assert "customer_txn_count_7d" in stale.summary()

    # Saved, the verdict is what the next release gate reads: a failed rule naming the feature.
    stale.save(home.served.skew_reports)
    rule = skew_outcome(latest(home.served.skew_reports, MODEL), "fraud_model_feature_skew")
    assert rule is not None and not rule.passed
    assert "customer_txn_count_7d" in rule.observed
    clean.save(home.served.skew_reports)
    passed = skew_outcome(latest(home.served.skew_reports, MODEL), "fraud_model_feature_skew")
    assert passed is not None and passed.passed


@pytest.mark.integration
def test_each_served_row_is_compared_with_its_own_feature_versions_offline_values(
    home: ShipwayHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The working tree's store says a customer made 5 transactions a day; the version the
    model serves was built when its logic counted 9. Its rows are judged against its own
    tables, not the working tree's."""
    declared = _working_tree_store(home, monkeypatch)
    recorded = record(home, ["fraud_model_v1"])["fraud_model_v1"]
    version = version_home(home, recorded)
    write_deltalake(version.table("customer_features"), customer_feature_rows(DAY, CUSTOMERS, 9))
    write_deltalake(version.table("merchant_features"), merchant_feature_rows(DAY))
    apply_repository(version)
    materialize_incremental(version)
    Built(recorded.version.digest, {}, {"customer_features": 0}, 0.0).save(version)

    requests = _requests(DAY, "v")
    write_deltalake(home.table("raw_events"), requests)
    _serve(version, requests, recorded.version.digest)
    report = skew_report(home, declared)
    assert report.compared == 30 and report.skewed == [], report.summary()
    # Rows of a version no longer built (collected: nothing serves it) are left out.
    gone = _requests(DAY, "w")
    write_deltalake(home.table("raw_events"), gone, mode="append")
    _serve(version, gone, "0123456789ab")
    assert skew_report(home, declared).compared == 30
