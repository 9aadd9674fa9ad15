"""The rollout controller: Flagger's analysis loop, run by each model's rollout sensor.

Each tick, under the model's rollout lock:

1. reconcile: the serving weights are set to what the saved state means (a crash between saving
   a decision and applying it is repaired here, whichever process died);
2. after a full interval at the current point, analyse it (Prometheus) and decide: hold (no
   data, policy `hold`), fail (a check failed; `failed_checks` in a row roll back), advance to
   the next step, promote after the last one, or roll back;
3. append the decision to the release audit, then save it, then apply it: weights, the MLflow
   `champion` alias, stopping a version. Intent before effect: an audit that cannot be written
   stops the decision there (nothing saved, nothing applied; the next tick decides again), so
   no promotion or rollback ever happens that the audit does not show. A process killed
   between the audit and the save leaves an audited decision not yet taken: the next tick
   takes it again (and audits it again), never one the audit lacks.

`decide` is pure (state, policy, analysis, time → decision), so every rule is tested without
servers; `Controller.tick` does the rest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shipway.errors import BadRequest
from shipway.models.declaration import RolloutPolicy
from shipway.rollout.analysis import Analysis, Check, checks
from shipway.rollout.state import (
    Phase,
    RolloutState,
    RolloutStore,
)

log = logging.getLogger(__name__)

WAIT = "wait"
PAUSED = "paused"
HOLD = "hold"
FAIL = "fail"
STAY = "stay"
ADVANCE = "advance"
PROMOTE = "promote"
ROLLBACK = "rollback"
RETIRE = "retire"
DONE = "done"
PAUSE = "pause"
RESUME = "resume"
# Decisions that change nothing: not written to the audit trail.
QUIET = (WAIT, PAUSED, DONE)


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    checks: list[Check] = field(default_factory=list)
    analysis: Analysis | None = None

    def metadata(self) -> dict[str, Any]:
        values: dict[str, Any] = {"action": self.action, "reason": self.reason}
        if self.analysis is not None:
            values.update(
                {f"analysis_{k}": v for k, v in self.analysis.as_dict().items() if v is not None}
            )
        values.update({f"check_{c.name}": c.line() for c in self.checks})
        return values


def start(
    model: str, challenger: str, champion: str | None, policy: RolloutPolicy, now: float
) -> RolloutState:
    shadow_first = policy.strategy in ("shadow_then_canary", "blue_green") and champion
    return RolloutState(
        model=model,
        challenger=challenger,
        champion=champion,
        phase=Phase.PROMOTED
        if champion is None
        else Phase.SHADOW
        if shadow_first
        else Phase.CANARY,
        step=-1 if shadow_first else 0,
        step_started=now,
        started=now,
        reason="first version: champion at once" if champion is None else "started",
    )


def _where(state: RolloutState, policy: RolloutPolicy) -> str:
    if state.phase == Phase.SHADOW:
        return "shadow (0%, mirrored)"
    return f"{state.phase} {state.weight(policy)}%"


def decide(
    state: RolloutState, policy: RolloutPolicy, analysis: Analysis | None, now: float
) -> Decision:
    """What to do at `now`. `analysis` is of the interval since `state.step_started`; it is
    only read once a full interval has passed."""
    if state.phase == Phase.PROMOTED:
        if not state.retired and state.retire_at is not None and now >= state.retire_at:
            return Decision(RETIRE, f"grace over: stop v{state.champion}")
        return Decision(DONE, f"v{state.challenger} promoted")
    if state.phase == Phase.ROLLED_BACK:
        return Decision(DONE, f"v{state.challenger} rolled back: {state.reason}")
    if state.paused:
        return Decision(PAUSED, f"paused at {_where(state, policy)}")
    if now - state.step_started < policy.interval_seconds or analysis is None:
        left = policy.interval_seconds - (now - state.step_started)
        return Decision(WAIT, f"analysing {_where(state, policy)}, {max(left, 0):.0f}s left")
    if analysis.requests < policy.min_requests:
        seen = f"{analysis.requests:.0f} requests < min_requests {policy.min_requests}"
        if policy.no_data == "hold" and state.held + 1 < policy.max_hold_intervals:
            where = _where(state, policy)
            return Decision(HOLD, f"no data ({seen}): holding at {where}", [], analysis)
        no_data = Check("requests", analysis.requests, policy.min_requests, False)
        return _failed(state, policy, [no_data], analysis, f"no data ({seen})")
    found = checks(analysis, policy.checks, policy.min_requests)
    failed = [c for c in found if not c.passed]
    missing = [c.name for c in failed if c.observed is None]
    if missing and len(missing) == len(failed):
        # Traffic flowed but a metric did not arrive (a scrape not yet in the window): the
        # same no-data policy as too few requests, not a failed check of its own.
        seen = f"no data for {', '.join(missing)}"
        if policy.no_data == "hold" and state.held + 1 < policy.max_hold_intervals:
            return Decision(HOLD, f"{seen}: holding at {_where(state, policy)}", found, analysis)
    if failed:
        return _failed(state, policy, found, analysis, "; ".join(c.line() for c in failed))
    passed = "; ".join(c.line() for c in found)
    if state.phase == Phase.SHADOW:
        if state.shadow_passed + 1 < policy.shadow_intervals:
            return Decision(STAY, f"shadow interval passed ({passed})", found, analysis)
        first = policy.steps[-1] if policy.strategy == "blue_green" else policy.steps[0]
        return Decision(ADVANCE, f"shadow passed ({passed}): to {first}%", found, analysis)
    if state.step == len(policy.steps) - 1:
        return Decision(PROMOTE, f"100% passed ({passed})", found, analysis)
    nxt = policy.steps[state.step + 1]
    return Decision(
        ADVANCE, f"{policy.steps[state.step]}% passed ({passed}): to {nxt}%", found, analysis
    )


def _failed(
    state: RolloutState,
    policy: RolloutPolicy,
    found: list[Check],
    analysis: Analysis,
    why: str,
) -> Decision:
    count = state.failed + 1
    if count >= policy.failed_checks:
        return Decision(
            ROLLBACK,
            f"{why}; failed checks {count}/{policy.failed_checks}: back to v{state.champion}",
            found,
            analysis,
        )
    return Decision(FAIL, f"{why}; failed checks {count}/{policy.failed_checks}", found, analysis)


def apply(
    state: RolloutState, decision: Decision, policy: RolloutPolicy, now: float
) -> RolloutState:
    """The state after `decision` (a new object; `state` is left as it was)."""
    new = dataclasses.replace(state, decisions=list(state.decisions))
    action = decision.action
    if action in (WAIT, PAUSED, DONE):
        return new
    if action == HOLD:
        new.held += 1
        new.step_started = now
    elif action == FAIL:
        new.failed += 1
        new.held = 0
        new.step_started = now
    elif action == STAY:
        new.shadow_passed += 1
        new.failed = new.held = 0
        new.step_started = now
    elif action == ADVANCE:
        if new.phase == Phase.SHADOW:
            new.phase = Phase.CANARY
            new.step = len(policy.steps) - 1 if policy.strategy == "blue_green" else 0
        else:
            new.step += 1
        new.failed = new.held = 0
        new.step_started = now
    elif action == PROMOTE:
        new.phase = Phase.PROMOTED
        new.retire_at = now + policy.grace_seconds
        new.reason = decision.reason
    elif action == ROLLBACK:
        new.phase = Phase.ROLLED_BACK
        new.reason = decision.reason
    elif action == RETIRE:
        new.retired = True
    new.decisions.append(
        {
            "at": now,
            "action": action,
            "reason": decision.reason,
            "weight": new.weight(policy),
            "analysis": decision.analysis.as_dict() if decision.analysis else None,
        }
    )
    return new


class Serving(Protocol):
    """What the controller needs of serving: `ServingClient` (the embedded control plane) and
    `SeldonServing` (Seldon Core on Kubernetes) have it."""

    def status(self) -> dict[str, Any]: ...

    def set_traffic(
        self, model: str, weights: dict[str, int], shadow: str | None = None
    ) -> dict[str, Any]: ...

    def undeploy(self, model: str, version: str) -> None: ...


@dataclass
class Controller:
    """One model's rollout, with what it acts on."""

    model: str
    policy: RolloutPolicy
    store: RolloutStore
    serving: Serving
    set_champion: Callable[[str], None]
    record: Callable[[RolloutState, Decision], None]
    """Appends a decision to the release audit."""
    analyse: Callable[[RolloutState, int], Analysis] | None = None
    """Analysis of the interval of this many seconds that just ended (ticks need it)."""

    def tick(self, now: float) -> tuple[RolloutState | None, Decision]:
        with self.store.locked(self.model):
            state = self.store.load(self.model)
            if state is None:
                return None, Decision(DONE, f"no rollout of {self.model}")
            self._reconcile(state)
            analysis = None
            elapsed = now - state.step_started
            if not state.finished and not state.paused and elapsed >= self.policy.interval_seconds:
                assert self.analyse is not None, "a tick analyses: give the controller analyse"
                analysis = self.analyse(state, int(elapsed))
            decision = decide(state, self.policy, analysis, now)
            new = apply(state, decision, self.policy, now)
            if decision.action not in QUIET:
                log.info("%s v%s: %s", self.model, new.challenger, decision.reason)
                self.record(new, decision)
            self.store.save(new)
            self._effects(new, decision)
            return new, decision

    def command(self, action: str, reason: str, now: float) -> RolloutState:
        """A person's decision: pause, resume, promote now, or abort (roll back now)."""
        with self.store.locked(self.model):
            state = self.store.load(self.model)
            if state is None:
                raise BadRequest(f"{self.model} has no rollout")
            if state.finished:
                raise BadRequest(
                    f"{self.model} v{state.challenger}'s rollout is over ({state.phase}); "
                    "nothing to change"
                )
            if action in (PAUSE, RESUME):
                new = dataclasses.replace(
                    state, paused=action == PAUSE, decisions=list(state.decisions)
                )
                new.decisions.append({"at": now, "action": action, "reason": reason})
                decision = Decision(action, reason)
            elif action in (PROMOTE, ROLLBACK):
                decision = Decision(action, reason)
                new = apply(state, decision, self.policy, now)
            else:
                raise BadRequest(f"unknown rollout command {action!r}")
            self.record(new, decision)
            self.store.save(new)
            self._effects(new, decision)
            return new

    def _reconcile(self, state: RolloutState) -> None:
        """Serve what the state means; a promoted or rolled-back state is re-asserted too."""
        if state.phase == Phase.PROMOTED:
            self.set_champion(state.challenger)
        served = self.serving.status().get(self.model)
        if served is None:
            return
        weights, shadow = state.traffic(self.policy)
        running = served.get("versions", {})
        if any(v not in running for v in weights):
            return
        current = {v: w for v, w in served.get("weights", {}).items() if w > 0}
        if current != {v: w for v, w in weights.items() if w > 0} or served.get("shadow") != shadow:
            log.warning(
                "%s serves %s (shadow %s); the rollout state says %s (shadow %s): re-applying",
                self.model,
                current,
                served.get("shadow"),
                weights,
                shadow,
            )
            self.serving.set_traffic(self.model, weights, shadow)

    def _effects(self, state: RolloutState, decision: Decision) -> None:
        if decision.action in QUIET or decision.action in (HOLD, FAIL, STAY, PAUSE, RESUME):
            return
        if decision.action == RETIRE:
            self._stop(state.champion)
            return
        weights, shadow = state.traffic(self.policy)
        self.serving.set_traffic(self.model, weights, shadow)
        if decision.action == PROMOTE:
            self.set_champion(state.challenger)
        elif decision.action == ROLLBACK:
            self._stop(state.challenger)

    def _stop(self, version: str | None) -> None:
        running = self.serving.status().get(self.model, {}).get("versions", {})
        if version is not None and version in running:
            self.serving.undeploy(self.model, version)
