"""Metrics of two models on the same rows, and a seeded paired bootstrap of their difference.

A bootstrap replicate is a vector of resampling counts over the rows (how often each row was
drawn). Every metric here is computed from such a count vector without copying rows:

- ROC-AUC and average precision sort the scores once; a replicate then costs one pass over
  groups of tied scores (`np.add.reduceat`), so ties are handled as scikit-learn does;
- Brier, log loss, MAE, RMSE, R² and the baseline ratios are sums of per-row terms, so a block
  of replicates is a matrix product.

Both models are scored with the same count vectors (paired), so the interval is that of the
difference on the same resampled rows, which is much narrower than comparing two intervals.
With all counts equal to 1 the values equal scikit-learn's (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from shipway.stats import answers

# Metrics where a larger value is better; every other gated metric is an error (smaller wins).
HIGHER_IS_BETTER = frozenset(
    {"roc_auc", "pr_auc", "recall_at_precision_50", "r2", *answers.HIGHER_IS_BETTER}
)
CLASSIFICATION = ("roc_auc", "pr_auc", "brier", "log_loss")
REGRESSION = ("mae", "rmse", "r2", "mae_to_baseline", "rmse_to_baseline")
BOOTSTRAPPABLE = frozenset(CLASSIFICATION + REGRESSION)
# Rows drawn per block of replicates: bounds memory (block x rows float32) at 1M rows.
_BLOCK_CELLS = 16_000_000
_EPS = 1e-15

Weighted = Callable[[np.ndarray], np.ndarray]
"""A metric over a block of count vectors (replicates x rows) -> one value per replicate."""


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


class _Ranked:
    """Scores sorted once, with groups of tied scores, for weighted ROC-AUC and AP."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(-scores, kind="stable")
        self.order = order
        ordered = scores[order]
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.positive = labels[order].astype(np.float32)
        self.tied = len(self.starts) < len(scores)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _groups(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resampled positives and negatives per group of tied scores, best score first;
        computed once per block of replicates for both metrics."""
        if self._last is not None and self._last[0] is counts:
            return self._last[1], self._last[2]
        weights = counts[:, self.order]
        tp = weights * self.positive
        fp = weights - tp
        if self.tied:
            tp = np.add.reduceat(tp, self.starts, axis=1)
            fp = np.add.reduceat(fp, self.starts, axis=1)
        self._last = (counts, tp.astype(np.float64), fp.astype(np.float64))
        return self._last[1], self._last[2]

    def roc_auc(self, counts: np.ndarray) -> np.ndarray:
        tp, fp = self._groups(counts)
        # Scores descend: a positive outranks the negatives in later groups, half of its own.
        negatives_below = fp.sum(axis=1, keepdims=True) - np.cumsum(fp, axis=1)
        pairs = tp.sum(axis=1) * fp.sum(axis=1)
        wins = (tp * (negatives_below + 0.5 * fp)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, wins / pairs, np.nan)

    def average_precision(self, counts: np.ndarray) -> np.ndarray:
        tp, fp = self._groups(counts)
        cum_tp, cum_fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
        positives = cum_tp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(cum_tp + cum_fp > 0, cum_tp / (cum_tp + cum_fp), 0.0)
            return np.where(positives > 0, (tp * precision).sum(axis=1) / positives, np.nan)


def mean_of(terms: np.ndarray) -> Weighted:
    """The mean of per-row `terms` over a block of count vectors (one matrix product)."""
    terms32 = terms.astype(np.float64)

    def metric(counts: np.ndarray) -> np.ndarray:
        return (counts @ terms32) / counts.sum(axis=1)

    return metric


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, Weighted]:
    ranked = _Ranked(labels, scores)
    clipped = np.clip(scores, _EPS, 1 - _EPS)
    return {
        "roc_auc": ranked.roc_auc,
        "pr_auc": ranked.average_precision,
        "brier": mean_of((scores - labels) ** 2),
        "log_loss": mean_of(-(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))),
    }


def regression_metrics(
    labels: np.ndarray, predictions: np.ndarray, baseline: np.ndarray | None
) -> dict[str, Weighted]:
    errors = labels - predictions
    abs_err, sq_err = np.abs(errors), errors**2

    def rmse(counts: np.ndarray) -> np.ndarray:
        return np.sqrt(mean_of(sq_err)(counts))

    def r2(counts: np.ndarray) -> np.ndarray:
        n = counts.sum(axis=1)
        mean = (counts @ labels) / n
        total = counts @ (labels**2) - n * mean**2
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - (counts @ sq_err) / total

    metrics: dict[str, Weighted] = {"mae": mean_of(abs_err), "rmse": rmse, "r2": r2}
    if baseline is not None:
        base_err = labels - baseline
        base_abs, base_sq = np.abs(base_err), base_err**2

        def mae_ratio(counts: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return (counts @ abs_err) / (counts @ base_abs)

        def rmse_ratio(counts: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.sqrt((counts @ sq_err) / (counts @ base_sq))

        metrics |= {"mae_to_baseline": mae_ratio, "rmse_to_baseline": rmse_ratio}
    return metrics


def metric_functions(
    problem: str, labels: np.ndarray, scores: np.ndarray, baseline: np.ndarray | None
) -> dict[str, Weighted]:
    labels = labels.astype(np.float64)
    scores = scores.astype(np.float64)
    if problem == "binary_classification":
        return classification_metrics(labels, scores)
    return regression_metrics(labels, scores, baseline)


def point_values(functions: dict[str, Weighted], rows: int) -> dict[str, float]:
    ones = np.ones((1, rows), dtype=np.float32)
    return {name: float(f(ones)[0]) for name, f in functions.items()}


@dataclass(frozen=True)
class PairedInterval:
    """Challenger minus champion on one metric: the point difference and its interval."""

    metric: str
    challenger: float
    champion: float
    low: float
    high: float
    confidence: float
    samples: int

    @property
    def delta(self) -> float:
        return self.challenger - self.champion

    @property
    def improvement(self) -> tuple[float, float, float]:
        """(point, low, high) of the improvement: the delta, sign-flipped for error metrics."""
        if higher_is_better(self.metric):
            return self.delta, self.low, self.high
        return -self.delta, -self.high, -self.low


def paired_bootstrap(
    challenger: dict[str, Weighted],
    champion: dict[str, Weighted],
    metrics: list[str],
    rows: int,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, PairedInterval]:
    """Percentile intervals of challenger - champion for `metrics`, over `samples` resamples of
    the same rows (seeded: the same inputs give the same intervals)."""
    rng = np.random.default_rng(seed)
    block = max(1, min(samples, _BLOCK_CELLS // max(rows, 1)))
    deltas: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    done = 0
    while done < samples:
        size = min(block, samples - done)
        counts = np.empty((size, rows), dtype=np.float32)
        for i in range(size):
            counts[i] = np.bincount(rng.integers(0, rows, rows), minlength=rows)
        for metric in metrics:
            deltas[metric].append(challenger[metric](counts) - champion[metric](counts))
        done += size
    a, b = point_values(challenger, rows), point_values(champion, rows)
    tail = (1.0 - confidence) / 2.0 * 100.0
    out = {}
    for metric in metrics:
        values = np.concatenate(deltas[metric])
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100.0 - tail]) if len(values) else (np.nan, np.nan)
        out[metric] = PairedInterval(
            metric, a[metric], b[metric], float(low), float(high), confidence, len(values)
        )
    return out


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width score bins: the row-weighted gap between mean score and label rate."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(scores[mask].mean()) - float(labels[mask].mean()))
    return total / max(len(scores), 1)


def single_column_auc(values: np.ndarray, labels: np.ndarray) -> float:
    """How well one column alone ranks positives above negatives, either way round (0.5..1)."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    ranks = stats.rankdata(values)
    auc = (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return float(max(auc, 1 - auc))
