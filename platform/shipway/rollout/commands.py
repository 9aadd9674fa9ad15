"""`shipway rollout status|pause|resume|promote|abort <model>`: the rollout, for people;
`shipway render seldon <model>`: the same point of it as Seldon Core manifests.

Changes go through the same controller the sensor runs (same lock, same audit trail), so a
person and the sensor never act on a rollout at once; each records who acted and why.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from shipway.errors import ServiceError, ShipwayError
from shipway.models.catalog import DeclaredModel
from shipway.paths import ShipwayHome
from shipway.release.audit import Audit, AuditEntry, identity
from shipway.release.commands import tracking_uri
from shipway.rollout.controller import PAUSE, PROMOTE, RESUME, ROLLBACK, Controller, Decision
from shipway.rollout.effects import champion_setter
from shipway.rollout.state import RolloutState, RolloutStore
from shipway.serving import seldon
from shipway.serving.client import ServingClient
from shipway.serving.state import SavedState

COMMANDS = {"pause": PAUSE, "resume": RESUME, "promote": PROMOTE, "abort": ROLLBACK}


def _at(seconds: float) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%H:%M:%S}"


def status_lines(home: ShipwayHome, declared: DeclaredModel) -> list[str]:
    name, policy = declared.declaration.name, declared.declaration.rollout
    state = RolloutStore(home.served.rollouts).load(name)
    if state is None:
        return [f"{name}: no rollout yet"]
    weights, shadow = state.traffic(policy)
    lines = [
        f"{name} v{state.challenger} against champion v{state.champion or '-'}: {state.phase}"
        + (" (paused)" if state.paused else "")
        + f", since {_at(state.started)}",
        f"  policy: {policy.strategy}, steps {policy.steps}, every {policy.interval_seconds}s, "
        f"failed checks {state.failed}/{policy.failed_checks}, no data: {policy.no_data}",
        f"  intended traffic: {weights}" + (f", shadow v{shadow}" if shadow else ""),
    ]
    try:
        served = ServingClient.for_home(home.serving).status().get(name, {})
        lines.append(
            f"  served traffic:   {served.get('weights')}"
            + (f", shadow v{served['shadow']}" if served.get("shadow") else "")
        )
        lines.append(
            "  model servers:    "
            + ", ".join(
                f"v{v} {sum(r['running'] for r in s['replicas'])}/{len(s['replicas'])} running"
                for v, s in served.get("versions", {}).items()
            )
        )
    except ServiceError as exc:
        lines.append(f"  served traffic:   unknown ({exc})")
    if state.reason:
        lines.append(f"  {state.reason}")
    for d in state.decisions[-10:]:
        lines.append(f"  {_at(d['at'])} {d['action']:<8} {d.get('reason', '')}")
    return lines


def command(home: ShipwayHome, declared: DeclaredModel, action: str, reason: str) -> RolloutState:
    name, policy = declared.declaration.name, declared.declaration.rollout
    who = identity()

    def record(state: RolloutState, decision: Decision) -> None:
        Audit(home).append(
            AuditEntry(
                model=name,
                version=state.challenger,
                event="rollout",
                state=decision.action,
                actor=who,
                reason=decision.reason,
                details={"champion": state.champion, "phase": state.phase, "by": "command"},
            )
        )

    controller = Controller(
        name,
        policy,
        RolloutStore(home.served.rollouts),
        ServingClient.for_home(home.serving),
        champion_setter(tracking_uri(), name),
        record,
    )
    return controller.command(COMMANDS[action], f"{action} by {who}: {reason}", time.time())


def served_point(home: ShipwayHome, declared: DeclaredModel) -> tuple[dict[str, int], str | None]:
    """What the model serves now: its rollout state's point, else what serving saved."""
    name, policy = declared.declaration.name, declared.declaration.rollout
    state = RolloutStore(home.served.rollouts).load(name)
    if state is not None:
        return state.traffic(policy)
    saved = SavedState.load(home.served.state).models.get(name)
    if not saved or not saved.get("weights"):
        raise ShipwayError(
            f"{name} serves nothing in {home.serving}: deploy a version first "
            f"(materialize {declared.declaration.deployment})"
        )
    return dict(saved["weights"]), saved.get("shadow")


def render_seldon(
    home: ShipwayHome, declared: DeclaredModel, out_dir: Path, storage: str, namespace: str
) -> list[Path]:
    """Seldon Core v2 `Model`s and the `Experiment` for the model's current point."""
    weights, shadow = served_point(home, declared)
    declaration = declared.declaration
    objects = seldon.manifests(
        declaration.name, weights, shadow, storage, namespace, declaration.serving.replicas
    )
    return seldon.write_manifests(objects, out_dir)
