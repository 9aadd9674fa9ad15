"""The prediction spool: scored rows on their way from a model server to the prediction log.

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
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shipway.files import write_atomic

log = logging.getLogger(__name__)
SPOOL_ENV = "SHIPWAY_PREDICTION_SPOOL"
SUFFIX = ".json"
# Queued requests kept while the disk does not take them; past this the oldest are dropped
# (and counted) rather than growing the server's memory.
MAX_QUEUED = 100_000
# Every spool of this process, for `close_all` when the model server stops.
_OPEN: weakref.WeakSet[PredictionSpool] = weakref.WeakSet()


@dataclass(frozen=True)
class Scored:
    request_id: str
    at: float
    served: bool
    """False for a mirrored (shadow) request, whose answer no caller saw."""
    rows: np.ndarray
    scores: np.ndarray
    row_keys: list[str] | None


class PredictionSpool:
    def __init__(
        self,
        folder: Path,
        model: str,
        version: str,
        features: list[str],
        flush_seconds: float = 0.5,
        flush_rows: int = 5000,
    ) -> None:
        self.folder = folder / model
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model, self.version, self.features = model, version, features
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        self.queue: deque[Scored] = deque()
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

    def add(self, scored: Scored) -> None:
        """Called on the request path: an append, nothing more."""
        if len(self.queue) >= MAX_QUEUED:
            self.dropped_rows += len(self.queue.popleft().scores)
        self.queue.append(scored)
        self.queued_rows += len(scored.scores)
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
            taken: list[Scored] = []
            while self.queue:
                taken.append(self.queue.popleft())
            self.queued_rows = 0
            if not taken:
                return None
            rows = _rows(taken)
            name = f"{self.version}-{time.time_ns()}-{os.getpid()}-{next(self._sequence)}"
            try:  # write_atomic makes the folder again if it is gone
                path = write_atomic(
                    self.folder / f"{name}{SUFFIX}", json.dumps(_columns(self, taken))
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
            left = _rows(self.queue)
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
    spool: PredictionSpool, labels: list[str]
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
    queued.add_metric(labels, _rows(list(spool.queue)))
    yield dropped
    yield errors
    yield queued


def _rows(scored: Iterable[Scored]) -> int:
    return sum(len(s.scores) for s in scored)


def _columns(spool: PredictionSpool, taken: list[Scored]) -> dict[str, Any]:
    """One spool file: column lists, one entry per scored row."""
    request_id: list[str] = []
    at: list[float] = []
    served: list[bool] = []
    row_key: list[str | None] = []
    for s in taken:
        n = len(s.scores)
        request_id += [s.request_id] * n
        at += [s.at] * n
        served += [s.served] * n
        keys: list[str | None] = [None] * n if s.row_keys is None else list(s.row_keys)
        row_key += keys
    return {
        "model": spool.model,
        "version": spool.version,
        "features": spool.features,
        "request_id": request_id,
        "at": at,
        "served": served,
        "row_key": row_key,
        "vector": np.concatenate([s.rows for s in taken]).tolist(),
        "score": np.concatenate([s.scores for s in taken]).tolist(),
    }


def read_spool_file(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
