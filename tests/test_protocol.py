"""Reading an Open Inference Protocol request into rows, without a server: the one-conversion
path the runtime takes for well-formed requests gives the same rows as feature by feature, a
malformed request still gets the message that names its input, and no input at all (generated
by hypothesis) gets anything but rows or a named BadRequest: never a 500."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipway.errors import BadRequest
from shipway.limits import TooDeep
from shipway.serving.protocol import (
    check_request_depth,
    features_request,
    own_version_inputs,
    parse_infer_request,
    wants_contributions,
)

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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_body([[], [], []], [[0]] * 3), "the request has no rows"),
        ({"inputs": [{"name": "features", "shape": [0, 3], "data": []}]}, "has no rows"),
        (_body([[1.0], ["2.5"], [3.0]], [[1]] * 3), r"'hour_of_day': data must be numbers .*'2.5'"),
        (_body([[1.0], [True], [3.0]], [[1]] * 3), r"'hour_of_day': .*got True \(bool\)"),
        (_body([[1, True], [1, 2], [3, 4]], [[2]] * 3), r"'amount'.*True \(bool\)"),
        (_body([[1.0], [None], [3.0]], [[1]] * 3), r"got None \(NoneType\)"),
        (
            {
                "inputs": [
                    *_body([[1.0], [2.0], [3.0]], [[1]] * 3)["inputs"],
                    {"name": "amount", "data": [9.0]},
                ]
            },
            r"input\(s\) \['amount'\] given more than once",
        ),
        (
            {"inputs": [{"name": f, "datatype": "BOOL", "data": [1]} for f in FEATURES]},
            "datatype 'BOOL' .* is not a number type",
        ),
        ({"inputs": [{"name": ["amount"], "data": [1]}]}, r'inputs\[0\]: "name" must be a string'),
        (
            {"inputs": [{"name": "features", "shape": [1, 3], "data": [[[1, 2, 3]]]}]},
            "must be numbers",
        ),
    ],
)
def test_odd_inputs_are_refused_by_name_never_coerced(body: dict[str, Any], message: str) -> None:
    """Zero rows, numbers sent as strings, booleans, nulls, an input given twice, a boolean
    datatype: each is a 400 naming the input (before, all but the last two scored with a 200)."""
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(body, FEATURES)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from([*FEATURES, "features", "other"]) | _json, "data": _json},
    optional={"shape": _json | st.lists(st.integers(-2, 4), max_size=3), "datatype": _json},
)


@settings(max_examples=400, deadline=None)
@given(
    body=_json
    | st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=4)})
    | st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=4), "parameters": _json}),
    ignore_unknown=st.booleans(),
)
def test_any_request_body_gives_rows_or_a_named_400(body: Any, ignore_unknown: bool) -> None:
    try:
        rows = parse_infer_request(body, FEATURES, ignore_unknown)
    except BadRequest as refused:
        assert str(refused)
        return
    assert rows.ndim == 2 and rows.shape[0] >= 1 and rows.shape[1] == len(FEATURES)
    assert np.isfinite(rows).all()


@settings(max_examples=200, deadline=None)
@given(
    columns=st.lists(
        st.lists(
            st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=5
        ),
        min_size=3,
        max_size=3,
    )
)
def test_well_formed_columns_of_one_length_are_read_and_of_several_are_refused(
    columns: list[list[float]],
) -> None:
    body = _body(columns, [None] * 3)
    if len({len(c) for c in columns}) == 1:
        np.testing.assert_array_equal(parse_infer_request(body, FEATURES), np.array(columns).T)
    else:
        with pytest.raises(BadRequest, match="different row counts"):
            parse_infer_request(body, FEATURES)


@pytest.mark.parametrize(
    ("parameters", "wanted"),
    [
        (None, False),
        ({}, False),
        ({"contributions": None}, False),
        ({"contributions": True}, True),
        ({"contributions": False}, False),
        ({"row_keys": ["a"]}, False),
    ],
)
def test_contributions_are_answered_only_when_a_request_asks_with_a_boolean(
    parameters: Any, wanted: bool
) -> None:
    assert wants_contributions(parameters) is wanted


@pytest.mark.parametrize("value", ["yes", 1, 0, [True], {"on": True}])
def test_a_contributions_parameter_that_is_not_a_boolean_is_refused_by_name(value: Any) -> None:
    with pytest.raises(BadRequest, match='"contributions" must be true or false, got'):
        wants_contributions({"contributions": value})


def _nested(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


def test_deep_data_is_a_named_400_wherever_it_sits_never_a_recursion_500() -> None:
    """5,000 levels of nesting reached Python's recursion limit in the message's repr."""
    first = [_nested(5000), [1.0, 2.0, 3.0]]
    with pytest.raises(TooDeep, match="request inputs: JSON nested more than 32 levels"):
        check_request_depth([first], {})
    with pytest.raises(TooDeep, match="request parameters: JSON nested more than 32 levels"):
        check_request_depth([[1.0]], {"row_keys": _nested(5000)})
    check_request_depth([[[1.0, 2.0, 3.0]]], {"row_keys": ["a"]})
    # Past the first element the probe does not look; the number checks refuse it by name.
    later = {
        "inputs": [{"name": "features", "shape": [2, 3], "data": [[1.0, 2.0, 3.0], _nested(5000)]}]
    }
    with pytest.raises(
        BadRequest, match=r"data must be numbers .* got a list nested too deep to show"
    ):
        parse_infer_request(later, ["a", "b", "c"])


def test_each_feature_version_reads_its_own_inputs_when_two_are_sent() -> None:
    plain = [{"name": n, "shape": [1], "data": [1.0]} for n in FEATURES]
    theirs = {"name": "amount@bbbbbbbbbbbb", "shape": [1], "data": [3.0]}
    mine = {"name": "amount@aaaaaaaaaaaa", "shape": [1], "data": [2.0]}
    inputs = [*plain, theirs, mine]
    rows = parse_infer_request({"inputs": own_version_inputs(inputs, "aaaaaaaaaaaa")}, FEATURES)
    assert rows.tolist() == [[2.0, 1.0, 1.0]]
    rows = parse_infer_request({"inputs": own_version_inputs(inputs, "bbbbbbbbbbbb")}, FEATURES)
    assert rows.tolist() == [[3.0, 1.0, 1.0]]
    # The champion's version (or a bundle with none) reads the plain inputs.
    for version in ("cccccccccccc", None):
        rows = parse_infer_request({"inputs": own_version_inputs(inputs, version)}, FEATURES)
        assert rows.tolist() == [[1.0, 1.0, 1.0]]
    assert own_version_inputs(plain, "aaaaaaaaaaaa") is plain
