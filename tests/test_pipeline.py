"""fraud_model's lifecycle on real services (MLflow, MLServer, Prometheus, Delta, dbt, Feast):
a failing gate blocks its version and says why, a deployment on its own refuses an ungated
version, a passing one is served with its lineage, training sets rebuild by time travel, a
leaking one is rejected. Each test makes the versions it checks; none relies on another."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from dagster import AssetKey
from mlflow.tracking import MlflowClient

import shipway.defs.models
from shipway.cli import main
from shipway.data.admission import Ledger
from shipway.data.commands import land
from shipway.data.lake import table_info
from shipway.features import training_sets
from shipway.features.versions import applied_versions
from shipway.models.estimation import QualityEstimator
from shipway.models.tracking import VIEWER_USER, credentials
from shipway.serving.bundle import read_bundle
from shipway.serving.package import SIGNING_KEY_ENV, verify_package
from tests.conftest import (
    PLATFORM_SIGNER,
    Platform,
    assets_copy,
    check_evaluation,
    definitions_of,
    landing_job,
    materialization,
)

pytestmark = pytest.mark.integration
MODEL = "fraud_model"


def _strict_definitions(tmp_path: Path) -> Any:
    """The code location after a reviewer raised fraud_model's ROC-AUC gate out of reach."""
    models = assets_copy(tmp_path)
    declaration = models / "fraud" / "model.yaml"
    declaration.write_text(declaration.read_text().replace("min: 0.80", "min: 0.9999"))
    return definitions_of(models)


def _train_and_deploy(platform: Platform, definitions: Any) -> Any:
    return platform.materialize(
        definitions,
        "fraud_model_lifecycle",
        "fraud_model_training_set",
        MODEL,
        "fraud_model_deployment",
    )


def test_a_failing_gate_blocks_the_deployment_and_says_why(
    platform: Platform, tmp_path: Path
) -> None:
    before = platform.stack.serving().status().get(MODEL, {}).get("versions", {})
    result = _train_and_deploy(platform, _strict_definitions(tmp_path))
    assert not result.success
    version = str(materialization(result, MODEL)["model_version"])
    gate = check_evaluation(result, "fraud_model_gate")
    assert not gate.passed
    assert gate.metadata["model_version"].value == version
    message = gate.description or ""
    assert f"fraud_model v{version} blocked " in message
    assert "[absolute] roc_auc: observed 0." in message
    assert "expected >= 0.9999" in message
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("fraud_model_deployment") not in materialized
    assert platform.stack.serving().status().get(MODEL, {}).get("versions", {}) == before
    registry = MlflowClient(platform.stack.mlflow_url)
    assert registry.get_model_version(MODEL, version).tags["shipway.release"] == "blocked"
    assert registry.get_registered_model(MODEL).aliases.get("champion") != version


def test_a_deployment_on_its_own_refuses_a_version_whose_gate_failed(
    platform: Platform, tmp_path: Path
) -> None:
    blocked = platform.materialize(_strict_definitions(tmp_path), "fraud_model_lifecycle", MODEL)
    version = str(materialization(blocked, MODEL)["model_version"])
    before = platform.stack.serving().status().get(MODEL, {})
    alone = platform.materialize(
        definitions_of(), "fraud_model_lifecycle", "fraud_model_deployment"
    )
    assert not alone.success
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert f"fraud_model v{version} is not released (shipway.release=blocked)" in error
    assert platform.stack.serving().status().get(MODEL, {}) == before


def test_a_passing_gate_deploys_the_version_it_gated_with_its_lineage_and_no_secret(
    platform: Platform,
) -> None:
    raw_events_now = table_info(platform.home.table("raw_events")).version
    result = _train_and_deploy(platform, definitions_of())
    gate = check_evaluation(result, "fraud_model_gate")
    assert result.success, gate.description
    version = str(materialization(result, MODEL)["model_version"])
    assert gate.metadata["model_version"].value == version
    assert materialization(result, "fraud_model_deployment")["model_version"] == version
    # The report prices the decisions and explains the model; the served bundle carries the
    # estimator live quality uses before labels land.
    report = str(gate.metadata["report"].value)
    assert "Expected cost per 1,000 decisions (EUR, decision at score >= 0.1)" in report
    assert "| cost_per_1000 |" in report and "| amount |" in report
    estimator = platform.home.served.bundle(MODEL, version) / "quality_estimator.json"
    assert QualityEstimator.load(estimator).method == "cbpe"
    served = platform.stack.serving().status()[MODEL]
    assert version in served["versions"]
    registry = MlflowClient(platform.stack.mlflow_url)
    champion = registry.get_model_version_by_alias(MODEL, "champion").version
    assert served["weights"][champion] == 100
    run_id = registry.get_model_version(MODEL, version).run_id
    assert run_id is not None
    run = registry.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    home = platform.home
    trained_on = int(tags["shipway.training_set_version"])
    recorded = table_info(home.table("fraud_model_training_set"), trained_on, digest=True)
    assert tags["shipway.training_set_digest"] == recorded.content_digest
    assert tags["shipway.raw_events_version"] == str(raw_events_now)
    assert tags["shipway.feature_service"] == "fraud_model_v1"
    # Trained on the feature version the tables and registry were built for; it travels with
    # the model version and its served bundle.
    feature_version = applied_versions(home)["fraud_model_v1"]
    assert tags["shipway.feature_version"] == feature_version
    assert registry.get_model_version(MODEL, version).tags["shipway.feature_version"] == (
        feature_version
    )
    assert read_bundle(home.served.bundle(MODEL, version)).feature_version == feature_version
    assert {"shipway.customer_features_version", "shipway.merchant_features_version"} <= set(tags)
    assert len(tags["shipway.git_commit"]) >= 40
    assert params["feature_service"] == "fraud_model_v1"
    assert params["features"].split(",")[:2] == ["amount", "hour_of_day"]
    assert {"roc_auc", "pr_auc"} <= set(run.data.metrics)
    # The feature vector travels with the model: its MLflow signature names the inputs in order.
    mlflow.set_tracking_uri(platform.stack.mlflow_url)
    signature = mlflow.models.get_model_info(f"models:/{MODEL}/{version}").signature
    assert signature.inputs.input_names() == params["features"].split(",")

    # The serving token reached the run through EnvVar: no store of Dagster's, MLflow's or
    # serving's, and no log, holds its value; only the owner-only file `shipway rollout` reads.
    # Likewise the platform caller's API key and MLflow's passwords (each owner-only file
    # holds its own).
    endpoint = home.served.endpoint
    mlflow_passwords = home.mlflow / "credentials.json"
    secrets = [platform.stack.token.encode(), platform.stack.key.encode()]
    secrets += [
        credentials(home).password.encode(),
        credentials(home, VIEWER_USER).password.encode(),
    ]
    assert endpoint.stat().st_mode & 0o777 == 0o600 and secrets[0] in endpoint.read_bytes()
    assert mlflow_passwords.stat().st_mode & 0o777 == 0o600
    kept = {endpoint, mlflow_passwords}
    files = [p for p in home.root.rglob("*") if p.is_file() and p not in kept]
    assert any(p.suffix == ".db" for p in files) and any(p.suffix == ".log" for p in files)
    leaks = [str(p.relative_to(home.root)) for p in files for s in secrets if s in p.read_bytes()]
    assert leaks == []


def test_with_a_signing_key_the_deployment_serves_the_versions_signed_package(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = PLATFORM_SIGNER.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    monkeypatch.setenv(SIGNING_KEY_ENV, base64.b64encode(raw).decode())
    result = _train_and_deploy(platform, definitions_of())
    assert result.success
    deployed = materialization(result, "fraud_model_deployment")
    version = str(deployed["model_version"])
    package = platform.home.served.packages / f"{MODEL}-{version}"
    assert deployed["bundle"] == str(package / "bundle")
    checked = verify_package(package, PLATFORM_SIGNER.public_key())
    assert deployed["signed_by"] == checked.key_id
    lineage = json.loads((package / "lineage.json").read_text())
    run_id = MlflowClient(platform.stack.mlflow_url).get_model_version(MODEL, version).run_id
    assert lineage["mlflow_run_id"] == run_id
    assert [e["event"] for e in lineage["release"]][:1] == ["gate"]
    assert version in platform.stack.serving().status()[MODEL]["versions"]


def test_a_past_training_set_is_rebuilt_identically_by_time_travel(
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    home = platform.home
    built_result = platform.materialize(
        definitions_of(), "fraud_model_lifecycle", "fraud_model_training_set"
    )
    built = int(str(materialization(built_result, "fraud_model_training_set")["delta_version"]))
    raw_events_then = table_info(home.table("raw_events")).version
    # New days land after the training set was built: the rebuild must read the old version.
    more = land(
        home,
        landing_job(),
        {
            "start_date": "2026-10-26",
            "days": 2,
            "events_per_day": 400,
            "as_of": "2026-10-28T01:00:00+00:00",
        },
    )
    assert more.accepted, more.gate_lines
    assert table_info(home.table("raw_events")).version > raw_events_then
    monkeypatch.setenv("SHIPWAY_HOME", str(home.root))
    assert main(["data", "rebuild-training-set", "--version", str(built)]) == 0
    out = capsys.readouterr().out
    assert f"fraud_model_training_set v{built} from raw_events v{raw_events_then}" in out
    assert f"reading raw_events v{raw_events_then} (time travel)" in out
    assert out.strip().endswith("identical")


def test_a_leaking_training_set_is_rejected_and_the_model_keeps_the_accepted_one(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    definitions = definitions_of()
    platform.materialize(definitions, "fraud_model_lifecycle", "fraud_model_training_set")
    accepted = Ledger(platform.home).require_accepted("fraud_model_training_set")

    def leaking_build(*args: Any, **kwargs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        # A feature computed with hindsight: the chargeback shows up in the ratio.
        frame, derived = training_sets.build(*args, **kwargs)
        leaked = frame.assign(amount_to_customer_avg_30d=frame["is_fraud"] * 40.0 + 1.0)
        return leaked, derived

    monkeypatch.setattr(shipway.defs.models, "build", leaking_build)
    result = platform.materialize(
        definitions, "fraud_model_lifecycle", "fraud_model_training_set", MODEL
    )
    leakage = check_evaluation(result, "leakage")
    assert not leakage.passed
    assert "column `amount_to_customer_avg_30d`, rule single-column AUC < 0.97" in (
        leakage.description or ""
    )
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("fraud_model_training_set") in materialized
    assert AssetKey(MODEL) not in materialized
    rejected = table_info(platform.home.table("fraud_model_training_set")).version
    assert rejected > accepted.version
    ledger = Ledger(platform.home)
    assert ledger.require_accepted("fraud_model_training_set").version == accepted.version

    # Trained on its own, the model still reads the last accepted version, not the rejected one.
    monkeypatch.undo()
    retrained = platform.materialize(definitions, "fraud_model_lifecycle", MODEL)
    assert materialization(retrained, MODEL)["training_set_version"] == str(accepted.version)
