"""Contracts as data: a malformed contract fails in one line; severities come from the file."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shipway.data.contracts import load_contract
from shipway.data.events import generate_events
from shipway.data.gates import Batch, Reference, evaluate
from shipway.errors import PolicyError
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.stats.metrics import single_column_auc
from tests.conftest import tree_paths

RAW = RAW_EVENTS_CONTRACT


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = RAW.read_text()
    assert old in text
    path = tmp_path / "raw_events.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_every_committed_contract_loads() -> None:
    paths = sorted(ASSETS_DIR.glob("**/contracts/*.yaml"))
    assert len(paths) == 3
    for path in paths:
        assert load_contract(path).gates()


def test_a_rule_on_an_undeclared_column_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _variant(tmp_path, "columns: [amount, merchant_category, channel]", "columns: [amt]")
    with pytest.raises(PolicyError) as error:
        load_contract(path)
    assert str(error.value).startswith(f"contract file {path} is invalid:")
    assert "rules name columns the contract does not declare: ['amt']" in str(error.value)
    assert "\n" not in str(error.value)


def test_an_error_limit_below_its_warn_limit_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, "psi: {warn: 0.25, error: 3.0}", "psi: {warn: 0.25, error: 0.1}")
    with pytest.raises(PolicyError, match=r"shift.psi: error \(0.1\) must not be below warn"):
        load_contract(path)


def test_a_gate_lowered_to_warn_reports_without_blocking(tmp_path: Path) -> None:
    events = generate_events(date(2026, 9, 1), 2, "baseline", 7, 200)
    events.loc[3, "channel"] = "telepathy"
    strict = evaluate(load_contract(RAW), Batch.of(events))
    lenient = evaluate(
        load_contract(_variant(tmp_path, "severity: {}", "severity: {categories: warn}")),
        Batch.of(events),
    )
    (blocking,) = [r for r in strict if r.gate == "categories"]
    (warning,) = [r for r in lenient if r.gate == "categories"]
    assert blocking.blocks and not warning.blocks and not warning.passed
    assert "unknown 'telepathy' x1" in warning.message()


def test_single_column_auc_is_symmetric_and_half_for_noise() -> None:
    labels = np.array([0, 0, 1, 1])
    assert single_column_auc(np.array([1.0, 2, 3, 4]), labels) == 1.0
    assert single_column_auc(np.array([4.0, 3, 2, 1]), labels) == 1.0
    assert single_column_auc(np.array([1.0, 1, 1, 1]), labels) == 0.5


_CELL_KINDS = {
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "int": st.integers(-(2**62), 2**62),
    "text": st.text(max_size=12),
    "category": st.sampled_from(["grocery", "online", "card_present", "crypto", ""]),
    "time": st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    "day": st.dates(min_value=date(1971, 1, 1), max_value=date(2200, 1, 1)),
    "bool": st.booleans(),
}


@st.composite
def _frames(draw: st.DrawFn) -> pd.DataFrame:
    """A batch of the raw-events contract's columns (some dropped, some extra), each column of
    one generated kind, nulls anywhere: what a landed file can hold."""
    contract = load_contract(RAW)
    columns = draw(st.lists(st.sampled_from([*contract.columns, "extra"]), unique=True))
    rows = draw(st.integers(0, 12))
    data = {}
    for column in columns:
        kind = draw(st.sampled_from(sorted(_CELL_KINDS)))
        cells = st.none() | _CELL_KINDS[kind] if draw(st.booleans()) else _CELL_KINDS[kind]
        data[column] = draw(st.lists(cells, min_size=rows, max_size=rows))
    return pd.DataFrame(data, index=range(rows))


REFERENCE_EVENTS = generate_events(date(2026, 9, 1), 14, "baseline", 7, 50)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_frames(), with_reference=st.booleans())
def test_the_contract_judges_any_batch_and_never_crashes(
    frame: pd.DataFrame, with_reference: bool
) -> None:
    """Every gate gives a verdict on any frame a file can hold: passed, or findings that name a
    column and rule; no exception from the gates themselves."""
    try:
        batch = Batch.of(frame)
    except (pa.ArrowException, TypeError, ValueError):
        assume(False)  # not storable as a Delta version: never reaches a contract
    reference = None
    if with_reference:
        sizes = REFERENCE_EVENTS.groupby("event_date").size()
        reference = Reference("raw_events (accepted) v0", REFERENCE_EVENTS, sizes)
    contract = load_contract(RAW)
    as_of = datetime(2026, 9, 15, 1, tzinfo=UTC)
    results = evaluate(contract, batch, as_of, reference)
    assert [r.gate for r in results] == contract.gates()
    for result in results:
        assert result.passed or result.findings, result
        for finding in result.findings:
            assert finding.rule and len(finding.observed) < 400
            # The safety net (a gate that raised fails closed) must not be what judged it.
            assert not finding.rule.endswith("gate runs"), finding


def test_a_gate_that_cannot_judge_fails_closed_naming_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shipway.data import gates

    def broken(ctx: object) -> object:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(gates._GATE_FUNCTIONS, "outliers", broken)
    batch = Batch.of(generate_events(date(2026, 9, 1), 1, "baseline", 7, 50))
    outliers = next(r for r in evaluate(load_contract(RAW), batch) if r.gate == "outliers")
    assert not outliers.passed and outliers.blocks
    assert "ZeroDivisionError: division by zero" in outliers.message()


_YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_edit_of_a_declaration_or_contract_loads_or_fails_in_one_named_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A reviewer's file with any value replaced, removed or added (hypothesis edits the
    committed ones): it loads, or it fails with one PolicyError line naming the file; no
    other exception, no traceback."""
    import yaml

    from shipway.models.declaration import load_declaration

    source = data.draw(
        st.sampled_from(
            [ASSETS_DIR / "fraud" / "model.yaml", RAW, ASSETS_DIR / "customer_spend" / "model.yaml"]
        )
    )
    tree = yaml.safe_load(source.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(tree_paths(tree)))
        parent: object = tree
        for step in path[:-1]:
            parent = parent[step]  # type: ignore[index]
        action = data.draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(_YAML_VALUES)
        else:
            parent[path[-1]] = data.draw(_YAML_VALUES)  # type: ignore[index]
    edited = tmp_path_factory.mktemp("edited") / source.name
    edited.write_text(yaml.safe_dump(tree) if data.draw(st.booleans()) else data.draw(st.text()))
    load = load_contract if source == RAW else load_declaration
    try:
        load(edited)
    except PolicyError as refused:
        message = str(refused)
        assert str(edited) in message and "\n" not in message
