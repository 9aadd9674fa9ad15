"""Attribution drift: how much each feature moves the model's output, live against training.

A feature's attribution is its mean |TreeSHAP contribution| over rows (margin units: log-odds
for a classifier), and its share is that over the sum of all features' attributions. The
training reference keeps each feature's attribution (`AttributionReference`); live, a window
of rows' absolute contributions is kept by time like the drift window. A feature drifts when
its share moves by more than the policy's `attribution_share_change`: the model now leans on
it much more, or much less, than it learned to, which feature drift alone misses when a shift
lands where the model does not look (or a small shift lands where it does).

Like feature drift (`shipway.stats.drift`), a model with an `hour_of_day` feature is compared
with the training rows of the hours its window holds: at 03:00 a fraud model leans on the
night, and that is what it learned, not drift. The reference keeps the attribution per hour,
and the window's expected attribution is that of its own mix of hours.

Pure numpy: the contributions are computed by whoever holds the model
(`shipway.serving.explanations`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shipway.stats.window import RowWindow

HOURS = 24


def mean_abs(contributions: np.ndarray) -> np.ndarray:
    """Each feature's mean |contribution| over rows of `contributions` (n, k), bias left out."""
    if len(contributions) == 0:
        return np.zeros(contributions.shape[1])
    return np.asarray(np.abs(contributions).mean(axis=0), dtype=np.float64)


def shares(attribution: np.ndarray) -> np.ndarray:
    """Each feature's share of the total attribution (zeros when the model uses none)."""
    total = float(attribution.sum())
    return attribution / total if total > 0 else np.zeros_like(attribution)


@dataclass(frozen=True)
class AttributionReference:
    """Each feature's mean |contribution| on the training rows, in feature order; with an
    `hour_feature`, the same for the training rows of each hour (None for an hour without)."""

    mean_abs: list[float]
    hour_feature: str | None = None
    by_hour: list[list[float] | None] | None = None

    @classmethod
    def of(
        cls,
        contributions: np.ndarray,
        hours: np.ndarray | None = None,
        hour_feature: str | None = None,
    ) -> AttributionReference:
        """From training rows' contributions (n, k), bias left out, and their hours."""
        overall = [float(v) for v in mean_abs(contributions)]
        if hours is None or hour_feature is None:
            return cls(overall)
        hours = np.asarray(hours).astype(int)
        by_hour: list[list[float] | None] = [
            [float(v) for v in mean_abs(contributions[hours == h])] if (hours == h).any() else None
            for h in range(HOURS)
        ]
        return cls(overall, hour_feature, by_hour)

    def expected(self, hours: np.ndarray | None) -> np.ndarray:
        """The training attribution of rows with these hours (the overall one without)."""
        overall = np.asarray(self.mean_abs, dtype=np.float64)
        if self.by_hour is None or hours is None or len(hours) == 0:
            return overall
        counts = np.bincount(np.clip(np.asarray(hours).astype(int), 0, HOURS - 1), minlength=HOURS)
        table = np.asarray([overall if row is None else row for row in self.by_hour])
        return np.asarray(counts @ table / counts.sum(), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AttributionReference:
        return cls(list(raw["mean_abs"]), raw.get("hour_feature"), raw.get("by_hour"))


@dataclass(frozen=True)
class AttributionDrift:
    """One feature's attribution in one window against training."""

    name: str
    rows: int
    mean_abs: float
    share: float
    reference_share: float
    drifted: bool

    @property
    def change(self) -> float:
        return self.share - self.reference_share

    def line(self) -> str:
        verdict = "DRIFT" if self.drifted else "ok"
        return (
            f"{self.name}: {self.share:.1%} of the attribution against "
            f"{self.reference_share:.1%} in training ({verdict})"
        )


def compare(
    names: list[str],
    expected: np.ndarray,
    live: np.ndarray,
    max_share_change: float,
) -> list[AttributionDrift]:
    """Live contributions (n, k) against the training attribution expected of those rows."""
    attribution = mean_abs(live)
    ours, theirs = shares(attribution), shares(np.asarray(expected, dtype=np.float64))
    return [
        AttributionDrift(
            name=name,
            rows=len(live),
            mean_abs=float(attribution[i]),
            share=float(ours[i]),
            reference_share=float(theirs[i]),
            drifted=bool(abs(ours[i] - theirs[i]) > max_share_change),
        )
        for i, name in enumerate(names)
    ]


class AttributionWindow:
    """Absolute contributions of the rows explained in the last `window_seconds`, at most
    `max_rows` (the newest), judged once it holds `min_rows`."""

    def __init__(
        self,
        names: list[str],
        reference: AttributionReference,
        max_share_change: float,
        window_seconds: float,
        min_rows: int,
        max_rows: int,
    ) -> None:
        self.names = names
        self.reference = reference
        self.max_share_change = max_share_change
        self.min_rows = min_rows
        self._hour = (
            names.index(reference.hour_feature)
            if reference.by_hour is not None and reference.hour_feature in names
            else None
        )
        self._window = RowWindow(window_seconds, max_rows)

    @property
    def samples(self) -> int:
        return self._window.samples

    def add(self, rows: np.ndarray, contributions: np.ndarray, at: float | None = None) -> None:
        """Add explained rows (n, k) and their contributions (n, k), bias left out."""
        if self._hour is None:
            self._window.add(at, np.abs(contributions))
        else:
            self._window.add(at, np.abs(contributions), rows[:, self._hour])

    def drift(self, now: float | None = None) -> list[AttributionDrift]:
        """Each feature's verdict; none while the window holds fewer rows than the minimum."""
        self._window.expire(now)
        if self._window.rows < self.min_rows:
            return []
        live, *hours = self._window.newest()
        expected = self.reference.expected(hours[0] if hours else None)
        return compare(self.names, expected, live, self.max_share_change)
