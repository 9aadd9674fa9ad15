"""Contracts as data: a malformed contract fails in one line; severities come from the file."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from shipway.data.contracts import load_contract
from shipway.data.events import generate_events
from shipway.data.gates import Batch, evaluate
from shipway.errors import PolicyError
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.stats.metrics import single_column_auc

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
