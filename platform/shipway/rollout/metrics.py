"""Rollouts as Prometheus sees them, and as the prediction log labels their rows: exported by
the serving control plane, which is handed these by whoever starts it (`shipway serve`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from shipway.rollout.state import RolloutState, RolloutStore
from shipway.scrape import Add, Family, FileCollector, FileErrors


def rollout_phase(store: RolloutStore) -> Callable[[str], str | None]:
    """The phase of a model's rollout under way (`shadow`, `canary`), None outside one."""

    def phase(model: str) -> str | None:
        state = store.load(model)
        return None if state is None or state.finished else state.phase

    return phase


class RolloutCollector(FileCollector):
    """Each model's rollout, read from its state file at scrape: phase, step, failed checks and
    the last analysed values (so a dashboard shows what the controller decided on). A state
    file that cannot be read leaves out its model alone, counted (`shipway.scrape`)."""

    def __init__(self, store: RolloutStore, errors: FileErrors) -> None:
        super().__init__(errors)
        self.store = store

    def families(self) -> list[Family]:
        return [
            GaugeMetricFamily(
                "shipway_rollout_phase",
                "1 for the phase each model's latest rollout is in",
                labels=["model", "version", "champion", "phase"],
            ),
            GaugeMetricFamily(
                "shipway_rollout_failed_checks",
                "Failed analysis intervals in a row",
                labels=["model", "version"],
            ),
            GaugeMetricFamily(
                "shipway_rollout_analysis",
                "Values of the latest analysed interval",
                labels=["model", "version", "value"],
            ),
        ]

    def files(self) -> Iterable[Path]:
        return self.store.root.glob("*.json") if self.store.root.exists() else []

    def read(self, path: Path, add: Add) -> None:
        state = RolloutState(**json.loads(path.read_text()))
        labels = [state.model, state.challenger]
        add("shipway_rollout_phase", [*labels, state.champion or "", state.phase], 1)
        add("shipway_rollout_failed_checks", labels, state.failed)
        last = next((d for d in reversed(state.decisions) if d.get("analysis")), None)
        for key, value in (last or {}).get("analysis", {}).items():
            if value is not None:
                add("shipway_rollout_analysis", [*labels, key], value)
