"""Judge a challenger against the policy and the champion, on arrays: the release report.

Everything here is pure (no MLflow, no Delta), so each rule is tested on constructed scores.
The verdict is one of:

- `insufficient_evidence`: too few rows or positives to decide; never a pass;
- `blocked`: a rule failed; the report names each one, observed against expected;
- `awaiting_approval`: every rule passed, but the change needs a named approver;
- `promoted`: every rule passed and the tier allows it to go to rollout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shipway.models.declaration import ModelDeclaration, SliceRule
from shipway.stats.metrics import (
    PairedInterval,
    expected_calibration_error,
    higher_is_better,
    metric_functions,
    paired_bootstrap,
    point_values,
)

PROMOTED = "promoted"
BLOCKED = "blocked"
AWAITING_APPROVAL = "awaiting_approval"
INSUFFICIENT_EVIDENCE = "insufficient_evidence"
VERDICTS = (PROMOTED, BLOCKED, AWAITING_APPROVAL, INSUFFICIENT_EVIDENCE)


@dataclass(frozen=True)
class Outcome:
    kind: str
    """evidence | absolute | versus_champion | slice | fairness | operational | reproducibility
    | skew"""
    rule: str
    observed: str
    expected: str
    passed: bool

    def line(self) -> str:
        return f"{self.rule}: observed {self.observed}, expected {self.expected}"


@dataclass(frozen=True)
class SliceRow:
    column: str
    value: str
    metric: str
    rows: int
    positives: int | None
    challenger: float
    champion: float | None
    judged: bool

    @property
    def delta(self) -> float | None:
        return None if self.champion is None else self.challenger - self.champion


@dataclass(frozen=True)
class Operational:
    latency_p50_ms: float
    latency_p99_ms: float
    model_mb: float


@dataclass(frozen=True)
class Reproducibility:
    registered_sha256: str
    rebuilt_sha256: str
    differences: list[str]

    @property
    def identical(self) -> bool:
        return self.registered_sha256 == self.rebuilt_sha256


@dataclass
class ReleaseReport:
    model: str
    version: str
    champion: str | None
    rows: int
    positives: int | None
    metrics: dict[str, dict[str, float | None]]
    intervals: list[PairedInterval]
    slices: list[SliceRow]
    outcomes: list[Outcome]
    change: list[str]
    approval_reasons: list[str]
    notes: list[str]
    lineage: dict[str, str] = field(default_factory=dict)
    operational: Operational | None = None
    calibration_error: float | None = None
    reproducibility: Reproducibility | None = None

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and o.kind != "evidence"]

    @property
    def insufficient(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and o.kind == "evidence"]

    @property
    def verdict(self) -> str:
        if self.insufficient:
            return INSUFFICIENT_EVIDENCE
        if self.failures:
            return BLOCKED
        if self.approval_reasons:
            return AWAITING_APPROVAL
        return PROMOTED

    def summary(self, policy_path: str) -> str:
        head = f"{self.model} v{self.version}"
        against = (
            f"against champion v{self.champion}"
            if self.champion
            else "with no champion yet (absolute gates decide alone)"
        )
        verdict = self.verdict
        if verdict == INSUFFICIENT_EVIDENCE:
            why = "; ".join(o.line() for o in self.insufficient)
            return (
                f"{head}: insufficient evidence {against}: {why}. Not released: land more "
                f"labelled days and retrain, or change the minimums in {policy_path} in review."
            )
        if verdict == BLOCKED:
            why = "; ".join(f"[{o.kind}] {o.line()}" for o in self.failures)
            return (
                f"{head} blocked {against}: {why} (rules in {policy_path}). Not deployed; fix "
                "the data, features or parameters and retrain, or change the policy in review."
            )
        passed = f"passed {len(self.outcomes)} rules {against}"
        if verdict == AWAITING_APPROVAL:
            return (
                f"{head} {passed}; awaiting approval ({'; '.join(self.approval_reasons)}). "
                f"Nothing reaches traffic until `shipway models approve {self.model} "
                f"{self.version} --reason ...`."
            )
        return f"{head} {passed}; promoted to rollout ({', '.join(self.change) or 'retrain'})."

    def markdown(self) -> str:
        def num(value: float | None) -> str:
            return "-" if value is None or math.isnan(value) else f"{value:.4f}"

        lines = [
            f"**{self.model} v{self.version}: {self.verdict}** "
            + (f"(champion v{self.champion})" if self.champion else "(no champion)"),
            "",
            f"Evaluation rows: {self.rows}"
            + (f", positives: {self.positives}" if self.positives is not None else "")
            + "".join(f"; {k} {v}" for k, v in self.lineage.items() if k.startswith("evaluation")),
            "",
            "| metric | challenger | champion | delta | CI | better |",
            "|---|---|---|---|---|---|",
        ]
        intervals = {i.metric: i for i in self.intervals}
        for metric, values in self.metrics.items():
            interval = intervals.get(metric)
            ci = f"[{interval.low:+.4f}, {interval.high:+.4f}]" if interval else "-"
            delta = f"{interval.delta:+.4f}" if interval else "-"
            better = "higher" if higher_is_better(metric) else "lower"
            lines.append(
                f"| {metric} | {num(values['challenger'])} | {num(values['champion'])} | "
                f"{delta} | {ci} | {better} |"
            )
        lines += ["", "| rule | kind | observed | expected | result |", "|---|---|---|---|---|"]
        for o in self.outcomes:
            result = "pass" if o.passed else ("insufficient" if o.kind == "evidence" else "FAIL")
            lines.append(f"| {o.rule} | {o.kind} | {o.observed} | {o.expected} | {result} |")
        if self.slices:
            lines += [
                "",
                "| slice | metric | rows | positives | challenger | champion | delta | judged |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for s in self.slices:
                lines.append(
                    f"| {s.column}={s.value} | {s.metric} | {s.rows} | "
                    f"{'-' if s.positives is None else s.positives} | {num(s.challenger)} | "
                    f"{num(s.champion)} | {num(s.delta)} | {'yes' if s.judged else 'too small'} |"
                )
        if self.approval_reasons:
            lines += ["", "Approval needed: " + "; ".join(self.approval_reasons)]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["verdict"] = self.verdict
        return _finite(values)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a metric that could not be computed is null."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def slice_values(column: pd.Series, rule: SliceRule) -> pd.Series:
    """The slice each row falls in: its value, or its bin `[low, high)` for a binned column."""
    if rule.bins is None:
        return column.astype(str)
    cut = pd.cut(column.astype(float), bins=rule.bins, right=False)
    return cut.astype(str).where(cut.notna(), "outside bins")


def _fmt(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4f}"


@dataclass
class Judge:
    """Judges one challenger on the evaluation rows: every rule of the declaration."""

    declaration: ModelDeclaration
    labels: np.ndarray
    challenger_scores: np.ndarray
    champion_scores: np.ndarray | None
    baseline: np.ndarray | None = None
    slice_columns: dict[str, pd.Series] = field(default_factory=dict)
    seed: int = 7

    @property
    def classification(self) -> bool:
        return self.declaration.problem == "binary_classification"

    def report(
        self,
        version: str,
        champion: str | None,
        change: list[str],
        operational: Operational | None = None,
        reproducibility: Reproducibility | None = None,
        lineage: dict[str, str] | None = None,
    ) -> ReleaseReport:
        d, policy = self.declaration, self.declaration.release
        rows = len(self.labels)
        positives = int(np.sum(self.labels)) if self.classification else None
        outcomes = [
            Outcome(
                "evidence",
                "evaluation rows",
                str(rows),
                f">= {policy.min_rows}",
                rows >= policy.min_rows,
            )
        ]
        if positives is not None:
            outcomes.append(
                Outcome(
                    "evidence",
                    "positive labels",
                    str(positives),
                    f">= {policy.min_positives}",
                    positives >= policy.min_positives,
                )
            )
        notes: list[str] = []
        enough = rows > 0 and (positives is None or 0 < positives < rows)
        a = metric_functions(d.problem, self.labels, self.challenger_scores, self.baseline)
        b = (
            metric_functions(d.problem, self.labels, self.champion_scores, self.baseline)
            if self.champion_scores is not None
            else None
        )
        mine = point_values(a, rows) if enough else dict.fromkeys(a, math.nan)
        theirs = point_values(b, rows) if b is not None and enough else None
        metrics = {m: {"challenger": mine[m], "champion": theirs[m] if theirs else None} for m in a}
        for gate in d.gates:
            observed = mine.get(gate.metric, math.nan)
            if gate.min is not None or gate.max is not None:
                failure = gate.check(observed)
                bounds = " and ".join(
                    s
                    for s in (
                        f">= {gate.min}" if gate.min is not None else "",
                        f"<= {gate.max}" if gate.max is not None else "",
                    )
                    if s
                )
                outcomes.append(
                    Outcome("absolute", gate.metric, _fmt(observed), bounds, failure is None)
                )
        intervals: list[PairedInterval] = []
        compared = [g for g in d.gates if g.versus_champion is not None]
        if b is None:
            notes.append("No champion yet: the absolute gates decide alone.")
        elif compared and enough:
            found = paired_bootstrap(
                a,
                b,
                [g.metric for g in compared],
                rows,
                policy.bootstrap_samples,
                policy.confidence,
                self.seed,
            )
            for gate in compared:
                interval, rule = found[gate.metric], gate.versus_champion
                assert rule is not None
                point, low, high = interval.improvement
                threshold = rule.threshold(interval.champion)
                passes = (
                    low >= threshold if rule.non_inferiority_margin is not None else low > threshold
                )
                outcomes.append(
                    Outcome(
                        "versus_champion",
                        f"{gate.metric} vs champion",
                        f"improvement {point:+.4f}, {interval.confidence:.0%} CI "
                        f"[{low:+.4f}, {high:+.4f}]",
                        f"{rule.describe()}: CI above {threshold:+.4f}",
                        bool(passes),
                    )
                )
                intervals.append(interval)
        slices = self._slices(outcomes)
        if operational is not None:
            limits = policy.operational
            outcomes += [
                Outcome(
                    "operational",
                    "single-row predict p99",
                    f"{operational.latency_p99_ms:.3f} ms",
                    f"<= {limits.max_latency_p99_ms} ms",
                    operational.latency_p99_ms <= limits.max_latency_p99_ms,
                ),
                Outcome(
                    "operational",
                    "model size",
                    f"{operational.model_mb:.3f} MB",
                    f"<= {limits.max_model_mb} MB",
                    operational.model_mb <= limits.max_model_mb,
                ),
            ]
        calibration = None
        if self.classification and enough:
            calibration = expected_calibration_error(self.labels, self.challenger_scores)
            limit = policy.operational.max_calibration_error
            if limit is not None:
                outcomes.append(
                    Outcome(
                        "operational",
                        "calibration error (ECE)",
                        _fmt(calibration),
                        f"<= {limit}",
                        calibration <= limit,
                    )
                )
        if reproducibility is not None:
            differed = "; ".join(reproducibility.differences) or "same lineage"
            outcomes.append(
                Outcome(
                    "reproducibility",
                    "retrained artifact sha256",
                    f"{reproducibility.rebuilt_sha256[:12]} ({differed})",
                    f"{reproducibility.registered_sha256[:12]} (registered)",
                    reproducibility.identical,
                )
            )
        approval = []
        if d.release.approval.high_risk:
            approval.append(f"{d.name} is declared high-risk: every release needs a named approver")
        approval += [
            f"{kind.replace('_', ' ')} changed"
            if kind != "first_version"
            else "first version of the model"
            for kind in change
            if kind in d.release.approval.needs_approval
        ]
        return ReleaseReport(
            model=d.name,
            version=version,
            champion=champion,
            rows=rows,
            positives=positives,
            metrics=metrics,
            intervals=intervals,
            slices=slices,
            outcomes=outcomes,
            change=change,
            approval_reasons=approval,
            notes=notes,
            lineage=lineage or {},
            operational=operational,
            calibration_error=calibration,
            reproducibility=reproducibility,
        )

    def _slice_metric(self, metric: str, mask: np.ndarray, scores: np.ndarray) -> float:
        labels = self.labels[mask]
        positives = labels.sum()
        if not len(labels) or (self.classification and not 0 < positives < len(labels)):
            return math.nan
        baseline = None if self.baseline is None else self.baseline[mask]
        funcs = metric_functions(self.declaration.problem, labels, scores[mask], baseline)
        return point_values({metric: funcs[metric]}, len(labels))[metric]

    def _slices(self, outcomes: list[Outcome]) -> list[SliceRow]:
        d = self.declaration
        table: list[SliceRow] = []
        for rule in d.release.slices:
            groups = slice_values(self.slice_columns[rule.column], rule).to_numpy()
            rows: list[SliceRow] = []
            for value in sorted(set(groups)):
                mask = groups == value
                labels = self.labels[mask]
                positives = int(labels.sum()) if self.classification else None
                judged = int(mask.sum()) >= rule.min_rows and (
                    positives is None or rule.min_positives <= positives < len(labels)
                )
                champion = self.champion_scores
                rows.append(
                    SliceRow(
                        rule.column,
                        str(value),
                        rule.metric,
                        int(mask.sum()),
                        positives,
                        self._slice_metric(rule.metric, mask, self.challenger_scores),
                        None
                        if champion is None
                        else self._slice_metric(rule.metric, mask, champion),
                        judged,
                    )
                )
            table += rows
            judged_rows = [r for r in rows if r.judged]
            sign = 1.0 if higher_is_better(rule.metric) else -1.0
            if rule.max_regression is not None and self.champion_scores is not None:
                for r in judged_rows:
                    assert r.delta is not None
                    worse_by = -sign * r.delta
                    outcomes.append(
                        Outcome(
                            "slice",
                            f"{rule.metric} on {rule.column}={r.value} vs champion",
                            f"{_fmt(r.challenger)} vs {_fmt(r.champion or math.nan)} "
                            f"(worse by {worse_by:+.4f})",
                            f"worse by at most {rule.max_regression}",
                            bool(worse_by <= rule.max_regression),
                        )
                    )
            if rule.max_gap is not None and len(judged_rows) >= 2:
                values = [r.challenger for r in judged_rows]
                best = max(values) if sign > 0 else min(values)
                worst = min(values) if sign > 0 else max(values)
                gap = abs(best - worst)
                outcomes.append(
                    Outcome(
                        "fairness",
                        f"{rule.metric} gap across {rule.column}",
                        f"{gap:.4f} (best {best:.4f}, worst {worst:.4f})",
                        f"<= {rule.max_gap}",
                        bool(gap <= rule.max_gap),
                    )
                )
        return table
