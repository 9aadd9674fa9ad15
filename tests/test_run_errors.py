"""A failed run says why where the user looks: the failing step and the error its code raised
(not Dagster's wrapper around it), and where the full log is. Real Dagster runs, in process."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    DagsterInstance,
    Definitions,
    asset,
    asset_check,
    define_asset_job,
)

from shipway.errors import ShipwayError, run_failures


def _run(*assets: Any, checks: tuple[Any, ...] = ()) -> Any:
    defs = Definitions(
        assets=list(assets), asset_checks=list(checks), jobs=[define_asset_job("job")]
    )
    return defs.resolve_job_def("job").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )


@asset
def merchant_risk_training_set() -> None:
    # What Feast's rebuilt on-demand function raised in the demo: a module's global is gone.
    raise NameError("name 'math' is not defined")


@asset
def clean() -> int:
    return 1


@asset_check(asset=clean, blocking=True)
def clean_rows() -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR)


@asset(deps=[clean])
def downstream() -> None:
    return None


def test_a_failed_step_is_named_with_its_code_s_own_error() -> None:
    result = _run(merchant_risk_training_set)
    assert not result.success
    assert run_failures(result) == [
        "merchant_risk_training_set: NameError: name 'math' is not defined"
    ]


def test_a_blocking_check_s_stop_is_the_gate_s_verdict_not_a_step_error() -> None:
    result = _run(clean, downstream, checks=(clean_rows,))
    assert run_failures(result) == []


def test_the_demo_says_which_step_failed_why_and_where_the_full_log_is(tmp_path: Path) -> None:
    """Before, the demo printed `merchant_risk_training_set [failure]` and "see the log
    above", and the log above held no error: the NameError was only in demo-runs.log."""
    from shipway.demo import Timeline, _require_gate_passed

    result = _run(merchant_risk_training_set)
    log = tmp_path / "demo-runs.log"
    with pytest.raises(ShipwayError) as raised:
        _require_gate_passed(result, "merchant_risk_gate", "v1", Timeline(io.StringIO()), log)
    message = str(raised.value)
    assert "before the model gate ran" in message
    assert "merchant_risk_training_set: NameError: name 'math' is not defined" in message
    assert str(log) in message
