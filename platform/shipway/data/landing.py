"""Landing raw events: a batch written as a new version of `raw_events_batch`, audited by the
raw-events contract (`shipway.data.admission`), and only then published to `raw_events`, the
table dbt reads (write, audit, publish). Shared by every model.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from shipway.data.admission import Ledger, reference_from
from shipway.data.contracts import Contract
from shipway.data.events import SCENARIOS, generate_events
from shipway.data.gates import Reference
from shipway.data.lake import TableInfo, land_days, overwrite_table, read_table, table_exists
from shipway.errors import ShipwayError
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome

BATCH_TABLE = "raw_events_batch"
RAW_EVENTS = "raw_events"


def newest_event(home: ShipwayHome) -> datetime | None:
    """When the newest published raw event happened (None before the first landing)."""
    path = home.table(RAW_EVENTS)
    if not table_exists(path):
        return None
    stamps = read_table(path, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP]
    return None if stamps.empty else pd.Timestamp(stamps.max()).to_pydatetime()


def events_to_land(
    from_file: str,
    start_date: str,
    days: int,
    scenario: str,
    events_per_day: int,
    seed: int,
) -> tuple[pd.DataFrame, str]:
    """The batch and where it came from: a Parquet file of events, or days from the seeded
    generator (`start_date` empty: the `days` days ending yesterday, UTC)."""
    if from_file:
        path = Path(from_file)
        if not path.is_file():
            raise ShipwayError(f"from_file {path} not found: give a Parquet file of events")
        return pd.read_parquet(path), f"file {path}"
    if scenario not in SCENARIOS:
        raise ShipwayError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
    start = (
        date.fromisoformat(start_date)
        if start_date
        else datetime.now(UTC).date() - timedelta(days=days)
    )
    events = generate_events(start, days, scenario, seed, events_per_day)
    return events, f"generator: {days} days from {start}, scenario {scenario}"


def parse_as_of(text: str) -> datetime:
    """An ISO time; without a zone it is UTC."""
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise ShipwayError(
            f"as_of {text!r} is not an ISO time (e.g. 2026-09-15T01:00:00Z)"
        ) from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def landed_at(info: TableInfo) -> datetime | None:
    """When a batch version landed (its freshness is measured against it)."""
    stamp = info.commit_metadata.get("as_of")
    return parse_as_of(stamp) if stamp else None


def write_batch(
    home: ShipwayHome,
    events: pd.DataFrame,
    source: str,
    as_of: str,
    readmits: str,
    retention_days: int,
) -> TableInfo:
    """The batch as a new version of `raw_events_batch`, before its contract audits it."""
    return overwrite_table(
        home.table(BATCH_TABLE),
        events,
        commit_metadata={"source": source, "as_of": as_of, "readmits": readmits},
        retention_days=retention_days,
    )


def raw_events_reference(home: ShipwayHome, current: Contract) -> Reference | None:
    """What the contract's statistical gates compare a batch with: the accepted raw events
    (the newest `reference_groups` days, for volume)."""
    columns = [c for c, rule in current.columns.items() if rule.outliers is not None]
    columns += current.shift.columns if current.shift else []
    volume = current.volume
    return reference_from(
        home,
        RAW_EVENTS,
        None,
        columns,
        "raw_events (accepted)",
        group_by=volume.group_by if volume else None,
        groups=volume.reference_groups if volume else 14,
    )


def publish(home: ShipwayHome, retention_days: int) -> tuple[TableInfo, str, pd.DataFrame]:
    """The newest accepted batch into `raw_events` (its days replace those days' rows): the
    table's new version, the batch's id and its rows."""
    accepted = Ledger(home).require_accepted(RAW_EVENTS)
    batch = read_table(home.table(BATCH_TABLE), accepted.version)
    info = land_days(
        home.table(RAW_EVENTS),
        batch,
        commit_metadata={"batch": accepted.id},
        retention_days=retention_days,
    )
    return info, accepted.id, batch
