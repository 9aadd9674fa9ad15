"""Drift statistics: the training reference, the time window, and each kind of feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shipway.names import SCORE
from shipway.stats.drift import (
    CATEGORICAL,
    HOUR_OF_DAY,
    NUMERIC,
    DriftRule,
    DriftRules,
    DriftWindow,
    ReferenceProfile,
    build_reference,
    chi2_test,
    compare,
    compare_values,
    ks_test,
    profile_values,
    psi,
)

FEATURES = ["amount", "is_online"]
RULES = DriftRules(window_seconds=600.0, min_rows=200, max_rows=2000)


def _frame(seed: int, scale: float = 1.0, rows: int = 5000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"amount": rng.lognormal(3, 0.7, rows) * scale, "is_online": rng.integers(0, 2, rows)}
    )


def _profile() -> ReferenceProfile:
    frame = _frame(1)
    return build_reference(frame, FEATURES, bins=10, scores=frame["amount"].to_numpy() / 100)


def _rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame[FEATURES].to_numpy(dtype=float), frame["amount"].to_numpy() / 100


def _by_name(window: DriftWindow, now: float) -> dict[str, bool]:
    return {d.name: d.drifted for d in window.drift(now)}


def test_psi_is_zero_for_identical_proportions_and_grows_with_shift() -> None:
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(expected, np.array([25, 25, 25, 25])) == 0.0
    mild = psi(expected, np.array([30, 25, 25, 20]))
    strong = psi(expected, np.array([70, 10, 10, 10]))
    assert 0 < mild < 0.05 < strong


def test_a_binary_feature_gets_two_bins_not_ten() -> None:
    profile = build_reference(_frame(1), FEATURES, bins=10)
    online = profile.features[1]
    assert len(online.expected) == 2
    assert abs(sum(online.expected) - 1.0) < 1e-9
    assert len(profile.features[0].expected) == 10


def test_fresh_data_from_the_same_distribution_does_not_drift() -> None:
    window = DriftWindow(_profile(), RULES)
    window.add(*_rows(_frame(2, rows=2000)), at=100.0)
    found = window.drift(now=100.0)
    assert {d.name for d in found} == {*FEATURES, SCORE}
    assert not any(d.drifted for d in found), [d.line() for d in found]
    assert max(d.psi for d in found) < 0.05


def test_a_shifted_feature_and_its_scores_drift() -> None:
    window = DriftWindow(_profile(), RULES)
    window.add(*_rows(_frame(2, scale=3.0, rows=1000)), at=100.0)
    drifted = _by_name(window, now=100.0)
    assert drifted == {"amount": True, "is_online": False, SCORE: True}


def test_an_idle_version_stops_alarming_once_its_window_has_passed() -> None:
    window = DriftWindow(_profile(), RULES)
    window.add(*_rows(_frame(2, scale=3.0, rows=1000)), at=1_000.0)
    assert _by_name(window, now=1_000.0 + RULES.window_seconds - 1)["amount"]
    # No traffic since: the rows age out, and with them every statistic.
    assert window.drift(now=1_000.0 + RULES.window_seconds + 1) == []
    assert window.samples == 0


def test_a_window_under_the_minimum_count_has_no_statistics() -> None:
    window = DriftWindow(_profile(), RULES)
    window.add(*_rows(_frame(2, scale=3.0, rows=RULES.min_rows - 1)), at=100.0)
    assert window.drift(now=100.0) == []
    window.add(*_rows(_frame(3, scale=3.0, rows=1)), at=101.0)
    assert _by_name(window, now=101.0)["amount"]


def test_the_window_keeps_only_the_newest_rows() -> None:
    rules = DriftRules(window_seconds=600.0, min_rows=200, max_rows=1000)
    window = DriftWindow(_profile(), rules)
    window.add(*_rows(_frame(2, scale=3.0, rows=1000)), at=100.0)
    for seed in range(3, 8):
        window.add(*_rows(_frame(seed, rows=250)), at=100.0 + seed)
    assert window.samples == 1000
    assert not _by_name(window, now=110.0)["amount"]


def test_a_shift_within_one_category_is_caught_by_category_and_missed_by_ordinal_bins() -> None:
    rng = np.random.default_rng(4)
    training = rng.integers(0, 12, 20_000).astype(float)
    live = rng.integers(0, 12, 2_000).astype(float)
    # Half of category 5's traffic moves to category 6, its neighbour in code order.
    moved = np.flatnonzero(live == 5)[: int((live == 5).sum() * 0.9)]
    live[moved] = 6.0
    rule = DriftRule(psi=0.1, p_value=0.01)
    by_category = compare_values(profile_values("mcc", training, CATEGORICAL, 4), live, rule)
    as_bins = compare_values(profile_values("mcc", training, NUMERIC, 4), live, rule)
    assert by_category.drifted and by_category.test == "chi2", by_category.line()
    assert not as_bins.drifted, as_bins.line()


def test_a_category_never_seen_in_training_is_drift_when_it_is_large() -> None:
    training = np.repeat([1.0, 2.0, 3.0], 1000)
    reference = profile_values("channel", training, CATEGORICAL, 10)
    live = np.concatenate([np.repeat([1.0, 2.0, 3.0], 200), np.full(300, 9.0)])
    found = compare_values(reference, live, DriftRule(psi=0.25, p_value=0.01))
    assert found.drifted and found.p_value == 0.0 and found.psi > 0.25


def test_hour_of_day_is_compared_within_the_hours_a_window_holds() -> None:
    rng = np.random.default_rng(5)
    # Training: a daytime peak; few transactions at night.
    weights = np.where(np.arange(24) < 6, 0.01, 0.06)
    training = rng.choice(24, 50_000, p=weights / weights.sum()).astype(float)
    rule = DriftRule(psi=0.25, p_value=0.01)
    night = rng.integers(3, 4, 500).astype(float)  # a quiet window at 03:00
    assert not compare_values(profile_values("h", training, HOUR_OF_DAY, 10), night, rule).drifted
    assert compare_values(profile_values("h", training, CATEGORICAL, 10), night, rule).drifted
    # A whole day with eight times the night traffic is a change of shape: drift.
    weights[:6] *= 8
    day = rng.choice(24, 5_000, p=weights / weights.sum()).astype(float)
    shifted = compare_values(profile_values("h", training, HOUR_OF_DAY, 10), day, rule)
    assert shifted.drifted, shifted.line()


def test_drift_needs_both_a_large_psi_and_a_small_p_value() -> None:
    rng = np.random.default_rng(6)
    reference = profile_values("x", rng.normal(size=50_000), NUMERIC, 10)
    # A shift of 0.05 sd on 50k rows: significant, and too small to matter.
    tiny = compare_values(reference, rng.normal(0.05, 1, 50_000), DriftRule(0.25, 0.01))
    assert tiny.p_value < 0.01 and tiny.psi < 0.25 and not tiny.drifted
    # A large shift on 30 rows passes the PSI and the test alike.
    small = compare_values(reference, rng.normal(1.5, 1, 30), DriftRule(0.25, 0.01))
    assert small.drifted, small.line()


def test_excluded_features_are_not_compared() -> None:
    rules = DriftRules(excluded={"is_online": "derived from the channel"}, min_rows=10)
    found = compare(_profile(), _frame(2, rows=500), rules)
    assert [d.name for d in found] == ["amount"]


@pytest.mark.parametrize("rows", [300, 30_000])
def test_ks_is_scipys_two_sample_test_exact_and_asymptotic(rows: int) -> None:
    rng = np.random.default_rng(7)
    reference, live = rng.normal(size=rows), rng.normal(0.03, 1.1, rows // 3)
    ours = ks_test(np.sort(reference), rows, live)
    theirs = stats.ks_2samp(reference, live)
    assert ours == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-9, abs=1e-12)


def test_chi2_is_scipys_chisquare_on_the_same_counts() -> None:
    expected = np.array([0.5, 0.3, 0.2])
    counts = np.array([260, 140, 100])
    ours = chi2_test(expected, counts)
    theirs = stats.chisquare(counts, expected * counts.sum())
    assert ours == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-9)


def test_a_profile_round_trips_through_json() -> None:
    frame = _frame(1)
    profile = build_reference(
        frame, FEATURES, 5, {"is_online": CATEGORICAL}, scores=frame["amount"].to_numpy()
    )
    assert ReferenceProfile.from_json(profile.to_json()) == profile
    assert len(profile.features[0].sketch) == 2000, "a sketch, not the training set"


def test_rules_round_trip_through_a_bundle_s_settings() -> None:
    rules = DriftRules(
        default=DriftRule(0.3, 0.02),
        features={"amount": DriftRule(0.1, 0.05)},
        excluded={"is_night": "derived from hour_of_day"},
        window_seconds=60.0,
        min_rows=20,
        max_rows=100,
    )
    assert DriftRules.from_dict(rules.to_dict()) == rules
    assert rules.rule("amount").psi == 0.1 and rules.rule("other").psi == 0.3
