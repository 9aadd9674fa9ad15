"""The business cost of a classifier's decisions: per-row prices, the gate's cost per 1,000
decisions against its limit and the champion, and the declaration's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from shipway.errors import PolicyError
from shipway.models.catalog import load_models
from shipway.models.declaration import (
    ChangeRule,
    CostPolicy,
    ModelDeclaration,
    OutcomeCost,
    load_declaration,
)
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.release.judge import Judge
from shipway.stats.cost import COST_METRIC, Price, row_costs
from tests.conftest import assets_copy

FRAUD = load_declaration(ASSETS_DIR / "fraud" / "model.yaml")
POLICY = CostPolicy(
    decision_threshold=0.5,
    true_positive=OutcomeCost(fixed=5.0),
    false_positive=OutcomeCost(fixed=5.0),
    false_negative=OutcomeCost(column="amount"),
)


def _declaration(cost: CostPolicy) -> ModelDeclaration:
    operational = FRAUD.release.operational.model_copy(update={"max_calibration_error": None})
    release = FRAUD.release.model_copy(
        update={"slices": [], "fairness": None, "operational": operational, "cost": cost}
    )
    return FRAUD.model_copy(update={"release": release})


def test_each_row_costs_what_its_outcome_costs() -> None:
    labels = np.array([1.0, 1.0, 0.0, 0.0])
    scores = np.array([0.9, 0.2, 0.7, 0.1])
    amounts = np.array([100.0, 250.0, 40.0, 60.0])
    prices = {
        "true_positive": Price(5.0),
        "false_positive": Price(5.0),
        "false_negative": Price(0.0, amounts),
        "true_negative": Price(0.0),
    }
    # Caught fraud: a review; missed fraud: its amount; false alarm: a review; else nothing.
    assert row_costs(labels, scores, 0.5, prices).tolist() == [5.0, 250.0, 5.0, 0.0]
    # The threshold is inclusive: a score at it is a positive decision.
    assert row_costs(labels, np.full(4, 0.5), 0.5, prices).tolist() == [5.0, 5.0, 5.0, 5.0]


def _world(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.05).astype(float)
    amounts = pd.Series(rng.gamma(2.0, 60.0, rows))
    return labels, rng.normal(size=rows), amounts


def _judged(
    cost: CostPolicy, labels: np.ndarray, mine: np.ndarray, theirs: np.ndarray, amounts: pd.Series
) -> tuple[float, float | None, list[str]]:
    judge = Judge(_declaration(cost), labels, mine, theirs, cost_columns={"amount": amounts})
    report = judge.report("2", "1", ["parameters"])
    assert report.cost is not None
    failures = [o.line() for o in report.failures if o.kind == "cost"]
    return report.cost.challenger, report.cost.champion, failures


def test_the_gate_prices_both_models_and_blocks_a_challenger_that_misses_costly_fraud() -> None:
    labels, noise, amounts = _world(6000, seed=1)
    champion = 1 / (1 + np.exp(-(4 * labels - 2 + noise)))
    # The challenger is as good on small payments and blind on large ones: fewer reviews, but
    # the frauds it misses are the expensive ones.
    challenger = np.where(amounts > 150, 0.05, champion)
    rule = POLICY.model_copy(
        update={"versus_champion": ChangeRule(non_inferiority_margin=0.05, relative=True)}
    )
    mine, theirs, failures = _judged(rule, labels, challenger, champion, amounts)
    expected = row_costs(
        labels,
        challenger,
        0.5,
        {
            "true_positive": Price(5.0),
            "false_positive": Price(5.0),
            "false_negative": Price(0.0, amounts.to_numpy()),
        },
    )
    assert mine == pytest.approx(1000 * expected.mean())
    assert theirs is not None and mine > theirs * 1.2
    (failure,) = failures
    assert failure.startswith(f"{COST_METRIC} vs champion: observed improvement -")
    assert "not worse than the champion by more than 0.05 (relative)" in failure

    # The champion against itself passes the change rule; the absolute limit decides alone.
    capped = rule.model_copy(update={"max_per_1000": round(theirs / 2, 2)})
    _, _, failures = _judged(capped, labels, champion, champion, amounts)
    assert failures == [
        f"{COST_METRIC}: observed {theirs:.2f} EUR per 1,000 decisions, expected <= "
        f"{round(theirs / 2, 2)}"
    ]


def test_the_report_shows_the_cost_with_its_interval_and_breakdown() -> None:
    labels, noise, amounts = _world(3000, seed=2)
    scores = 1 / (1 + np.exp(-(4 * labels - 2 + noise)))
    judge = Judge(
        _declaration(POLICY), labels, scores, scores * 0.9, cost_columns={"amount": amounts}
    )
    report = judge.report("2", "1", [])
    assert report.cost is not None and report.cost.interval is not None
    assert sum(report.cost.by_outcome.values()) == pytest.approx(report.cost.challenger)
    shown = report.markdown()
    assert "Expected cost per 1,000 decisions (EUR, decision at score >= 0.5)" in shown
    assert f"| {COST_METRIC} |" in shown
    assert report.as_dict()["cost"]["challenger"] == pytest.approx(report.cost.challenger)


def test_a_cost_model_must_price_a_classifier_from_label_table_columns(tmp_path: Path) -> None:
    models = assets_copy(tmp_path)
    path = models / "fraud" / "model.yaml"
    declared = yaml.safe_load(path.read_text())
    declared["release"]["cost"] = {
        "decision_threshold": 0.1,
        "false_negative": {"column": "amount_in_cents"},
    }
    path.write_text(yaml.safe_dump(declared))
    with pytest.raises(PolicyError, match=r"release\.cost: 'amount_in_cents' is not a column"):
        load_models(models, RAW_EVENTS_CONTRACT)
    spend = models / "customer_spend" / "model.yaml"
    declared = yaml.safe_load(spend.read_text())
    declared["release"]["cost"] = {"decision_threshold": 0.1}
    spend.write_text(yaml.safe_dump(declared))
    with pytest.raises(PolicyError, match="a regression makes none"):
        load_models(models, RAW_EVENTS_CONTRACT)
