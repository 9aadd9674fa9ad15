"""Feature drift: a reference profile taken from the training set, and PSI of live traffic.

The profile is quantile bins per feature with the training proportions in each bin. It is
saved next to the model (and logged to MLflow), so serving compares live traffic to exactly the
data the deployed version was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Floor for empty bins: PSI is undefined for a zero proportion on either side.
_EPSILON = 1e-4


@dataclass(frozen=True)
class FeatureReference:
    name: str
    edges: list[float]
    expected: list[float]

    def bin_indices(self, values: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.edges), values, side="right")


@dataclass(frozen=True)
class ReferenceProfile:
    features: list[FeatureReference]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> str:
        return json.dumps({"features": [asdict(f) for f in self.features]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        raw = json.loads(text)
        return cls([FeatureReference(**f) for f in raw["features"]])

    def save(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        return cls.from_json(path.read_text())


def build_reference(frame: pd.DataFrame, features: list[str], bins: int) -> ReferenceProfile:
    """Quantile bins per feature; ties collapse, so a binary feature gets two bins."""
    refs = []
    for name in features:
        values = frame[name].to_numpy(dtype=float)
        quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
        # An edge at the minimum would open a bin no training value falls in.
        edges = np.unique(quantiles[quantiles > values.min()])
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        refs.append(
            FeatureReference(
                name=name,
                edges=[float(e) for e in edges],
                expected=[float(c) for c in counts / max(len(values), 1)],
            )
        )
    return ReferenceProfile(refs)


def psi(expected: np.ndarray, observed_counts: np.ndarray) -> float:
    """Population stability index of observed counts against expected proportions."""
    total = observed_counts.sum()
    if total == 0:
        return 0.0
    actual = np.clip(observed_counts / total, _EPSILON, None)
    exp = np.clip(expected, _EPSILON, None)
    return float(np.sum((actual - exp) * np.log(actual / exp)))


class DriftWindow:
    """The last `size` rows seen by serving, kept as bin indices per feature."""

    def __init__(self, profile: ReferenceProfile, size: int) -> None:
        self.profile = profile
        self.size = size
        self._bins = np.zeros((size, len(profile.features)), dtype=np.int16)
        self._next = 0
        self._filled = 0

    @property
    def samples(self) -> int:
        return self._filled

    def add(self, rows: np.ndarray) -> None:
        """Add rows shaped (n, n_features), columns in profile order."""
        if rows.size == 0:
            return
        binned = np.column_stack(
            [ref.bin_indices(rows[:, i]) for i, ref in enumerate(self.profile.features)]
        )[-self.size :]
        idx = (self._next + np.arange(len(binned))) % self.size
        self._bins[idx] = binned
        self._next = int((self._next + len(binned)) % self.size)
        self._filled = min(self.size, self._filled + len(binned))

    def psi_by_feature(self) -> dict[str, float]:
        window = self._bins[: self._filled]
        result = {}
        for i, ref in enumerate(self.profile.features):
            counts = np.bincount(window[:, i], minlength=len(ref.expected))
            result[ref.name] = psi(np.asarray(ref.expected), counts)
        return result
