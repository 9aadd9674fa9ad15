"""Landing raw events: a batch written as a new version of `raw_events_batch`, audited by the
raw-events contract (`shipway.data.admission`), and only then published to `raw_events`, the
table dbt reads (write, audit, publish). Shared by every model.

Two landings may run at once: each batch version records the run that wrote it, its contract
audits that version (not the newest), and publishing takes, under a lock, every accepted batch
`raw_events` does not hold yet, in landing order. So a batch accepted in the ledger is
published by the next publish even if the process died between the two, and one accepted
batch never overwrites the days of a batch landed after it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shipway.data.admission import Ledger, reference_from
from shipway.data.contracts import Contract
from shipway.data.events import SCENARIOS, event_table
from shipway.data.gates import Reference
from shipway.data.lake import (
    Rows,
    TableInfo,
    committed_values,
    land_days,
    overwrite_table,
    read_arrow,
    read_table,
    table_exists,
    table_info,
    version_with,
)
from shipway.errors import ShipwayError
from shipway.files import locked
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
) -> tuple[Rows, str]:
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
    events = event_table(start, days, scenario, seed, events_per_day)
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
    events: Rows,
    source: str,
    as_of: str,
    readmits: str,
    retention_days: int,
    run_id: str = "",
) -> TableInfo:
    """The batch as a new version of `raw_events_batch`, before its contract audits it; the
    version records `run_id`, the run that wrote it."""
    return overwrite_table(
        home.table(BATCH_TABLE),
        events,
        commit_metadata={"source": source, "as_of": as_of, "readmits": readmits, "run_id": run_id},
        retention_days=retention_days,
    )


def batch_of_run(home: ShipwayHome, run_id: str) -> TableInfo:
    """The batch version `run_id` wrote; the newest when it wrote none (the check run alone)."""
    path = home.table(BATCH_TABLE)
    return table_info(path, version_with(path, "run_id", run_id) if run_id else None)


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


def published_batches(home: ShipwayHome) -> dict[str, int]:
    """The batches `raw_events` holds: batch id → the table version that published it."""
    return {batch: version for version, batch in committed_values(home.table(RAW_EVENTS), "batch")}


def publish(home: ShipwayHome, retention_days: int) -> tuple[TableInfo, list[str], int]:
    """Every accepted batch `raw_events` does not hold yet, oldest landing first (each one's
    days replace those days' rows): the table's version after, the batches published and
    their rows. A batch older than one already published gives only the days no later batch
    holds. Under a lock: two publishers never interleave."""
    with locked(home.lake / f".{RAW_EVENTS}.publish.lock"):
        ledger = Ledger(home)
        ledger.require_accepted(RAW_EVENTS)
        accepted = {e.version: e for e in ledger.entries(RAW_EVENTS) if e.status == "accepted"}
        published = published_batches(home)
        held = {v for v, entry in accepted.items() if entry.id in published}
        pending = sorted(set(accepted) - held)
        done, rows, info = [], 0, None
        for version in pending:
            batch = read_arrow(home.table(BATCH_TABLE), version)
            later = [v for v in held if v > version]
            if later:
                days = {
                    str(d)
                    for v in later
                    for d in read_table(home.table(BATCH_TABLE), v, ["event_date"])["event_date"]
                }
                stamped = pc.cast(batch["event_date"], pa.string())
                batch = batch.filter(pc.invert(pc.is_in(stamped, pa.array(sorted(days)))))
            info = land_days(
                home.table(RAW_EVENTS),
                batch,
                commit_metadata={"batch": accepted[version].id},
                retention_days=retention_days,
            )
            held.add(version)
            done.append(accepted[version].id)
            rows += batch.num_rows
        if info is None:  # nothing new: the table as it is
            info = table_info(home.table(RAW_EVENTS), digest=True)
        return info, done, rows
