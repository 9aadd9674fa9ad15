"""Fairness rules of a release: how far apart the groups of each sensitive column are, for the
challenger and the champion on the same evaluation rows.

fairlearn's `MetricFrame` gives each group's rates (the report's table and the observed
differences); the paired bootstrap of `shipway.stats.fairness` gives the interval of the change
against the champion. Each rule is an absolute limit on the difference, and optionally a change
rule against the champion decided like the metric gates. A rule with fewer than two judged
groups cannot be judged: that is insufficient evidence, never a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import mean_absolute_error

from shipway.models.declaration import FairnessPolicy, FairnessRule
from shipway.release.report import GroupRow, Outcome, change_outcome
from shipway.stats.fairness import fairness_function, rates_of
from shipway.stats.metrics import paired_bootstrap

Rate = Callable[..., float]
_FAIRLEARN: dict[str, Rate] = {
    "selection_rate": selection_rate,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "false_negative_rate": false_negative_rate,
    "mean_absolute_error": mean_absolute_error,
}


@dataclass(frozen=True)
class Spread:
    """A fairness metric's value: the difference, and the rate and groups that make it."""

    value: float
    rate: str
    high: tuple[str, float]
    low: tuple[str, float]

    def describe(self) -> str:
        return (
            f"{self.value:.4f}: {self.rate} {self.high[0]} {self.high[1]:.4f} vs "
            f"{self.low[0]} {self.low[1]:.4f}"
        )


def by_group(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    rates: list[str],
    threshold: float | None,
) -> pd.DataFrame:
    """fairlearn's per-group rates (rows: groups, columns: rates) of one model's decisions, or
    of its predictions for a regression; `groups` holds each row's group as a string."""
    predicted = scores if threshold is None else (scores >= threshold).astype(np.int64)
    truth = labels if threshold is None else labels.astype(np.int64)
    frame = MetricFrame(
        metrics={r: _FAIRLEARN[r] for r in rates},
        y_true=truth,
        y_pred=predicted,
        sensitive_features=groups,
    )
    table: pd.DataFrame = frame.by_group
    return table


def spread(table: pd.DataFrame, metric: str, judged: list[str]) -> Spread | None:
    """The metric from a `by_group` table over the judged groups; None when fewer than two
    have the rates it needs."""
    found: list[Spread] = []
    for rate in rates_of(metric):
        values = {str(g): float(v) for g, v in table.loc[judged, rate].items() if not np.isnan(v)}
        if len(values) < 2:
            return None
        high, low = max(values, key=values.__getitem__), min(values, key=values.__getitem__)
        found.append(
            Spread(values[high] - values[low], rate, (high, values[high]), (low, values[low]))
        )
    return max(found, key=lambda s: s.value)


@dataclass
class FairnessJudge:
    """Every fairness rule of a policy on the evaluation rows."""

    policy: FairnessPolicy
    labels: np.ndarray
    challenger_scores: np.ndarray
    champion_scores: np.ndarray | None
    columns: dict[str, pd.Series]
    classification: bool
    bootstrap_samples: int
    confidence: float
    seed: int

    def _judged(self, rows: int, positives: int) -> bool:
        return rows >= self.policy.min_group_rows and (
            not self.classification or positives >= self.policy.min_group_positives
        )

    def judge(self) -> tuple[list[GroupRow], list[Outcome]]:
        table: list[GroupRow] = []
        outcomes: list[Outcome] = []
        threshold = self.policy.decision_threshold
        for column in dict.fromkeys(r.column for r in self.policy.rules):
            rules = [r for r in self.policy.rules if r.column == column]
            rates = list(dict.fromkeys(rate for r in rules for rate in rates_of(r.metric)))
            groups = self.columns[column].astype(str).to_numpy()
            mine = by_group(self.labels, self.challenger_scores, groups, rates, threshold)
            theirs = (
                None
                if self.champion_scores is None
                else by_group(self.labels, self.champion_scores, groups, rates, threshold)
            )
            rows: list[GroupRow] = []
            for group in mine.index:
                mask = groups == group
                count, positives = int(mask.sum()), int(self.labels[mask].sum())
                rows.append(
                    GroupRow(
                        column,
                        str(group),
                        count,
                        positives if self.classification else None,
                        {r: float(mine.loc[group, r]) for r in rates},
                        None if theirs is None else {r: float(theirs.loc[group, r]) for r in rates},
                        self._judged(count, positives),
                    )
                )
            judged = [r.group for r in rows if r.judged]
            for rule in rules:
                outcomes += self._rule(rule, mine, groups, judged)
            table += rows
        return table, outcomes

    def _rule(
        self,
        rule: FairnessRule,
        mine: pd.DataFrame,
        groups: np.ndarray,
        judged: list[str],
    ) -> list[Outcome]:
        name = f"{rule.metric} across {rule.column}"
        found = spread(mine, rule.metric, judged)
        if found is None:
            return [
                Outcome(
                    "evidence",
                    f"{name}: judged groups",
                    f"{len(judged)} ({', '.join(judged) or 'none'})",
                    f">= 2 with {self.policy.min_group_rows} rows"
                    + (
                        f" and {self.policy.min_group_positives} positives"
                        if self.classification and self.policy.min_group_positives
                        else ""
                    ),
                    False,
                )
            ]
        outcomes = [
            Outcome("fairness", name, found.describe(), f"<= {rule.max}", found.value <= rule.max)
        ]
        if rule.versus_champion is None or self.champion_scores is None:
            return outcomes
        threshold = self.policy.decision_threshold

        def weighted(scores: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
            return {
                name: fairness_function(rule.metric, self.labels, scores, groups, judged, threshold)
            }

        # A difference is better smaller: the interval's improvement is champion - challenger.
        interval = paired_bootstrap(
            weighted(self.challenger_scores),
            weighted(self.champion_scores),
            [name],
            len(self.labels),
            self.bootstrap_samples,
            self.confidence,
            self.seed,
        )[name]
        outcomes.append(change_outcome("fairness", name, rule.versus_champion, interval))
        return outcomes
