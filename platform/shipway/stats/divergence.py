"""How far a sample is from a reference: the population stability index, and the
Kolmogorov-Smirnov and chi² tests, as scipy computes them (`ks_2samp`, `chisquare`).

Every comparison in Shipway goes through these: live drift against the training reference
(`shipway.stats.drift`) and a data contract's shift gate against the last accepted batch.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

# Floor for empty bins: PSI is undefined for a zero proportion on either side.
_EPSILON = 1e-4
# scipy's ks_2samp is exact up to this many rows per side, asymptotic above.
_EXACT_KS_ROWS = 10_000


def psi(expected: np.ndarray, observed_counts: np.ndarray) -> float:
    """Population stability index of observed counts against expected proportions."""
    total = observed_counts.sum()
    if total == 0:
        return 0.0
    actual = np.clip(observed_counts / total, _EPSILON, None)
    exp = np.clip(expected, _EPSILON, None)
    return float(np.sum((actual - exp) * np.log(actual / exp)))


def ks_test(
    sketch: np.ndarray,
    reference_rows: int,
    values: np.ndarray,
    ordered: bool = False,
    sketch_distinct: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value, as scipy's `ks_2samp(method="auto")`.

    With the whole reference (a sketch as long as the training rows) and few rows it is
    scipy's own exact test; otherwise the statistic comes from the sketch's ECDF and the
    p-value from Smirnov's asymptotic distribution, as scipy computes it for large samples.
    `ordered`: `values` are already sorted; `sketch_distinct`: the sketch's `distinct`.
    """
    current = values if ordered else np.sort(values)
    exact = len(sketch) == reference_rows
    if exact and max(reference_rows, len(current)) <= _EXACT_KS_ROWS:
        result = stats.ks_2samp(sketch, current)
        return float(result.statistic), float(result.pvalue)
    # The ECDFs differ most at a data point: compare them at each distinct value of either
    # sample (scipy evaluates at every point of both; the values are the same).
    ref_values, ref_ranks = sketch_distinct or distinct(sketch)
    cur_values, cur_ranks = distinct(current)
    at_current = np.searchsorted(sketch, cur_values, side="right") / len(sketch) - cur_ranks / len(
        current
    )
    at_reference = ref_ranks / len(sketch) - np.searchsorted(
        current, ref_values, side="right"
    ) / len(current)
    d = float(max(np.abs(at_current).max(), np.abs(at_reference).max()))
    m, n = sorted([float(reference_rows), float(len(current))], reverse=True)
    p = float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0.0, 1.0))
    return d, p


def distinct(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sorted array's distinct values, and how many of its values are <= each."""
    ends = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1)
    return ordered[ends], ends + 1


def chi2_test(expected: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Pearson's chi² of counts against expected proportions (scipy's `chisquare`).

    A category never seen in training (expected 0) that shows up makes the statistic infinite
    and the p-value 0: a new category is drift. Categories absent from both are left out.
    """
    total = counts.sum()
    wanted = expected * total
    keep = (wanted > 0) | (counts > 0)
    wanted, observed = wanted[keep], counts[keep]
    if (observed[wanted == 0] > 0).any():
        return float("inf"), 0.0
    statistic = float(np.sum((observed - wanted) ** 2 / wanted))
    return statistic, float(stats.chi2.sf(statistic, max(len(observed) - 1, 1)))
