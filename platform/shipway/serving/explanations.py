"""A prediction explained: each feature's TreeSHAP contribution, from XGBoost itself.

`Booster.predict(..., pred_contribs=True)` is XGBoost's own TreeSHAP (path-dependent, the
algorithm `shap.TreeExplainer` runs on a tree model without background data): per row, one
value per feature and a last one, the bias, which add up to the row's margin (the log-odds of
a classifier's score, a regressor's forecast). Serving answers them when a request asks
(`parameters.contributions`), follows their live mean against training (attribution drift),
and the release report compares champion and challenger with them.

Runs inside MLServer too: numpy and XGBoost only.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from shipway.stats.attribution import AttributionReference

BIAS = "bias"
"""The name of the last contribution column: the model's expected margin."""
# Rows explained at training for the reference: the mean |contribution| of 5,000 rows is
# within a percent or so of the whole set's, at a fraction of the cost (0.15 ms a row).
REFERENCE_ROWS = 5000
# Rows a model server explains per scrape for attribution drift, drawn from those served since
# the last: about 45 ms of TreeSHAP for 150 trees of depth 5 every 5 s scrape, whatever the
# traffic (`bench/tree_predict.py`).
ATTRIBUTION_ROWS_PER_SCRAPE = 128


def contributions(booster: xgb.Booster, rows: np.ndarray) -> np.ndarray:
    """(n, k + 1): each row's contribution per feature, in the model's feature order, then the
    bias. A row adds up to its margin."""
    found = booster.predict(xgb.DMatrix(np.asarray(rows, dtype=np.float64)), pred_contribs=True)
    return np.asarray(found, dtype=np.float64)


def sample(rows: np.ndarray, rng: np.random.Generator, limit: int = REFERENCE_ROWS) -> np.ndarray:
    """At most `limit` of `rows`, drawn without replacement, in their order."""
    if len(rows) <= limit:
        return rows
    return rows[np.sort(rng.choice(len(rows), limit, replace=False))]


def reference_attributions(
    booster: xgb.Booster, rows: np.ndarray, names: list[str], hour_feature: str | None, seed: int
) -> AttributionReference:
    """The features' attribution on (a sample of) the training rows (n, k), per hour of
    `hour_feature` too when the model has one."""
    rows = sample(rows, np.random.default_rng(seed))
    found = contributions(booster, rows)[:, :-1]
    if hour_feature is None or hour_feature not in names:
        return AttributionReference.of(found)
    return AttributionReference.of(found, rows[:, names.index(hour_feature)], hour_feature)
