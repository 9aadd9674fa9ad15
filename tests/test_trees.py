"""The model server's tree walk against XGBoost itself: the same scores, or XGBoost alone."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from shipway.serving.trees import MAX_TREE_ROWS, Scorer

RNG = np.random.default_rng(5)
X = RNG.normal(size=(3000, 6))
X[RNG.random(X.shape) < 0.05] = np.nan
LABEL = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2])) > 0.8


def _booster(model: Any, label: np.ndarray) -> xgb.Booster:
    model.fit(X, label)
    booster: xgb.Booster = model.get_booster()
    booster.set_param({"nthread": 1})
    return booster


@pytest.mark.parametrize(
    "model",
    [
        xgb.XGBClassifier(n_estimators=60, max_depth=5, objective="binary:logistic"),
        xgb.XGBRegressor(n_estimators=40, max_depth=7, objective="reg:squarederror"),
    ],
    ids=["classifier", "regressor"],
)
def test_the_tree_walk_scores_as_xgboost_does_missing_values_included(model: Any) -> None:
    label = LABEL.astype(int) if isinstance(model, xgb.XGBClassifier) else LABEL * 3.0 + X[:, 3]
    booster = _booster(model, np.nan_to_num(label))
    scorer = Scorer(booster)
    assert scorer.trees is not None, scorer.why
    rows = RNG.normal(size=(400, 6))
    rows[RNG.random(rows.shape) < 0.2] = np.nan
    expected = booster.inplace_predict(rows)
    for start in range(0, len(rows), MAX_TREE_ROWS):
        batch = rows[start : start + MAX_TREE_ROWS]
        np.testing.assert_allclose(scorer(batch), expected[start : start + len(batch)], atol=1e-6)
    # More rows than the walk takes: XGBoost's own answer, bit for bit.
    assert (scorer(rows) == expected.astype(float)).all()


def test_a_model_the_walk_does_not_cover_is_scored_by_xgboost_and_says_why() -> None:
    classes = np.digitize(np.nan_to_num(X[:, 0]), [-0.5, 0.5])
    multiclass = _booster(xgb.XGBClassifier(n_estimators=5, max_depth=3), classes)
    assert Scorer(multiclass).why == (
        "XGBoost only: objective multi:softprob (the walk knows "
        "['binary:logistic', 'reg:squarederror'])"
    )
    dart = _booster(xgb.XGBClassifier(n_estimators=5, booster="dart"), LABEL.astype(int))
    assert Scorer(dart).why == "XGBoost only: booster dart"

    frame = pd.DataFrame({"colour": pd.Categorical(RNG.choice(["r", "g", "b"], 3000))})
    categorical = xgb.XGBClassifier(n_estimators=5, enable_categorical=True, max_cat_to_onehot=1)
    categorical.fit(frame, (frame["colour"] == "g").astype(int))
    scorer = Scorer(categorical.get_booster())
    assert scorer.why == "XGBoost only: categorical splits" and scorer.trees is None


class _Misread:
    """A booster whose saved trees say something other than what it predicts."""

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster

    def save_raw(self, raw_format: str = "json") -> bytearray:
        model = json.loads(bytes(self.booster.save_raw("json")))
        for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
            tree["default_left"] = [1 - int(d) for d in tree["default_left"]]
        return bytearray(json.dumps(model).encode())

    def inplace_predict(self, data: Any) -> Any:
        return self.booster.inplace_predict(data)


def test_trees_that_disagree_with_xgboost_at_load_leave_scoring_to_xgboost() -> None:
    booster = _booster(xgb.XGBClassifier(n_estimators=30, max_depth=4), LABEL.astype(int))
    scorer = Scorer(_Misread(booster))
    assert scorer.trees is None
    assert scorer.why.startswith("XGBoost only: it differs from XGBoost by ")
    rows = X[:3]
    assert (scorer(rows) == booster.inplace_predict(rows).astype(float)).all()
