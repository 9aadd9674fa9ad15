"""Metrics read from state and report files when Prometheus scrapes, and never a failed scrape.

A rollout state, a live-quality or skew report, the online store's state: each is a file some
other process wrote, and may be unreadable, or hold a wrong-typed value (a version as a number,
a metric as text, a folder where a file should be). One such file must not take the whole
`/metrics` answer down, which would cost Prometheus every other series of the process, every
model's serving figures among them. So a `FileCollector` reads each file into samples it checks
(labels are text, values are numbers) before any is exported: a file that fails is left out,
its series missing, logged and counted in `shipway_state_file_errors_total{file}`
(`FileErrors`, one per registry, shared by its collectors).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeAlias

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Family: TypeAlias = GaugeMetricFamily | CounterMetricFamily
"""What a `FileCollector` exports: gauges, or counters another process keeps."""
Add = Callable[[str, list[str], object], None]
"""What a reader calls per sample: the family's name, its label values, the value."""


class FileErrors(Collector):
    """`shipway_state_file_errors_total{file}`: reads of a state or report file that failed,
    by the file's path under `root`. Register it after the collectors that count into it, so
    a scrape shows its own failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def count(self, path: Path) -> None:
        with self._lock:
            self._counts[self.name(path)] += 1

    def name(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "shipway_state_file_errors",
            "Reads of a state or report file that failed (unreadable, or a wrong-typed value): "
            "its series are left out of the scrape",
            labels=["file"],
        )
        with self._lock:
            for name, count in sorted(self._counts.items()):
                family.add_metric([name], float(count))
        yield family


class FileCollector(Collector):
    """Series read from files at scrape: `families` names what is exported, `files` where
    from, `read` one file's samples. A file whose reading raises, or gives a label that is not
    text or a value that is not a number, adds nothing and is counted in `errors`."""

    def __init__(self, errors: FileErrors) -> None:
        self.errors = errors

    def families(self) -> list[Family]:
        raise NotImplementedError

    def files(self) -> Iterable[Path]:
        raise NotImplementedError

    def read(self, path: Path, add: Add) -> None:
        raise NotImplementedError

    def collect(self) -> Iterator[Family]:
        families = {family.name: family for family in self.families()}
        try:
            paths = sorted(self.files())
        except OSError as exc:
            log.error("state files unreadable: %s", exc)
            paths = []
        for path in paths:
            try:
                samples = self._samples(path)
            except Exception as exc:  # whatever a file holds, the scrape goes on without it
                log.error("%s is unreadable, its series are left out: %r", path, exc)
                self.errors.count(path)
                continue
            for name, labels, value in samples:
                families[name].add_metric(labels, value)
        yield from families.values()

    def _samples(self, path: Path) -> list[tuple[str, list[str], float]]:
        """One file's samples, each checked, before any is exported."""
        staged: list[tuple[str, list[str], float]] = []

        def add(name: str, labels: list[str], value: object) -> None:
            staged.append((name, _labels(labels), _value(value)))

        self.read(path, add)
        return staged


def _labels(values: list[str]) -> list[str]:
    wrong = [v for v in values if not isinstance(v, str)]
    if wrong:
        raise TypeError(f"label values {wrong!r} are not text")
    return values


def _value(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"value {value!r} is not a number")
    return float(value)
