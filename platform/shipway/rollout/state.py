"""A rollout's state on disk: one JSON file per model, replaced atomically under a lock.

The file is the rollout's truth. The serving weights are derived from it (`RolloutState.traffic`)
and re-applied by the controller whenever they differ, so a crash between writing the state and
setting the weights (kill -9 of any process) resumes at the state's step, never between steps.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipway.files import locked as file_locked
from shipway.files import write_atomic

if TYPE_CHECKING:
    from shipway.models.declaration import RolloutPolicy


class Phase:
    """Where a rollout is: mirrored traffic only, a canary step, or finished either way (plain
    strings: they are saved as they are, and shown in Dagster and Prometheus)."""

    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


FINISHED = (Phase.PROMOTED, Phase.ROLLED_BACK)


@dataclass
class RolloutState:
    model: str
    challenger: str
    champion: str | None
    phase: str
    """A `Phase`: shadow | canary | promoted | rolled_back"""
    step: int
    """Index into the policy's steps while in canary; -1 in shadow."""
    step_started: float
    started: float
    failed: int = 0
    """Failed checks in a row at this point."""
    held: int = 0
    """Intervals in a row without enough data."""
    shadow_passed: int = 0
    paused: bool = False
    retire_at: float | None = None
    """Promoted: when the old champion stops (it keeps running for an instant revert)."""
    retired: bool = False
    reason: str = ""
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def weight(self, policy: RolloutPolicy) -> int:
        """The challenger's share of traffic at this point."""
        if self.phase == Phase.CANARY:
            return policy.steps[self.step]
        return 100 if self.phase == Phase.PROMOTED else 0

    def traffic(self, policy: RolloutPolicy) -> tuple[dict[str, int], str | None]:
        """The serving weights (and shadow) this state means."""
        if self.champion is None or self.phase == Phase.PROMOTED:
            return {self.challenger: 100}, None
        if self.phase == Phase.ROLLED_BACK:
            return {self.champion: 100}, None
        weight = self.weight(policy)
        weights = {self.champion: 100 - weight, self.challenger: weight}
        return weights, self.challenger if self.phase == Phase.SHADOW else None


class RolloutStore:
    """`<folder>/<model>.json` (`ServingHome.rollouts`): the current (or last) rollout of each
    model."""

    def __init__(self, folder: Path) -> None:
        self.root = folder

    def path(self, model: str) -> Path:
        return self.root / f"{model}.json"

    def load(self, model: str) -> RolloutState | None:
        path = self.path(model)
        if not path.exists():
            return None
        return RolloutState(**json.loads(path.read_text()))

    def models(self) -> list[str]:
        """The models with a rollout state file."""
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.exists() else []

    def save(self, state: RolloutState) -> None:
        write_atomic(self.path(state.model), json.dumps(asdict(state), indent=1))

    def serving_champion(self, model: str) -> str | None:
        """The version serving all traffic, or the champion of a rollout under way (the rollout
        state is the serving truth; MLflow's `champion` alias follows it)."""
        state = self.load(model)
        if state is None:
            return None
        return state.challenger if state.phase == Phase.PROMOTED else state.champion

    @contextlib.contextmanager
    def locked(self, model: str) -> Iterator[None]:
        """One writer per model at a time: the sensor's tick, a person's `shipway rollout`."""
        with file_locked(self.root / f".{model}.lock"):
            yield
