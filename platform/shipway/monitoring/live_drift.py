"""Drift over time: each served version's prediction log, day by day, against its reference.

The live window (`shipway.stats.drift.DriftWindow`) answers "is it drifting now"; this
answers "since when, and which features": the rows a version served each day (mirrored shadow
rows are left out) compared with the reference and the rules of its bundle, the same
statistics and decisions. A day has no statistics under the rules' minimum count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shipway.monitoring.figures import markdown_image, plt
from shipway.names import SCORE
from shipway.stats.drift import DriftRules, FeatureDrift, ReferenceProfile, compare


@dataclass(frozen=True)
class DailyDrift:
    version: str
    day: str
    rows: int
    found: list[FeatureDrift]
    """Empty when the day has fewer rows than the rules' minimum."""

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [d for d in self.found if d.drifted]

    @property
    def worst(self) -> FeatureDrift | None:
        return max(self.found, key=lambda d: d.psi, default=None)


def daily_drift(
    predictions: pd.DataFrame, versions: dict[str, tuple[ReferenceProfile, DriftRules]]
) -> list[DailyDrift]:
    """Per version (those in `versions`: the ones with a bundle) and day, oldest first."""
    served = predictions[predictions["served"]]
    days: list[DailyDrift] = []
    for (version, day), rows in served.groupby(["version", "day"], sort=True):
        if version not in versions:
            continue
        profile, rules = versions[str(version)]
        if len(rows) < rules.min_rows:
            days.append(DailyDrift(str(version), str(day), len(rows), []))
            continue
        matrix = np.asarray(rows["vector"].tolist(), dtype=float)
        frame = pd.DataFrame(matrix, columns=profile.feature_names)
        found = compare(profile, frame, rules, rows["score"].to_numpy(dtype=float))
        days.append(DailyDrift(str(version), str(day), len(rows), found))
    return days


def markdown(days: list[DailyDrift], excluded: dict[str, str]) -> str:
    lines = [
        "| version | day | rows | drifted (PSI, p-value) | largest PSI |",
        "| --- | --- | --- | --- | --- |",
    ]
    for day in days:
        if not day.found:
            lines.append(f"| v{day.version} | {day.day} | {day.rows} | too few rows | |")
            continue
        drifted = ", ".join(f"{d.name} ({d.psi:.2f}, {d.p_value:.2g})" for d in day.drifted)
        worst = day.worst
        top = f"{worst.name} {worst.psi:.3f}" if worst else ""
        lines.append(f"| v{day.version} | {day.day} | {day.rows} | {drifted or 'none'} | {top} |")
    if excluded:
        lines.append("")
        lines += [f"- `{name}` not compared: {why}" for name, why in sorted(excluded.items())]
    return "\n".join(lines)


def figure(days: list[DailyDrift], rules: DriftRules, top: int = 6) -> str:
    """PSI by day of the features that moved most (and the score), per version, as a markdown
    image; dashed: the default PSI threshold."""
    judged = [d for d in days if d.found]
    versions = sorted({d.version for d in judged}, key=lambda v: (len(v), v))
    fig, axes = plt.subplots(len(versions), 1, figsize=(8, 3 * len(versions)), squeeze=False)
    for axis, version in zip(axes[:, 0], versions, strict=True):
        mine = [d for d in judged if d.version == version]
        peak: dict[str, float] = {}
        for day in mine:
            for item in day.found:
                peak[item.name] = max(peak.get(item.name, 0.0), item.psi)
        shown = sorted(peak, key=lambda n: -peak[n])[:top]
        if SCORE in peak and SCORE not in shown:
            shown.append(SCORE)
        x = [pd.Timestamp(d.day) for d in mine]
        for name in shown:
            series = [next((i.psi for i in d.found if i.name == name), np.nan) for d in mine]
            axis.plot(x, series, marker="o", label=name)
        axis.axhline(rules.default.psi, linestyle="--", color="grey")
        axis.set_ylabel(f"v{version} PSI")
        axis.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    return markdown_image(fig, "drift by day")
