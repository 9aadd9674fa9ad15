"""The platform's own services as Prometheus sees them: how often `shipway up`'s supervisor
started each one again (`shipway.processes.Supervisor`), exported by the serving control plane
as `shipway_service_restarts_total{service}`; the alert `ShipwayServiceRestartLoop` fires when
one keeps dying."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import CounterMetricFamily

from shipway.scrape import Add, Family, FileCollector, FileErrors

RESTARTS = "shipway_service_restarts"


class RestartsCollector(FileCollector):
    """The supervisor's restart counts, read from its file at scrape."""

    def __init__(self, path: Path, errors: FileErrors) -> None:
        super().__init__(errors)
        self.path = path

    def families(self) -> list[Family]:
        return [
            CounterMetricFamily(
                RESTARTS,
                "Times the supervisor started a service again after it died, this run",
                labels=["service"],
            )
        ]

    def files(self) -> Iterable[Path]:
        return [self.path] if self.path.exists() else []

    def read(self, path: Path, add: Add) -> None:
        for service, count in json.loads(path.read_text())["restarts"].items():
            add(RESTARTS, [service], count)
