"""The serving controller and splitter, with real MLServer processes behind it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipway.errors import ShipwayError
from shipway.monitoring.drift import build_reference
from shipway.processes import ManagedProcess, free_port
from shipway.serving.bundle import Bundle, write_bundle
from shipway.serving.client import ServingClient, serving_process
from shipway.serving.protocol import features_request
from tests.conftest import TOY_FEATURES, toy_frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServingClient, Path]]:
    root = tmp_path_factory.mktemp("serving")
    port = free_port()
    process: ManagedProcess = serving_process(port, root / "logs", root / "targets")
    process.start()
    client = ServingClient(f"http://127.0.0.1:{port}")
    yield client, root
    process.stop()
    assert not process.running()


@pytest.fixture(scope="module")
def deployed(controller: tuple[ServingClient, Path], bundles: dict[str, Bundle]) -> ServingClient:
    client, _ = controller
    client.deploy("toy_model", "1", bundles["1"].path)
    client.deploy("toy_model", "2", bundles["2"].path)
    client.set_traffic("toy_model", {"1": 100})
    return client


def test_a_deployed_version_answers_with_the_same_scores_as_the_model_file(
    deployed: ServingClient, bundles: dict[str, Bundle]
) -> None:
    import xgboost as xgb

    rows = toy_frame(30, seed=11)[TOY_FEATURES].to_numpy()
    version, scores = deployed.infer("toy_model", rows, TOY_FEATURES)
    model = xgb.XGBClassifier()
    model.load_model(bundles["1"].path / "model.ubj")
    assert version == "1"
    np.testing.assert_allclose(scores, model.predict_proba(rows)[:, 1], rtol=1e-5)


def test_the_splitter_sends_traffic_by_weight(deployed: ServingClient) -> None:
    deployed.set_traffic("toy_model", {"1": 80, "2": 20})
    rows = toy_frame(1, seed=3)[TOY_FEATURES].to_numpy()
    seen = Counter(deployed.infer("toy_model", rows, TOY_FEATURES)[0] for _ in range(300))
    deployed.set_traffic("toy_model", {"1": 100})
    # 300 draws at p=0.2: the 2 share lies in [0.12, 0.28] with probability > 0.999.
    assert 0.12 <= seen["2"] / 300 <= 0.28
    assert seen["1"] + seen["2"] == 300


def test_metrics_carry_requests_latency_scores_and_drift_per_version(
    deployed: ServingClient,
) -> None:
    frame = toy_frame(400, seed=21)
    for start in range(0, 400, 50):
        deployed.infer(
            "toy_model", frame[TOY_FEATURES].to_numpy()[start : start + 50], TOY_FEATURES
        )
    text = httpx.get(f"{deployed.url}/metrics").text
    assert 'shipway_requests_total{model="toy_model",outcome="success",version="1"}' in text
    assert 'shipway_request_duration_seconds_bucket{le="0.005",model="toy_model"' in text
    assert 'shipway_prediction_score_count{model="toy_model",version="1"}' in text
    psi = _gauge(
        text, "shipway_feature_drift_psi", 'feature="amount",model="toy_model",version="1"'
    )
    assert psi < 0.1, "same distribution as the training reference must not look drifted"


def test_shifted_traffic_shows_as_drift(deployed: ServingClient) -> None:
    shifted = toy_frame(400, seed=22, amount_scale=3.0)
    for start in range(0, 400, 50):
        deployed.infer(
            "toy_model", shifted[TOY_FEATURES].to_numpy()[start : start + 50], TOY_FEATURES
        )
    text = httpx.get(f"{deployed.url}/metrics").text
    amount = _gauge(
        text, "shipway_feature_drift_psi", 'feature="amount",model="toy_model",version="1"'
    )
    hour = _gauge(
        text, "shipway_feature_drift_psi", 'feature="hour_of_day",model="toy_model",version="1"'
    )
    assert amount > 1.0
    assert hour < 0.1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [{"name": "age_of_customer", "data": [1.0]}]},
            "unknown input(s) ['age_of_customer']",
        ),
        (
            {"inputs": [{"name": "amount", "data": [1.0]}]},
            "missing feature input(s) ['hour_of_day', 'customer_txn_count_7d']",
        ),
        (
            {"inputs": [{"name": "features", "shape": [1, 2], "data": [1.0, 2.0]}]},
            "shape must be [n, 3]",
        ),
        (
            {"inputs": [{"name": n, "data": ["x"]} for n in TOY_FEATURES]},
            "input 'amount': data must be numbers",
        ),
        ({"input": []}, 'non-empty "inputs" list'),
        (
            {"inputs": [{"name": n, "shape": ["one"], "data": [1.0]} for n in TOY_FEATURES]},
            "shape must be a list of non-negative integers, got ['one']",
        ),
        (
            {"inputs": [{"name": "features", "shape": "1x3", "data": [1.0, 2.0, 3.0]}]},
            "shape must be a list of non-negative integers, got '1x3'",
        ),
    ],
)
def test_bad_requests_get_a_400_that_names_the_problem(
    deployed: ServingClient, body: object, message: str
) -> None:
    response = httpx.post(f"{deployed.url}/v2/models/toy_model/infer", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_an_unknown_model_or_version_is_a_404_naming_what_is_deployed(
    deployed: ServingClient,
) -> None:
    body = features_request(toy_frame(1, seed=4)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
    response = httpx.post(f"{deployed.url}/v2/models/no_such_model/infer", json=body)
    assert response.status_code == 404
    error = response.json()["error"]
    assert "model 'no_such_model' is not deployed; deployed: [" in error
    assert "'toy_model'" in error
    gone = httpx.delete(f"{deployed.url}/admin/models/toy_model/versions/9")
    assert gone.status_code == 404


def test_a_regression_model_is_served_beside_the_classifier_with_its_own_settings(
    deployed: ServingClient, tmp_path: Path
) -> None:
    import xgboost as xgb

    frame = toy_frame(1500, seed=8)
    regressor = xgb.XGBRegressor(n_estimators=20, max_depth=3, random_state=8)
    regressor.fit(frame[TOY_FEATURES].to_numpy(), frame["amount"].to_numpy() * 2.0)
    regressor.save_model(tmp_path / "spend.ubj")
    reference = build_reference(frame, TOY_FEATURES, bins=10)
    bundle = write_bundle(
        tmp_path / "1", "toy_spend", "1", tmp_path / "spend.ubj", reference, "regression", 60
    )
    deployed.deploy("toy_spend", "1", bundle.path)
    deployed.set_traffic("toy_spend", {"1": 100})
    rows = toy_frame(100, seed=9)[TOY_FEATURES].to_numpy()
    version, forecast = deployed.infer("toy_spend", rows, TOY_FEATURES)
    assert version == "1"
    np.testing.assert_allclose(forecast, regressor.predict(rows), rtol=1e-4)
    # The classifier still answers probabilities, each model keeps its own drift window.
    _, scores = deployed.infer("toy_model", rows, TOY_FEATURES)
    assert ((scores >= 0) & (scores <= 1)).all()
    status = deployed.status()
    assert status["toy_spend"]["versions"]["1"]["drift_window_samples"] == 60
    assert status["toy_model"]["versions"]["1"]["drift_window_samples"] > 60


def test_invalid_traffic_changes_are_refused_and_leave_traffic_as_it_was(
    deployed: ServingClient,
) -> None:
    before = deployed.status()["toy_model"]["weights"]
    with pytest.raises(ShipwayError, match="add up to 100, got 90"):
        deployed.set_traffic("toy_model", {"1": 80, "2": 10})
    with pytest.raises(ShipwayError, match=r"no running version\(s\) \['7'\]"):
        deployed.set_traffic("toy_model", {"7": 100})
    with pytest.raises(ShipwayError, match="still takes 100% of traffic"):
        deployed.undeploy("toy_model", "1")
    assert deployed.status()["toy_model"]["weights"] == before


def test_a_broken_bundle_is_refused_and_the_live_version_keeps_serving(
    deployed: ServingClient, tmp_path: Path
) -> None:
    (tmp_path / "model-settings.json").write_text("{}")
    with pytest.raises(ShipwayError, match="is missing"):
        deployed.deploy("toy_model", "3", tmp_path)
    rows = toy_frame(2, seed=5)[TOY_FEATURES].to_numpy()
    assert deployed.infer("toy_model", rows, TOY_FEATURES)[0] == "1"
    assert sorted(deployed.status()["toy_model"]["versions"]) == ["1", "2"]


def test_prometheus_targets_follow_the_running_versions(
    controller: tuple[ServingClient, Path], deployed: ServingClient
) -> None:
    _, root = controller
    text = (root / "targets" / "mlserver.json").read_text()
    for version in deployed.status()["toy_model"]["versions"].values():
        assert version["metrics"] in text
        assert httpx.get(f"http://{version['metrics']}/metrics").status_code == 200


def _gauge(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in metrics")
