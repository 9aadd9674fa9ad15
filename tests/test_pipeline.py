"""The asset graph on real services: a failing gate blocks the deployment and says why; a
passing one deploys the champion. Small data, one stack for the module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import AssetCheckEvaluation, AssetKey, DagsterInstance
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import assets.fraud
import assets.fraud.features
from shipway.cli import main
from shipway.data.admission import Ledger
from shipway.data.commands import land
from shipway.data.lake import table_info
from shipway.features import training_sets
from shipway.paths import ShipwayHome
from shipway.stack import Ports, Stack, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = ShipwayHome(tmp_path_factory.mktemp("pipeline"))
    saved = dict(os.environ)
    with running_stack(home, Ports.free(), 500) as s:
        os.environ.update(s.environment())
        yield s
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def landed(stack: Stack) -> tuple[Any, DagsterInstance]:
    from assets.definitions import defs

    instance = DagsterInstance.from_config(str(stack.home.dagster))
    config = {
        "start_date": "2026-09-01",
        "days": 55,
        "events_per_day": 400,
        "as_of": "2026-10-26T01:00:00+00:00",
    }
    result = defs.resolve_job_def("land_raw_events").execute_in_process(
        instance=instance, run_config={"ops": {"raw_events_batch": {"config": config}}}
    )
    assert result.success
    return defs, instance


def _strict_policy(tmp_path: Path) -> Path:
    text = assets.fraud.POLICY_PATH.read_text().replace("min: 0.80", "min: 0.9999")
    (tmp_path / "policy.yaml").write_text(text)
    return tmp_path / "policy.yaml"


def _evaluation(result: Any, check_name: str) -> AssetCheckEvaluation:
    """The run's evaluation of one asset check."""
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == check_name
    )


def test_a_failing_gate_blocks_the_deployment_and_says_why(
    stack: Stack,
    landed: tuple[Any, DagsterInstance],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defs, instance = landed
    monkeypatch.setattr(assets.fraud, "POLICY_PATH", _strict_policy(tmp_path))
    result = defs.resolve_job_def("fraud_model_lifecycle").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    gate = _evaluation(result, "fraud_model_gate")
    assert not gate.passed
    message = gate.description or ""
    assert "fraud_model v1 blocked: roc_auc = " in message
    assert "is below the minimum 0.9999" in message
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("fraud_model") in materialized
    assert AssetKey("fraud_deployment") not in materialized
    assert stack.serving().status() == {}
    registry = MlflowClient(stack.mlflow_url)
    assert registry.get_model_version("fraud_model", "1").tags["shipway.gate"] == "failed"
    with pytest.raises(MlflowException):
        registry.get_model_version_by_alias("fraud_model", "champion")


def test_a_passing_gate_deploys_the_version_as_champion_with_its_lineage(
    stack: Stack, landed: tuple[Any, DagsterInstance]
) -> None:
    defs, instance = landed
    result = defs.resolve_job_def("fraud_model_lifecycle").execute_in_process(
        instance=instance,
        asset_selection=[AssetKey("fraud_model"), AssetKey("fraud_deployment")],
        raise_on_error=False,
    )
    gate = _evaluation(result, "fraud_model_gate")
    assert result.success, gate.description
    registry = MlflowClient(stack.mlflow_url)
    champion = registry.get_model_version_by_alias("fraud_model", "champion")
    assert champion.version == "2"
    assert stack.serving().status()["fraud_model"]["weights"] == {"2": 100}
    assert champion.run_id is not None
    run = registry.get_run(champion.run_id)
    tags, params = run.data.tags, run.data.params
    training_set = table_info(stack.home.table("training_set"))
    assert tags["shipway.training_set_version"] == str(training_set.version)
    assert tags["shipway.raw_events_version"] == "0"
    assert (
        tags["shipway.training_set_digest"]
        == table_info(
            stack.home.table("training_set"), training_set.version, digest=True
        ).content_digest
    )
    assert tags["shipway.feature_service"] == "fraud_model_v1"
    assert {"shipway.customer_features_version", "shipway.merchant_features_version"} <= set(tags)
    assert len(tags["shipway.git_commit"]) >= 40
    assert params["feature_service"] == "fraud_model_v1"
    assert {"roc_auc", "pr_auc"} <= set(run.data.metrics)


def test_a_past_training_set_is_rebuilt_identically_by_time_travel(
    stack: Stack,
    landed: tuple[Any, DagsterInstance],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = stack.home
    built = table_info(home.table("training_set"))
    # New days land after the training set was built: the rebuild must read the old version.
    more = land(
        home,
        {
            "start_date": "2026-10-26",
            "days": 2,
            "events_per_day": 400,
            "as_of": "2026-10-28T01:00:00+00:00",
        },
    )
    assert more.accepted, more.gate_lines
    assert table_info(home.table("raw_events")).version > int(
        built.commit_metadata["raw_events_version"]
    )
    monkeypatch.setenv("SHIPWAY_HOME", str(home.root))
    assert main(["data", "rebuild-training-set", "--version", str(built.version)]) == 0
    out = capsys.readouterr().out
    assert f"training_set v{built.version} from raw_events v0" in out
    assert "reading raw_events v0 (time travel)" in out
    assert out.strip().endswith("identical")


def test_a_leaking_training_set_is_rejected_and_the_model_keeps_the_accepted_one(
    stack: Stack, landed: tuple[Any, DagsterInstance], monkeypatch: pytest.MonkeyPatch
) -> None:
    defs, instance = landed
    accepted = Ledger(stack.home).require_accepted("training_set")

    def leaking_build(*args: Any, **kwargs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        # A feature computed with hindsight: the chargeback shows up in the ratio.
        frame, derived = training_sets.build(*args, **kwargs)
        leaked = frame.assign(amount_to_customer_avg_30d=frame["is_fraud"] * 40.0 + 1.0)
        return leaked, derived

    monkeypatch.setattr(assets.fraud.features, "build", leaking_build)
    result = defs.resolve_job_def("fraud_model_lifecycle").execute_in_process(
        instance=instance,
        asset_selection=[AssetKey("training_set"), AssetKey("fraud_model")],
        raise_on_error=False,
    )
    leakage = _evaluation(result, "leakage")
    assert not leakage.passed
    assert "column `amount_to_customer_avg_30d`, rule single-column AUC < 0.97" in (
        leakage.description or ""
    )
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("training_set") in materialized
    assert AssetKey("fraud_model") not in materialized
    rejected = table_info(stack.home.table("training_set")).version
    assert rejected > accepted.version
    assert Ledger(stack.home).require_accepted("training_set").version == accepted.version

    # Trained on its own, the model still reads the last accepted version, not the rejected one.
    monkeypatch.undo()
    retrained = defs.resolve_job_def("fraud_model_lifecycle").execute_in_process(
        instance=instance, asset_selection=[AssetKey("fraud_model")], raise_on_error=False
    )
    (model,) = [
        e.step_materialization_data.materialization
        for e in retrained.get_asset_materialization_events()
        if e.asset_key == AssetKey("fraud_model")
    ]
    assert model.metadata["training_set_version"].value == str(accepted.version)
