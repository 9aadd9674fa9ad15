"""Judge a challenger against its declaration and the champion, on arrays: the release report.

Everything here is pure (no MLflow, no Delta), so each rule is tested on constructed scores:
absolute thresholds, the change rules against the champion on paired bootstrap intervals,
slices, fairness, the business cost of the decisions, operational limits, calibration,
reproducibility and the approval tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shipway.models.declaration import CostPolicy, ModelDeclaration, SliceRule
from shipway.release.fairness import FairnessJudge
from shipway.release.report import (
    CostRow,
    GroupRow,
    Operational,
    Outcome,
    ReleaseReport,
    Reproducibility,
    SliceRow,
    change_outcome,
)
from shipway.stats.cost import COST_METRIC, outcome_masks, per_thousand, row_costs
from shipway.stats.metrics import (
    PairedInterval,
    expected_calibration_error,
    higher_is_better,
    metric_functions,
    paired_bootstrap,
    point_values,
)


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
    sensitive_columns: dict[str, pd.Series] = field(default_factory=dict)
    cost_columns: dict[str, pd.Series] = field(default_factory=dict)
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
                outcomes.append(change_outcome("versus_champion", gate.metric, rule, interval))
                intervals.append(interval)
        slices = self._slices(outcomes)
        fairness: list[GroupRow] = []
        if policy.fairness is not None and enough:
            fairness, judged = FairnessJudge(
                policy.fairness,
                self.labels,
                self.challenger_scores,
                self.champion_scores,
                self.sensitive_columns,
                self.classification,
                policy.bootstrap_samples,
                policy.confidence,
                self.seed,
            ).judge()
            outcomes += judged
        cost = None
        if policy.cost is not None and self.classification and enough:
            cost = self._cost(policy.cost, outcomes)
            metrics[COST_METRIC] = {"challenger": cost.challenger, "champion": cost.champion}
            if cost.interval is not None:
                intervals.append(cost.interval)
        if operational is not None:
            limits = policy.operational
            outcomes += [
                Outcome(
                    "operational",
                    "single-row predict CPU time p99",
                    f"{operational.predict_cpu_p99_ms:.3f} ms",
                    f"<= {limits.max_predict_cpu_p99_ms} ms",
                    operational.predict_cpu_p99_ms <= limits.max_predict_cpu_p99_ms,
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
            fairness=fairness,
            cost=cost,
        )

    def _costs(self, policy: CostPolicy, scores: np.ndarray) -> np.ndarray:
        columns = {name: column.to_numpy() for name, column in self.cost_columns.items()}
        return row_costs(self.labels, scores, policy.decision_threshold, policy.prices(columns))

    def _cost(self, policy: CostPolicy, outcomes: list[Outcome]) -> CostRow:
        """The expected cost per 1,000 decisions of both models, its limit and change rule."""
        rows = len(self.labels)
        mine = self._costs(policy, self.challenger_scores)
        a = {COST_METRIC: per_thousand(mine)}
        challenger = point_values(a, rows)[COST_METRIC]
        masks = outcome_masks(self.labels, self.challenger_scores, policy.decision_threshold)
        by_outcome = {
            outcome: float(1000.0 * mine[mask].sum() / rows) for outcome, mask in masks.items()
        }
        unit = f"{policy.currency} per 1,000 decisions"
        if policy.max_per_1000 is not None:
            outcomes.append(
                Outcome(
                    "cost",
                    COST_METRIC,
                    f"{challenger:.2f} {unit}",
                    f"<= {policy.max_per_1000}",
                    challenger <= policy.max_per_1000,
                )
            )
        champion = interval = None
        if self.champion_scores is not None:
            b = {COST_METRIC: per_thousand(self._costs(policy, self.champion_scores))}
            champion = point_values(b, rows)[COST_METRIC]
            release = self.declaration.release
            interval = paired_bootstrap(
                a,
                b,
                [COST_METRIC],
                rows,
                release.bootstrap_samples,
                release.confidence,
                self.seed,
            )[COST_METRIC]
            if policy.versus_champion is not None:
                outcomes.append(
                    change_outcome("cost", COST_METRIC, policy.versus_champion, interval)
                )
        return CostRow(
            policy.currency, policy.decision_threshold, challenger, champion, interval, by_outcome
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
