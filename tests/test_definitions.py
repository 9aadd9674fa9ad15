"""The asset graph as a reviewer sees it: every asset, check, job and sensor is in a snapshot
(tests/snapshots/definitions.json), so a lineage change shows up in review. After an intended
change: SHIPWAY_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py, and commit the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, Definitions, ScheduleDefinition

from assets.definitions import defs, models
from shipway.data.contracts import GATES
from shipway.models.catalog import declared_model

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def snapshot(definitions: Definitions) -> dict[str, Any]:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "kinds": sorted(node.kinds),
        }
    checks = sorted(
        f"{k.asset_key.to_user_string()}:{k.name}"
        + (" (blocking)" if graph.get_check_spec(k).blocking else "")
        for k in graph.asset_check_keys
    )
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        for job in definitions.resolve_all_job_defs()
        if not job.name.startswith("__")
    }
    sensors = {
        s.name: {
            "job": s.job_name if s.has_jobs else None,
            "minimum_interval_seconds": s.minimum_interval_seconds,
        }
        for s in definitions.sensors or []
    }
    schedules = {
        s.name: {"job": s.job_name, "cron": s.cron_schedule, "timezone": s.execution_timezone}
        for s in definitions.schedules or []
        if isinstance(s, ScheduleDefinition)
    }
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "sensors": sensors,
        "schedules": schedules,
    }


def test_the_definitions_match_the_reviewed_snapshot() -> None:
    current = snapshot(defs)
    if os.environ.get("SHIPWAY_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


@pytest.mark.parametrize("name", ["fraud_model", "customer_spend"])
def test_every_declared_model_gets_the_whole_lifecycle_under_its_own_name(name: str) -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey(f"{name}_training_set")).group_name == name
    assert graph.get(AssetKey(name)).parent_keys == {AssetKey(f"{name}_training_set")}
    assert graph.get(AssetKey(f"{name}_deployment")).parent_keys == {AssetKey(name)}
    checks = {k.name: k for k in graph.asset_check_keys}
    gate = checks[f"{name}_gate"]
    assert gate.asset_key == AssetKey(name)
    assert graph.get_check_spec(gate).blocking
    sensor = defs.resolve_sensor_def(f"{name}_drift_sensor")
    assert sensor.job_name == f"{name}_retrain"
    retrain = defs.resolve_job_def(f"{name}_retrain")
    selected = {k.to_user_string() for k in retrain.asset_layer.selected_asset_keys}
    # A retrain goes through the gate into the rollout: the deployment starts it.
    assert {f"{name}_training_set", name, "feature_views", f"{name}_deployment"} <= selected
    assert not {"raw_events", "raw_events_batch"} & selected
    rollout = defs.resolve_sensor_def(f"{name}_rollout_sensor")
    assert rollout.minimum_interval_seconds == max(
        5, declared_model(models, name).declaration.rollout.interval_seconds // 2
    )
    lifecycle = defs.resolve_job_def(f"{name}_lifecycle")
    selected = {k.to_user_string() for k in lifecycle.asset_layer.selected_asset_keys}
    assert {f"{name}_deployment", "online_store"} <= selected
    assert not {"raw_events", "raw_events_batch"} & selected


def test_models_share_upstream_assets_and_keep_their_own_downstream() -> None:
    graph = defs.resolve_asset_graph()
    fraud = graph.get(AssetKey("fraud_model_training_set")).parent_keys
    spend = graph.get(AssetKey("customer_spend_training_set")).parent_keys
    assert {AssetKey("feature_views"), AssetKey("customer_features")} <= fraud & spend
    assert AssetKey("raw_events") in fraud
    assert AssetKey("customer_spend_labels") in spend
    assert [m.name for m in models] == ["customer_spend", "fraud_model"]


def test_each_model_has_its_own_drift_policy_in_its_sensor() -> None:
    by_name = {m.name: m.declaration for m in models}
    for name, declaration in by_name.items():
        sensor = defs.resolve_sensor_def(f"{name}_drift_sensor")
        assert sensor.minimum_interval_seconds == declaration.drift.evaluation_interval_seconds
    assert by_name["fraud_model"].drift != by_name["customer_spend"].drift


def test_every_contract_gate_is_a_blocking_check_on_its_dataset() -> None:
    graph = defs.resolve_asset_graph()
    gates: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        if spec.name in GATES:
            assert spec.blocking, key
            gates.setdefault(key.asset_key.to_user_string(), set()).add(spec.name)
    assert gates["raw_events_batch"] == set(GATES)
    for training_set in ("fraud_model_training_set", "customer_spend_training_set"):
        assert {"schema", "types", "keys", "volume", "shift"} <= gates[training_set]


def test_dbt_tests_are_asset_checks_on_the_feature_and_label_tables() -> None:
    checked = {
        key.asset_key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys
    }
    assert {"customer_features", "merchant_features", "customer_spend_labels"} <= checked


def test_assets_carry_kinds_for_the_ui() -> None:
    graph = defs.resolve_asset_graph()
    kinds = {key.to_user_string(): graph.get(key).kinds for key in graph.get_all_asset_keys()}
    assert "delta" in kinds["raw_events"]
    assert "delta" in kinds["customer_features"]
    assert {"xgboost", "mlflow"} <= kinds["fraud_model"]
    assert "mlserver" in kinds["customer_spend_deployment"]
