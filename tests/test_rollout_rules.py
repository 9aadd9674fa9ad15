"""The rollout's decisions, rule by rule, on constructed analyses (no servers)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from shipway.models.declaration import QualityRule, RolloutChecks, RolloutPolicy
from shipway.rollout.analysis import Analysis, checks, latency_quantile, quality_check
from shipway.rollout.controller import (
    ADVANCE,
    DONE,
    FAIL,
    HOLD,
    PAUSED,
    PROMOTE,
    RETIRE,
    ROLLBACK,
    WAIT,
    Controller,
    Decision,
    apply,
    decide,
    start,
)
from shipway.rollout.state import RolloutState, RolloutStore

POLICY = RolloutPolicy(interval_seconds=10, min_requests=50, grace_seconds=30)
GOOD = Analysis(
    requests=200,
    success_rate=1.0,
    latency_p99_ms=4.0,
    champion_latency_p99_ms=3.5,
    score_mean=0.11,
    champion_score_mean=0.1,
)


def run(
    state: RolloutState, policy: RolloutPolicy, analyses: list[Analysis], t: float = 0.0
) -> tuple[RolloutState, list[str], float]:
    """One decision per interval, each on the next analysis."""
    actions = []
    for analysis in analyses:
        t += policy.interval_seconds
        decision = decide(state, policy, analysis, t)
        state = apply(state, decision, policy, t)
        actions.append(decision.action)
    return state, actions, t


def test_a_good_challenger_goes_shadow_10_50_100_and_is_promoted() -> None:
    state = start("m", "2", "1", POLICY, now=0.0)
    assert state.traffic(POLICY) == ({"1": 100, "2": 0}, "2")
    seen = []
    t = 0.0
    for _ in range(4):
        t += POLICY.interval_seconds
        decision = decide(state, POLICY, GOOD, t)
        state = apply(state, decision, POLICY, t)
        seen.append((decision.action, state.traffic(POLICY)))
    assert seen == [
        (ADVANCE, ({"1": 90, "2": 10}, None)),
        (ADVANCE, ({"1": 50, "2": 50}, None)),
        (ADVANCE, ({"1": 0, "2": 100}, None)),
        (PROMOTE, ({"2": 100}, None)),
    ]
    assert state.retire_at == t + POLICY.grace_seconds
    assert decide(state, POLICY, None, t + 1).action == DONE
    assert decide(state, POLICY, None, t + POLICY.grace_seconds).action == RETIRE


def test_nothing_is_decided_before_a_full_interval() -> None:
    state = start("m", "2", "1", POLICY, now=100.0)
    decision = decide(state, POLICY, GOOD, 105.0)
    assert decision.action == WAIT
    assert "5s left" in decision.reason


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"success_rate": 0.8}, "success_rate 0.8 (limit 0.99) FAILED"),
        ({"latency_p99_ms": 60.0}, "latency_p99_ratio 17.14 (limit 1.5) FAILED"),
        ({"score_mean": 0.6}, "score_divergence 0.5 (limit 0.1) FAILED"),
    ],
)
def test_a_failing_check_rolls_back_at_the_first_interval_and_names_the_check(
    bad: dict[str, float], named: str
) -> None:
    state = start("m", "2", "1", POLICY, now=0.0)
    state, actions, _ = run(state, POLICY, [GOOD, _with(**bad)])
    assert actions == [ADVANCE, ROLLBACK]
    assert named in state.reason
    assert state.traffic(POLICY) == ({"1": 100}, None)


def test_a_threshold_of_two_tolerates_one_failed_interval() -> None:
    policy = POLICY.model_copy(update={"failed_checks": 2})
    state = start("m", "2", "1", policy, now=0.0)
    state, actions, _ = run(state, policy, [GOOD, _with(success_rate=0.5), GOOD])
    assert actions == [ADVANCE, FAIL, ADVANCE]
    state, actions, _ = run(
        start("m", "2", "1", policy, 0.0), policy, [_with(success_rate=0.5)] * 2
    )
    assert actions == [FAIL, ROLLBACK]


def test_no_data_holds_under_hold_then_fails_and_fails_at_once_under_fail() -> None:
    quiet = _with(requests=3)
    hold = POLICY.model_copy(update={"no_data": "hold", "max_hold_intervals": 3})
    state, actions, _ = run(start("m", "2", "1", hold, 0.0), hold, [quiet] * 3)
    assert actions == [HOLD, HOLD, ROLLBACK]
    assert "no data (3 requests < min_requests 50)" in state.reason
    fail = POLICY.model_copy(update={"no_data": "fail"})
    state, actions, _ = run(start("m", "2", "1", fail, 0.0), fail, [quiet])
    assert actions == [ROLLBACK]


def test_a_paused_rollout_stays_where_it_is() -> None:
    state = start("m", "2", "1", POLICY, now=0.0)
    state.paused = True
    assert decide(state, POLICY, GOOD, 1000.0).action == PAUSED


def test_blue_green_switches_from_shadow_to_all_traffic() -> None:
    policy = POLICY.model_copy(update={"strategy": "blue_green"})
    state, actions, _ = run(start("m", "2", "1", policy, 0.0), policy, [GOOD, GOOD])
    assert actions == [ADVANCE, PROMOTE]
    assert state.traffic(policy) == ({"2": 100}, None)


def test_the_first_version_is_champion_at_once() -> None:
    state = start("m", "1", None, POLICY, now=0.0)
    assert state.traffic(POLICY) == ({"1": 100}, None)
    assert decide(state, POLICY, None, 1.0).action == DONE


def test_latency_under_the_floor_is_not_judged_relatively() -> None:
    fast = _with(latency_p99_ms=4.9, champion_latency_p99_ms=1.0)
    policy = POLICY.model_copy(update={"checks": RolloutChecks(latency_floor_ms=5.0)})
    _, actions, _ = run(start("m", "2", "1", policy, 0.0), policy, [fast])
    assert actions == [ADVANCE]


def test_steps_must_rise_to_100() -> None:
    with pytest.raises(ValueError, match="the last step must be 100"):
        RolloutPolicy(steps=[10, 50])
    with pytest.raises(ValueError, match="rise strictly"):
        RolloutPolicy(steps=[50, 10, 100])


def _with(**changes: float) -> Analysis:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


def test_at_100_percent_a_few_stray_champion_requests_are_not_compared() -> None:
    state = start("m", "2", "1", POLICY, now=0.0)
    state.phase, state.step = "canary", len(POLICY.steps) - 1
    stray = Analysis(200, 1.0, 40.0, 10.0, 0.11, 0.5, champion_requests=3)
    decision = decide(state, POLICY, stray, POLICY.interval_seconds)
    assert decision.action == PROMOTE
    assert [c.name for c in decision.checks] == ["success_rate"]
    compared = Analysis(200, 1.0, 40.0, 10.0, 0.11, 0.5, champion_requests=150)
    failed = decide(state, POLICY, compared, POLICY.interval_seconds)
    assert failed.action == ROLLBACK and "latency_p99_ratio 4 (limit 1.5) FAILED" in failed.reason


def test_a_check_without_data_follows_the_no_data_policy_not_a_failed_check() -> None:
    state = start("m", "2", "1", POLICY, now=0.0)
    unscraped = Analysis(200, 1.0, 4.0, 3.5, None, 0.1)
    held = decide(state, POLICY, unscraped, POLICY.interval_seconds)
    assert held.action == HOLD and "no data for score_divergence: holding" in held.reason
    failing = POLICY.model_copy(update={"no_data": "fail"})
    rolled = decide(state, failing, unscraped, POLICY.interval_seconds)
    assert rolled.action == ROLLBACK and "score_divergence no data" in rolled.reason
    # A check that failed on data still rolls back, whatever else is missing.
    slow = Analysis(200, 0.5, 4.0, 3.5, None, 0.1)
    assert decide(state, POLICY, slow, POLICY.interval_seconds).action == ROLLBACK


def test_a_champion_that_answered_without_its_latency_scraped_yet_holds_the_step() -> None:
    state = start("m", "2", "1", POLICY, now=0.0)
    # A slow challenger in shadow; the champion's histogram not yet in Prometheus.
    unscraped = Analysis(200, 1.0, 90.0, None, 0.11, None, champion_requests=150)
    held = decide(state, POLICY, unscraped, POLICY.interval_seconds)
    assert held.action == HOLD, held.reason
    assert "no data for latency_p99_ratio, score_divergence: holding" in held.reason
    scraped = dataclasses.replace(unscraped, champion_latency_p99_ms=4.0, champion_score_mean=0.1)
    assert decide(state, POLICY, scraped, POLICY.interval_seconds).action == ROLLBACK


def test_latency_is_compared_at_a_quantile_the_challenger_s_requests_support() -> None:
    assert latency_quantile(1000) == 0.99
    assert latency_quantile(50) == 0.9, "5 of 50 requests above it, not the slowest alone"
    assert latency_quantile(8) == 0.5
    assert latency_quantile(0) == 0.99


def test_live_quality_under_the_monitoring_limit_rolls_back_once_labels_exist() -> None:
    rule = QualityRule(metric="roc_auc", min=0.8)
    poor = dataclasses.replace(GOOD, quality=(quality_check(rule, 0.62),))
    state = start("m", "2", "1", POLICY, now=0.0)
    state, actions, _ = run(state, POLICY, [GOOD, poor])
    assert actions == [ADVANCE, ROLLBACK]
    assert "live_roc_auc 0.62 (limit 0.8) FAILED" in state.reason
    # Without labels yet (GOOD has no live quality), or with the check turned off, it is not
    # judged on it.
    off = POLICY.model_copy(
        update={"checks": POLICY.checks.model_copy(update={"live_quality": False})}
    )
    _, actions, _ = run(start("m", "2", "1", off, now=0.0), off, [GOOD, poor])
    assert actions == [ADVANCE, ADVANCE]


class _Serving:
    """The serving weights in memory (the controller's side of it is under test)."""

    def __init__(self, weights: dict[str, int]) -> None:
        self.weights: dict[str, int] = weights
        self.shadow: str | None = None

    def status(self) -> dict[str, Any]:
        running: dict[str, Any] = {v: {} for v in ("1", "2")}
        return {"m": {"versions": running, "weights": dict(self.weights), "shadow": self.shadow}}

    def set_traffic(
        self, model: str, weights: dict[str, int], shadow: str | None = None
    ) -> dict[str, Any]:
        self.weights, self.shadow = dict(weights), shadow
        return {}

    def undeploy(self, model: str, version: str) -> None:
        self.weights.pop(version, None)


def test_a_decision_the_audit_cannot_hold_is_not_taken(tmp_path: Path) -> None:
    """The release audit refuses a write (a full disk) as a promotion is decided: the rollout
    state, the weights and the champion stay as they were, and the next tick, with the audit
    back, promotes and audits it. Before, the promotion took effect and the audit never
    showed it."""
    policy = POLICY.model_copy(update={"steps": [100]})
    store = RolloutStore(tmp_path)
    store.save(dataclasses.replace(start("m", "2", "1", policy, 0.0), phase="canary", step=0))
    serving = _Serving({"1": 0, "2": 100})
    champion: list[str] = []
    audit: list[str] = []
    broken = {"disk": True}

    def record(state: RolloutState, decision: Decision) -> None:
        if broken["disk"]:
            raise OSError(28, "No space left on device")
        audit.append(decision.action)

    controller = Controller(
        "m", policy, store, serving, champion.append, record, lambda state, seconds: GOOD
    )
    with pytest.raises(OSError, match="No space left"):
        controller.tick(policy.interval_seconds)
    kept = store.load("m")
    assert kept is not None and kept.phase == "canary" and kept.decisions == []
    assert champion == [] and audit == []
    broken["disk"] = False
    state, decision = controller.tick(policy.interval_seconds + 1)
    assert decision.action == PROMOTE and audit == [PROMOTE]
    assert state is not None and store.load("m") == state and champion == ["2"]


def test_an_applications_canary_judges_guard_blocks_and_tokens_against_the_champion() -> None:
    policy = RolloutChecks(
        max_score_divergence=None, live_quality=False, max_guard_block_rate=0.2,
        max_tokens_ratio=1.5,
    )  # fmt: skip
    fine = Analysis(
        30,
        1.0,
        900.0,
        800.0,
        None,
        None,
        champion_requests=40,
        guard_block_rate=0.05,
        tokens_per_answer=200,
        champion_tokens_per_answer=190,
    )
    assert all(c.passed for c in checks(fine, policy, min_requests=3))
    blocked = dataclasses.replace(fine, guard_block_rate=0.6)
    failed = [c for c in checks(blocked, policy, min_requests=3) if not c.passed]
    assert [c.line() for c in failed] == ["guard_block_rate 0.6 (limit 0.2) FAILED"]
    wordy = dataclasses.replace(fine, tokens_per_answer=400)
    assert [c.name for c in checks(wordy, policy, 3) if not c.passed] == ["tokens_ratio"]
    silent = dataclasses.replace(fine, guard_block_rate=None)
    assert [c.name for c in checks(silent, policy, 3) if not c.passed] == ["guard_block_rate"]
