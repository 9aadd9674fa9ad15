"""`shipway data`: land batches, inspect the quarantine, re-admit a fixed batch. Landing runs the
landing job the caller hands in (the code location's `land_raw_events`, the one the UI runs), so
a batch landed here is audited by the same contract and shows up in the asset's history."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipway.data.admission import Admission, Ledger
from shipway.data.lake import read_table, table_exists, table_info
from shipway.errors import ShipwayError, run_failures
from shipway.paths import ShipwayHome

if TYPE_CHECKING:
    from dagster import JobDefinition

BATCH_STEP = "raw_events_batch"


@dataclass(frozen=True)
class LandingOutcome:
    admission: Admission | None
    gate_lines: list[str]

    @property
    def accepted(self) -> bool:
        return self.admission is not None and self.admission.status == "accepted"


def land(home: ShipwayHome, job: JobDefinition, config: dict[str, Any]) -> LandingOutcome:
    """Run the landing `job` in-process against the home's Dagster instance, with `config` for
    its batch (a file or generated days, the landing time)."""
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(home.prepare_dagster()))
    result = job.execute_in_process(
        instance=instance,
        # The outcome is printed from the gate results; the run's own log stays in Dagster.
        run_config={
            "ops": {BATCH_STEP: {"config": config}},
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        },
        raise_on_error=False,
    )
    lines = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.asset_check_evaluation_data
            verdict = "ok  " if check.passed else f"{check.severity.value.lower():4}"
            lines.append(f"{verdict} {check.check_name:<10} {check.description or ''}")
    failures = run_failures(result)
    if failures:
        raise ShipwayError(
            f"landing failed: {'; '.join(failures)} (the run's full log: run {result.run_id} "
            f"in the Dagster UI, `shipway up`)"
        )
    entries = [e for e in Ledger(home).entries("raw_events") if e.run_id == result.run_id]
    return LandingOutcome(entries[-1] if entries else None, lines)


def quarantine_lines(home: ShipwayHome) -> list[str]:
    entries = Ledger(home).quarantine()
    if not entries:
        return ["no quarantined batches"]
    lines = []
    for entry, readmitted_as in entries:
        state = f"re-admitted as {readmitted_as}" if readmitted_as else "quarantined"
        lines.append(
            f"{entry.id:<22} {state:<28} {entry.recorded_at:%Y-%m-%d %H:%M} "
            f"failed: {', '.join(entry.failed_gates)}"
        )
    return lines


def show_lines(home: ShipwayHome, batch_id: str, rows: int) -> list[str]:
    entry = Ledger(home).rejected(batch_id)
    frame = read_table(home.table(entry.table), entry.version)
    info = table_info(home.table(entry.table), entry.version)
    lines = [
        f"{entry.id}: {entry.table} v{entry.version}, {len(frame)} rows, rejected "
        f"{entry.recorded_at:%Y-%m-%d %H:%M} (run {entry.run_id})",
        f"source: {info.commit_metadata.get('source', '?')}",
        f"columns: {', '.join(f'{name}: {dtype}' for name, dtype in info.columns)}",
        *[f"reason: {reason}" for reason in entry.reasons],
        f"first {min(rows, len(frame))} rows:",
        frame.head(rows).to_string(index=False),
    ]
    return lines


def export(home: ShipwayHome, batch_id: str, destination: Path) -> int:
    entry = Ledger(home).rejected(batch_id)
    frame = read_table(home.table(entry.table), entry.version)
    destination.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(destination, index=False)
    return len(frame)


def readmit(
    home: ShipwayHome, job: JobDefinition, batch_id: str, fixed: Path | None, as_of: str | None
) -> LandingOutcome:
    """Land a quarantined batch again (fixed, or as it was under a fixed contract)."""
    entry = Ledger(home).rejected(batch_id)
    source = fixed
    if source is None:
        source = home.root / "quarantine" / f"{entry.table}-v{entry.version}.parquet"
        export(home, batch_id, source)
    info = table_info(home.table(entry.table), entry.version)
    landed_at = as_of or info.commit_metadata.get("as_of", "")
    return land(home, job, {"from_file": str(source), "as_of": landed_at, "readmits": batch_id})


def status_lines(home: ShipwayHome, training_sets: list[str]) -> list[str]:
    """Latest and accepted version of raw events and of each model's training set (each is
    its own table and dataset)."""
    ledger = Ledger(home)
    lines = []
    datasets = [("raw_events", "raw_events_batch"), *((t, t) for t in training_sets)]
    width = max(len(d) for d, _ in datasets)
    for dataset, table in datasets:
        if not table_exists(home.table(table)):
            lines.append(f"{dataset:<{width}} no versions yet")
            continue
        latest = table_info(home.table(table)).version
        accepted = ledger.last_accepted(dataset)
        accepted_text = f"accepted v{accepted.version}" if accepted else "nothing accepted yet"
        open_entries = [e for e, again in ledger.quarantine(dataset) if again is None]
        lines.append(
            f"{dataset:<{width}} {table} latest v{latest}, {accepted_text}, "
            f"{len(open_entries)} in quarantine"
        )
    return lines
