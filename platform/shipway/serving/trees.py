"""A few rows scored by walking the model's trees with numpy, checked against XGBoost at load.

XGBoost's `Booster.inplace_predict` has a fixed cost per call, whatever the rows: on this 2-core
machine, for 150 trees of depth 5 and 16 features, 257 µs for one row, 306 µs for 16 and
830 µs for 256 (`bench/tree_predict.py`). A model server's request holds a few rows, so that
fixed cost was a third of MLServer's time per request. Walking every tree at once, one depth
level per numpy step, costs 60 µs for one row and 205 µs for 16, and more than XGBoost past
about 32 rows: `Scorer` uses the trees for up to `MAX_TREE_ROWS` rows and XGBoost above.

The walk is XGBoost's own rule: a feature value (as float32) below the split goes left, at or
above it right, a missing one (NaN) the node's default way; the leaves are added one tree after
the other in float32 from the base margin, then the objective's link. What it does not cover
(categorical splits, vector leaves, several targets, dart, another objective) stays with
XGBoost, as does any model whose trees disagree with XGBoost at load, on rows placed on, just
below and just above every split and with missing values: `Scorer.why` says which and why.
Runs inside MLServer: numpy and the standard library only, the booster passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

MAX_TREE_ROWS = 16
# Scores may differ from XGBoost's by float32 rounding (the link function's), no more.
TOLERANCE = 1e-5
CHECK_ROWS = 512


class Booster(Protocol):
    def save_raw(self, raw_format: str = ...) -> bytearray: ...

    def inplace_predict(self, data: Any) -> Any: ...


class Unsupported(Exception):
    """A model the tree walk does not cover; XGBoost scores it."""


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.float32(1.0) / (np.float32(1.0) + np.exp(-margin))
    return out


def _identity(margin: np.ndarray) -> np.ndarray:
    return margin


# Objective: (base score to base margin, margin to score).
LINKS: dict[str, tuple[Callable[[float], float], Callable[[np.ndarray], np.ndarray]]] = {
    "binary:logistic": (lambda p: float(np.log(p / (1.0 - p))), _sigmoid),
    "reg:squarederror": (lambda v: v, _identity),
}


@dataclass(frozen=True)
class TreeEnsemble:
    """All trees' nodes in flat arrays; a leaf's children are itself, so a walk of `depth`
    steps ends on a leaf whatever the tree's own depth."""

    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    leaf_value: np.ndarray
    depth: int
    base_margin: np.float32
    link: Callable[[np.ndarray], np.ndarray]
    features: int

    @classmethod
    def from_model_json(cls, model: dict[str, Any]) -> TreeEnsemble:
        learner = model["learner"]
        objective = learner["objective"]["name"]
        if objective not in LINKS:
            raise Unsupported(f"objective {objective} (the walk knows {sorted(LINKS)})")
        booster = learner["gradient_booster"]
        if booster["name"] != "gbtree":
            raise Unsupported(f"booster {booster['name']}")
        params = learner["learner_model_param"]
        if int(params.get("num_target", 1)) != 1 or int(params.get("num_class", 0)) > 1:
            raise Unsupported("several targets or classes")
        base = str(params["base_score"]).strip("[]").split(",")
        if len(base) != 1:
            raise Unsupported(f"base score {params['base_score']}")
        to_margin, link = LINKS[objective]
        parts: list[dict[str, np.ndarray]] = []
        offset = 0
        depth = 0
        for tree in booster["model"]["trees"]:
            if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
                raise Unsupported("vector leaves")
            if any(int(t) != 0 for t in tree.get("split_type", [])):
                raise Unsupported("categorical splits")
            left = np.asarray(tree["left_children"], dtype=np.int64)
            right = np.asarray(tree["right_children"], dtype=np.int64)
            conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
            ids = np.arange(len(left))
            leaf = left == -1
            parts.append(
                {
                    "left": np.where(leaf, ids, left) + offset,
                    "right": np.where(leaf, ids, right) + offset,
                    "feature": np.where(leaf, 0, np.asarray(tree["split_indices"])),
                    "threshold": conditions,
                    "default_left": np.asarray(tree["default_left"], dtype=bool),
                    "leaf_value": np.where(leaf, conditions, np.float32(0)).astype(np.float32),
                }
            )
            depth = max(depth, _depth(left, right))
            offset += len(left)
        if not parts:
            raise Unsupported("no trees")
        flat = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        return cls(
            roots=np.cumsum([0] + [len(p["left"]) for p in parts[:-1]]),
            left=flat["left"],
            right=flat["right"],
            feature=flat["feature"],
            threshold=flat["threshold"],
            default_left=flat["default_left"],
            leaf_value=flat["leaf_value"],
            depth=depth,
            base_margin=np.float32(to_margin(float(base[0]))),
            link=link,
            features=int(params["num_feature"]),
        )

    def predict(self, rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float32)
        n = len(x)
        node = np.broadcast_to(self.roots, (n, len(self.roots)))
        row = np.arange(n)[:, None]
        missing = bool(np.isnan(x).any())
        for _ in range(self.depth):
            value = x[row, self.feature[node]]
            go_left = value < self.threshold[node]
            if missing:
                go_left = np.where(np.isnan(value), self.default_left[node], go_left)
            node = np.where(go_left, self.left[node], self.right[node])
        # One tree after the other, in float32, as XGBoost adds them.
        leaves = np.concatenate(
            [np.full((n, 1), self.base_margin, np.float32), self.leaf_value[node]], axis=1
        )
        margin = np.cumsum(leaves, axis=1, dtype=np.float32)[:, -1]
        return self.link(margin)

    def check_rows(self, count: int = CHECK_ROWS, seed: int = 0) -> np.ndarray:
        """Rows whose values sit on, just below and just above the model's splits, or are
        missing: where a walk that compared the wrong way would go astray."""
        rng = np.random.default_rng(seed)
        rows = rng.normal(size=(count, self.features)).astype(np.float32)
        splits = self.left != np.arange(len(self.left))
        for f in range(self.features):
            thresholds = self.threshold[splits & (self.feature == f)]
            if len(thresholds) == 0:
                continue
            picked = rng.choice(thresholds, size=count)
            way = rng.choice(np.array([-np.inf, 0.0, np.inf], dtype=np.float32), size=count)
            rows[:, f] = np.nextafter(picked, np.where(way == 0, picked, way))
        rows[rng.random(rows.shape) < 0.05] = np.nan
        return rows


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    deepest = 0
    level = [0]
    while level:
        nxt = [c for n in level for c in (left[n], right[n]) if c != -1]
        if nxt:
            deepest += 1
        level = nxt
    return deepest


class Scorer:
    """Scores rows: the tree walk for a few, XGBoost for more, or XGBoost alone (`why`)."""

    def __init__(self, booster: Booster) -> None:
        self.booster = booster
        self.trees: TreeEnsemble | None = None
        try:
            trees = TreeEnsemble.from_model_json(json.loads(bytes(booster.save_raw("json"))))
            rows = trees.check_rows()
            ours = trees.predict(rows)
            theirs = np.asarray(booster.inplace_predict(rows), dtype=np.float32).ravel()
            worst = float(np.max(np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))))
            if not worst <= TOLERANCE:
                raise Unsupported(f"it differs from XGBoost by {worst:.2g} on the check rows")
            self.trees = trees
            self.why = f"tree walk for up to {MAX_TREE_ROWS} rows (max difference {worst:.1g})"
        except Unsupported as exc:
            self.why = f"XGBoost only: {exc}"

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.trees is not None and len(rows) <= MAX_TREE_ROWS:
            return np.asarray(self.trees.predict(rows), dtype=float)
        return np.asarray(self.booster.inplace_predict(rows), dtype=float).ravel()

    def as_requests(self, rows: np.ndarray) -> np.ndarray:
        """Many rows scored as requests of up to `MAX_TREE_ROWS` rows each: every row gets the
        score a request of its own would (batch scoring's guarantee)."""
        parts = [self(rows[i : i + MAX_TREE_ROWS]) for i in range(0, len(rows), MAX_TREE_ROWS)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=float)
