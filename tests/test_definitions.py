"""The asset graph as a reviewer sees it: a lineage change shows up here in review."""

from __future__ import annotations

from dagster import AssetKey, Definitions

from assets.definitions import defs
from shipway.data.contracts import GATES

EXPECTED_GRAPH = {
    "raw_events_batch": ("data", set()),
    "raw_events": ("data", {"raw_events_batch"}),
    "stg_transactions": ("transform", {"raw_events"}),
    "customer_features": ("transform", {"stg_transactions"}),
    "merchant_features": ("transform", {"stg_transactions"}),
    "feature_views": ("features", {"customer_features", "merchant_features"}),
    "online_store": ("features", {"feature_views", "customer_features", "merchant_features"}),
    "training_set": (
        "features",
        {"raw_events", "feature_views", "customer_features", "merchant_features"},
    ),
    "fraud_model": ("model", {"training_set"}),
    "fraud_deployment": ("deployment", {"fraud_model"}),
}


def _graph(definitions: Definitions) -> dict[str, tuple[str | None, set[str]]]:
    graph = definitions.resolve_asset_graph()
    return {
        key.to_user_string(): (
            graph.get(key).group_name,
            {parent.to_user_string() for parent in graph.get(key).parent_keys},
        )
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable
    }


def test_the_lineage_runs_from_raw_events_to_the_deployment() -> None:
    assert _graph(defs) == EXPECTED_GRAPH


def test_the_model_gate_is_a_blocking_check_on_the_model() -> None:
    graph = defs.resolve_asset_graph()
    checks = {key.name: key for key in graph.asset_check_keys}
    assert checks["fraud_model_gate"].asset_key == AssetKey("fraud_model")
    assert graph.get_check_spec(checks["fraud_model_gate"]).blocking


def test_every_contract_gate_is_a_blocking_check_on_its_dataset() -> None:
    graph = defs.resolve_asset_graph()
    gates: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        if spec.name in GATES:
            assert spec.blocking, key
            gates.setdefault(key.asset_key.to_user_string(), set()).add(spec.name)
    assert gates["raw_events_batch"] == set(GATES)
    assert {"schema", "types", "keys", "volume", "labels", "leakage", "shift"} <= gates[
        "training_set"
    ]


def test_the_lifecycle_job_never_lands() -> None:
    job = defs.resolve_job_def("fraud_model_lifecycle")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert not {"raw_events_batch", "raw_events"} & selected


def test_dbt_tests_are_asset_checks_on_the_feature_tables() -> None:
    checked = {
        key.asset_key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys
    }
    assert {"customer_features", "merchant_features"} <= checked


def test_the_retrain_job_rebuilds_features_and_model_but_neither_lands_nor_deploys() -> None:
    job = defs.resolve_job_def("fraud_model_retrain")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert {"training_set", "fraud_model", "customer_features", "feature_views"} <= selected
    assert "raw_events" not in selected
    assert "raw_events_batch" not in selected
    assert "fraud_deployment" not in selected


def test_the_drift_sensor_requests_the_retrain_job() -> None:
    sensor = defs.resolve_sensor_def("fraud_model_drift_sensor")
    assert sensor.job_name == "fraud_model_retrain"
    assert sensor.minimum_interval_seconds == 30


def test_assets_carry_kinds_for_the_ui() -> None:
    graph = defs.resolve_asset_graph()
    kinds = {key.to_user_string(): graph.get(key).kinds for key in graph.get_all_asset_keys()}
    assert "delta" in kinds["raw_events"]
    assert "delta" in kinds["customer_features"]
    assert {"xgboost", "mlflow"} <= kinds["fraud_model"]
    assert "mlserver" in kinds["fraud_deployment"]
