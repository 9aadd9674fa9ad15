"""Write, audit, publish: which version of a dataset downstream may read, and why.

A dataset version is written first, then its contract's gates run on it. The outcome goes into
the admission ledger, a Delta table in the lake: `accepted` (downstream reads the newest
accepted version) or `rejected` (the version stays in its table, quarantined, with every
failing gate's message). Nothing is deleted: a rejected batch can be inspected, exported, fixed
and landed again as a re-admission of its quarantine entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import pandas as pd

from shipway.data.contracts import Contract
from shipway.data.gates import Batch, GateResult, Reference, evaluate
from shipway.data.lake import arrow_schema, read_table, table_exists, table_info
from shipway.data.ledger import DeltaLedger
from shipway.errors import ShipwayError
from shipway.paths import ShipwayHome

LEDGER_TABLE = "admission_ledger"
Status = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class Admission:
    dataset: str
    table: str
    version: int
    status: Status
    recorded_at: datetime
    run_id: str
    failed_gates: list[str]
    reasons: list[str]
    readmits: str | None = None

    @property
    def id(self) -> str:
        """How users name a batch: `<dataset>@v<version of its table>`."""
        return f"{self.dataset}@v{self.version}"


class Ledger:
    def __init__(self, home: ShipwayHome) -> None:
        self.table = DeltaLedger(home.table(LEDGER_TABLE), "recorded_at")

    def record(self, admission: Admission) -> None:
        self.table.append(
            {
                "dataset": admission.dataset,
                "table": admission.table,
                "version": admission.version,
                "status": admission.status,
                "recorded_at": admission.recorded_at,
                "run_id": admission.run_id,
                "failed_gates": json.dumps(admission.failed_gates),
                "reasons": json.dumps(admission.reasons),
                "readmits": admission.readmits or "",
            }
        )

    def entries(self, dataset: str | None = None) -> list[Admission]:
        where = {"dataset": dataset} if dataset is not None else {}
        return [
            Admission(
                dataset=str(row["dataset"]),
                table=str(row["table"]),
                version=int(row["version"]),
                status="accepted" if row["status"] == "accepted" else "rejected",
                recorded_at=pd.Timestamp(row["recorded_at"]).to_pydatetime(),
                run_id=str(row["run_id"]),
                failed_gates=json.loads(str(row["failed_gates"])),
                reasons=json.loads(str(row["reasons"])),
                readmits=str(row["readmits"]) or None,
            )
            for row in self.table.records(**where)
        ]

    def last_accepted(self, dataset: str) -> Admission | None:
        accepted = [e for e in self.entries(dataset) if e.status == "accepted"]
        return accepted[-1] if accepted else None

    def require_accepted(self, dataset: str) -> Admission:
        accepted = self.last_accepted(dataset)
        if accepted is None:
            raise ShipwayError(
                f"{dataset} has no accepted version yet: every version so far failed its "
                f"contract (see `shipway data quarantine`) or none was written"
            )
        return accepted

    def quarantine(self, dataset: str | None = None) -> list[tuple[Admission, str | None]]:
        """Rejected batches, newest last, each with the id that re-admitted it (if any)."""
        entries = self.entries(dataset)
        readmitted = {e.readmits: e.id for e in entries if e.status == "accepted" and e.readmits}
        latest: dict[str, Admission] = {}
        for entry in entries:
            if entry.status == "rejected":
                latest[entry.id] = entry
        return [(e, readmitted.get(e.id)) for e in latest.values()]

    def rejected(self, batch_id: str) -> Admission:
        found = {e.id: e for e, _ in self.quarantine()}
        if batch_id not in found:
            known = ", ".join(found) or "none"
            raise ShipwayError(f"no quarantined batch {batch_id!r}; quarantined: {known}")
        return found[batch_id]


@dataclass(frozen=True)
class Audit:
    admission: Admission
    results: list[GateResult]

    @property
    def accepted(self) -> bool:
        return self.admission.status == "accepted"


def audit(
    home: ShipwayHome,
    contract: Contract,
    table: str,
    reference: Reference | None,
    run_id: str,
    as_of: datetime | None = None,
    version: int | None = None,
) -> Audit:
    """Run the contract on a version of `table` and record the outcome in the ledger."""
    path = home.table(table)
    info = table_info(path, version)
    batch = Batch(read_table(path, info.version), arrow_schema(path, info.version))
    results = evaluate(contract, batch, as_of, reference)
    blocking = [r for r in results if r.blocks]
    admission = Admission(
        dataset=contract.dataset,
        table=table,
        version=info.version,
        status="rejected" if blocking else "accepted",
        recorded_at=datetime.now(UTC),
        run_id=run_id,
        failed_gates=[r.gate for r in blocking],
        reasons=[r.message() for r in blocking],
        readmits=info.commit_metadata.get("readmits") or None,
    )
    Ledger(home).record(admission)
    return Audit(admission, results)


def reference_from(
    home: ShipwayHome,
    table: str,
    version: int | None,
    columns: Sequence[str],
    label: str,
    group_by: str | None = None,
    groups: int = 14,
) -> Reference | None:
    """The last accepted data as a reference: the newest `groups` groups if grouped."""
    path = home.table(table)
    if not table_exists(path):
        return None
    info = table_info(path, version)
    available = {name for name, _ in info.columns}
    wanted = sorted({*columns, *([group_by] if group_by else [])} & available)
    frame = read_table(path, info.version, columns=wanted)
    sizes = None
    if group_by and group_by in frame.columns:
        sizes = frame.groupby(group_by, sort=True).size()
        frame = frame[frame[group_by].isin(sizes.index[-groups:])]
    return Reference(f"{label} v{info.version}", frame, sizes)


def accepted_reference(home: ShipwayHome, table: str, contract: Contract) -> Reference | None:
    """The dataset's own last accepted version, every contracted column: what a training set's
    statistical gates compare its next version with (None before one is accepted)."""
    accepted = Ledger(home).last_accepted(contract.dataset)
    if accepted is None:
        return None
    columns = list(contract.columns)
    return reference_from(home, table, accepted.version, columns, f"{table} (accepted)")
