"""A live window of rows by arrival time, as a model server keeps it for drift and for
attribution drift: the batches of the last `seconds`, at most `max_rows` rows (whole batches
are kept, and the newest `max_rows` rows of them taken), so a version without traffic empties
its window as its rows age out."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class RowWindow:
    """Batches of parallel columns (rows first: a matrix, scores, hours ...), by arrival time."""

    def __init__(self, seconds: float, max_rows: int) -> None:
        self.seconds = seconds
        self.max_rows = max_rows
        self._batches: deque[tuple[float, tuple[np.ndarray, ...]]] = deque()
        self.rows = 0
        """Rows of the batches held (they may pass `max_rows` by less than one batch)."""

    @property
    def samples(self) -> int:
        """Rows judged: those in the time window, at most `max_rows`."""
        return min(self.rows, self.max_rows)

    def add(self, at: float | None, *columns: np.ndarray) -> None:
        """Add one batch: columns of one length (a batch whose first column is empty is none)."""
        if columns[0].size == 0:
            return
        self._batches.append((time.time() if at is None else at, columns))
        self.rows += len(columns[0])
        while self.rows - len(self._batches[0][1][0]) >= self.max_rows:
            self.rows -= len(self._batches.popleft()[1][0])

    def expire(self, now: float | None = None) -> None:
        """Drop the batches older than the window."""
        oldest = (time.time() if now is None else now) - self.seconds
        while self._batches and self._batches[0][0] < oldest:
            self.rows -= len(self._batches.popleft()[1][0])

    def newest(self) -> list[np.ndarray]:
        """Each column over the window's newest `max_rows` rows."""
        width = len(self._batches[0][1])
        return [
            np.concatenate([columns[i] for _, columns in self._batches])[-self.max_rows :]
            for i in range(width)
        ]
