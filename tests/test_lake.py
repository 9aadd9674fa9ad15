"""Delta tables: landing by day replaces, never duplicates; every landing is a version."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from shipway.data.events import event_table, generate_events
from shipway.data.lake import (
    content_digest,
    land_days,
    overwrite_table,
    read_table,
    table_digest,
    table_info,
    table_properties,
)
from shipway.errors import ShipwayError


def test_relanding_a_day_replaces_it_in_one_new_version(tmp_path: Path) -> None:
    path = tmp_path / "raw_events"
    first = land_days(path, generate_events(date(2026, 9, 1), 3, events_per_day=100))
    again = land_days(path, generate_events(date(2026, 9, 3), 2, events_per_day=100, seed=9))
    assert (first.version, first.row_count) == (0, 300)
    assert (again.version, again.row_count) == (1, 400)
    rows = read_table(path)
    assert rows["transaction_id"].is_unique
    assert rows.groupby("event_date").size().tolist() == [100, 100, 100, 100]


def test_events_built_as_arrow_land_the_same_rows_and_schema_as_pandas(tmp_path: Path) -> None:
    # Landing builds 10M events day by day into Arrow; the tests build them in pandas.
    frame = generate_events(date(2026, 9, 1), 3, scenario="drift", events_per_day=200)
    table = event_table(date(2026, 9, 1), 3, scenario="drift", events_per_day=200)
    as_pandas = overwrite_table(tmp_path / "pandas", frame)
    as_arrow = overwrite_table(tmp_path / "arrow", table)
    assert as_arrow.columns == as_pandas.columns
    assert as_arrow.content_digest == as_pandas.content_digest
    # Re-landing days from Arrow replaces them, as from pandas.
    land_days(tmp_path / "days", frame)
    again = land_days(tmp_path / "days", event_table(date(2026, 9, 2), 1, events_per_day=50))
    assert again.row_count == 450


def test_time_travel_returns_the_rows_of_an_old_version(tmp_path: Path) -> None:
    path = tmp_path / "raw_events"
    original = generate_events(date(2026, 9, 1), 1, events_per_day=50)
    land_days(path, original)
    land_days(path, generate_events(date(2026, 9, 1), 1, events_per_day=50, seed=3))
    old = read_table(path, version=0).sort_values("transaction_id", ignore_index=True)
    assert old["amount"].tolist() == original.sort_values("transaction_id")["amount"].tolist()
    assert read_table(path)["amount"].tolist() != old["amount"].tolist()


def test_a_landed_table_reports_version_rows_and_schema(tmp_path: Path) -> None:
    info = land_days(tmp_path / "t", generate_events(date(2026, 9, 1), 1, events_per_day=10))
    meta = info.metadata()
    assert meta["delta_version"] == 0
    assert meta["row_count"] == 10
    assert "event_timestamp: timestamp[us, tz=UTC]" in str(meta["schema"])


def test_overwrite_records_lineage_in_the_commit(tmp_path: Path) -> None:
    frame = generate_events(date(2026, 9, 1), 1, events_per_day=10)
    overwrite_table(tmp_path / "t", frame, {"raw_events_version": "4"})
    assert table_info(tmp_path / "t").commit_metadata == {"raw_events_version": "4"}


def test_each_version_reads_its_own_commit_s_lineage(tmp_path: Path) -> None:
    """delta-rs numbers an older version's history as if the newest commits were its own: an
    older batch's source, landing time and run used to read as the newest one's."""
    frame = generate_events(date(2026, 9, 1), 1, events_per_day=10)
    for n in range(3):
        written = overwrite_table(tmp_path / "t", frame, {"source": f"batch {n}"})
        assert written.version == n and written.commit_metadata == {"source": f"batch {n}"}
    for n in range(3):
        assert table_info(tmp_path / "t", n).commit_metadata == {"source": f"batch {n}"}


def test_a_missing_table_says_what_to_materialize(tmp_path: Path) -> None:
    with pytest.raises(ShipwayError, match=r"no Delta table at .*training_set: materialize"):
        table_info(tmp_path / "training_set")


def test_the_content_digest_ignores_order_and_sees_any_change(tmp_path: Path) -> None:
    events = generate_events(date(2026, 9, 1), 2, "baseline", 7, 50)
    first = overwrite_table(tmp_path / "t", events)
    shuffled = overwrite_table(tmp_path / "t", events.sample(frac=1.0, random_state=1))
    assert shuffled.content_digest == first.content_digest
    assert shuffled.schema_hash == first.schema_hash
    changed = events.copy()
    changed["amount"] = changed["amount"].where(changed.index != 7, changed["amount"] + 0.01)
    assert overwrite_table(tmp_path / "t", changed).content_digest != first.content_digest
    duplicated = pd.concat([events, events.iloc[:1]])
    assert overwrite_table(tmp_path / "t", duplicated).content_digest != first.content_digest
    # Every version keeps its own digest: time travel reads exactly what was written.
    assert table_info(tmp_path / "t", first.version, digest=True).content_digest == (
        first.content_digest
    )


def test_tables_keep_old_versions_a_year(tmp_path: Path) -> None:
    overwrite_table(tmp_path / "t", generate_events(date(2026, 9, 1), 1, "baseline", 7, 10))
    assert table_properties(tmp_path / "t")["delta.logRetentionDuration"] == "interval 365 days"


@pytest.mark.parametrize("batch_rows", [1, 3, 7, 1000])
def test_a_table_s_digest_read_in_batches_is_the_digest_of_the_whole_table(
    tmp_path: Path, batch_rows: int
) -> None:
    # Nulls in one batch only: pandas types the whole table's integers as floats and its
    # booleans as objects, and each batch must be typed the same.
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(10)],
            "count": pd.array([1, 2, 3, 4, 5, 6, 7, None, 9, 10], dtype="Int64"),
            "flag": pd.array([True, False] * 4 + [None, True], dtype="boolean"),
            "amount": [float(i) / 3 for i in range(10)],
            "at": pd.date_range("2026-09-01", periods=10, freq="h", tz="UTC").astype(
                "datetime64[us, UTC]"
            ),
        }
    )
    info = overwrite_table(tmp_path / "t", frame)
    whole = content_digest(read_table(tmp_path / "t"))
    assert info.content_digest == whole
    assert table_digest(DeltaTable(str(tmp_path / "t")), batch_rows) == whole
    # A nested column pandas cannot hash: its text is hashed, in every batch alike.
    nested = pd.DataFrame({"k": list(range(6)), "tags": [["a"], None, ["b", "c"], [], None, ["d"]]})
    overwrite_table(tmp_path / "n", nested)
    assert table_digest(DeltaTable(str(tmp_path / "n")), batch_rows) == content_digest(
        read_table(tmp_path / "n")
    )
    # And an empty table.
    overwrite_table(tmp_path / "e", frame.iloc[:0])
    assert table_digest(DeltaTable(str(tmp_path / "e")), batch_rows) == content_digest(
        read_table(tmp_path / "e")
    )
