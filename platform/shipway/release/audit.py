"""The release audit: one append-only Delta table of every gate verdict, approval, rejection and
reproduction, each linked to the MLflow version and run, the Dagster run and the data versions.

Shipway only ever appends to it (Delta keeps every version, so an edit would show in its
history too). A version's release state is its latest gate or approval entry; the deployment,
`shipway models pending` and the approval sensor all read it from here, and MLflow's
`shipway.release` tag mirrors it for people browsing the registry.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from shipway.data.ledger import DeltaLedger
from shipway.errors import BadRequest, NotFound
from shipway.files import locked
from shipway.paths import ShipwayHome
from shipway.release.report import AWAITING_APPROVAL, PROMOTED

AUDIT_TABLE = "release_audit"
APPROVED = "approved"
REJECTED = "rejected"
# States a version may reach traffic from.
RELEASABLE = (PROMOTED, APPROVED)
# Entries that set a version's release state (reproductions are recorded, not states).
STATE_EVENTS = ("gate", "approval")
IDENTITY_ENV = "SHIPWAY_IDENTITY"


def identity() -> str:
    """Who is acting: `$SHIPWAY_IDENTITY` (e.g. set by CI or SSO), else the OS user."""
    return os.environ.get(IDENTITY_ENV) or getpass.getuser()


@dataclass(frozen=True)
class AuditEntry:
    model: str
    version: str
    event: str
    """gate | approval | reproduce"""
    state: str
    actor: str
    reason: str = ""
    mlflow_run_id: str = ""
    dagster_run_id: str = ""
    data_versions: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Audit:
    def __init__(self, home: ShipwayHome) -> None:
        self.table = DeltaLedger(home.table(AUDIT_TABLE), "at")
        self.lock_path = home.lake / f".{AUDIT_TABLE}.lock"

    @contextlib.contextmanager
    def _deciding(self) -> Iterator[None]:
        """One decision at a time across processes: a version's state is read and its
        decision appended under this lock, so of two at once the second sees the first."""
        with locked(self.lock_path):
            yield

    def append(self, entry: AuditEntry) -> AuditEntry:
        self.table.append(
            {
                "at": entry.at,
                "model": entry.model,
                "version": entry.version,
                "event": entry.event,
                "state": entry.state,
                "actor": entry.actor,
                "reason": entry.reason,
                "mlflow_run_id": entry.mlflow_run_id,
                "dagster_run_id": entry.dagster_run_id,
                "data_versions": json.dumps(entry.data_versions, sort_keys=True),
                "details": json.dumps(entry.details, sort_keys=True, default=str),
            }
        )
        return entry

    def entries(self, model: str | None = None, version: str | None = None) -> list[AuditEntry]:
        where = {k: v for k, v in (("model", model), ("version", version)) if v is not None}
        return [
            AuditEntry(
                model=str(r["model"]),
                version=str(r["version"]),
                event=str(r["event"]),
                state=str(r["state"]),
                actor=str(r["actor"]),
                reason=str(r["reason"]),
                mlflow_run_id=str(r["mlflow_run_id"]),
                dagster_run_id=str(r["dagster_run_id"]),
                data_versions=json.loads(str(r["data_versions"])),
                details=json.loads(str(r["details"])),
                at=pd.Timestamp(r["at"]).to_pydatetime(),
            )
            for r in self.table.records(**where)
        ]

    def state(self, model: str, version: str) -> AuditEntry | None:
        """The entry that set the version's current release state, if any."""
        states = [e for e in self.entries(model, version) if e.event in STATE_EVENTS]
        return states[-1] if states else None

    def pending(self, model: str | None = None) -> list[AuditEntry]:
        latest: dict[tuple[str, str], AuditEntry] = {}
        for entry in self.entries(model):
            if entry.event in STATE_EVENTS:
                latest[(entry.model, entry.version)] = entry
        return [e for e in latest.values() if e.state == AWAITING_APPROVAL]

    def decide(self, model: str, version: str, approve: bool, reason: str) -> AuditEntry:
        """Record a named human's approval or rejection of a release awaiting it. A rejection
        is final: the version can never be approved afterwards; of an approval and a rejection
        at once, the first decides and the second is refused."""
        if not reason.strip():
            raise BadRequest("--reason is required: say why, for the audit trail")
        with self._deciding():
            return self._decide(model, version, approve, reason)

    def _decide(self, model: str, version: str, approve: bool, reason: str) -> AuditEntry:
        current = self.state(model, version)
        if current is None:
            raise NotFound(
                f"{model} v{version} has no release verdict: its gate has not run "
                "(materialize the model, whose gate check judges it)"
            )
        if current.state != AWAITING_APPROVAL:
            final = " (a rejection is final)" if current.state == REJECTED else ""
            raise BadRequest(
                f"{model} v{version} is not awaiting approval: it is {current.state}{final}, "
                f"recorded {current.at:%Y-%m-%d %H:%M:%S} UTC by {current.actor}"
            )
        return self.append(
            AuditEntry(
                model=model,
                version=version,
                event="approval",
                state=APPROVED if approve else REJECTED,
                actor=identity(),
                reason=reason.strip(),
                mlflow_run_id=current.mlflow_run_id,
                data_versions=current.data_versions,
                details={"approval_reasons": current.details.get("approval_reasons", [])},
            )
        )
