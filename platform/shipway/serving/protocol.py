"""Open Inference Protocol (V2) requests: parse, validate against the model's features.

Two request shapes are accepted, both standard V2:
- one input per feature, named after it (what the pandas codec sends), each of shape [n] or
  [n, 1];
- one input named `features` of shape [n, k], columns in the model's feature order.

Anything else is answered with a `BadRequest` naming the input and what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shipway.errors import BadRequest

FEATURES_INPUT = "features"
SCORE_OUTPUT = "score"


def parse_infer_request(body: Any, feature_names: list[str]) -> np.ndarray:
    """The request's rows as a float matrix (n, k), columns in `feature_names` order."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise BadRequest('request body must be a JSON object with a non-empty "inputs" list')
    inputs = body["inputs"]
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or "name" not in tensor or "data" not in tensor:
            raise BadRequest(f'inputs[{i}] must be an object with "name", "shape" and "data"')
    names = [t["name"] for t in inputs]
    if names == [FEATURES_INPUT]:
        return _matrix_input(inputs[0], feature_names)
    unknown = [n for n in names if n not in feature_names]
    if unknown:
        raise BadRequest(
            f"unknown input(s) {unknown}; this model expects the features {feature_names} "
            f'(one input each) or one input named "{FEATURES_INPUT}"'
        )
    missing = [n for n in feature_names if n not in names]
    if missing:
        raise BadRequest(f"missing feature input(s) {missing}")
    columns = {t["name"]: _column(t) for t in inputs}
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) != 1:
        raise BadRequest(f"feature inputs have different row counts: {lengths}")
    return np.column_stack([columns[name] for name in feature_names])


def _numbers(tensor: dict[str, Any]) -> np.ndarray:
    try:
        values = np.asarray(tensor["data"], dtype=float).ravel()
    except (TypeError, ValueError):
        raise BadRequest(f"input {tensor['name']!r}: data must be numbers") from None
    if not np.all(np.isfinite(values)):
        raise BadRequest(f"input {tensor['name']!r}: data contains NaN or infinity")
    return values


def _shape(tensor: dict[str, Any]) -> list[int] | None:
    shape = tensor.get("shape")
    if shape is None:
        return None
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise BadRequest(
            f"input {tensor['name']!r}: shape must be a list of non-negative integers, "
            f"got {shape!r}"
        )
    return shape


def _column(tensor: dict[str, Any]) -> np.ndarray:
    values = _numbers(tensor)
    shape = _shape(tensor)
    if shape is not None and int(np.prod(shape)) != values.size:
        raise BadRequest(
            f"input {tensor['name']!r}: shape {shape} does not match {values.size} values"
        )
    return values


def _matrix_input(tensor: dict[str, Any], feature_names: list[str]) -> np.ndarray:
    values = _numbers(tensor)
    shape = _shape(tensor)
    k = len(feature_names)
    if shape is None or len(shape) != 2 or shape[1] != k:
        raise BadRequest(
            f'input "{FEATURES_INPUT}": shape must be [n, {k}] (features {feature_names}), '
            f"got {shape}"
        )
    if shape[0] * k != values.size:
        raise BadRequest(
            f'input "{FEATURES_INPUT}": shape {shape} does not match {values.size} values'
        )
    return values.reshape(shape[0], k)


def mlserver_request(rows: np.ndarray, output: str) -> dict[str, Any]:
    """The request MLServer's XGBoost runtime expects, asking for `output` (`predict_proba`
    for a classifier's probabilities, `predict` for a regressor's forecast)."""
    return {
        "inputs": [
            {
                "name": "predict",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.astype(np.float32).ravel().tolist(),
            }
        ],
        "outputs": [{"name": output}],
    }


def scores_from_mlserver(response: dict[str, Any], output: str) -> np.ndarray:
    """One score per row: the positive class's probability, or the forecast."""
    found = next(o for o in response["outputs"] if o["name"] == output)
    values = np.asarray(found["data"], dtype=float).reshape(found["shape"])
    return values[:, 1] if values.ndim == 2 and values.shape[1] == 2 else values.ravel()


def infer_response(
    model: str, version: str, scores: np.ndarray, request_id: str | None
) -> dict[str, Any]:
    return {
        "model_name": model,
        "model_version": version,
        "id": request_id,
        "outputs": [
            {
                "name": SCORE_OUTPUT,
                "shape": [len(scores)],
                "datatype": "FP64",
                "data": [float(s) for s in scores],
            }
        ],
    }


def features_request(rows: np.ndarray, feature_names: list[str]) -> dict[str, Any]:
    """A V2 request with one input per feature: what clients of the splitter send."""
    return {
        "inputs": [
            {
                "name": name,
                "shape": [rows.shape[0]],
                "datatype": "FP64",
                "data": rows[:, i].astype(float).tolist(),
            }
            for i, name in enumerate(feature_names)
        ]
    }
