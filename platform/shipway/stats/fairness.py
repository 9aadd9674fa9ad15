"""Group fairness metrics over resampling counts, so the paired bootstrap of
`shipway.stats.metrics` gives their intervals too.

A fairness metric here is the difference between the best and the worst group of a sensitive
column (fairlearn's `between_groups`):

- `demographic_parity_difference`: of the rate of positive decisions;
- `false_positive_rate_difference`: of the share of true negatives decided positive (good
  customers declined);
- `false_negative_rate_difference`: of the share of true positives decided negative (fraud let
  through);
- `equalized_odds_difference`: the larger of the true- and false-positive-rate differences;
- `mae_gap` (regression): of the mean absolute error.

A decision is a score at or above the declared threshold. Only judged groups (enough rows, and
positives where a rate needs them) take part, the same in every replicate. A group's rate per
replicate is a ratio of two matrix products (counts by group masks), so a block of replicates
costs two products per rate. With all counts equal to 1 the values equal fairlearn's (tested).
"""

from __future__ import annotations

import numpy as np

from shipway.stats.metrics import Weighted

# The rates each metric compares: (numerator rows, denominator rows) by name.
_RATES: dict[str, tuple[str, ...]] = {
    "demographic_parity_difference": ("selection_rate",),
    "false_positive_rate_difference": ("false_positive_rate",),
    "false_negative_rate_difference": ("false_negative_rate",),
    "equalized_odds_difference": ("true_positive_rate", "false_positive_rate"),
    "mae_gap": ("mean_absolute_error",),
}


def rates_of(metric: str) -> tuple[str, ...]:
    """The per-group rates a fairness metric is the difference of."""
    return _RATES[metric]


def _terms(
    rate: str, labels: np.ndarray, scores: np.ndarray, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row numerator and denominator terms of a rate (a group's rate is the ratio of
    their sums over the group's rows)."""
    if rate == "mean_absolute_error":
        return np.abs(labels - scores), np.ones_like(labels)
    if threshold is None:
        raise ValueError(f"{rate} needs a decision threshold")
    decided = (scores >= threshold).astype(np.float64)
    positive = labels.astype(np.float64)
    negative = 1.0 - positive
    if rate == "selection_rate":
        return decided, np.ones_like(decided)
    if rate == "true_positive_rate":
        return decided * positive, positive
    if rate == "false_negative_rate":
        return (1.0 - decided) * positive, positive
    if rate == "false_positive_rate":
        return decided * negative, negative
    raise ValueError(f"unknown rate {rate!r}")


def _group_rates(
    rate: str,
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    judged: list[str],
    threshold: float | None,
) -> Weighted:
    """One rate per judged group: counts (replicates x rows) -> (replicates x groups)."""
    numerator, denominator = _terms(rate, labels, scores, threshold)
    masks = np.stack([groups == g for g in judged], axis=1).astype(np.float64)
    top, bottom = masks * numerator[:, None], masks * denominator[:, None]

    def rates(counts: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ top) / (counts @ bottom)

    return rates


def fairness_function(
    metric: str,
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    judged: list[str],
    threshold: float | None,
) -> Weighted:
    """The metric over a block of count vectors: one difference per replicate (NaN when fewer
    than two groups have a rate in it)."""
    if metric not in _RATES:
        raise ValueError(f"unknown fairness metric {metric!r}; known: {sorted(_RATES)}")
    labels, scores = labels.astype(np.float64), scores.astype(np.float64)
    groups = groups.astype(str)
    parts = [_group_rates(r, labels, scores, groups, judged, threshold) for r in _RATES[metric]]

    def difference(counts: np.ndarray) -> np.ndarray:
        gaps = []
        for part in parts:
            values = part(counts)
            finite = np.isfinite(values)
            enough = finite.sum(axis=1) >= 2
            high = np.where(finite, values, -np.inf).max(axis=1)
            low = np.where(finite, values, np.inf).min(axis=1)
            gaps.append(np.where(enough, high - low, np.nan))
        return np.max(np.stack(gaps), axis=0)

    return difference
