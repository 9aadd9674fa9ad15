"""The feature service serving teams call: Feast's /get-online-features over HTTP, on the
platform's SQLite store and on a real Redis, with the SDK's values; named 4xx for bad requests;
incremental materialization; freshness and lag."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from deltalake import write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st

from shipway.data.events import generate_events
from shipway.defs.features import lag_check
from shipway.features.online_state import ONLINE_STORE_ENV, REDIS_ENV, OnlineState
from shipway.features.process import feature_server_process, redis_ping, redis_process
from shipway.features.store import feast_cli, feature_store, materialize_incremental
from shipway.paths import ShipwayHome
from shipway.processes import LOOPBACK, ManagedProcess, free_ports
from tests.conftest import (
    CALLER_HEADERS,
    Platform,
    allow_test_caller,
    customer_feature_rows,
    merchant_feature_rows,
    resident_bytes,
)

pytestmark = pytest.mark.integration

SERVICE = "fraud_model_v1"
REQUEST_FIELDS = ("event_timestamp", "amount", "channel", "merchant_category")


def _entities(frame: pd.DataFrame) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {
        "customer_id": [int(v) for v in frame["customer_id"]],
        "merchant_id": [int(v) for v in frame["merchant_id"]],
    }
    out["event_timestamp"] = [t.isoformat() for t in pd.to_datetime(frame["event_timestamp"])]
    out["amount"] = [float(v) for v in frame["amount"]]
    out["channel"] = frame["channel"].astype(str).tolist()
    out["merchant_category"] = frame["merchant_category"].astype(str).tolist()
    return out


def _sdk(store: Any, service: str, entities: dict[str, list[Any]]) -> dict[str, list[Any]]:
    rows = [
        dict(zip(entities, values, strict=True)) for values in zip(*entities.values(), strict=True)
    ]
    for row in rows:
        if "event_timestamp" in row:
            row["event_timestamp"] = datetime.fromisoformat(row["event_timestamp"])
    found: dict[str, list[Any]] = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=rows
    ).to_dict()
    return found


def _by_name(answer: dict[str, Any]) -> dict[str, list[Any]]:
    names = answer["metadata"]["feature_names"]
    return {name: result["values"] for name, result in zip(names, answer["results"], strict=True)}


def _assert_same(ours: dict[str, list[Any]], sdk: dict[str, list[Any]]) -> None:
    assert set(ours) <= set(sdk), set(ours) - set(sdk)
    for name, values in ours.items():
        assert values == pytest.approx(sdk[name], nan_ok=True), name


def _transactions(day: str, n: int, seed: int) -> pd.DataFrame:
    return generate_events(pd.Timestamp(day).date(), 1, seed=seed, events_per_day=n)


def test_lookups_over_http_are_the_sdk_s_values_for_known_and_unknown_entities(
    platform: Platform,
) -> None:
    url = platform.stack.features_url
    transactions = _transactions("2026-10-25", 30, seed=11)
    entities = _entities(transactions)
    entities["customer_id"][0] = 10_000_000  # nobody
    answer = httpx.post(
        f"{url}/get-online-features",
        json={"feature_service": SERVICE, "entities": entities},
        headers=platform.caller,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    store = feature_store(platform.home)
    _assert_same(_by_name(body), _sdk(store, SERVICE, entities))
    names = body["metadata"]["feature_names"]
    status = body["results"][names.index("customer_txn_count_7d")]["statuses"]
    assert status[0] == "NOT_FOUND" and set(status[1:]) == {"PRESENT"}
    stamps = body["results"][names.index("customer_txn_count_7d")]["event_timestamps"]
    assert stamps[0] == "1970-01-01T00:00:00Z" and stamps[1].startswith("2026-10-")

    # Defaults on request, and a plain feature list with Feast's full names.
    filled = httpx.post(
        f"{url}/get-online-features",
        json={"feature_service": SERVICE, "entities": entities, "fill_defaults": True},
        headers=platform.caller,
    ).json()
    assert _by_name(filled)["customer_txn_count_7d"][0] == 0
    listed = httpx.post(
        f"{url}/get-online-features",
        json={
            "features": ["merchant_features:merchant_txn_count_7d"],
            "entities": {"merchant_id": entities["merchant_id"]},
            "full_feature_names": True,
        },
        headers=platform.caller,
    ).json()
    assert listed["metadata"]["feature_names"] == [
        "merchant_id",
        "merchant_features__merchant_txn_count_7d",
    ]
    assert _by_name(listed)["merchant_features__merchant_txn_count_7d"] == pytest.approx(
        _by_name(body)["merchant_txn_count_7d"]
    )

    metrics = httpx.get(f"{url}/metrics").text
    assert (
        'shipway_feature_missing_entities_total{feature_service="fraud_model_v1",'
        'feature_view="customer_features"}' in metrics
    )
    assert 'shipway_feature_online_lag_seconds{feature_view="customer_features"} 0.0' in metrics


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"feature_service": "fraud_model_v9", "entities": {"customer_id": [1]}}, "fraud_model_v9"),
        ({"feature_service": SERVICE, "entities": {"customer_id": [1]}}, "merchant_id"),
        (
            {"feature_service": "customer_spend_v1", "entities": {"customer_id": ["x"]}},
            "customer_id",
        ),
        ({"feature_service": "customer_spend_v1", "entities": {"customer_id": 1}}, "customer_id"),
        ({"features": ["customer_features:nope"], "entities": {"customer_id": [1]}}, "nope"),
        ({"entities": {"customer_id": [1]}}, "feature_service"),
        ("not an object", "JSON object"),
    ],
)
def test_a_malformed_lookup_is_a_400_naming_what_is_wrong(
    platform: Platform, body: Any, named: str
) -> None:
    answer = httpx.post(
        f"{platform.stack.features_url}/get-online-features", json=body, headers=platform.caller
    )
    assert answer.status_code == 400
    assert named in answer.json()["error"]


def test_bad_request_fields_and_non_json_are_named(platform: Platform) -> None:
    url = f"{platform.stack.features_url}/get-online-features"
    entities = _entities(_transactions("2026-10-25", 1, seed=3))
    for field, bad in (("event_timestamp", "yesterday"), ("amount", "12"), ("channel", 3)):
        answer = httpx.post(
            url,
            json={"feature_service": SERVICE, "entities": {**entities, field: [bad]}},
            headers=platform.caller,
        )
        assert answer.status_code == 400 and field in answer.json()["error"], answer.text
    json_type = {**platform.caller, "content-type": "application/json"}
    broken = httpx.post(url, content=b"{", headers=json_type)
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
    nowhere = f"{platform.stack.features_url}/nowhere"
    assert httpx.get(nowhere, headers=platform.caller).status_code == 404


def _post(platform: Platform, body: Any) -> httpx.Response:
    return httpx.post(
        f"{platform.stack.features_url}/get-online-features",
        json=body,
        headers=platform.caller,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("customer_id", 2**63),
        ("customer_id", -(2**63) - 1),
        ("customer_id", "99999999999999999999999"),
        ("event_timestamp", 1e20),
        ("event_timestamp", -1e15),
        ("event_timestamp", "0000-01-01T00:00:00"),
        ("event_timestamp", "10000-01-01T00:00:00"),
        ("event_timestamp", "0001-01-01T00:00:00+05:00"),
        ("event_timestamp", "1500-01-01T00:00:00Z"),
    ],
)
def test_join_keys_and_times_out_of_range_are_a_400_naming_the_field(
    platform: Platform, field: str, bad: Any
) -> None:
    """Each was a 500 before: int64 overflow in the entity key, a year datetime cannot hold."""
    entities = _entities(_transactions("2026-10-25", 2, seed=5))
    entities[field][1] = bad
    answer = _post(platform, {"feature_service": SERVICE, "entities": entities})
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]


def test_a_time_with_an_offset_is_the_same_instant_as_in_utc(platform: Platform) -> None:
    """Training reads event times in UTC; so does serving, whatever offset a caller sends
    (before, 09:30+05:00 gave hour_of_day 9, and 04:30Z gave 4: training/serving skew)."""
    entities = _entities(_transactions("2026-10-25", 3, seed=9))
    entities["event_timestamp"] = [
        "2026-10-25T09:30:00+05:00",
        "2026-10-25T04:30:00Z",
        "2026-10-24T23:30:00-05:00",
    ]
    answer = _post(platform, {"feature_service": SERVICE, "entities": entities})
    assert answer.status_code == 200, answer.text
    assert _by_name(answer.json())["hour_of_day"] == [4, 4, 4]


def test_a_huge_lookup_is_refused_by_its_size_and_a_big_one_holds_no_one_up(
    platform: Platform,
) -> None:
    """260,000 entities were a 500 ("too many SQL variables") after ~2 s during which every
    other caller waited. Past MAX_ENTITIES the answer is a named 400; below it, a big lookup
    runs on a worker thread, and small lookups sent after it finish before it does."""
    from concurrent.futures import ThreadPoolExecutor

    from shipway.features.lookup import MAX_ENTITIES

    over = _post(
        platform,
        {"feature_service": "customer_spend_v1", "entities": {"customer_id": [1] * 260_000}},
    )
    assert over.status_code == 400 and f"at most {MAX_ENTITIES}" in over.json()["error"]
    big = {"customer_id": list(range(MAX_ENTITIES))}
    small = {"customer_id": [1, 2]}
    with ThreadPoolExecutor(2) as pool:
        finished: list[str] = []

        def call(name: str, entities: dict[str, list[int]]) -> httpx.Response:
            answer = _post(platform, {"feature_service": "customer_spend_v1", "entities": entities})
            finished.append(name)
            return answer

        slow = pool.submit(call, "big", big)
        time.sleep(0.05)
        quick = [call(f"small{i}", small) for i in range(3)]
        assert slow.result().status_code == 200
    assert all(q.status_code == 200 for q in quick)
    assert finished.index("small0") < finished.index("big"), finished


def test_the_plan_cache_is_bounded_by_bytes_and_a_repeated_reference_is_read_once(
    platform: Platform,
) -> None:
    """A few dozen lookups listing one reference ~20,000 times grew the service to 13.9 GB
    (each a plan and an answer of 20,000 columns). A reference given twice is read once, and
    the kept plans of ad-hoc lists are bounded by their estimated size, not their number."""
    import itertools

    from shipway.features.lookup import MAX_PLAN_BYTES, OnlineLookup

    lookup = OnlineLookup(feature_store(platform.home))
    features = [f"customer_features:{f.name}" for f in lookup.views["customer_features"].features]
    repeated = lookup.features_plan([features[0]] * 20_000, full_names=False)
    assert repeated.outputs == (("customer_features", features[0].split(":", 1)[1]),)
    assert lookup.plan_bytes < 2_000
    made = 0
    for n in range(1, 6):
        for refs in itertools.permutations(features, n):
            lookup.features_plan(list(refs), full_names=False)
            made += 1
    kept = lookup._feature_plans
    assert lookup.plan_bytes <= MAX_PLAN_BYTES < made * 1_000
    assert lookup.plan_bytes == sum(size for _, size in kept.values())
    assert 1 < len(kept) < made
    # The most recently used stay: the last list made is a cache hit.
    assert lookup.features_plan(list(refs), full_names=False) is kept[("False", *refs)][0]


_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
    | st.text(max_size=8)
    | st.sampled_from(["2026-10-25T09:30:00+05:00", "online", "grocery", "1e400", "-0"])
)
_value = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=10,
)
_column = st.sampled_from(["customer_id", "merchant_id", *REQUEST_FIELDS, "other"])


@settings(max_examples=150, deadline=None)
@given(
    body=st.fixed_dictionaries(
        {"entities": st.dictionaries(_column, st.lists(_scalar, max_size=4), max_size=7) | _value},
        optional={
            "feature_service": st.sampled_from([SERVICE, "customer_spend_v1", "nope"]) | _value,
            "features": st.lists(
                st.sampled_from(
                    ["customer_features:customer_txn_count_7d", "fraud_model_request:amount", "x"]
                ),
                max_size=3,
            )
            | _value,
            "fill_defaults": _value,
            "full_feature_names": _value,
        },
    )
)
def test_any_lookup_body_gets_a_200_or_a_named_4xx_never_a_500(
    platform: Platform, body: dict[str, Any]
) -> None:
    answer = _post(platform, body)
    assert answer.status_code < 500, (body, answer.text)
    if answer.status_code != 200:
        assert answer.json()["error"], body


def test_a_lookup_s_answer_is_bounded_by_its_cells_and_its_features(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipway.errors import BadRequest
    from shipway.features import lookup as lookups

    online = lookups.OnlineLookup(feature_store(platform.home))
    plan = online.service_plan("customer_spend_v1")
    monkeypatch.setattr(lookups, "MAX_CELLS", 10 * len(plan.feature_names))
    entities = {"customer_id": list(range(11))}
    with pytest.raises(BadRequest, match=r"11 entities of \d+ columns is \d+ values"):
        online.lookup(plan, entities)
    assert len(online.lookup(plan, {"customer_id": list(range(10))}).values[0]) == 10
    many = [f"customer_features:f{i}" for i in range(lookups.MAX_FEATURES + 1)]
    answer = _post(platform, {"features": many, "entities": {"customer_id": [1]}})
    assert answer.status_code == 400
    assert f"{lookups.MAX_FEATURES + 1} different features in one request" in answer.text
    deep = httpx.post(
        f"http://{LOOPBACK}:{platform.stack.ports.features}/get-online-features",
        content=b'{"entities": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        headers=platform.caller,
    )
    assert deep.status_code == 400 and "nested more than 32 levels" in deep.json()["error"]


FEATURE_SERVICE_BOUND = 1536 << 20
"""The feature service (Feast's SDK and its registry loaded) stays under 1.5 GiB."""
_REF = "customer_features:customer_txn_count_7d"


def _lookup_body(refs: int, entities: int) -> bytes:
    return json.dumps(
        {"features": [_REF] * refs, "entities": {"customer_id": list(range(entities))}}
    ).encode()


@settings(max_examples=40, deadline=None)
@given(
    body=st.one_of(
        # The review's attack: one reference listed ~20,000 times, a few dozen times over.
        st.tuples(st.integers(1, 24_000), st.integers(1, 10_000)).map(lambda n: _lookup_body(*n)),
        st.integers(1, 20_000).map(lambda d: b"[" * d + b"]" * d),
        st.integers(1, 20_000).map(lambda d: b'{"entities":' * d + b"1" + b"}" * d),
        st.integers(0, 3_000_000).map(lambda n: b'{"features": ["' + b"x" * n + b'"]}'),
        st.integers(0, 200_000).map(
            lambda n: json.dumps(
                {"feature_service": SERVICE, "entities": {"customer_id": [1] * n}}
            ).encode()
        ),
        st.binary(max_size=4096),
    ),
    path=st.sampled_from(["/get-online-features", "/score/fraud_model"]),
)
def test_hostile_lookups_get_an_answer_or_a_4xx_and_the_service_stays_within_its_memory(
    platform: Platform, body: bytes, path: str
) -> None:
    answer = httpx.post(
        f"http://{LOOPBACK}:{platform.stack.ports.features}{path}",
        content=body,
        headers=platform.caller,
        timeout=120,
    )
    assert answer.status_code < 500, answer.text[:300]
    if answer.status_code != 200:
        assert answer.json()["error"]
    rss = resident_bytes(platform.stack.group.named("feature service").pid)
    assert rss < FEATURE_SERVICE_BOUND, f"the feature service holds {rss >> 20} MiB"


# --- Redis, incremental materialization, freshness -----------------------------------------

DAY = datetime(2026, 9, 2, tzinfo=UTC)


@dataclass
class RedisHome:
    home: ShipwayHome
    port: int
    redis: ManagedProcess


@pytest.fixture
def redis_home(home: ShipwayHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisHome]:
    """A home whose online store is a real Redis on loopback, with one day of features."""
    port = free_ports(1)[0]
    for key, value in home.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(ONLINE_STORE_ENV, "redis")
    monkeypatch.setenv(REDIS_ENV, f"{LOOPBACK}:{port}")
    write_deltalake(home.table("customer_features"), customer_feature_rows(DAY, [1, 2, 3], 5))
    write_deltalake(home.table("merchant_features"), merchant_feature_rows(DAY))
    allow_test_caller(home.served)
    running = RedisHome(home, port, redis_process(home, port).start())
    try:
        feast_cli(home, "apply")
        yield running
    finally:
        running.redis.stop()


def _lookup(url: str, customers: list[int]) -> dict[str, list[Any]]:
    n = len(customers)
    entities = {
        "customer_id": customers,
        "merchant_id": [7] * n,
        "event_timestamp": [(DAY + timedelta(hours=14)).isoformat()] * n,
        "amount": [50.0] * n,
        "channel": ["online"] * n,
        "merchant_category": ["travel"] * n,
    }
    answer = httpx.post(
        f"{url}/get-online-features",
        json={"feature_service": SERVICE, "entities": entities},
        headers=CALLER_HEADERS,
    )
    assert answer.status_code == 200, answer.text
    return _by_name(answer.json())


def test_on_redis_lookups_match_the_sdk_and_materialization_loads_only_new_rows(
    redis_home: RedisHome,
) -> None:
    home = redis_home.home
    first = materialize_incremental(home)
    assert sorted(w.view for w in first.loaded) == ["customer_features", "merchant_features"]
    again = materialize_incremental(home)
    assert again.loaded == [] and all("up to date" in s for s in again.skipped)

    port = free_ports(1)[0]
    server = feature_server_process(home, port)
    server.env.update({k: os.environ[k] for k in (ONLINE_STORE_ENV, REDIS_ENV)})
    server.start()
    try:
        url = f"http://{LOOPBACK}:{port}"
        ours = _lookup(url, [1, 2, 99])
        store = feature_store(home)
        _assert_same(ours, _sdk(store, SERVICE, _entities_of(ours)))
        assert ours["customer_txn_count_7d"] == [5, 5, None]
        missing = (
            'shipway_feature_missing_entities_total{feature_service="fraud_model_v1",'
            'feature_view="customer_features"} 1.0'
        )
        assert missing in httpx.get(f"{url}/metrics").text, "Redis answers a nobody with nulls"

        # A new day lands in the lake but not online: the store is behind, and says so.
        later = DAY + timedelta(days=1)
        write_deltalake(
            home.table("customer_features"), customer_feature_rows(later, [2], 8), mode="append"
        )
        fresh = OnlineState.load(home).freshness(home)
        assert fresh["customer_features"].lag_seconds == 86400
        check = lag_check(fresh)
        assert not check.passed and "customer_features" in (check.description or "")
        metrics = httpx.get(f"{url}/metrics").text
        assert 'shipway_feature_online_lag_seconds{feature_view="customer_features"} 86400.0' in (
            metrics
        )

        # The next run loads that day only: customer 2 moves on, 1 and 3 keep their rows.
        done = materialize_incremental(home)
        (window,) = done.loaded
        assert (window.view, window.start, window.end) == ("customer_features", DAY, later)
        assert _lookup(url, [1, 2, 3])["customer_txn_count_7d"] == [5, 8, 5]
        assert lag_check(OnlineState.load(home).freshness(home)).passed

        # kill -9 of Redis: its append-only file keeps what was loaded (fsync every second),
        # and the feature service answers again once Redis is back.
        time.sleep(1.5)
        os.kill(redis_home.redis.pid, signal.SIGKILL)
        redis_home.redis.stop()
        assert not redis_ping(redis_home.port)
        redis_home.redis = redis_process(home, redis_home.port).start()
        assert _lookup(url, [1, 2, 3])["customer_txn_count_7d"] == [5, 8, 5]
    finally:
        server.stop()


def _entities_of(found: dict[str, list[Any]]) -> dict[str, list[Any]]:
    n = len(found["customer_id"])
    return {
        "customer_id": found["customer_id"],
        "merchant_id": found["merchant_id"],
        "event_timestamp": [(DAY + timedelta(hours=14)).isoformat()] * n,
        "amount": [50.0] * n,
        "channel": ["online"] * n,
        "merchant_category": ["travel"] * n,
    }


def test_the_online_store_is_sqlite_or_redis_as_the_environment_says(
    home: ShipwayHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipway.errors import ShipwayError
    from shipway.features.store import store_yaml

    monkeypatch.setenv(ONLINE_STORE_ENV, "sqlite")
    assert "type: sqlite" in store_yaml(home).read_text()
    monkeypatch.setenv(ONLINE_STORE_ENV, "redis")
    monkeypatch.setenv(REDIS_ENV, "127.0.0.1:7001")
    text = store_yaml(home).read_text()
    assert "type: redis" in text and "127.0.0.1:7001" in text
    monkeypatch.setenv(ONLINE_STORE_ENV, "memcached")
    with pytest.raises(ShipwayError, match="SHIPWAY_ONLINE_STORE='memcached'"):
        store_yaml(home)
    assert Path(home.feast / "feature_store.yaml").read_text() == text, "left as it was"
