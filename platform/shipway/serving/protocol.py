"""Open Inference Protocol (V2) requests: parse, validate against the model's features.

Two request shapes are accepted, both standard V2:
- one input per feature, named after it (what the pandas codec sends), each of shape [n] or
  [n, 1];
- one input named `features` of shape [n, k], columns in the model's feature order.

Data are JSON numbers: a string, a boolean or a null is refused, never converted. A request
has at least one row, and names each input once. Anything else is answered with a
`BadRequest` naming the input and what was expected.

A request may carry, as the standard's request `parameters`, `row_keys`: one string per row
saying which prediction point it is (the label's `row_id`, or the entity keys and time: see
`DeclaredModel.prediction_keys`). The prediction log records it, so labels that land later
can be joined to what was predicted. `extra_inputs: "ignore"` lets a request carry inputs the
version does not use (one-call scoring sends the features of every version a rollout serves,
and each version takes its own); without it an unknown input is an error. `contributions: true`
asks for each row's explanation: a second output, `contributions`, shaped [n, k + 1], one
TreeSHAP value per feature and the bias last (its `parameters.columns` names them), adding up
to the row's margin (`shipway.serving.explanations`).

An LLM application's requests (`question_request`) and its callers' feedback on an answer
(`parse_feedback`) are here too.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shipway.errors import BadRequest, shown
from shipway.limits import MAX_JSON_DEPTH, TooDeep, check_depth, parse_json

FEATURES_INPUT = "features"
ROW_KEYS_PARAMETER = "row_keys"
EXTRA_INPUTS_PARAMETER = "extra_inputs"
CONTRIBUTIONS_PARAMETER = "contributions"
CONTRIBUTIONS_OUTPUT = "contributions"
# Set by Envoy on every model request (never the caller's): "1" when the caller pinned the
# version (its path or `x-shipway-version`), "0" when the rollout's weights chose it.
PINNED_HEADER = "x-shipway-pinned"
MIRRORED_HEADER = "x-shipway-mirrored"
PROTOCOL_HEADER = "x-shipway-protocol"
"""Set by the front door on every call to a model: `grpc` or `rest`."""
CALLER_HEADER = "x-shipway-caller"
"""Set by the front door to the caller whose key it checked (a caller-sent copy is dropped
first); absent when keys are not required."""
# Buckets of the `shipway_prediction_score` histogram.
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


FEATURE_VERSION_SEPARATOR = "@"


def own_version_inputs(inputs: Any, feature_version: str | None) -> Any:
    """The inputs a version trained on `feature_version` scores: an input named
    `<feature>@<its digest>` stands in for `<feature>`, and inputs of other versions
    (`<feature>@<other digest>`) are left out. One-call scoring sends each served version's
    features this way when two feature versions serve at once (a canary on new features), so
    whichever version Envoy picks scores the values of its own transformation."""
    if not isinstance(inputs, list) or not any(
        isinstance(i, dict) and FEATURE_VERSION_SEPARATOR in str(i.get("name", "")) for i in inputs
    ):
        return inputs
    mine: dict[str, Any] = {}
    plain: list[Any] = []
    for tensor in inputs:
        name = str(tensor.get("name", "")) if isinstance(tensor, dict) else ""
        base, _, version = name.partition(FEATURE_VERSION_SEPARATOR)
        if not version:
            plain.append(tensor)
        elif version == feature_version:
            mine[base] = {**tensor, "name": base}
    out = [mine.pop(str(t.get("name")), t) if isinstance(t, dict) else t for t in plain]
    return out + list(mine.values())


def parse_infer_request(
    body: Any, feature_names: list[str], ignore_unknown: bool = False
) -> np.ndarray:
    """The request's rows as a float matrix (n, k), columns in `feature_names` order."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise BadRequest('request body must be a JSON object with a non-empty "inputs" list')
    inputs = body["inputs"]
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or "name" not in tensor or "data" not in tensor:
            raise BadRequest(f'inputs[{i}] must be an object with "name", "shape" and "data"')
        if not isinstance(tensor["name"], str):
            raise BadRequest(f'inputs[{i}]: "name" must be a string, got {_shown(tensor["name"])}')
        _check_datatype(tensor)
    names = [t["name"] for t in inputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadRequest(f"input(s) {twice} given more than once; give each input once")
    rows = _rows(inputs, names, feature_names, ignore_unknown)
    if rows.shape[0] == 0:
        raise BadRequest("the request has no rows: each feature input needs at least one value")
    return rows


def _rows(
    inputs: list[dict[str, Any]],
    names: list[str],
    feature_names: list[str],
    ignore_unknown: bool,
) -> np.ndarray:
    if names == [FEATURES_INPUT]:
        return _matrix_input(inputs[0], feature_names)
    unknown = [n for n in names if n not in feature_names]
    if unknown and not ignore_unknown:
        raise BadRequest(
            f"unknown input(s) {unknown}; this model expects the features {feature_names} "
            f'(one input each) or one input named "{FEATURES_INPUT}"'
        )
    missing = [n for n in feature_names if n not in names]
    if missing:
        raise BadRequest(f"missing feature input(s) {missing}")
    by_name = {t["name"]: t for t in inputs}
    fast = _flat_columns([by_name[name] for name in feature_names])
    if fast is not None:
        return fast
    columns = {t["name"]: _column(t) for t in inputs if t["name"] in feature_names}
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) != 1:
        raise BadRequest(f"feature inputs have different row counts: {lengths}")
    return np.column_stack([columns[name] for name in feature_names])


def _flat_columns(tensors: list[dict[str, Any]]) -> np.ndarray | None:
    """The common case in one conversion: flat columns of one length, each shaped `[n]` or
    `[n, 1]` (or unshaped), all finite. Anything else returns None, for the column-by-column
    path that names what is wrong."""
    if not all(_plain_numbers(t["data"]) for t in tensors):
        return None
    try:
        matrix = np.asarray([t["data"] for t in tensors], dtype=float)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2:
        return None
    n = matrix.shape[1]
    for tensor in tensors:
        shape = tensor.get("shape")
        if shape is not None and shape != [n] and shape != [n, 1]:
            return None
    if not np.isfinite(matrix).all():
        return None
    return np.ascontiguousarray(matrix.T)


_NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"}
    | {"UINT64"}
)


def _numeric(kinds: set[type]) -> bool:
    """Whether every type is a number's (a bool is not one here, though Python says it is an
    int): checked once per type, not per value."""
    return all(issubclass(k, int | float) and not issubclass(k, bool) for k in kinds)


def _plain_numbers(data: Any) -> bool:
    """Whether `data` is a list of numbers, or a list of such lists."""
    if not isinstance(data, list):
        return False
    kinds = set(map(type, data))
    if _numeric(kinds):
        return True
    return kinds == {list} and all(_numeric(set(map(type, row))) for row in data)


def _first_not_number(data: Any) -> Any:
    for value in data if isinstance(data, list) else [data]:
        for item in value if isinstance(value, list) else [value]:
            if not _numeric({type(item)}):
                return item
    return None


def _shown(value: Any) -> str:
    """A value as an error message shows it: cut, with its type."""
    return f"{shown(value, 40)} ({type(value).__name__})"


def _check_datatype(tensor: dict[str, Any]) -> None:
    datatype = tensor.get("datatype")
    if datatype is not None and (
        not isinstance(datatype, str) or datatype not in _NUMERIC_DATATYPES
    ):
        raise BadRequest(
            f"input {tensor['name']!r}: datatype {_shown(datatype)} is not a number type; this "
            f"model takes {sorted(_NUMERIC_DATATYPES)}"
        )


def _numbers(tensor: dict[str, Any]) -> np.ndarray:
    if not _plain_numbers(tensor["data"]):
        raise BadRequest(
            f"input {tensor['name']!r}: data must be numbers (a list, or a list of rows), got "
            f"{_shown(_first_not_number(tensor['data']))}"
        )
    try:
        values = np.asarray(tensor["data"], dtype=float).ravel()
    except (TypeError, ValueError):
        raise BadRequest(
            f"input {tensor['name']!r}: data must be numbers in rows of one length"
        ) from None
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


def check_request_depth(data: list[Any], parameters: Any) -> None:
    """A request's parameters, and each of its inputs' `data` down their first elements, nest
    at most `MAX_JSON_DEPTH` levels (what MLServer parsed; a deeper one is a 400 naming the
    limit, not a 500 from whatever walks it). Data are only followed down their first
    elements, which costs nothing per row: a deep value elsewhere fails the number checks, a
    400 naming the input."""
    check_depth(parameters or {}, "request parameters")
    for value in data:
        depth = 1
        while isinstance(value, list) and value:
            value, depth = value[0], depth + 1
            if depth > MAX_JSON_DEPTH:
                raise TooDeep("request inputs", MAX_JSON_DEPTH)


def parse_row_keys(parameters: Any, rows: int) -> list[str] | None:
    """The request's `row_keys` parameter: None when absent, else one string per row. Over gRPC,
    whose parameters are scalars, the list comes as its JSON text."""
    if not isinstance(parameters, dict) or parameters.get(ROW_KEYS_PARAMETER) is None:
        return None
    keys = parameters[ROW_KEYS_PARAMETER]
    if isinstance(keys, str):
        try:
            keys = parse_json(keys, f'parameters "{ROW_KEYS_PARAMETER}"')
        except TooDeep:
            raise
        except BadRequest:
            raise BadRequest(
                f'parameters "{ROW_KEYS_PARAMETER}" must be a list of strings (over gRPC, its '
                "JSON text)"
            ) from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadRequest(f'parameters "{ROW_KEYS_PARAMETER}" must be a list of strings')
    if len(keys) != rows:
        raise BadRequest(
            f'parameters "{ROW_KEYS_PARAMETER}" has {len(keys)} keys for {rows} rows; give one '
            "per row"
        )
    return keys


def ignores_extra_inputs(parameters: Any) -> bool:
    """Whether the request's parameters say `extra_inputs: "ignore"`."""
    if not isinstance(parameters, dict) or parameters.get(EXTRA_INPUTS_PARAMETER) is None:
        return False
    if parameters[EXTRA_INPUTS_PARAMETER] != "ignore":
        raise BadRequest(
            f'parameters "{EXTRA_INPUTS_PARAMETER}" may only be "ignore", got '
            f"{parameters[EXTRA_INPUTS_PARAMETER]!r}"
        )
    return True


def wants_contributions(parameters: Any) -> bool:
    """Whether the request's parameters (or a one-call scoring body) say `contributions: true`
    (a JSON boolean)."""
    if not isinstance(parameters, dict) or parameters.get(CONTRIBUTIONS_PARAMETER) is None:
        return False
    wanted = parameters[CONTRIBUTIONS_PARAMETER]
    if not isinstance(wanted, bool):
        raise BadRequest(f'"{CONTRIBUTIONS_PARAMETER}" must be true or false, got {_shown(wanted)}')
    return wanted


def features_request(
    rows: np.ndarray, feature_names: list[str], row_keys: list[str] | None = None
) -> dict[str, Any]:
    """A V2 request with one input per feature: what clients of the front door send."""
    request: dict[str, Any] = {
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
    if row_keys is not None:
        request["parameters"] = {ROW_KEYS_PARAMETER: row_keys}
    return request


class InjectedFault:
    """A bundle's `parameters.extra.fault` (`error_ratio`, `latency_ms`, and optionally
    `armed_by`: a file, the fault striking only while it exists, for a version that turns bad
    mid-rollout): how the demo and the tests make a bad challenger of a model or an
    application. Seeded, so runs repeat."""

    def __init__(self, extra: dict[str, Any]) -> None:
        fault = extra.get("fault") or {}
        self.error_ratio = float(fault.get("error_ratio", 0.0))
        self.latency = float(fault.get("latency_ms", 0.0)) / 1000
        self.armed_by = Path(fault["armed_by"]) if fault.get("armed_by") else None
        self._rng = random.Random(0)

    async def strikes(self) -> bool:
        """Wait the added latency; True when this request must fail."""
        if self.armed_by is not None and not self.armed_by.exists():
            return False
        if self.latency:
            await asyncio.sleep(self.latency)
        return bool(self.error_ratio) and self._rng.random() < self.error_ratio


FAULT_MESSAGE = "injected fault (bundle parameters.extra.fault)"


def question_request(questions: list[str], acl: str | None = None) -> dict[str, Any]:
    """An Open Inference Protocol request to an LLM application: the questions, and, to narrow
    the caller's access for this request, an ACL as a request parameter (a caller's access is
    its record's: a request cannot widen it)."""
    request: dict[str, Any] = {
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [len(questions)], "data": questions}
        ]
    }
    if acl is not None:
        request["parameters"] = {"acl": acl}
    return request


def mirrored(headers: Mapping[str, Any]) -> bool:
    """Envoy marks a mirrored request with `x-shipway-mirrored: 1`, REST or gRPC (every model
    route sets it to 0 on what it routes, whatever the caller sent, so only a mirror says 1)."""
    return str(headers.get(MIRRORED_HEADER, "")) == "1"


# An LLM application's feedback: `POST /v2/models/<model>/feedback` through the front door,
# `{"request_id": "<the answer's request_id>", "rating": "up" | "down"}`.
RATINGS = ("up", "down")
FEEDBACK_FIELDS = ("request_id", "rating")
MAX_FEEDBACK_BYTES = 4096
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def parse_feedback(body: bytes) -> tuple[str, str]:
    """The request id and rating of a feedback body, or a BadRequest naming the field."""
    if len(body) > MAX_FEEDBACK_BYTES:
        raise BadRequest(f"feedback: {len(body)} bytes, at most {MAX_FEEDBACK_BYTES}")
    given = parse_json(body, "feedback")
    if not isinstance(given, dict):
        raise BadRequest(f"feedback: expected an object with {list(FEEDBACK_FIELDS)}")
    unknown = sorted(set(given) - set(FEEDBACK_FIELDS))
    if unknown:
        raise BadRequest(f"feedback: unknown fields {unknown}; expected {list(FEEDBACK_FIELDS)}")
    request_id, rating = given.get("request_id"), given.get("rating")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise BadRequest(
            f"feedback.request_id: {shown(request_id)} is not a request id (the answer's "
            "request_id: 1 to 128 letters, digits and ._:-)"
        )
    if rating not in RATINGS:
        raise BadRequest(f"feedback.rating: {shown(rating)}, expected one of {list(RATINGS)}")
    return request_id, str(rating)
