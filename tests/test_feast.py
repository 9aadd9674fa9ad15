"""Feast on Delta: point-in-time joins that honour the Delta log, on-demand request features,
and online lookups that give the same feature vector as training."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import write_deltalake

from shipway.data.events import CATEGORIES
from shipway.features.service import feature_frame, registry_spec, repository
from shipway.features.store import (
    apply_repository,
    feature_store,
    historical_features,
    materialize_online,
    online_features,
    repository_digest,
)
from shipway.paths import ShipwayHome

SERVICE = "fraud_model_v1"
DAY = datetime(2026, 9, 2, tzinfo=UTC)
CUSTOMER_COUNTS = ("customer_txn_count_1d", "customer_txn_count_7d", "customer_active_days_30d")
MERCHANT_COUNTS = ("merchant_txn_count_7d", "merchant_distinct_customers_7d")


def _rows(
    key: str, key_value: int, values: dict[str, float], counts: tuple[str, ...]
) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{key: key_value, "feature_date": DAY.date(), "event_timestamp": DAY, **values}]
    )
    return frame.astype(dict.fromkeys(counts, "int64"))


def _customer_rows(txn_count_7d: int) -> pd.DataFrame:
    values = {
        "customer_txn_count_1d": 1,
        "customer_txn_count_7d": txn_count_7d,
        "customer_amount_avg_7d": 20.0,
        "customer_amount_avg_30d": 25.0,
        "customer_amount_max_30d": 80.0,
        "customer_night_share_30d": 0.1,
        "customer_amount_sum_7d": 100.0,
        "customer_amount_sum_30d": 400.0,
        "customer_active_days_30d": 12,
    }
    return _rows("customer_id", 1, values, CUSTOMER_COUNTS)


def _merchant_rows() -> pd.DataFrame:
    values = {
        "merchant_txn_count_7d": 40,
        "merchant_amount_avg_7d": 30.0,
        "merchant_distinct_customers_7d": 30,
        "merchant_online_share_7d": 0.5,
    }
    return _rows("merchant_id", 7, values, MERCHANT_COUNTS)


def _apply(home: ShipwayHome) -> ShipwayHome:
    write_deltalake(home.table("customer_features"), _customer_rows(5))
    write_deltalake(home.table("merchant_features"), _merchant_rows())
    assert not apply_repository(home).skipped
    return home


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipwayHome]:
    """One applied repository for the tests that only read it (`feast apply` takes ~8 s)."""
    home = ShipwayHome(tmp_path_factory.mktemp("feast"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in home.environment().items():
            patch.setenv(key, value)
        yield _apply(home)


@pytest.fixture
def own_applied(home: ShipwayHome, monkeypatch: pytest.MonkeyPatch) -> ShipwayHome:
    """An applied repository of the test's own, to change."""
    for key, value in home.environment().items():
        monkeypatch.setenv(key, value)
    return _apply(home)


def test_an_unchanged_repository_is_not_applied_again_unless_its_registry_is_gone(
    applied: ShipwayHome,
) -> None:
    again = apply_repository(applied)
    assert again.skipped
    assert [v.name for v in feature_store(applied).list_feature_services()]  # registry intact
    (applied.feast / "registry.db").unlink()
    rebuilt = apply_repository(applied)
    assert not rebuilt.skipped and rebuilt.digest == again.digest
    assert SERVICE in {s.name for s in feature_store(applied).list_feature_services()}
    # The digest covers the paths the yaml resolves: another home's registry is its own.
    assert repository_digest(ShipwayHome(applied.root / "elsewhere")) != again.digest


def _transactions(*hours_after_day_start: int) -> pd.DataFrame:
    n = len(hours_after_day_start)
    return pd.DataFrame(
        {
            "customer_id": [1] * n,
            "merchant_id": [7] * n,
            "event_timestamp": [DAY + pd.Timedelta(hours=h) for h in hours_after_day_start],
            "amount": [50.0] * n,
            "channel": ["online"] * n,
            "merchant_category": ["travel"] * n,
        }
    )


@pytest.mark.integration
def test_the_join_is_point_in_time_correct(applied: ShipwayHome) -> None:
    joined = historical_features(feature_store(applied), _transactions(-12, 12), SERVICE)
    joined = joined.sort_values("event_timestamp")
    before, after = joined["customer_txn_count_7d"].tolist()
    assert pd.isna(before), "a transaction must not see features stamped after it"
    assert after == 5
    assert joined["merchant_txn_count_7d"].tolist()[1] == 40


@pytest.mark.integration
def test_a_join_in_chunks_gives_the_values_of_one_join(applied: ShipwayHome) -> None:
    store = feature_store(applied)
    rows = _transactions(-30, -12, -1, 2, 12, 20, 40).assign(customer_id=[1, 2, 1, 3, 1, 2, 1])
    whole = historical_features(store, rows, SERVICE)
    chunked = historical_features(store, rows, SERVICE, chunk_rows=3)
    order = ["event_timestamp", "customer_id"]
    assert len(chunked) == len(rows)
    pd.testing.assert_frame_equal(
        chunked.sort_values(order).reset_index(drop=True),
        whole.sort_values(order).reset_index(drop=True)[chunked.columns],
    )
    assert whole["customer_txn_count_7d"].notna().any()


@pytest.mark.integration
def test_an_overwritten_source_returns_no_stale_rows(own_applied: ShipwayHome) -> None:
    write_deltalake(own_applied.table("customer_features"), _customer_rows(9), mode="overwrite")
    joined = historical_features(feature_store(own_applied), _transactions(12), SERVICE)
    assert len(joined) == 1
    assert joined["customer_txn_count_7d"].tolist() == [9]


@pytest.mark.integration
def test_request_features_come_from_the_on_demand_view_in_training_and_serving_alike(
    applied: ShipwayHome,
) -> None:
    store = feature_store(applied)
    spec = registry_spec(store, SERVICE)
    rows = _transactions(12).assign(event_timestamp=DAY + pd.Timedelta(hours=3, minutes=30))
    materialize_online(store, DAY - pd.Timedelta(days=1), DAY + pd.Timedelta(days=1))
    online = online_features(store, rows, spec)
    assert list(online.columns) == spec.feature_names
    vector = online.iloc[0]
    assert vector["hour_of_day"] == 3
    assert vector["is_night"] == 1
    assert vector["is_online"] == 1
    assert vector["merchant_category_code"] == CATEGORIES.index("travel")
    assert vector["amount_to_customer_avg_30d"] == pytest.approx(50.0 / 25.0)
    # The point-in-time join computes the same vector for the same transaction.
    offline = feature_frame(historical_features(store, rows, SERVICE), spec)
    pd.testing.assert_series_equal(
        offline.iloc[0], vector, check_names=False, check_exact=False, rtol=1e-9
    )


@pytest.mark.integration
def test_unknown_entities_get_their_feature_views_defaults_online(applied: ShipwayHome) -> None:
    store = feature_store(applied)
    spec = registry_spec(store, SERVICE)
    materialize_online(store, DAY - pd.Timedelta(days=1), DAY + pd.Timedelta(days=1))
    rows = _transactions(12, 12).assign(customer_id=[1, 2])
    found = online_features(store, rows, spec)
    known, unknown = found["customer_txn_count_7d"].tolist()
    assert known == 5
    assert unknown == 0.0, "no history in the window is a count of zero (the view's default)"
    assert found["amount_to_customer_avg_30d"].tolist()[1] == 1.0
    assert found["merchant_distinct_customers_7d"].tolist() == [30, 30]


@pytest.mark.integration
def test_category_codes_follow_the_generators_and_dbts_category_order(
    applied: ShipwayHome,
) -> None:
    rows = pd.concat([_transactions(12)] * len(CATEGORIES), ignore_index=True)
    rows["merchant_category"] = CATEGORIES
    rows["event_timestamp"] += pd.to_timedelta(range(len(CATEGORIES)), unit="s")
    joined = historical_features(feature_store(applied), rows, SERVICE)
    codes = dict(zip(joined["merchant_category"], joined["merchant_category_code"], strict=True))
    assert codes == {c: i for i, c in enumerate(CATEGORIES)}


def test_the_feature_repository_lists_the_tables_its_views_read() -> None:
    assert set(repository().tables) == {"customer_features", "merchant_features"}


def test_an_on_demand_function_that_uses_its_module_s_globals_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README recipe's trap: `import math` at the top of the file works when imported and
    is a NameError in every run, because Feast runs the function from its source alone. The
    repository read (code location load, `shipway ci`) refuses it, naming `math`; the same
    function importing math inside itself is accepted."""
    from shipway.errors import PolicyError

    header = (
        "from typing import Any\n"
        "from feast import Field, RequestSource\n"
        "from feast.on_demand_feature_view import on_demand_feature_view\n"
        "from feast.types import Float64, Int64, UnixTimestamp\n"
        "payment = RequestSource(name='payment', schema=[\n"
        "    Field(name='event_timestamp', dtype=UnixTimestamp),\n"
        "    Field(name='amount', dtype=Float64)])\n"
        "@on_demand_feature_view(sources=[payment], mode='python', schema=[\n"
        "    Field(name='log_amount', dtype=Float64), Field(name='hour', dtype=Int64)])\n"
        "def payment_features(inputs: dict[str, Any]) -> dict[str, Any]:\n"
    )
    body = (
        "    return {'log_amount': [math.log1p(a) for a in inputs['amount']],\n"
        "            'hour': [t.hour for t in inputs['event_timestamp']]}\n"
    )
    # Feast imports a repository's files as modules named from the working folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "merchant_trap.py").write_text("import math\n" + header + body)
    with pytest.raises(PolicyError, match=r"payment_features\(\) uses 'math'.*inside the function"):
        repository(trap)
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "merchant_fixed.py").write_text(header + "    import math\n\n" + body)
    assert repository(fixed).services == {}
