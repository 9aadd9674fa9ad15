"""Training/serving skew: the feature vectors a model was served against the point-in-time
offline vectors of the same requests.

A logged request (`<model>_predictions`: `row_key`, `features`, `vector`) is found again in the
model's label table by its prediction key; that row holds the entity keys, the request fields
and the request's time, so Feast's point-in-time join gives what training would have seen for
it. A stale online store, a materialization bug, or a serving path that computes a feature
differently shows as values that differ. Per feature: the share of compared rows whose values
differ beyond the policy's tolerance. A feature past `max_share` is skewed; the verdict is saved
(`ServingHome.skew_reports`) for the control plane's metrics
(`shipway_feature_skew_share{model, feature}`) and the next release gate, which refuses to
roll out while the latest verdict is skewed.

Logged rows with no label-table row (traffic that was never landed as events) cannot be
compared; they are counted, not guessed at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily

from shipway.files import write_atomic
from shipway.models.declaration import SkewPolicy
from shipway.scrape import Add, Family, FileCollector, FileErrors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSkew:
    feature: str
    compared: int
    differing: int
    max_abs_diff: float

    @property
    def share(self) -> float:
        return self.differing / self.compared if self.compared else 0.0


@dataclass(frozen=True)
class SkewReport:
    model: str
    logged: int
    """Served rows looked at (the newest of the window, at most `sample_rows`)."""
    compared: int
    """Of those, rows found in the label table and compared."""
    features: list[FeatureSkew]
    max_share: float
    min_rows: int
    at: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        return self.compared >= self.min_rows

    @property
    def skewed(self) -> list[FeatureSkew]:
        if not self.judged:
            return []
        return [f for f in self.features if f.share > self.max_share]

    def summary(self) -> str:
        if not self.judged:
            return (
                f"{self.model}: {self.compared} of {self.logged} logged rows comparable "
                f"(< min_rows {self.min_rows}): no verdict"
            )
        if not self.skewed:
            return (
                f"{self.model}: no skew on {self.compared} rows (every feature within "
                f"{self.max_share:.2%} differing)"
            )
        worst = ", ".join(
            f"{f.feature} {f.share:.1%} differ (max |diff| {f.max_abs_diff:.4g})"
            for f in sorted(self.skewed, key=lambda f: -f.share)
        )
        return f"{self.model}: skew on {self.compared} rows: {worst} (limit {self.max_share:.2%})"

    def markdown(self) -> str:
        lines = [
            "| feature | compared | differing | share | max abs diff |",
            "| --- | --- | --- | --- | --- |",
        ]
        for f in sorted(self.features, key=lambda f: (-f.share, f.feature)):
            mark = " **skewed**" if f in self.skewed else ""
            lines.append(
                f"| {f.feature}{mark} | {f.compared} | {f.differing} | {f.share:.2%} | "
                f"{f.max_abs_diff:.4g} |"
            )
        return "\n".join(lines)

    def save(self, folder: Path) -> Path:
        """`<folder>/<model>.json` (`ServingHome.skew_reports`)."""
        return write_atomic(folder / f"{self.model}.json", json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> SkewReport:
        raw = json.loads(path.read_text())
        raw["features"] = [FeatureSkew(**f) for f in raw["features"]]
        return cls(**raw)


def latest(folder: Path, model: str) -> SkewReport | None:
    path = folder / f"{model}.json"
    return SkewReport.load(path) if path.exists() else None


def compare(
    logged: pd.DataFrame, offline: pd.DataFrame, tolerance: float
) -> tuple[list[FeatureSkew], list[dict[str, Any]]]:
    """Per feature: how many rows' served values differ from the offline ones.

    `logged` has `row_key`, `features` and `vector` (one list per row); `offline` is indexed
    by `row_key` with one column per feature. A value differs when |served - offline| >
    tolerance * max(1, |offline|); a missing offline value differs from any served one.
    """
    counts: dict[str, list[float]] = {}
    examples: list[dict[str, Any]] = []
    for key, names, vector in zip(
        logged["row_key"], logged["features"], logged["vector"], strict=True
    ):
        expected = offline.loc[key]
        for name, served in zip(names, vector, strict=True):
            if name not in offline.columns:
                continue
            want = float(expected[name])
            diff = abs(float(served) - want) if want == want else float("inf")
            entry = counts.setdefault(name, [0, 0, 0.0])
            entry[0] += 1
            if diff > tolerance * max(1.0, abs(want) if want == want else 1.0):
                entry[1] += 1
                entry[2] = max(entry[2], diff)
                if len(examples) < 5:
                    examples.append(
                        {
                            "row_key": str(key),
                            "feature": name,
                            "served": float(served),
                            "offline": want,
                        }
                    )
    found = [
        FeatureSkew(name, int(c[0]), int(c[1]), float(c[2])) for name, c in sorted(counts.items())
    ]
    return found, examples


def feature_skew(
    model: str,
    predictions: pd.DataFrame,
    entity_rows: pd.DataFrame,
    offline_vectors: Callable[[pd.DataFrame], pd.DataFrame],
    policy: SkewPolicy,
    at: str = "",
) -> SkewReport:
    """Compare the newest served rows of `predictions` with their offline vectors.

    `entity_rows` is the label table with a `row_key` column; `offline_vectors` takes its
    matching rows and returns the feature frame (same index)."""
    served = predictions[predictions["served"] & predictions["row_key"].notna()]
    served = served.sort_values("at").drop_duplicates("row_key", keep="last")
    served = served.tail(policy.sample_rows)
    rows = entity_rows.drop_duplicates("row_key", keep="last").set_index("row_key", drop=False)
    found = served[served["row_key"].isin(rows.index)]
    if found.empty:
        return SkewReport(model, len(served), 0, [], policy.max_share, policy.min_rows, at)
    matched = rows.loc[found["row_key"]].reset_index(drop=True)
    vectors = offline_vectors(matched)
    vectors.index = matched["row_key"].to_numpy()
    features, examples = compare(found, vectors, policy.tolerance)
    return SkewReport(
        model, len(served), len(found), features, policy.max_share, policy.min_rows, at, examples
    )


def as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce").astype(np.float64) for c in frame.columns},
        index=frame.index,
    )


class SkewCollector(FileCollector):
    """Each model's training/serving skew, as `<model>_feature_skew` last measured it (read at
    scrape from `<folder>/<model>.json`, `ServingHome.skew_reports`). The serving control plane
    exports it; a report that cannot be read leaves out its model alone, counted
    (`shipway.scrape`)."""

    def __init__(self, folder: Path, errors: FileErrors) -> None:
        super().__init__(errors)
        self.folder = folder

    def families(self) -> list[Family]:
        return [
            GaugeMetricFamily(
                "shipway_feature_skew_share",
                "Share of compared served rows whose feature value differs from the "
                "point-in-time offline value",
                labels=["model", "feature"],
            ),
            GaugeMetricFamily(
                "shipway_feature_skew_compared_rows",
                "Served rows compared with their offline vectors in the last skew run",
                labels=["model"],
            ),
        ]

    def files(self) -> Iterable[Path]:
        return self.folder.glob("*.json") if self.folder.exists() else []

    def read(self, path: Path, add: Add) -> None:
        report = SkewReport.load(path)
        add("shipway_feature_skew_compared_rows", [report.model], report.compared)
        for feature in report.features:
            add("shipway_feature_skew_share", [report.model, feature.feature], feature.share)
