"""The README's "Adding a model", followed literally: a folder holding a declaration and a
training-set contract (tests/fixtures/fraud_lite: YAML only, no Python), put in assets/, gets
the whole lifecycle: training set, model, gate, deployment, drift and rollout sensors, jobs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from shipway.data.events import generate_events
from shipway.defs.code_location import code_location
from shipway.features.service import registry_spec
from shipway.features.store import feature_store, online_features
from shipway.models.catalog import declared_names, load_applications, load_models
from shipway.paths import RAW_EVENTS_CONTRACT
from shipway.serving.prediction_log import read_predictions
from tests.conftest import (
    Platform,
    assets_copy,
    check_evaluation,
    definitions_of,
    materialization,
)

FIXTURE = Path(__file__).parent / "fixtures" / "fraud_lite"


def _assets_with_the_new_model(tmp_path: Path) -> Path:
    assets = assets_copy(tmp_path)
    # The recipe: a folder under assets/ with model.yaml and contracts/training_set.yaml.
    shutil.copytree(FIXTURE, assets / "fraud_lite")
    return assets


def test_the_new_model_is_declared_in_yaml_only() -> None:
    files = sorted(p.relative_to(FIXTURE).as_posix() for p in FIXTURE.rglob("*") if p.is_file())
    assert files == ["contracts/training_set.yaml", "model.yaml"]


def test_a_declared_folder_loads_as_a_model_with_its_whole_lifecycle(tmp_path: Path) -> None:
    assets = _assets_with_the_new_model(tmp_path)
    definitions = definitions_of(assets)
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"fraud_lite_training_set", "fraud_lite", "fraud_lite_deployment"} <= keys
    assert {"fraud_model", "customer_spend"} <= keys, "the other models are still there"
    checks = {k.name for k in graph.asset_check_keys}
    assert "fraud_lite_gate" in checks
    assert definitions.resolve_sensor_def("fraud_lite_drift_sensor").minimum_interval_seconds == 20
    # Its own rollout policy (canary 25 → 100 every 30 s) in its own sensor.
    rollout = definitions.resolve_sensor_def("fraud_lite_rollout_sensor")
    assert rollout.minimum_interval_seconds == 15
    assert definitions.resolve_job_def("fraud_lite_lifecycle") is not None


@pytest.mark.integration
def test_the_new_model_materializes_end_to_end_and_serves(
    platform: Platform, tmp_path: Path
) -> None:
    assets = _assets_with_the_new_model(tmp_path)
    definitions = definitions_of(assets)
    result = platform.materialize(
        definitions,
        "fraud_lite_lifecycle",
        "fraud_lite_training_set",
        "fraud_lite",
        "fraud_lite_deployment",
    )
    gate = check_evaluation(result, "fraud_lite_gate")
    assert result.success, gate.description
    assert gate.passed
    version = str(materialization(result, "fraud_lite")["model_version"])
    registry = MlflowClient(platform.stack.mlflow_url)
    assert registry.get_model_version("fraud_lite", version).tags["shipway.release"] == "promoted"
    assert registry.get_registered_model("fraud_lite").aliases["champion"] == version

    serving = platform.stack.serving()
    assert serving.status()["fraud_lite"]["weights"] == {version: 100}
    store = feature_store(platform.home)
    spec = registry_spec(store, "fraud_model_v1")
    transactions = generate_events(pd.Timestamp("2026-10-25").date(), 1, seed=7, events_per_day=40)
    vectors = online_features(store, transactions, spec).to_numpy()
    answered, scores = serving.infer("fraud_lite", vectors, spec.feature_names)
    assert answered == version
    assert len(scores) == 40
    assert np.all((scores >= 0) & (scores <= 1))

    # One-call scoring for serving teams: ids and request fields in, through the feature
    # service's lookup and the same data plane; the same scores as lookup + infer.
    features = platform.stack.features_url
    entities = {
        "customer_id": transactions["customer_id"].astype(int).tolist(),
        "merchant_id": transactions["merchant_id"].astype(int).tolist(),
        "event_timestamp": [t.isoformat() for t in transactions["event_timestamp"]],
        "amount": transactions["amount"].astype(float).tolist(),
        "channel": transactions["channel"].astype(str).tolist(),
        "merchant_category": transactions["merchant_category"].astype(str).tolist(),
    }
    row_keys = [f"scored-{t}" for t in transactions["transaction_id"]]
    answer = httpx.post(
        f"{features}/score/fraud_lite",
        json={"entities": entities, "row_keys": row_keys},
        # The caller's key: the feature service hands it on to the front door, which holds
        # the caller to its rate there too (a 401 here would be the front door's).
        headers={**platform.caller, "x-request-id": "one-call-1"},
    )
    assert answer.status_code == 200, answer.text
    scored = answer.json()
    assert scored["model_version"] == version and scored["request_id"] == "one-call-1"
    np.testing.assert_allclose(scored["scores"], scores, rtol=1e-6)
    # The prediction log holds the exact vector the version scored, under the request's id.
    logged = _logged(platform, "fraud_lite", "one-call-1", 40)
    by_key = logged.set_index("row_key")
    for i, key in enumerate(row_keys):
        np.testing.assert_allclose(
            np.asarray(by_key.loc[key, "vector"], dtype=float), vectors[i], rtol=1e-9
        )

    # Explained: per feature of the version that answered, and the bias, one value per row,
    # adding up to the row's log-odds.
    explained = httpx.post(
        f"{features}/score/fraud_lite",
        json={"entities": entities, "contributions": True},
        headers=platform.caller,
    ).json()
    assert list(explained["contributions"]) == [*spec.feature_names, "bias"]
    margin = np.sum(list(explained["contributions"].values()), axis=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), scores, atol=1e-5)
    not_a_flag = httpx.post(
        f"{features}/score/fraud_lite",
        json={"entities": entities, "contributions": "please"},
        headers=platform.caller,
    )
    assert not_a_flag.status_code == 400
    assert '"contributions" must be true or false' in not_a_flag.json()["error"]

    wrong = httpx.post(
        f"{features}/score/fraud_lite",
        json={"entities": {"customer_id": [1]}},
        headers=platform.caller,
    )
    assert wrong.status_code == 400 and "merchant_id" in wrong.json()["error"]
    nobody = httpx.post(
        f"{features}/score/no_such_model", json={"entities": entities}, headers=platform.caller
    )
    assert nobody.status_code == 404 and "no_such_model" in nobody.json()["error"]


def _logged(platform: Platform, model: str, request_id: str, rows: int) -> pd.DataFrame:
    deadline = time.monotonic() + 30
    while True:
        found = read_predictions(platform.home.lake, model)
        mine = found[found["request_id"] == request_id]
        if len(mine) >= rows or time.monotonic() > deadline:
            assert len(mine) == rows, f"{len(mine)} of {rows} rows logged"
            return mine
        time.sleep(0.5)


APPLICATION = Path(__file__).parent / "fixtures" / "card_faq"


def test_a_new_application_is_declared_in_yaml_and_text_only(tmp_path: Path) -> None:
    """README "Adding an LLM application": a folder with model.yaml and its two prompt files,
    on the help centre's corpus and cases, gets its version asset, gate, release and job."""
    files = sorted(p.relative_to(APPLICATION).as_posix() for p in APPLICATION.rglob("*"))
    assert [f for f in files if "." in f] == [
        "model.yaml", "prompts/system.txt", "prompts/user.txt"
    ]  # fmt: skip
    assets = assets_copy(tmp_path)
    shutil.copytree(APPLICATION, assets / "card_faq")
    models = load_models(assets, RAW_EVENTS_CONTRACT)
    apps = load_applications(assets, taken=[m.name for m in models])
    assert sorted(a.name for a in apps) == ["card_faq", "help_assistant"]
    defs = code_location(models, RAW_EVENTS_CONTRACT, apps)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"card_faq", "card_faq_deployment", "help_corpus", "help_evaluation"} <= keys
    assert {"card_faq_live_quality", "card_faq_live_drift"} <= keys
    assert defs.resolve_job_def("card_faq_monitoring") is not None
    assert defs.resolve_sensor_def("card_faq_rollout_sensor") is not None
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert "card_faq_gate" in checks
    assert defs.resolve_job_def("card_faq_lifecycle") is not None
    assert "card_faq" in declared_names(assets)
