"""The prediction spool: scored rows on their way from a model server to the prediction log
(and an LLM application's answers and feedback, `RecordSpool`: the same way to their logs).

A request only appends its rows to an in-memory queue. A thread writes what has queued to one
file every `flush_seconds` (or sooner past `flush_rows`), written whole under a temporary name
and renamed, so a reader never sees half a file. `shipway.serving.prediction_log` moves
the files into the model's Delta table and deletes them.

What a `kill -9` of the model server can lose is what had queued since the last flush: at
most `flush_seconds` of traffic. A graceful stop (SIGINT/SIGTERM, the process exiting) writes
the rest. A write that fails (a full disk, a folder gone) puts its rows back at the head of the
queue and is tried again at the next flush, so nothing is lost while the disk recovers; only
past `MAX_QUEUED` requests are the oldest dropped, and every dropped row is counted
(`shipway_prediction_rows_dropped_total`, which an alert watches). Runs inside MLServer too,
so it needs nothing but numpy, prometheus_client and the standard library.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shipway.files import write_atomic

log = logging.getLogger(__name__)
SPOOL_ENV = "SHIPWAY_PREDICTION_SPOOL"
SUFFIX = ".json"
# What a spool file holds: a model's scored rows, an application's answers, or its feedback.
SCORES, ANSWERS, FEEDBACK = "scores", "answers", "feedback"
# Queued requests kept while the disk does not take them; past this the oldest are dropped
# (and counted) rather than growing the server's memory.
MAX_QUEUED = 100_000
# Every spool of this process, for `close_all` when the model server stops.
_OPEN: weakref.WeakSet[Spool[Any]] = weakref.WeakSet()
T = TypeVar("T")


@dataclass(frozen=True)
class Scored:
    request_id: str
    at: float
    served: bool
    """False for a mirrored (shadow) request, whose answer no caller saw."""
    rows: np.ndarray
    scores: np.ndarray
    row_keys: list[str] | None
    caller: str = ""
    """Who asked: the caller the front door named (`""`: keys are not required)."""


class Spool(Generic[T]):
    """A queue of items written to spool files by a thread; `size` and `columns` say how many
    log rows an item is and how a file holds them, `kind` which log its files go to."""

    kind = ""

    def __init__(
        self,
        folder: Path,
        model: str,
        version: str,
        flush_seconds: float = 0.5,
        flush_rows: float = 5000,
    ) -> None:
        self.folder = folder / model
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model, self.version = model, version
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        self.queue: deque[T] = deque()
        self.queued_rows = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.write_errors = 0
        self.last_error = ""
        self._sequence = itertools.count()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-spool", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    def size(self, item: T) -> int:
        raise NotImplementedError

    def columns(self, taken: list[T]) -> dict[str, Any]:
        raise NotImplementedError

    def count(self, items: Iterable[T]) -> int:
        return sum(self.size(item) for item in items)

    def add(self, item: T) -> None:
        """Called on the request path: an append, nothing more."""
        if len(self.queue) >= MAX_QUEUED:
            self.dropped_rows += self.size(self.queue.popleft())
        self.queue.append(item)
        self.queued_rows += self.size(item)
        if self.queued_rows >= self.flush_rows:
            self._wake.set()

    def _run(self) -> None:
        """The writer: flush never raises, so it outlives any failed write."""
        while not self._closed.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> Path | None:
        """Write what has queued to one spool file; None when nothing had, or when the write
        failed (its rows are queued again, first, and counted in `write_errors`)."""
        with self._flushing:
            taken: list[T] = []
            while self.queue:
                taken.append(self.queue.popleft())
            self.queued_rows = 0
            if not taken:
                return None
            rows = self.count(taken)
            name = (
                f"{self.version}-{time.time_ns()}-{os.getpid()}-{self.kind}{next(self._sequence)}"
            )
            try:  # write_atomic makes the folder again if it is gone
                path = write_atomic(
                    self.folder / f"{name}{SUFFIX}",
                    json.dumps(
                        {"kind": self.kind, "model": self.model, "version": self.version}
                        | self.columns(taken)
                    ),
                )
            except Exception as exc:
                self.write_errors += 1
                if not isinstance(exc, OSError):  # the rows themselves: trying again won't do
                    self.dropped_rows += rows
                    log.exception("prediction spool %s: %d rows dropped", self.folder, rows)
                    return None
                self.queue.extendleft(reversed(taken))
                if str(exc) != self.last_error:
                    log.error(
                        "prediction spool %s: cannot write %d rows (%s); kept, tried again "
                        "at the next flush",
                        self.folder,
                        rows,
                        exc,
                    )
                self.last_error = str(exc)
                return None
            self.last_error = ""
            self.written_rows += rows
            return path

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        self.flush()
        if self.queue:
            left = self.count(self.queue)
            self.queue.clear()
            self.dropped_rows += left
            log.error(
                "prediction spool %s: %d rows could not be written before exit", self.folder, left
            )


def close_all() -> None:
    """Write what every spool of this process has queued, and stop their writers: the model
    server's last act once its HTTP and gRPC servers have stopped, and any process's at exit."""
    for spool in list(_OPEN):
        spool.close()


atexit.register(close_all)


def spool_metrics(
    spool: Spool[Any], labels: list[str]
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The prediction spool's health: a dropped row is a row the prediction log never gets."""
    names = ["model", "version"]
    dropped = CounterMetricFamily(
        "shipway_prediction_rows_dropped",
        "Scored rows the prediction log will never get (a queue full while the disk refused "
        "writes, or rows left at exit)",
        labels=names,
    )
    dropped.add_metric(labels, spool.dropped_rows)
    errors = CounterMetricFamily(
        "shipway_prediction_spool_write_errors",
        "Spool writes that failed (their rows are queued again)",
        labels=names,
    )
    errors.add_metric(labels, spool.write_errors)
    queued = GaugeMetricFamily(
        "shipway_prediction_spool_queued_rows",
        "Scored rows waiting to be written to the spool",
        labels=names,
    )
    queued.add_metric(labels, spool.count(list(spool.queue)))
    yield dropped
    yield errors
    yield queued


class PredictionSpool(Spool[Scored]):
    """A model version's scored rows, one log row per scored row."""

    kind = SCORES

    def __init__(
        self,
        folder: Path,
        model: str,
        version: str,
        features: list[str],
        feature_version: str = "",
        **flush: float,
    ) -> None:
        self.features = features
        self.feature_version = feature_version
        super().__init__(folder, model, version, **flush)

    def size(self, item: Scored) -> int:
        return len(item.scores)

    def columns(self, taken: list[Scored]) -> dict[str, Any]:
        request_id: list[str] = []
        at: list[float] = []
        served: list[bool] = []
        caller: list[str] = []
        row_key: list[str | None] = []
        for s in taken:
            n = len(s.scores)
            request_id += [s.request_id] * n
            at += [s.at] * n
            served += [s.served] * n
            caller += [s.caller] * n
            keys: list[str | None] = [None] * n if s.row_keys is None else list(s.row_keys)
            row_key += keys
        return {
            "features": self.features,
            "feature_version": self.feature_version,
            "request_id": request_id,
            "at": at,
            "served": served,
            "caller": caller,
            "row_key": row_key,
            "vector": np.concatenate([s.rows for s in taken]).tolist(),
            "score": np.concatenate([s.scores for s in taken]).tolist(),
        }


class RecordSpool(Spool[dict[str, Any]]):
    """Records of one `kind` (an application's answers, its feedback), one log row each, all
    with the same keys."""

    def __init__(self, folder: Path, model: str, version: str, kind: str, **flush: float) -> None:
        self.kind = kind
        super().__init__(folder, model, version, **flush)

    def size(self, item: dict[str, Any]) -> int:
        return 1

    def columns(self, taken: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: [record[key] for record in taken] for key in taken[0]}


def read_spool_file(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
