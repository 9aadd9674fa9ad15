"""The release report: every rule's outcome, the metrics with their intervals, the slice table,
and the verdict (`shipway.release.judge` makes it). The verdict is one of:

- `insufficient_evidence`: too few rows or positives to decide; never a pass;
- `blocked`: a rule failed; the report names each one, observed against expected;
- `awaiting_approval`: every rule passed, but the change needs a named approver;
- `promoted`: every rule passed and the tier allows it to go to rollout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from shipway.models.declaration import ChangeRule
from shipway.stats.metrics import (
    PairedInterval,
    higher_is_better,
)

PROMOTED = "promoted"
BLOCKED = "blocked"
AWAITING_APPROVAL = "awaiting_approval"
INSUFFICIENT_EVIDENCE = "insufficient_evidence"
VERDICTS = (PROMOTED, BLOCKED, AWAITING_APPROVAL, INSUFFICIENT_EVIDENCE)


@dataclass(frozen=True)
class Outcome:
    kind: str
    """evidence | absolute | versus_champion | slice | fairness | cost | operational
    | reproducibility | skew"""
    rule: str
    observed: str
    expected: str
    passed: bool

    def line(self) -> str:
        return f"{self.rule}: observed {self.observed}, expected {self.expected}"


def change_outcome(kind: str, name: str, rule: ChangeRule, interval: PairedInterval) -> Outcome:
    """A change rule against the champion (a metric gate's, or a fairness rule's), decided on
    the paired interval of the improvement."""
    point, low, high = interval.improvement
    threshold = rule.threshold(interval.champion)
    passes = low >= threshold if rule.non_inferiority_margin is not None else low > threshold
    return Outcome(
        kind,
        f"{name} vs champion",
        f"improvement {point:+.4f}, {interval.confidence:.0%} CI [{low:+.4f}, {high:+.4f}]",
        f"{rule.describe()}: CI above {threshold:+.4f}",
        bool(passes),
    )


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
class GroupRow:
    """One group of a sensitive column: its evaluation rows and the rates fairness rules
    compare, for each model (fairlearn's `MetricFrame.by_group`)."""

    column: str
    group: str
    rows: int
    positives: int | None
    challenger: dict[str, float]
    champion: dict[str, float] | None
    judged: bool


@dataclass(frozen=True)
class CostRow:
    """The expected cost of each model's decisions per 1,000, on the evaluation rows."""

    currency: str
    decision_threshold: float
    challenger: float
    champion: float | None
    interval: PairedInterval | None
    """Challenger - champion on the paired bootstrap (None without a champion)."""
    by_outcome: dict[str, float]
    """The challenger's cost per 1,000 by outcome (false_negative: the missed frauds' cost)."""


@dataclass(frozen=True)
class ImportanceRow:
    """One feature's global importance for each model: its mean |TreeSHAP contribution| on the
    evaluation rows (margin units) and its share of the model's total; None where the model
    has no such feature."""

    feature: str
    challenger: float | None
    champion: float | None
    challenger_share: float | None
    champion_share: float | None


@dataclass(frozen=True)
class Operational:
    predict_cpu_p50_ms: float
    predict_cpu_p99_ms: float
    """CPU time of a single-row predict in-process (not wall time: independent of load)."""
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
    fairness: list[GroupRow] = field(default_factory=list)
    importance: list[ImportanceRow] = field(default_factory=list)
    cost: CostRow | None = None

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
        if self.fairness:
            lines += [
                "",
                "| group | rows | positives | rate | challenger | champion | judged |",
                "|---|---|---|---|---|---|---|",
            ]
            for g in self.fairness:
                for rate, value in g.challenger.items():
                    theirs = None if g.champion is None else g.champion.get(rate)
                    lines.append(
                        f"| {g.column}={g.group} | {g.rows} | "
                        f"{'-' if g.positives is None else g.positives} | {rate} | {num(value)} | "
                        f"{num(theirs)} | {'yes' if g.judged else 'too small'} |"
                    )
        if self.cost is not None:
            c = self.cost
            parts = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in c.by_outcome.items())
            lines += [
                "",
                f"Expected cost per 1,000 decisions ({c.currency}, decision at score >= "
                f"{c.decision_threshold}): challenger {c.challenger:.2f}"
                + (f", champion {c.champion:.2f}" if c.champion is not None else "")
                + (
                    f", difference {c.interval.delta:+.2f} "
                    f"[{c.interval.low:+.2f}, {c.interval.high:+.2f}]"
                    if c.interval is not None
                    else ""
                )
                + f"; the challenger's by outcome: {parts}",
            ]
        if self.importance:
            lines += [
                "",
                "| feature | challenger mean abs SHAP | share | champion mean abs SHAP | share |",
                "|---|---|---|---|---|",
            ]
            for row in self.importance:
                shares = share_text(row.challenger_share), share_text(row.champion_share)
                lines.append(
                    f"| {row.feature} | {num(row.challenger)} | {shares[0]} | "
                    f"{num(row.champion)} | {shares[1]} |"
                )
        if self.approval_reasons:
            lines += ["", "Approval needed: " + "; ".join(self.approval_reasons)]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["verdict"] = self.verdict
        return _finite(values)


def share_text(value: float | None) -> str:
    """A share as a report shows it: a percentage, or "-" where there is none."""
    return "-" if value is None else f"{value:.1%}"


def _finite(value: Any) -> Any:
    """JSON has no NaN: a metric that could not be computed is null."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
