"""The business cost of a classifier's decisions, as a metric of the paired bootstrap.

Each row's cost is that of its outcome at the decision threshold: a positive decision on a
positive label is a true positive, and so on; an outcome costs a fixed amount plus a column's
value times a scale (`shipway.models.declaration.CostPolicy`). The metric is the mean cost
per 1,000 decisions, a sum of per-row terms, so a block of bootstrap replicates is one matrix
product like the other mean metrics (`shipway.stats.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shipway.stats.metrics import Weighted, mean_of

COST_METRIC = "cost_per_1000"
OUTCOMES = ("true_positive", "false_positive", "false_negative", "true_negative")


@dataclass(frozen=True)
class Price:
    """What one outcome costs: `fixed` plus `values` (one per row, or none) times `scale`."""

    fixed: float = 0.0
    values: np.ndarray | None = None
    scale: float = 1.0

    def of(self, mask: np.ndarray) -> np.ndarray:
        cost = np.full(int(mask.sum()), self.fixed, dtype=np.float64)
        if self.values is not None:
            cost += np.nan_to_num(self.values[mask].astype(np.float64)) * self.scale
        return cost


def outcome_masks(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Which rows have each outcome (by the names in `OUTCOMES`): a score at or above the
    threshold is a positive decision."""
    decided = scores >= threshold
    positive = labels > 0.5
    return {
        "true_positive": decided & positive,
        "false_positive": decided & ~positive,
        "false_negative": ~decided & positive,
        "true_negative": ~decided & ~positive,
    }


def row_costs(
    labels: np.ndarray, scores: np.ndarray, threshold: float, prices: dict[str, Price]
) -> np.ndarray:
    """Each row's cost: its outcome's price (`prices` by the names in `OUTCOMES`)."""
    costs = np.zeros(len(labels), dtype=np.float64)
    for outcome, mask in outcome_masks(labels, scores, threshold).items():
        if outcome in prices and mask.any():
            costs[mask] = prices[outcome].of(mask)
    return costs


def per_thousand(costs: np.ndarray) -> Weighted:
    """The mean cost per 1,000 decisions over a block of count vectors."""
    return mean_of(1000.0 * costs)
