"""Feature versions side by side on real dbt and Feast (no server): each version built from its
own saved sources into its own tables and online store, refreshed with new days by its own
logic, looked up pinned, and collected only when nothing pins it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from shipway.data.events import generate_events
from shipway.data.lake import overwrite_table, read_table
from shipway.errors import ShipwayError
from shipway.features.server import FeatureServer
from shipway.features.version_store import (
    KEEP_LAST,
    Built,
    build_version,
    built_home,
    collect,
    collectable,
    version_home,
)
from shipway.features.versions import Recorded
from shipway.models.catalog import keep_versions, load_models
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT, ServingHome, ShipwayHome
from shipway.serving.bundle import SETTINGS_FILE
from shipway.serving.scoring import OneCallScorer
from shipway.serving.state import SavedState
from tests.conftest import TwoVersions, spend_versions, toy_bundle

SPEND = "customer_spend_v1"
SQL = "models/features/customer_features.sql"
AVERAGE = "customer_amount_avg_30d"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> TwoVersions:
    """customer_spend's 30-day window and its 14-day change, both built over 35 days."""
    tmp = tmp_path_factory.mktemp("side_by_side")
    home = ShipwayHome(tmp / "home")
    events = generate_events(date(2026, 9, 1), 35, events_per_day=150, n_customers=200)
    overwrite_table(home.table("raw_events"), events)
    found = spend_versions(home, tmp / "src")
    for recorded in (found.first, found.second):
        build_version(home, recorded, print)
    return found


def _online(home: ShipwayHome, version: str, customers: list[int]) -> tuple[int, dict[str, Any]]:
    server = FeatureServer(home, require_keys=False)
    with httpx.Client(transport=_sync(server), base_url="http://features") as http:
        answer = http.post(
            "/get-online-features",
            json={
                "feature_service": SPEND,
                "feature_version": version,
                "entities": {"customer_id": customers},
            },
        )
    return answer.status_code, answer.json()


def _sync(app: Any) -> httpx.BaseTransport:
    """The ASGI app on a plain client: each request runs the app on its own event loop."""
    import asyncio

    class Transport(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            async def run() -> httpx.Response:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://features"
                ) as client:
                    response = await client.request(
                        request.method, request.url, content=request.read(), headers=request.headers
                    )
                    await response.aread()
                    return response

            response = asyncio.run(run())
            return httpx.Response(
                response.status_code, headers=response.headers, content=response.content
            )

    return Transport()


def _values(answer: dict[str, Any], name: str) -> list[Any]:
    names = answer["metadata"]["feature_names"]
    return list(answer["results"][names.index(name)]["values"])


def _offline_latest(home: ShipwayHome, recorded: Recorded, customers: list[int]) -> list[float]:
    table = read_table(version_home(home, recorded).table("customer_features"))
    newest = table.sort_values("event_timestamp").groupby("customer_id").tail(1)
    by_customer = newest.set_index("customer_id")[AVERAGE]
    return [float(by_customer[c]) for c in customers]


def test_two_versions_are_built_side_by_side_and_each_lookup_is_its_own_offline_values(
    versions: TwoVersions,
) -> None:
    home, old, new = versions.home, versions.first, versions.second
    old_home, new_home = version_home(home, old), version_home(home, new)
    assert old_home.table("customer_features") != new_home.table("customer_features")
    assert old_home.feast_project != new_home.feast_project
    customers = [int(c) for c in read_table(old_home.table("customer_features"))["customer_id"]]
    customers = sorted(set(customers))[:20]
    code, on_old = _online(home, old.version.digest, customers)
    assert code == 200 and on_old["metadata"]["feature_version"] == old.version.digest
    code, on_new = _online(home, new.version.digest, customers)
    assert code == 200
    assert _values(on_old, AVERAGE) == _offline_latest(home, old, customers)
    assert _values(on_new, AVERAGE) == _offline_latest(home, new, customers)
    assert _values(on_old, AVERAGE) != _values(on_new, AVERAGE)
    assert _values(on_old, "customer_amount_avg_7d") == _values(on_new, "customer_amount_avg_7d")


def test_new_days_refresh_each_version_by_its_own_logic_and_unchanged_raw_data_is_not_rebuilt(
    versions: TwoVersions, capsys: pytest.CaptureFixture[str]
) -> None:
    home, old = versions.home, versions.first
    before = Built.load(version_home(home, old))
    assert before is not None
    build_version(home, old, print)
    assert "raw tables unchanged since its last build" in capsys.readouterr().out
    assert Built.load(version_home(home, old)) is not None

    days = generate_events(date(2026, 10, 6), 2, seed=11, events_per_day=150, n_customers=200)
    landed = read_table(home.table("raw_events"))
    overwrite_table(home.table("raw_events"), pd.concat([landed, days], ignore_index=True))
    for recorded in (versions.first, versions.second):
        done = build_version(home, recorded, print)
        assert done.raw_versions != before.raw_versions
        assert done.rows_loaded_online, "only the new rows are loaded"
        assert all("2026-10" in line for line in done.rows_loaded_online)
    customers = sorted({int(c) for c in days["customer_id"]})[:20]
    for recorded in (versions.first, versions.second):
        code, answer = _online(home, recorded.version.digest, customers)
        assert code == 200
        assert _values(answer, AVERAGE) == _offline_latest(home, recorded, customers)


def test_a_pinned_lookup_names_a_wrong_version_or_service_and_nothing_is_read(
    versions: TwoVersions,
) -> None:
    home = versions.home
    code, answer = _online(home, "not-a-digest", [1])
    assert code == 400 and "12 hex characters" in answer["error"]
    code, answer = _online(home, "0123456789ab", [1])
    assert code == 404 and "0123456789ab is not recorded" in answer["error"]
    server = FeatureServer(home, require_keys=False)
    with httpx.Client(transport=_sync(server), base_url="http://features") as http:
        wrong = http.post(
            "/get-online-features",
            json={
                "feature_service": "fraud_model_v1",
                "feature_version": versions.first.version.digest,
                "entities": {"customer_id": [1]},
            },
        )
    assert wrong.status_code == 400
    assert f"is a version of feature service {SPEND}, not fraud_model_v1" in wrong.json()["error"]


def test_collecting_frees_only_what_nothing_pins_and_a_collected_version_builds_again(
    versions: TwoVersions,
) -> None:
    home, old, new = versions.home, versions.first, versions.second
    pinned = {old.version.digest: ["spend v1 serves"]}
    assert [c.digest for c in collectable(home, pinned, keep_last=0)] == [new.version.digest]
    assert collectable(home, pinned, keep_last=1) == [], "the newest is kept"
    assert collectable(home, pinned, {SPEND: 1}) == [], "as many as its model declares"
    assert [c.digest for c in collectable(home, pinned, {SPEND: 0})] == [new.version.digest]
    freed = collect(home, pinned, keep_last=0)
    assert [c.digest for c in freed] == [new.version.digest] and freed[0].freed_bytes > 0
    with pytest.raises(ShipwayError, match="recorded but not built"):
        built_home(home, new.version.digest)
    assert built_home(home, old.version.digest).digest == old.version.digest
    code, _ = _online(home, old.version.digest, [1])
    assert code == 200, "the pinned version still serves"
    assert (version_home(home, new).source / "dbt_project" / SQL).is_file(), "sources kept"
    build_version(home, new, print)
    assert built_home(home, new.version.digest).digest == new.version.digest
    assert not pd.isna(Built.load(version_home(home, new)).built_at)  # type: ignore[union-attr]


def _bundle_on(root: Path, model: str, version: str, feature_version: str) -> Path:
    """A toy bundle of `model` v`version` that records feature service customer_spend_v1 at
    `feature_version`."""
    bundle = toy_bundle(root / model / version, version, seed=int(version))
    settings = bundle.path / SETTINGS_FILE
    raw = json.loads(settings.read_text())
    raw["parameters"]["extra"].update(feature_service=SPEND, feature_version=feature_version)
    settings.write_text(json.dumps(raw))
    return bundle.path


def test_an_unpinned_lookup_reads_the_declaring_models_champion_and_the_incumbent_at_a_tie(
    tmp_path: Path,
) -> None:
    serving = ServingHome(tmp_path / "serving")
    a, b, c = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
    state = {
        "customer_spend": {
            "versions": {
                "1": {"bundle": str(_bundle_on(serving.root, "customer_spend", "1", a))},
                "2": {"bundle": str(_bundle_on(serving.root, "customer_spend", "2", b))},
            },
            "weights": {"1": 50, "2": 50},
        },
        # Another model on the same service, at more traffic: not the service's owner.
        "spend_copy": {
            "versions": {"7": {"bundle": str(_bundle_on(serving.root, "spend_copy", "7", c))}},
            "weights": {"7": 100},
        },
    }
    SavedState(state).save(serving.state)
    scorer = OneCallScorer(serving, "http://127.0.0.1:9")
    assert scorer.serving_version(SPEND, "customer_spend") == a, "the incumbent of a 50/50"
    assert scorer.serving_version(SPEND, None) == c, "no owner known: the most traffic"
    assert scorer.serving_version("fraud_model_v1", "fraud_model") is None
    state["customer_spend"]["weights"] = {"1": 0, "2": 100}
    SavedState(state).save(serving.state)
    scorer = OneCallScorer(serving, "http://127.0.0.1:9")
    assert scorer.serving_version(SPEND, "customer_spend") == b, "promoted with its model"


def test_how_many_versions_to_keep_is_each_models_declaration() -> None:
    keep = keep_versions(load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT))
    assert keep == {"fraud_model_v1": 3, SPEND: KEEP_LAST}
