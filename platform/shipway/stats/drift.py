"""Drift: a reference profile taken from the training set, and live data compared with it.

The profile keeps, per feature, what each comparison needs, so serving never holds training
data: quantile bins (PSI) and a sorted sketch of the values (Kolmogorov-Smirnov) for a numeric
feature; the proportion of each category (PSI and chi²) for a categorical one, compared category
by category, never as ordinal bins; and the proportion of each hour for `hour_of_day`, compared
only with the training rows of the hours the window holds: a 15-minute window at 03:00 holds
one hour and is not a shift away from the daytime peak, while a window of a whole day (or a
replay of one) is compared with the whole day, so more night traffic within it is drift. The
model's own training scores are profiled like a numeric feature: prediction drift.

Windows are defined by time with a minimum count (`DriftWindow`): rows older than the window
leave it, and a window with fewer rows than the minimum has no statistics at all, so a version
that stops receiving traffic stops alarming once its rows age out.

A feature drifts when both its PSI passes its threshold (the shift matters) and its test's
p-value is below its limit (the shift is not noise): PSI alone alarms on small windows, a test
alone alarms on every negligible shift of a large one. KS and chi² reproduce scipy's
`ks_2samp` and `chisquare`, which Evidently's `ks` and `chisquare` tests call
(`bench/drift.py` compares the decisions).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipway.names import SCORE
from shipway.stats.attribution import AttributionReference
from shipway.stats.divergence import chi2_test, distinct, ks_test, psi
from shipway.stats.window import RowWindow

NUMERIC = "numeric"
CATEGORICAL = "categorical"
HOUR_OF_DAY = "hour_of_day"
KINDS = (NUMERIC, CATEGORICAL, HOUR_OF_DAY)

# Values kept per numeric feature for KS: its ECDF is then within 1/2000 of the training one.
SKETCH_SIZE = 2000
# Frames at least this long are compared a column per core.
_PARALLEL_ROWS = 50_000


@dataclass(frozen=True)
class FeatureReference:
    name: str
    kind: str
    rows: int
    expected: list[float]
    """Training proportion per bin (numeric) or per category (categorical, hour_of_day)."""
    edges: list[float] = field(default_factory=list)
    categories: list[float] = field(default_factory=list)
    sketch: list[float] = field(default_factory=list)
    """Numeric: sorted training values at evenly spaced ranks (all of them if few enough)."""

    # Arrays of the list fields, made once: a profile is compared many times.
    @cached_property
    def edge_array(self) -> np.ndarray:
        return np.asarray(self.edges, dtype=float)

    @cached_property
    def sketch_array(self) -> np.ndarray:
        return np.asarray(self.sketch, dtype=float)

    @cached_property
    def sketch_distinct(self) -> tuple[np.ndarray, np.ndarray]:
        return distinct(self.sketch_array)

    @cached_property
    def expected_array(self) -> np.ndarray:
        return np.asarray(self.expected, dtype=float)

    def counts(self, values: np.ndarray, ordered: bool = False) -> np.ndarray:
        """Rows per bin or per category; for categories one more slot: values never seen.
        `ordered`: numeric values already sorted (then bins are counted by search)."""
        if self.kind == NUMERIC:
            if ordered:
                # Bin i holds edges[i-1] <= v < edges[i]: the values left of each edge.
                bounds = np.searchsorted(values, self.edge_array, side="left")
                return np.diff(np.concatenate([[0], bounds, [len(values)]]))
            return np.bincount(
                np.searchsorted(self.edge_array, values, side="right"),
                minlength=len(self.expected),
            )
        categories = np.asarray(self.categories)
        index = np.searchsorted(categories, values).clip(max=len(categories) - 1)
        seen = categories[index] == values
        known = np.bincount(index[seen], minlength=len(categories))
        return np.append(known, int((~seen).sum()))


@dataclass(frozen=True)
class FeatureDrift:
    """One feature (or the score) of one window against its reference."""

    name: str
    kind: str
    rows: int
    psi: float
    test: str
    p_value: float
    statistic: float
    drifted: bool

    def line(self) -> str:
        verdict = "DRIFT" if self.drifted else "ok"
        return f"{self.name}: PSI {self.psi:.3f}, {self.test} p={self.p_value:.3g} ({verdict})"


@dataclass(frozen=True)
class DriftRule:
    """Limits for one feature: drift needs PSI above `psi` and the p-value below `p_value`."""

    psi: float = 0.25
    p_value: float = 0.05


@dataclass(frozen=True)
class DriftRules:
    """The drift policy as serving and the batch asset apply it (from the declaration)."""

    default: DriftRule = DriftRule()
    features: dict[str, DriftRule] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    """Feature → the policy's reason for not comparing it."""
    window_seconds: float = 900.0
    min_rows: int = 300
    max_rows: int = 1000
    attribution_share_change: float | None = None
    """A feature's share of the model's attribution may move this much before it counts as
    attribution drift (`shipway.stats.attribution`); None: attribution is not judged."""

    def rule(self, name: str) -> DriftRule:
        return self.features.get(name, self.default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DriftRules:
        return cls(
            default=DriftRule(**raw["default"]),
            features={k: DriftRule(**v) for k, v in raw["features"].items()},
            excluded=dict(raw["excluded"]),
            window_seconds=float(raw["window_seconds"]),
            min_rows=int(raw["min_rows"]),
            max_rows=int(raw["max_rows"]),
            # Absent from a bundle written before attribution drift existed.
            attribution_share_change=raw.get("attribution_share_change"),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    features: list[FeatureReference]
    score: FeatureReference | None = None
    attributions: AttributionReference | None = None
    """The features' mean |TreeSHAP contribution| on the training rows: what attribution drift
    compares with."""

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> str:
        return json.dumps(
            {
                "features": [asdict(f) for f in self.features],
                "score": asdict(self.score) if self.score else None,
                "attributions": self.attributions.to_dict() if self.attributions else None,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        raw = json.loads(text)
        score = raw.get("score")
        return cls(
            [FeatureReference(**f) for f in raw["features"]],
            FeatureReference(**score) if score else None,
            AttributionReference.from_dict(raw["attributions"])
            if raw.get("attributions")
            else None,
        )

    def save(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        return cls.from_json(path.read_text())


def _sketch(values: np.ndarray, size: int | None) -> np.ndarray:
    ordered = np.sort(values)
    if size is None or len(ordered) <= size:
        return ordered
    return ordered[np.linspace(0, len(ordered) - 1, size).round().astype(int)]


def profile_values(
    name: str, values: np.ndarray, kind: str, bins: int, sketch: int | None = SKETCH_SIZE
) -> FeatureReference:
    """The reference of one column. `sketch=None` keeps every value (exact KS, for the bench)."""
    if kind not in KINDS:
        raise ValueError(f"drift kind of {name!r} is {kind!r}, not one of {KINDS}")
    values = np.asarray(values, dtype=float)
    rows = len(values)
    if kind == NUMERIC:
        quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
        # An edge at the minimum would open a bin no training value falls in.
        edges = np.unique(quantiles[quantiles > values.min()])
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        kept = _sketch(values, sketch)
        found = FeatureReference(
            name,
            kind,
            rows,
            expected=(counts / max(rows, 1)).tolist(),
            edges=edges.astype(float).tolist(),
            sketch=kept.tolist(),
        )
        # The arrays at hand, so the first comparison does not convert the lists back.
        found.__dict__["sketch_array"] = kept
        return found
    categories = np.arange(24.0) if kind == HOUR_OF_DAY else np.unique(values)
    found = FeatureReference(name, kind, rows, [], categories=[float(c) for c in categories])
    counts = found.counts(values)
    if kind == HOUR_OF_DAY and counts[-1]:
        raise ValueError(f"hour_of_day feature {name!r} has values outside 0-23")
    return FeatureReference(
        name,
        kind,
        rows,
        expected=[float(c) for c in counts[:-1] / max(rows, 1)],
        categories=found.categories,
    )


def build_reference(
    frame: pd.DataFrame,
    features: list[str],
    bins: int,
    kinds: Mapping[str, str] | None = None,
    scores: np.ndarray | None = None,
    sketch: int | None = SKETCH_SIZE,
    attributions: AttributionReference | None = None,
) -> ReferenceProfile:
    """Every feature's reference (numeric unless `kinds` says otherwise), the scores', and the
    features' attribution when given."""
    kinds = kinds or {}
    refs = [
        profile_values(
            name, frame[name].to_numpy(dtype=float), kinds.get(name, NUMERIC), bins, sketch
        )
        for name in features
    ]
    score = None if scores is None else profile_values(SCORE, scores, NUMERIC, bins, sketch)
    return ReferenceProfile(refs, score, attributions)


def compare_values(ref: FeatureReference, values: np.ndarray, rule: DriftRule) -> FeatureDrift:
    """One column against its reference."""
    values = np.asarray(values, dtype=float)
    if ref.kind == NUMERIC:
        values = np.sort(values)
        counts = ref.counts(values, ordered=True)
        expected = ref.expected_array
        statistic, p_value = ks_test(
            ref.sketch_array, ref.rows, values, ordered=True, sketch_distinct=ref.sketch_distinct
        )
        test = "ks"
    else:
        counts = ref.counts(values)
        expected = np.append(ref.expected_array, 0.0)
        if ref.kind == HOUR_OF_DAY:
            covered = (counts > 0).astype(float)
            covered[-1] = 0.0
            mass = float((expected * covered).sum())
            if mass > 0:
                expected = expected * covered / mass
        statistic, p_value = chi2_test(expected, counts)
        test = "chi2"
    value = psi(expected, counts)
    drifted = value > rule.psi and p_value < rule.p_value
    return FeatureDrift(ref.name, ref.kind, len(values), value, test, p_value, statistic, drifted)


def compare(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    rules: DriftRules,
    scores: np.ndarray | None = None,
) -> list[FeatureDrift]:
    """Every compared feature of `frame` (and the scores) against the profile.

    Large frames (the batch asset, the benchmark) compare one column per core: numpy's sorts
    and searches release the GIL. A live window is small and stays on the caller's thread.
    """
    jobs = [
        (ref, frame[ref.name].to_numpy(dtype=float), rules.rule(ref.name))
        for ref in profile.features
        if ref.name not in rules.excluded
    ]
    if profile.score is not None and scores is not None:
        jobs.append((profile.score, np.asarray(scores, dtype=float), rules.rule(SCORE)))
    if len(frame) < _PARALLEL_ROWS:
        return [compare_values(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: compare_values(*job), jobs))


class DriftWindow:
    """The rows a version served in the last `rules.window_seconds`, at most `max_rows`."""

    def __init__(self, profile: ReferenceProfile, rules: DriftRules) -> None:
        self.profile = profile
        self.rules = rules
        self._window = RowWindow(rules.window_seconds, rules.max_rows)

    @property
    def samples(self) -> int:
        """Rows judged: those in the time window, at most `max_rows` (whole batches are kept,
        the newest rows of them judged)."""
        return self._window.samples

    def add(self, rows: np.ndarray, scores: np.ndarray, at: float | None = None) -> None:
        """Add rows shaped (n, n_features), columns in profile order, with their scores."""
        self._window.add(at, rows, scores)

    def expire(self, now: float | None = None) -> None:
        self._window.expire(now)

    def drift(self, now: float | None = None) -> list[FeatureDrift]:
        """The window's statistics; none while it holds fewer rows than the policy's minimum."""
        self.expire(now)
        if self._window.rows < self.rules.min_rows:
            return []
        rows, scores = self._window.newest()
        frame = pd.DataFrame(rows, columns=self.profile.feature_names)
        return compare(self.profile, frame, self.rules, scores)
