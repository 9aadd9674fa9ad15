"""Reading an Open Inference Protocol request into rows, without a server: the one-conversion
path the runtime takes for well-formed requests gives the same rows as feature by feature, and
a malformed request still gets the message that names its input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shipway.errors import BadRequest
from shipway.serving.protocol import features_request, parse_infer_request

FEATURES = ["amount", "hour_of_day", "customer_txn_count_7d"]


def _body(columns: list[list[Any]], shapes: list[Any]) -> dict[str, Any]:
    inputs = [
        {"name": n, "datatype": "FP64", "data": d} | ({} if s is None else {"shape": s})
        for n, d, s in zip(FEATURES, columns, shapes, strict=True)
    ]
    return {"inputs": inputs[::-1]}  # order of inputs is the client's, not the model's


@pytest.mark.parametrize("shape", [lambda n: [n], lambda n: [n, 1], lambda n: None])
@pytest.mark.parametrize("n", [1, 7])
def test_rows_come_back_in_feature_order_for_every_accepted_shape(shape: Any, n: int) -> None:
    rows = np.random.default_rng(n).normal(size=(n, len(FEATURES)))
    body = _body([list(rows[:, j]) for j in range(len(FEATURES))], [shape(n)] * len(FEATURES))
    parsed = parse_infer_request(body, FEATURES)
    assert parsed.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(parsed, rows)
    np.testing.assert_array_equal(
        parse_infer_request(features_request(rows, FEATURES), FEATURES), rows
    )


@pytest.mark.parametrize(
    ("columns", "shapes", "message"),
    [
        ([[1.0], [float("nan")], [3.0]], [[1]] * 3, "input 'hour_of_day': data contains NaN"),
        ([[1.0], ["x"], [3.0]], [[1]] * 3, "input 'hour_of_day': data must be numbers"),
        ([[1.0, 2.0], [1.0, 2.0], [3.0]], [[2], [2], [1]], "different row counts"),
        ([[1.0, 2.0]] * 3, [[3]] * 3, "shape [3] does not match 2 values"),
        ([[1.0, 2.0]] * 3, [[1, 2]] * 3, None),  # a [1, 2] column holds 2 values: accepted
    ],
)
def test_a_malformed_request_is_named_as_before(
    columns: list[list[Any]], shapes: list[Any], message: str | None
) -> None:
    if message is None:
        assert parse_infer_request(_body(columns, shapes), FEATURES).shape == (2, 3)
        return
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_infer_request(_body(columns, shapes), FEATURES)
