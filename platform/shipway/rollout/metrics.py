"""Rollouts as Prometheus sees them, and as the prediction log labels their rows: exported by
the serving control plane, which is handed these by whoever starts it (`shipway serve`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shipway.rollout.state import RolloutStore

log = logging.getLogger(__name__)


def rollout_phase(store: RolloutStore) -> Callable[[str], str | None]:
    """The phase of a model's rollout under way (`shadow`, `canary`), None outside one."""

    def phase(model: str) -> str | None:
        state = store.load(model)
        return None if state is None or state.finished else state.phase

    return phase


class RolloutCollector(Collector):
    """Each model's rollout, read from its state file at scrape: phase, step, failed checks and
    the last analysed values (so a dashboard shows what the controller decided on). An
    unreadable state file leaves out its model alone."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phase = GaugeMetricFamily(
            "shipway_rollout_phase",
            "1 for the phase each model's latest rollout is in",
            labels=["model", "version", "champion", "phase"],
        )
        failed = GaugeMetricFamily(
            "shipway_rollout_failed_checks",
            "Failed analysis intervals in a row",
            labels=["model", "version"],
        )
        analysis = GaugeMetricFamily(
            "shipway_rollout_analysis",
            "Values of the latest analysed interval",
            labels=["model", "version", "value"],
        )
        for model in self.store.models():
            try:
                state = self.store.load(model)
            except (ValueError, TypeError, KeyError) as exc:
                log.error(
                    "%s: rollout state %s is unreadable: %s", model, self.store.path(model), exc
                )
                continue
            if state is None:
                continue
            labels = [state.model, state.challenger]
            phase.add_metric([*labels, state.champion or "", state.phase], 1)
            failed.add_metric(labels, state.failed)
            last = next((d for d in reversed(state.decisions) if d.get("analysis")), None)
            for key, value in (last or {}).get("analysis", {}).items():
                if value is not None:
                    analysis.add_metric([*labels, key], float(value))
        yield phase
        yield failed
        yield analysis
