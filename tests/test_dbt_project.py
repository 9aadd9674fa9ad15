"""The dbt project on a small lake: rolling windows are right, outputs are published to Delta."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shipway.data import help_centre
from shipway.data.events import CATEGORIES, generate_events
from shipway.data.lake import land_days, overwrite_table, read_table
from shipway.data.warehouse import delta_outputs, publish_to_delta
from shipway.defs.dbt import HELP_CENTRE
from shipway.paths import DBT_PROJECT_DIR, ShipwayHome

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShipwayHome, pd.DataFrame, Path]:
    home = ShipwayHome(tmp_path_factory.mktemp("dbt"))
    events = generate_events(date(2026, 9, 1), 14, events_per_day=400)
    land_days(home.table("raw_events"), events)
    help_centre.land(home.table)
    target = home.root / "target"
    # As the code location runs them: the help centre's models in a build of their own.
    builds = {target: ["--exclude", HELP_CENTRE], target / "help": ["--select", HELP_CENTRE]}
    for path, selection in builds.items():
        result = subprocess.run(
            [str(Path(sys.executable).with_name("dbt")), "build", *selection,
             "--target-path", str(path)],
            cwd=DBT_PROJECT_DIR,
            env={**os.environ, **home.environment(), "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR)},
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:]
    manifest = json.loads((target / "manifest.json").read_text())
    for model, table in delta_outputs(manifest).items():
        publish_to_delta(home.warehouse, model, home.table(table))
    return home, events, target


def test_dbt_tests_ran_and_passed(built: tuple[ShipwayHome, pd.DataFrame, Path]) -> None:
    results = json.loads((built[2] / "run_results.json").read_text())["results"]
    tests = [r for r in results if r["unique_id"].startswith("test.")]
    assert len(tests) >= 10
    assert {r["status"] for r in tests} == {"pass"}


def test_customer_windows_match_an_independent_computation(
    built: tuple[ShipwayHome, pd.DataFrame, Path],
) -> None:
    home, events, _ = built
    features = read_table(home.table("customer_features"))
    customer = int(events["customer_id"].value_counts().index[0])
    row = features[features["customer_id"] == customer].sort_values("feature_date").iloc[-1]
    day = row["feature_date"]
    mine = events[events["customer_id"] == customer]
    week = mine[(mine["event_date"] > day - pd.Timedelta(days=7)) & (mine["event_date"] <= day)]
    month = mine[(mine["event_date"] > day - pd.Timedelta(days=30)) & (mine["event_date"] <= day)]
    assert row["customer_txn_count_7d"] == len(week)
    assert row["customer_amount_avg_7d"] == pytest.approx(week["amount"].mean())
    assert row["customer_amount_max_30d"] == pytest.approx(month["amount"].max())
    assert row["customer_txn_count_1d"] == (mine["event_date"] == day).sum()


def test_merchant_distinct_customers_count_the_whole_week(
    built: tuple[ShipwayHome, pd.DataFrame, Path],
) -> None:
    home, events, _ = built
    features = read_table(home.table("merchant_features"))
    merchant = int(events["merchant_id"].value_counts().index[0])
    row = features[features["merchant_id"] == merchant].sort_values("feature_date").iloc[-1]
    day = row["feature_date"]
    mine = events[events["merchant_id"] == merchant]
    week = mine[(mine["event_date"] > day - pd.Timedelta(days=7)) & (mine["event_date"] <= day)]
    assert row["merchant_distinct_customers_7d"] == week["customer_id"].nunique()
    assert row["merchant_txn_count_7d"] == len(week)


def test_features_of_a_day_are_stamped_when_the_day_closes(
    built: tuple[ShipwayHome, pd.DataFrame, Path],
) -> None:
    features = read_table(built[0].table("customer_features"))
    closes = pd.to_datetime(features["feature_date"]).dt.tz_localize("UTC") + pd.Timedelta(days=1)
    assert (features["event_timestamp"] == closes).all()
    assert str(features["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_published_tables_keep_integer_counts(
    built: tuple[ShipwayHome, pd.DataFrame, Path],
) -> None:
    features = read_table(built[0].table("customer_features"))
    assert str(features["customer_txn_count_7d"].dtype) == "int64"


def test_dbt_knows_the_same_categories_as_the_generator() -> None:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert tuple(project["vars"]["merchant_categories"]) == CATEGORIES


def test_a_help_document_with_an_unknown_acl_blocks_the_corpus(
    built: tuple[ShipwayHome, pd.DataFrame, Path],
) -> None:
    home, _, target = built
    documents = help_centre.generate().documents
    documents.loc[0, "acl"] = "everyone"
    overwrite_table(home.table(help_centre.DOCUMENTS_TABLE), documents)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "build", "--select", "tag:help_centre",
         "--target-path", str(target / "bad-acl")],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, **home.environment(), "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "accepted_values_help_corpus_acl__public__staff" in result.stdout
    assert "Got 1 result" in result.stdout
