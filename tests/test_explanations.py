"""Explanations: XGBoost's TreeSHAP contributions, and attribution drift judged from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from shipway.serving.explanations import contributions, reference_attributions
from shipway.stats.attribution import AttributionReference, AttributionWindow, compare
from shipway.stats.drift import ReferenceProfile, build_reference
from tests.conftest import LEANING_FEATURES as NAMES
from tests.conftest import TOY_FEATURES, leaning_rows, toy_frame


@pytest.fixture(scope="module")
def leaning() -> xgb.XGBClassifier:
    x, y = leaning_rows(5000, seed=1)
    return xgb.XGBClassifier(n_estimators=40, max_depth=3, random_state=1).fit(x, y)


def test_each_row_s_contributions_add_up_to_its_margin(leaning: xgb.XGBClassifier) -> None:
    x, _ = leaning_rows(200, seed=2)
    found = contributions(leaning.get_booster(), x)
    margin = leaning.get_booster().predict(xgb.DMatrix(x), output_margin=True)
    assert found.shape == (200, 4)
    np.testing.assert_allclose(found.sum(axis=1), margin, atol=1e-4)
    scores = leaning.predict_proba(x)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-found.sum(axis=1))), scores, atol=1e-5)


def test_a_regressor_s_contributions_add_up_to_its_forecast() -> None:
    frame = toy_frame(1500, seed=8)
    regressor = xgb.XGBRegressor(n_estimators=20, max_depth=3, random_state=8)
    regressor.fit(frame[TOY_FEATURES].to_numpy(), frame["amount"].to_numpy() * 2.0)
    rows = toy_frame(50, seed=9)[TOY_FEATURES].to_numpy()
    found = contributions(regressor.get_booster(), rows)
    np.testing.assert_allclose(found.sum(axis=1), regressor.predict(rows), rtol=1e-5)
    # The forecast is twice the amount: nearly all of it is the amount's doing.
    assert np.abs(found[:, 0]).mean() > 10 * np.abs(found[:, 1:3]).mean()


def test_a_feature_the_trees_never_split_on_contributes_nothing(
    leaning: xgb.XGBClassifier,
) -> None:
    x, _ = leaning_rows(5000, seed=3)
    reference = reference_attributions(leaning.get_booster(), x, NAMES, None, seed=3)
    used = {int(f[1:]) for f in leaning.get_booster().get_score(importance_type="weight")}
    for i, attribution in enumerate(reference.mean_abs):
        assert (attribution > 0) == (i in used)
    assert reference.mean_abs[0] > reference.mean_abs[1]


def test_the_model_leaning_on_a_feature_training_seldom_needed_is_attribution_drift(
    leaning: xgb.XGBClassifier,
) -> None:
    booster = leaning.get_booster()
    train, _ = leaning_rows(5000, seed=4)
    reference = reference_attributions(booster, train, NAMES, None, seed=4)
    same, _ = leaning_rows(400, seed=5)
    verdicts = compare(NAMES, reference.expected(None), contributions(booster, same)[:, :-1], 0.1)
    assert not any(v.drifted for v in verdicts)

    shifted, _ = leaning_rows(400, seed=6, rare_shift=2.0)
    verdicts = compare(
        NAMES, reference.expected(None), contributions(booster, shifted)[:, :-1], 0.1
    )
    drifted = {v.name: v for v in verdicts if v.drifted}
    assert set(drifted) >= {"rare"}
    assert drifted["rare"].change > 0.1
    assert "rare: " in drifted["rare"].line() and "(DRIFT)" in drifted["rare"].line()


def test_a_night_window_is_compared_with_the_training_rows_of_its_hours() -> None:
    """The toy fraud rule needs both a large amount and a night hour; at night the model's
    attribution differs from the day's, and that is what it learned, not drift."""
    frame = toy_frame(4000, seed=7)
    x = frame[TOY_FEATURES].to_numpy()
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=7).fit(
        x, frame["is_fraud"]
    )
    booster = model.get_booster()
    reference = reference_attributions(booster, x, TOY_FEATURES, "hour_of_day", seed=7)
    assert reference.by_hour is not None and all(h is not None for h in reference.by_hour)
    night = toy_frame(3000, seed=8)
    rows = night[night["hour_of_day"] < 3][TOY_FEATURES].to_numpy()[:300]
    live = contributions(booster, rows)[:, :-1]
    by_hour = compare(TOY_FEATURES, reference.expected(rows[:, 1]), live, 0.03)
    overall = compare(TOY_FEATURES, reference.expected(None), live, 0.03)
    assert not any(v.drifted for v in by_hour)
    assert any(v.drifted for v in overall), "the whole day's attribution is the wrong yardstick"


def test_the_window_ages_rows_out_and_judges_only_from_its_minimum() -> None:
    reference = AttributionReference([1.0, 1.0])
    window = AttributionWindow(["a", "b"], reference, 0.1, 60.0, min_rows=10, max_rows=20)
    rows = np.zeros((8, 2))
    window.add(rows, np.tile([3.0, -1.0], (8, 1)), at=100.0)
    assert window.drift(now=101.0) == []
    window.add(rows, np.tile([3.0, 1.0], (8, 1)), at=130.0)
    verdicts = {v.name: v for v in window.drift(now=131.0)}
    assert verdicts["a"].share == pytest.approx(0.75)
    assert verdicts["a"].drifted and verdicts["b"].drifted
    # Past the window, the first batch has left it: too few rows to judge.
    assert window.drift(now=165.0) == []
    # At most `max_rows`, the newest: whole batches beyond it leave.
    for at in (170.0, 171.0, 172.0):
        window.add(rows, np.tile([1.0, 1.0], (8, 1)), at=at)
    assert window.samples == 20
    assert not any(v.drifted for v in window.drift(now=173.0))


def test_the_reference_profile_carries_the_attributions_and_reads_one_without() -> None:
    frame = pd.DataFrame({"a": np.arange(100.0), "hour": np.arange(100.0) % 24})
    attributions = AttributionReference.of(
        np.tile([[0.5, 0.25]], (100, 1)), frame["hour"].to_numpy(), "hour"
    )
    profile = build_reference(frame, ["a", "hour"], 4, attributions=attributions)
    again = ReferenceProfile.from_json(profile.to_json())
    assert again.attributions == attributions
    assert again.attributions is not None and again.attributions.expected(
        np.array([1.0, 2.0])
    ).tolist() == [0.5, 0.25]
    # A bundle written before attributions existed still loads: nothing to judge.
    older = build_reference(frame, ["a", "hour"], 4)
    assert ReferenceProfile.from_json(older.to_json()).attributions is None
