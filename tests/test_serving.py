"""Serving's two planes with real processes: Envoy in front, MLServer per version behind it,
the control plane configuring both."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from shipway import callers
from shipway.errors import ShipwayError
from shipway.paths import ServingHome
from shipway.serving.bundle import Bundle, write_bundle
from shipway.serving.client import TOKEN_ENV, ServingClient
from shipway.serving.dataplane import MODEL_HEADER, STICKY_HEADER, VERSION_HEADER
from shipway.serving.explanations import reference_attributions
from shipway.serving.package import VERIFY_KEY_ENV, build_package
from shipway.serving.prediction_log import read_predictions
from shipway.serving.protocol import features_request
from shipway.serving.runtime import client, socket_folder, start_mlserver
from shipway.stats.drift import DriftRules, build_reference
from tests.conftest import (
    CALLER,
    LEANING_FEATURES,
    SIGNER,
    TOKEN,
    TOY_FEATURES,
    Load,
    Serving,
    leaning_rows,
    toy_copy,
    toy_frame,
)

pytestmark = pytest.mark.integration


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


def test_a_signed_package_round_trips_through_serving_and_a_tampered_one_is_refused(
    serving: Serving, deployed: ServingClient, bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    import xgboost as xgb

    source = bundles["1"]
    signed = toy_copy(source, tmp_path / "bundle", "toy_signed")
    packages = serving.root / "packages"
    package = build_package(signed.path, {"code_commit": "test"}, TOY_FEATURES, packages, SIGNER)
    deployed.deploy("toy_signed", "1", package.bundle)
    deployed.set_traffic("toy_signed", {"1": 100})
    rows = toy_frame(20, seed=12)[TOY_FEATURES].to_numpy()
    version, scores = deployed.infer("toy_signed", rows, TOY_FEATURES)
    model = xgb.XGBClassifier()
    model.load_model(source.path / "model.ubj")
    assert version == "1"
    np.testing.assert_allclose(scores, model.predict_proba(rows)[:, 1], rtol=1e-5)

    # What was handed over may change after its check: serving loads its own verified copy,
    # and verifies that again when the supervisor starts a crashed model server.
    (package.bundle / "model.ubj").write_bytes(b"swapped after deployment")
    (replica,) = deployed.status()["toy_signed"]["versions"]["1"]["replicas"]
    os.kill(replica["pid"], signal.SIGKILL)
    _wait_started_again(deployed, "toy_signed", "1", 0, replica["pid"])
    np.testing.assert_allclose(deployed.infer("toy_signed", rows, TOY_FEATURES)[1], scores)

    tampered = shutil.copytree(package.path, packages / "toy_signed-2")
    settings = tampered / "bundle" / "model-settings.json"
    settings.write_text(settings.read_text().replace('"version": "1"', '"version": "2"'))
    with pytest.raises(ShipwayError, match=r"model-settings\.json differs from its digest"):
        deployed.deploy("toy_signed", "2", tampered / "bundle")
    assert set(deployed.status()["toy_signed"]["versions"]) == {"1"}


def test_the_splitter_sends_traffic_by_weight(deployed: ServingClient) -> None:
    deployed.set_traffic("toy_model", {"1": 80, "2": 20})
    rows = toy_frame(1, seed=3)[TOY_FEATURES].to_numpy()
    seen = Counter(deployed.infer("toy_model", rows, TOY_FEATURES)[0] for _ in range(300))
    deployed.set_traffic("toy_model", {"1": 100})
    # 300 draws at p=0.2: the 2 share lies in [0.12, 0.28] with probability > 0.999.
    assert 0.12 <= seen["2"] / 300 <= 0.28
    assert seen["1"] + seen["2"] == 300


def test_metrics_carry_requests_latency_scores_and_drift_per_version(
    serving: Serving, deployed: ServingClient
) -> None:
    frame = toy_frame(400, seed=21)
    for start in range(0, 400, 50):
        deployed.infer(
            "toy_model", frame[TOY_FEATURES].to_numpy()[start : start + 50], TOY_FEATURES
        )
    # Requests, response classes and latency: the data plane's, per version (cluster).
    envoy = httpx.get(f"http://{serving.dataplane.metrics_target}/metrics").text
    assert (
        _gauge(
            envoy,
            "envoy_cluster_upstream_rq_xx",
            'envoy_response_code_class="2",envoy_cluster_name="toy_model__v1"',
        )
        >= 8
    )
    assert (
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="toy_model__v1",le="5"}' in envoy
    )
    # Scores and drift: the version's own model server, counted off the request path.
    text = deployed.version_metrics("toy_model", "1")
    assert _gauge(text, "shipway_prediction_score_count", 'model="toy_model",version="1"') >= 400
    psi = _gauge(
        text, "shipway_feature_drift_psi", 'feature="amount",model="toy_model",version="1"'
    )
    assert psi < 0.1, "same distribution as the training reference must not look drifted"
    # The cost of serving: rows scored and the process's own CPU time, per version.
    labels = 'model="toy_model",version="1"'
    assert _gauge(text, "shipway_predictions_total", labels) >= 400
    assert _gauge(text, "shipway_process_cpu_seconds_total", labels) > 0


def test_shifted_traffic_shows_as_drift(deployed: ServingClient) -> None:
    shifted = toy_frame(400, seed=22, amount_scale=3.0)
    for start in range(0, 400, 50):
        deployed.infer(
            "toy_model", shifted[TOY_FEATURES].to_numpy()[start : start + 50], TOY_FEATURES
        )
    text = deployed.version_metrics("toy_model", "1")
    amount = _gauge(
        text, "shipway_feature_drift_psi", 'feature="amount",model="toy_model",version="1"'
    )
    hour = _gauge(
        text, "shipway_feature_drift_psi", 'feature="hour_of_day",model="toy_model",version="1"'
    )
    assert amount > 1.0
    assert hour < 0.1


def test_a_caller_asking_for_contributions_gets_each_row_explained(
    deployed: ServingClient,
) -> None:
    rows = toy_frame(5, seed=13)[TOY_FEATURES].to_numpy()
    body = features_request(rows, TOY_FEATURES)
    url = f"{deployed.url}/v2/models/toy_model/infer"
    plain = httpx.post(url, json=body, headers=deployed.api_headers).json()
    assert [o["name"] for o in plain["outputs"]] == ["score"]

    answer = httpx.post(
        url, json={**body, "parameters": {"contributions": True}}, headers=deployed.api_headers
    ).json()
    score, explained = answer["outputs"]
    assert explained["name"] == "contributions" and explained["shape"] == [5, 4]
    assert explained["parameters"]["columns"] == [*TOY_FEATURES, "bias"]
    values = np.asarray(explained["data"]).reshape(5, 4)
    # Each row adds up to its margin: the log-odds of the score answered beside it.
    np.testing.assert_allclose(1 / (1 + np.exp(-values.sum(axis=1))), score["data"], atol=1e-5)

    refused = httpx.post(
        url, json={**body, "parameters": {"contributions": "yes"}}, headers=deployed.api_headers
    )
    assert refused.status_code == 400
    assert '"contributions" must be true or false, got' in refused.json()["error"]


def test_a_version_leaning_on_a_feature_training_seldom_needed_shows_attribution_drift(
    serving: Serving, deployed: ServingClient, tmp_path: Path
) -> None:
    import xgboost as xgb

    x, y = leaning_rows(4000, seed=1)
    model = xgb.XGBClassifier(n_estimators=40, max_depth=3, random_state=1).fit(x, y)
    model.save_model(tmp_path / "leaning.ubj")
    reference = build_reference(
        pd.DataFrame(x, columns=LEANING_FEATURES),
        LEANING_FEATURES,
        10,
        attributions=reference_attributions(model.get_booster(), x, LEANING_FEATURES, None, 1),
    )
    bundle = write_bundle(
        serving.root / "toy_leaning" / "1",
        "toy_leaning",
        "1",
        tmp_path / "leaning.ubj",
        reference,
        "binary_classification",
        DriftRules(min_rows=50, max_rows=400, attribution_share_change=0.1),
    )
    deployed.deploy("toy_leaning", "1", bundle.path)
    deployed.set_traffic("toy_leaning", {"1": 100})
    labels = 'feature="%s",model="toy_leaning",version="1"'

    def serve(rows: np.ndarray) -> str:
        # A scrape per 100 rows: each explains all the rows served since the last one.
        for start in range(0, len(rows), 100):
            deployed.infer("toy_leaning", rows[start : start + 100], LEANING_FEATURES)
            text = deployed.version_metrics("toy_leaning", "1")
        return text

    text = serve(leaning_rows(200, seed=2)[0])
    version = 'model="toy_leaning",version="1"'
    assert _gauge(text, "shipway_attribution_window_samples", version) == 200
    for feature in LEANING_FEATURES:
        assert _gauge(text, "shipway_attribution_drifted", labels % feature) == 0

    text = serve(leaning_rows(400, seed=3, rare_shift=2.0)[0])
    assert _gauge(text, "shipway_attribution_drifted", labels % "rare") == 1
    assert _gauge(text, "shipway_attribution_share_change", labels % "rare") > 0.1


def _input(name: str, data: list[object], shape: object = None) -> dict[str, object]:
    return {"name": name, "datatype": "FP64", "shape": shape or [len(data)], "data": data}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [_input("age_of_customer", [1.0])]},
            "unknown input(s) ['age_of_customer']",
        ),
        (
            {"inputs": [_input("amount", [1.0])]},
            "missing feature input(s) ['hour_of_day', 'customer_txn_count_7d']",
        ),
        (
            {"inputs": [_input("features", [1.0, 2.0], [1, 2])]},
            "shape must be [n, 3]",
        ),
        (
            {"inputs": [_input(n, ["x"]) for n in TOY_FEATURES]},
            "input 'amount': data must be numbers",
        ),
        (
            {"inputs": [_input(n, [1.0, 2.0], [3]) for n in TOY_FEATURES]},
            "input 'amount': shape [3] does not match 2 values",
        ),
        # The protocol's own schema, checked by MLServer before the model: 422 naming the field.
        ({"input": []}, '"loc":["body","inputs"],"msg":"Field required"'),
        (
            {"inputs": [_input("features", [1.0, 2.0, 3.0], "1x3")]},
            '"loc":["body","inputs",0,"shape"],"msg":"Input should be a valid list"',
        ),
    ],
)
def test_bad_requests_get_a_400_that_names_the_problem(
    deployed: ServingClient, body: object, message: str
) -> None:
    response = httpx.post(
        f"{deployed.url}/v2/models/toy_model/infer", json=body, headers=deployed.api_headers
    )
    assert 400 <= response.status_code < 500
    assert message in response.text


def test_an_unknown_model_or_version_is_a_404_naming_what_is_deployed(
    deployed: ServingClient,
) -> None:
    body = features_request(toy_frame(1, seed=4)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
    response = httpx.post(
        f"{deployed.url}/v2/models/no_such_model/infer", json=body, headers=deployed.api_headers
    )
    assert response.status_code == 404
    assert "'toy_model'" in response.json()["error"]
    with pytest.raises(ShipwayError, match="404: model 'toy_model' has no running version '9'"):
        deployed.undeploy("toy_model", "9")


def test_a_regression_model_is_served_beside_the_classifier_with_its_own_settings(
    serving: Serving, deployed: ServingClient, tmp_path: Path
) -> None:
    import xgboost as xgb

    frame = toy_frame(1500, seed=8)
    regressor = xgb.XGBRegressor(n_estimators=20, max_depth=3, random_state=8)
    regressor.fit(frame[TOY_FEATURES].to_numpy(), frame["amount"].to_numpy() * 2.0)
    regressor.save_model(tmp_path / "spend.ubj")
    reference = build_reference(frame, TOY_FEATURES, bins=10)
    bundle = write_bundle(
        serving.root / "toy_spend" / "1",
        "toy_spend",
        "1",
        tmp_path / "spend.ubj",
        reference,
        "regression",
        DriftRules(min_rows=50, max_rows=60),
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
    name, labels = "shipway_drift_window_samples", 'model="%s",version="1"'
    assert _gauge(deployed.version_metrics("toy_spend", "1"), name, labels % "toy_spend") == 60
    assert _gauge(deployed.version_metrics("toy_model", "1"), name, labels % "toy_model") > 60


def test_a_drifted_version_that_stops_receiving_traffic_stops_alarming(
    serving: Serving, deployed: ServingClient, bundles: dict[str, Bundle]
) -> None:
    source = bundles["1"]
    window = 3.0
    bundle = toy_copy(
        source,
        serving.root / "toy_idle" / "1",
        "toy_idle",
        drift=DriftRules(window_seconds=window, min_rows=50, max_rows=400),
    )
    deployed.deploy("toy_idle", "1", bundle.path)
    deployed.set_traffic("toy_idle", {"1": 100})
    shifted = toy_frame(200, seed=12, amount_scale=4.0)[TOY_FEATURES].to_numpy()
    deployed.infer("toy_idle", shifted, TOY_FEATURES)
    labels = 'feature="amount",model="toy_idle",version="1"'
    metrics = deployed.version_metrics("toy_idle", "1")
    assert _gauge(metrics, "shipway_feature_drifted", labels) == 1.0
    assert _gauge(metrics, "shipway_feature_drift_psi", labels) > 0.25
    time.sleep(window + 0.5)
    # No request since: the rows have left the window, and every drift series with them.
    quiet = deployed.version_metrics("toy_idle", "1")
    assert "shipway_feature_drifted{" not in quiet and "shipway_prediction_drifted{" not in quiet
    assert _gauge(quiet, "shipway_drift_window_samples", 'model="toy_idle",version="1"') == 0


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
    serving: Serving, deployed: ServingClient, tmp_path: Path
) -> None:
    broken = serving.root / "toy_model" / "3"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "model-settings.json").write_text("{}")
    with pytest.raises(ShipwayError, match="is missing"):
        deployed.deploy("toy_model", "3", broken)
    with pytest.raises(ShipwayError, match=r"400: bundle .* is outside the serving home"):
        deployed.deploy("toy_model", "3", tmp_path)
    settings = json.loads((serving.root / "toy_model" / "1" / "model-settings.json").read_text())
    settings["parameters"]["extra"]["replicas"] = 0
    shutil.copytree(serving.root / "toy_model" / "1", broken, dirs_exist_ok=True)
    (broken / "model-settings.json").write_text(json.dumps(settings))
    with pytest.raises(ShipwayError, match="replicas 0 is not a whole number from 1 to 8"):
        deployed.deploy("toy_model", "3", broken)
    rows = toy_frame(2, seed=5)[TOY_FEATURES].to_numpy()
    assert deployed.infer("toy_model", rows, TOY_FEATURES)[0] == "1"
    assert sorted(deployed.status()["toy_model"]["versions"]) == ["1", "2"]


def test_prometheus_targets_follow_the_running_versions(
    serving: Serving, deployed: ServingClient
) -> None:
    text = (serving.root / "targets" / "mlserver.json").read_text()
    for version in deployed.status()["toy_model"]["versions"].values():
        (replica,) = version["replicas"]
        target = f"127.0.0.1:{replica['metrics_port']}"
        assert target in text
        assert httpx.get(f"http://{target}/metrics").status_code == 200


def test_changes_need_the_token_and_a_refused_change_leaves_serving_as_it_was(
    serving: Serving, deployed: ServingClient
) -> None:
    before = deployed.status()["toy_model"]
    url = f"{deployed.control_url}/admin/models/toy_model/traffic"
    body = {"weights": {"2": 100}}
    assert httpx.put(url, json=body).status_code == 401
    wrong = httpx.put(url, json=body, headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401
    assert "SHIPWAY_SERVING_TOKEN" in wrong.json()["error"]
    huge = {"weights": {"1": 100}, "pad": "x" * 100_000}
    too_big = httpx.put(url, json=huge, headers={"Authorization": f"Bearer {TOKEN}"})
    assert too_big.status_code == 413
    assert deployed.status()["toy_model"] == before
    # Status names every model server's socket and pid: it needs the token too.
    assert httpx.get(f"{deployed.control_url}/admin/models").status_code == 401


def test_only_envoy_and_the_control_plane_reach_a_model_server(
    serving: Serving, deployed: ServingClient
) -> None:
    (replica,) = deployed.status()["toy_model"]["versions"]["1"]["replicas"]
    socket = Path(replica["socket"])
    assert socket.is_socket()
    folder = socket.parent.stat()
    assert folder.st_uid == os.getuid() and stat.S_IMODE(folder.st_mode) == 0o700
    # No TCP port of the model server answers its API (load, unload, infer): only its
    # read-only metrics port listens.
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ports = {
        int(line.split()[3].rsplit(":", 1)[1])
        for line in listening
        if f"pid={replica['pid']}," in line
    }
    assert ports == {replica["metrics_port"]}
    # It was not handed the serving token (nor any other credential of the control plane).
    environ = Path(f"/proc/{replica['pid']}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert TOKEN_ENV not in names and VERIFY_KEY_ENV not in names
    assert all(TOKEN.encode() not in entry for entry in environ)


def test_no_log_state_or_package_file_holds_the_admin_token_or_the_signing_key(
    serving: Serving, deployed: ServingClient
) -> None:
    url = f"{deployed.control_url}/admin/models/toy_model/traffic"
    assert httpx.put(url, json={"weights": {"2": 100}}).status_code == 401
    deployed.set_traffic("toy_model", {"1": 100})
    signing = SIGNER.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    secrets = [TOKEN.encode(), signing, base64.b64encode(signing)]
    files = [p for p in serving.root.rglob("*") if p.is_file()]
    logs = [p for p in files if p.suffix == ".log" and p.stat().st_size > 0]
    assert logs, "the control plane, Envoy and MLServer logged something to search"
    holding = [
        str(path.relative_to(serving.root))
        for path in files
        if any(secret in path.read_bytes() for secret in secrets)
    ]
    assert holding == []


def test_the_front_door_needs_a_caller_s_key_and_holds_each_caller_to_its_rate(
    serving: Serving, deployed: ServingClient
) -> None:
    url = f"{deployed.url}/v2/models/toy_model/infer"
    body = features_request(toy_frame(1, seed=31)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
    nobody = httpx.post(url, json=body)
    assert nobody.status_code == 401
    guess = {"Authorization": callers.credentials(CALLER, "guess")}
    assert httpx.post(url, json=body, headers=guess).status_code == 401
    # A caller cannot name itself by header: Envoy sets who it is from the key alone.
    spoof = {"Authorization": callers.credentials(CALLER, "guess"), "x-shipway-caller": CALLER}
    assert httpx.post(url, json=body, headers=spoof).status_code == 401
    assert httpx.get(f"{deployed.url}/v2/health/ready").status_code == 200

    slow_key = callers.new_key()
    assert deployed.set_caller("slow", callers.digest(slow_key), rate=1, burst=2)["applied"]
    slow = {"Authorization": callers.credentials("slow", slow_key)}
    # Requests that skip authentication (health checks) cannot name a caller and spend its rate.
    for _ in range(4):
        health = httpx.get(f"{deployed.url}/v2/health/live", headers={"x-shipway-caller": "slow"})
        assert health.status_code == 200
    codes = [httpx.post(url, json=body, headers=slow).status_code for _ in range(5)]
    assert codes[:2] == [200, 200] and 429 in codes, codes
    # Another caller's bucket is its own.
    assert httpx.post(url, json=body, headers=deployed.api_headers).status_code == 200
    stats = httpx.get(f"http://{serving.dataplane.metrics_target}/metrics").text
    limited = re.search(
        r"^envoy_http_local_rate_limit_rate_limited\{envoy_local_http_ratelimit_prefix="
        r'"caller_slow"\} (\d+)$',
        stats,
        re.M,
    )
    assert limited is not None and int(limited.group(1)) == codes.count(429)
    assert [c["caller"] for c in deployed.callers()] == ["slow", CALLER]
    limits = httpx.get(f"{deployed.control_url}/metrics").text
    assert 'shipway_caller_rate_limit{caller="slow"} 1.0' in limits
    assert 'shipway_caller_burst_limit{caller="slow"} 2.0' in limits
    assert "digest" not in str(deployed.callers())

    # Revoked: the key stops working as soon as the front door has the change.
    assert deployed.remove_caller("slow")["applied"]
    time.sleep(1.1)  # a full bucket again: a 401 now is the revocation, not the rate
    assert httpx.post(url, json=body, headers=slow).status_code == 401


def test_a_bad_caller_change_is_refused_and_the_front_door_keeps_its_keys(
    serving: Serving, deployed: ServingClient
) -> None:
    url = f"{deployed.control_url}/admin/callers/x"
    admin = {"Authorization": f"Bearer {TOKEN}"}
    good = {"digest": callers.digest("k"), "rate": 1, "burst": 1}
    assert httpx.put(url, json=good).status_code == 401
    before = ServingHome(serving.root).callers.read_bytes()
    # A digest or a name with a newline would be a broken line of Envoy's users list (which
    # then refuses every later change): refused at the door, never saved.
    broken = callers.digest("k")[:-1] + "\n="
    for bad, named in [
        ({**good, "rate": 0.5}, "rate must be a whole number >= 1, not 0.5"),
        ({**good, "digest": "k"}, "is not {SHA} followed by exactly 28 base64 characters"),
        ({**good, "digest": broken}, "is not {SHA} followed by exactly 28 base64 characters"),
        ({**good, "digest": callers.digest("k") + "\n"}, "is not {SHA} followed by exactly 28"),
        ({**good, "acl": "root"}, "acl 'root' is not one of ['public', 'staff']"),
        ({**good, "admin": True}, "unknown fields ['admin']"),
        ({"rate": 1}, 'body must be {"digest"'),
    ]:
        refused = httpx.put(url, json=bad, headers=admin)
        assert refused.status_code == 400 and named in refused.json()["error"], refused.text
    for name, shown in [("Bad%20Name", "'Bad Name'"), ("alice%0A", "'alice\\n'")]:
        bad_name = httpx.put(
            f"{deployed.control_url}/admin/callers/{name}", json=good, headers=admin
        )
        assert bad_name.status_code == 400, bad_name.text
        assert f"caller name {shown}" in bad_name.json()["error"]
    assert ServingHome(serving.root).callers.read_bytes() == before
    missing = httpx.delete(f"{deployed.control_url}/admin/callers/nobody", headers=admin)
    assert missing.status_code == 404 and "no caller 'nobody'" in missing.text

    # A callers file broken by hand: a caller change is refused, naming it; the front door
    # keeps its keys, and a change of traffic (a rollback, say) still goes through.
    path = ServingHome(serving.root).callers
    kept = path.read_bytes()
    path.write_text("{broken")
    try:
        with pytest.raises(ShipwayError, match=r"400: callers file .* is unreadable"):
            deployed.set_caller("x", callers.digest("k"), 1, 1)
        assert deployed.set_traffic("toy_model", {"1": 50, "2": 50})["applied"]
        url = f"{deployed.url}/v2/models/toy_model/infer"
        body = features_request(toy_frame(2, seed=32)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
        assert httpx.post(url, json=body, headers=deployed.api_headers).status_code == 200
        assert httpx.post(url, json=body).status_code == 401
    finally:
        deployed.set_traffic("toy_model", {"1": 100})
        path.write_bytes(kept)


def test_the_front_door_refuses_oversized_bodies_before_any_model(
    deployed: ServingClient,
) -> None:
    response = httpx.post(
        f"{deployed.url}/v2/models/toy_model/infer",
        content=b"[" + b"0," * (1 << 20) + b"0]",
        headers=deployed.api_headers,
    )
    assert response.status_code == 413


def test_shadow_gets_a_copy_of_every_request_and_callers_only_see_the_live_version(
    deployed: ServingClient,
) -> None:
    deployed.set_traffic("toy_model", {"1": 100}, shadow="2")
    try:
        before = _score_count(deployed, "2")
        rows = toy_frame(5, seed=12)[TOY_FEATURES].to_numpy()
        answered = Counter(deployed.infer("toy_model", rows, TOY_FEATURES)[0] for _ in range(20))
        assert answered == {"1": 20}
        deadline = time.monotonic() + 5
        while _score_count(deployed, "2") < before + 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _score_count(deployed, "2") == before + 100
    finally:
        deployed.set_traffic("toy_model", {"1": 100})


def test_a_sticky_key_keeps_a_caller_on_one_version_and_a_header_pins_one(
    deployed: ServingClient,
) -> None:
    deployed.set_traffic("toy_model", {"1": 50, "2": 50})
    try:
        body = features_request(toy_frame(1, seed=13)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
        url = f"{deployed.url}/v2/models/toy_model/infer"
        auth = deployed.api_headers
        for key in ("17", "4242424242"):
            seen = {
                httpx.post(url, json=body, headers={**auth, "x-shipway-sticky-key": key}).json()[
                    "model_version"
                ]
                for _ in range(15)
            }
            assert len(seen) == 1, f"key {key} went to {seen}"
        pinned = {
            httpx.post(url, json=body, headers={**auth, "x-shipway-version": "2"}).json()[
                "model_version"
            ]
            for _ in range(10)
        }
        assert pinned == {"2"}
        by_path = httpx.post(
            f"{deployed.url}/v2/models/toy_model/versions/1/infer", json=body, headers=auth
        )
        assert by_path.json()["model_version"] == "1"
    finally:
        deployed.set_traffic("toy_model", {"1": 100})


def test_a_stock_open_inference_protocol_client_checks_reads_metadata_and_infers(
    deployed: ServingClient,
) -> None:
    import tritonclient.http as oip

    client = oip.InferenceServerClient(deployed.url.removeprefix("http://"))
    auth = deployed.api_headers
    # Health is open (a load balancer holds no key); a model's endpoints need one.
    assert client.is_server_live()
    assert client.is_server_ready()
    assert not client.is_model_ready("toy_model")
    assert client.is_model_ready("toy_model", headers=auth)
    metadata = client.get_model_metadata("toy_model", headers=auth)
    assert [i["name"] for i in metadata["inputs"]] == TOY_FEATURES
    assert [o["name"] for o in metadata["outputs"]] == ["score", "contributions"]
    rows = toy_frame(4, seed=14)[TOY_FEATURES].to_numpy()
    per_feature = []
    for i, name in enumerate(TOY_FEATURES):
        tensor = oip.InferInput(name, [4], "FP64")
        tensor.set_data_from_numpy(rows[:, i].copy(), binary_data=False)
        per_feature.append(tensor)
    matrix = oip.InferInput("features", [4, 3], "FP64")
    matrix.set_data_from_numpy(rows, binary_data=False)
    wanted = [oip.InferRequestedOutput("score", binary_data=False)]
    one = client.infer("toy_model", per_feature, outputs=wanted, headers=auth).as_numpy("score")
    two = client.infer("toy_model", [matrix], outputs=wanted, headers=auth).as_numpy("score")
    _, expected = deployed.infer("toy_model", rows, TOY_FEATURES)
    np.testing.assert_allclose(one, expected)
    np.testing.assert_allclose(two, expected)
    # A stock client asks for explanations with the request's parameters.
    explained = client.infer(
        "toy_model", per_feature, parameters={"contributions": True}, headers=auth
    ).as_numpy("contributions")
    assert explained.shape == (4, len(TOY_FEATURES) + 1)
    np.testing.assert_allclose(1 / (1 + np.exp(-explained.sum(axis=1))), expected, atol=1e-5)
    assert not client.is_model_ready("no_such_model", headers=auth)


def _grpc(deployed: ServingClient) -> Any:
    import tritonclient.grpc as grpc_oip

    return grpc_oip.InferenceServerClient(deployed.url.removeprefix("http://"))


def _grpc_headers(deployed: ServingClient, **extra: str) -> dict[str, str]:
    """gRPC metadata: the caller's key, and the model the call is for (Seldon's header)."""
    return {
        "authorization": deployed.api_headers["Authorization"],
        MODEL_HEADER: "toy_model",
        **extra,
    }


def _grpc_infer(
    deployed: ServingClient,
    rows: np.ndarray,
    keys: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    import tritonclient.grpc as grpc_oip

    matrix = grpc_oip.InferInput("features", list(rows.shape), "FP64")
    matrix.set_data_from_numpy(rows)
    return _grpc(deployed).infer(
        "toy_model",
        [matrix],
        parameters={"row_keys": json.dumps(keys)} if keys else None,
        headers=_grpc_headers(deployed, **(headers or {})),
    )


def test_the_front_door_speaks_the_grpc_protocol_to_a_stock_client(
    serving: Serving, deployed: ServingClient
) -> None:
    from tritonclient.utils import InferenceServerException

    client = _grpc(deployed)
    auth = _grpc_headers(deployed)
    # Server health is open, as over REST; a model's calls need a key and name the model.
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("toy_model", headers=auth)
    metadata = client.get_model_metadata("toy_model", headers=auth, as_json=True)
    assert [i["name"] for i in metadata["inputs"]] == TOY_FEATURES
    rows = toy_frame(4, seed=31)[TOY_FEATURES].to_numpy()
    answer = _grpc_infer(deployed, rows)
    assert answer.get_response().model_version == "1"
    _, expected = deployed.infer("toy_model", rows, TOY_FEATURES)
    np.testing.assert_array_equal(answer.as_numpy("score"), expected)
    with pytest.raises(InferenceServerException) as no_key:
        client.is_model_ready("toy_model", headers={MODEL_HEADER: "toy_model"})
    assert no_key.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as no_model:
        client.get_model_metadata("toy_model", headers={"authorization": auth["authorization"]})
    assert f"name the model in the {MODEL_HEADER} header" in str(no_model.value.message())
    assert no_model.value.status() == "StatusCode.NOT_FOUND"
    # Counted per version like REST, on the version's gRPC cluster.
    stats = httpx.get(f"http://{serving.dataplane.metrics_target}/metrics").text
    assert re.search(
        r'envoy_cluster_upstream_rq_total\{envoy_cluster_name="toy_model__v1__grpc"\} [1-9]', stats
    ), "no gRPC requests counted for v1"


def test_grpc_calls_follow_the_weights_the_sticky_key_the_pin_and_the_mirror(
    serving: Serving, deployed: ServingClient
) -> None:
    rows = toy_frame(2, seed=32)[TOY_FEATURES].to_numpy()
    deployed.set_traffic("toy_model", {"1": 50, "2": 50})
    try:
        seen = Counter(_grpc_infer(deployed, rows).get_response().model_version for _ in range(40))
        assert set(seen) == {"1", "2"}, seen
        for key in ("17", "4242424242"):
            sticky = {
                _grpc_infer(deployed, rows, headers={STICKY_HEADER: key})
                .get_response()
                .model_version
                for _ in range(10)
            }
            assert len(sticky) == 1, f"key {key} went to {sticky}"
        pinned = {
            _grpc_infer(deployed, rows, headers={VERSION_HEADER: "2"}).get_response().model_version
            for _ in range(10)
        }
        assert pinned == {"2"}
        deployed.set_traffic("toy_model", {"1": 100}, shadow="2")
        keys = [f"grpc-m-{i}" for i in range(2)]
        # A caller's own mirror mark is replaced: its rows stay served rows.
        answered = _grpc_infer(deployed, rows, keys, {"x-shipway-mirrored": "1"})
        assert answered.get_response().model_version == "1"
        logged = _logged(serving, "grpc-m-", rows=4)
    finally:
        deployed.set_traffic("toy_model", {"1": 100})
    served, mirrored = logged[logged["served"]], logged[~logged["served"]]
    assert set(served["version"]) == {"1"} and set(mirrored["version"]) == {"2"}
    assert sorted(served["row_key"]) == keys == sorted(mirrored["row_key"])


def _logged(serving: Serving, prefix: str, rows: int, timeout: float = 30.0) -> pd.DataFrame:
    """The logged rows whose key starts with `prefix`, once there are `rows` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = read_predictions(serving.lake, "toy_model")
        mine = found[found["row_key"].fillna("").str.startswith(prefix)]
        if len(mine) >= rows or time.monotonic() > deadline:
            return mine.reset_index(drop=True)
        time.sleep(0.5)


def test_every_scored_row_is_logged_with_its_key_and_vector_and_mirrored_rows_are_marked(
    serving: Serving, deployed: ServingClient
) -> None:
    rows = toy_frame(30, seed=21)[TOY_FEATURES].to_numpy()
    keys = [f"log-a-{i:02d}" for i in range(30)]
    deployed.set_traffic("toy_model", {"1": 100}, shadow="2")
    try:
        scores = [
            deployed.infer("toy_model", rows[i : i + 10], TOY_FEATURES, keys[i : i + 10])[1]
            for i in range(0, 30, 10)
        ]
        logged = _logged(serving, "log-a-", rows=60)
    finally:
        deployed.set_traffic("toy_model", {"1": 100})
    served = logged[logged["served"]].sort_values("row_key")
    mirrored = logged[~logged["served"]].sort_values("row_key")
    assert set(served["version"]) == {"1"} and set(mirrored["version"]) == {"2"}
    assert served["row_key"].tolist() == keys and mirrored["row_key"].tolist() == keys
    np.testing.assert_allclose(np.vstack(list(served["vector"])), rows)
    np.testing.assert_allclose(served["score"].to_numpy(), np.concatenate(scores))
    assert served["request_id"].nunique() == 3, "one id per request, the data plane's"
    assert set(served["day"]) == {time.strftime("%Y-%m-%d", time.gmtime())}
    metrics = httpx.get(f"{deployed.control_url}/metrics").text
    assert 'shipway_prediction_log_rows_total{model="toy_model"}' in metrics


def test_a_callers_host_header_never_marks_its_rows_as_shadow(
    serving: Serving, deployed: ServingClient
) -> None:
    # Envoy marks a mirrored request (`x-shipway-mirrored: 1`, and a Host ending `-shadow`); a
    # caller who sends either must not hide its rows from live drift and skew.
    deployed.set_traffic("toy_model", {"1": 100})
    rows = toy_frame(3, seed=23)[TOY_FEATURES].to_numpy()
    body = features_request(rows, TOY_FEATURES, [f"host-a-{i}" for i in range(3)])
    forged = {**deployed.api_headers, "Host": "shipway-shadow", "x-shipway-mirrored": "1"}
    answer = httpx.post(f"{deployed.url}/v2/models/toy_model/infer", json=body, headers=forged)
    assert answer.status_code == 200, answer.text
    logged = _logged(serving, "host-a-", rows=3)
    assert len(logged) == 3 and logged["served"].all()


def test_a_graceful_stop_logs_every_answered_row(serving: Serving, deployed: ServingClient) -> None:
    rows = toy_frame(50, seed=22)[TOY_FEATURES].to_numpy()
    keys = [f"log-b-{i:02d}" for i in range(50)]
    for i in range(0, 50, 5):
        deployed.infer("toy_model", rows[i : i + 5], TOY_FEATURES, keys[i : i + 5])
    serving.control.stop()
    try:
        # No waiting: what the stopped servers had queued was written before the stop ended.
        assert len(_logged(serving, "log-b-", rows=50, timeout=0)) == 50
    finally:
        serving.start_control()


def test_a_stop_out_of_patience_still_writes_the_rows_answered_during_the_drain(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    # A graceful stop waits for open requests; one that never completes (a body never sent)
    # holds it forever. A second signal later than SAME_STOP_SECONDS ends the server at once,
    # and a row answered during the drain, likely still queued (flushes are 0.5 s apart),
    # is written first.
    source = bundles["1"]
    bundle = toy_copy(source, tmp_path / "bundle", "toy_model", fault={"latency_ms": 3000.0})
    spool = tmp_path / "spool"
    server = start_mlserver(
        bundle,
        tmp_path / "logs",
        tmp_path / "metrics",
        spool_dir=spool,
        sockets=socket_folder(tmp_path),
        own_group=True,
    )
    rows = toy_frame(1, seed=24)[TOY_FEATURES].to_numpy()
    slow: list[int] = []
    answered = threading.Thread(
        target=lambda: slow.append(
            client(server.socket, timeout=30)
            .post(
                "/v2/models/toy_model/versions/1/infer",
                json=features_request(rows, TOY_FEATURES, ["drained"]),
            )
            .status_code
        )
    )
    answered.start()
    held = socket.socket(socket.AF_UNIX)
    held.connect(str(server.socket))
    held.sendall(
        b"POST /v2/models/toy_model/infer HTTP/1.1\r\nhost: model\r\n"
        b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
    )
    try:
        time.sleep(0.5)
        os.kill(server.process.pid, signal.SIGINT)
        answered.join(timeout=10)
        assert slow == [200], "an open request is answered during a graceful stop"
        assert server.process.running(), "the held request keeps the graceful stop waiting"
        os.kill(server.process.pid, signal.SIGTERM)  # 3 s after the SIGINT
        assert server.process.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        held.close()
        server.process.stop()
    logged = [
        key
        for file in (spool / "toy_model").glob("*.json")
        for key in json.loads(file.read_text())["row_key"]
    ]
    assert logged == ["drained"]
    assert "stopping now" in server.process.tail(20)


def test_kill_9_of_a_model_server_loses_at_most_its_last_half_second_of_rows(
    serving: Serving, deployed: ServingClient
) -> None:
    rows = toy_frame(1, seed=23)[TOY_FEATURES].to_numpy()
    answered: list[tuple[float, str]] = []
    began = time.monotonic()
    while time.monotonic() - began < 2.0:
        key = f"log-c-{len(answered):04d}"
        deployed.infer("toy_model", rows, TOY_FEATURES, [key])
        answered.append((time.monotonic(), key))
    pid = deployed.status()["toy_model"]["versions"]["1"]["replicas"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    old_enough = {k for t, k in answered if killed - t > 1.0}
    logged = set(_logged(serving, "log-c-", rows=len(answered), timeout=15)["row_key"])
    lost = len(answered) - len(logged)
    assert old_enough <= logged, "rows answered over a second before the kill are logged"
    assert lost <= sum(1 for t, _ in answered if killed - t <= 1.0), lost
    _wait_started_again(deployed, "toy_model", "1", 0, pid)


def test_a_restarted_control_plane_serves_what_was_served(
    serving: Serving, deployed: ServingClient
) -> None:
    before = deployed.status()["toy_model"]
    serving.control.stop()
    serving.start_control()
    after = deployed.status()["toy_model"]
    assert after["weights"] == before["weights"]
    assert sorted(after["versions"]) == sorted(before["versions"])
    rows = toy_frame(2, seed=15)[TOY_FEATURES].to_numpy()
    assert deployed.infer("toy_model", rows, TOY_FEATURES)[0] == "1"


def test_after_kill_9_of_the_control_plane_traffic_flows_and_a_new_one_adopts_the_servers(
    serving: Serving, deployed: ServingClient
) -> None:
    pids = {v: _pids(s) for v, s in deployed.status()["toy_model"]["versions"].items()}
    os.kill(serving.control.pid, signal.SIGKILL)
    rows = toy_frame(2, seed=16)[TOY_FEATURES].to_numpy()
    # The data plane does not need the control plane to answer.
    assert {deployed.infer("toy_model", rows, TOY_FEATURES)[0] for _ in range(20)} == {"1"}
    serving.start_control()
    after = deployed.status()["toy_model"]["versions"]
    assert {v: _pids(s) for v, s in after.items()} == pids
    assert all(s["running"] for s in after.values())


def test_after_kill_9_of_the_data_plane_a_new_envoy_serves_the_same_weights(
    serving: Serving, deployed: ServingClient
) -> None:
    deployed.set_traffic("toy_model", {"1": 30, "2": 70})
    try:
        os.kill(serving.envoy.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while serving.envoy.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        serving.envoy = serving.dataplane.process(serving.root / "logs").start()
        rows = toy_frame(1, seed=18)[TOY_FEATURES].to_numpy()
        seen = Counter(deployed.infer("toy_model", rows, TOY_FEATURES)[0] for _ in range(200))
        # 200 draws at p=0.7: v2's share lies in [0.58, 0.82] with probability > 0.999.
        assert 0.58 <= seen["2"] / 200 <= 0.82, seen
    finally:
        deployed.set_traffic("toy_model", {"1": 100})


def test_a_crashed_model_server_is_started_again(serving: Serving, deployed: ServingClient) -> None:
    crashed = deployed.status()["toy_model"]["versions"]["2"]["replicas"][0]["pid"]
    os.kill(crashed, signal.SIGKILL)
    _wait_started_again(deployed, "toy_model", "2", 0, crashed)
    body = features_request(toy_frame(1, seed=17)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
    answer = httpx.post(
        f"{deployed.url}/v2/models/toy_model/infer",
        json=body,
        headers={**deployed.api_headers, "x-shipway-version": "2"},
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "2"
    restarts = httpx.get(f"{deployed.control_url}/metrics").text
    assert 'shipway_model_server_restarts{model="toy_model",version="2"} 1.0' in restarts


def test_a_version_with_two_replicas_spreads_requests_and_survives_losing_one(
    serving: Serving, deployed: ServingClient, bundles: dict[str, Bundle]
) -> None:
    source = bundles["1"]
    bundle = toy_copy(source, serving.root / "toy_replicas" / "1", "toy_replicas", replicas=2)
    deployed.deploy("toy_replicas", "1", bundle.path)
    deployed.set_traffic("toy_replicas", {"1": 100})
    replicas = deployed.status()["toy_replicas"]["versions"]["1"]["replicas"]
    assert [r["replica"] for r in replicas] == [0, 1] and all(r["running"] for r in replicas)
    assert len({r["socket"] for r in replicas}) == 2
    rows = toy_frame(1, seed=31)[TOY_FEATURES].to_numpy()
    for _ in range(60):
        deployed.infer("toy_replicas", rows, TOY_FEATURES)
    labels = 'model="toy_replicas",version="1"'
    metrics = [deployed.version_metrics("toy_replicas", "1", i) for i in (0, 1)]
    counts = [_gauge(m, "shipway_prediction_score_count", labels) for m in metrics]
    # 60 requests, each replica picked with p=0.5: fewer than 10 on one has p < 1e-6.
    assert sum(counts) == 60 and min(counts) >= 10, counts
    # One drift series per version: the first replica judges it.
    assert _gauge(metrics[0], "shipway_drift_window_samples", labels) == counts[0]
    assert "shipway_drift_window_samples{" not in metrics[1]
    targets = json.loads((serving.root / "targets" / "mlserver.json").read_text())
    for r in replicas:
        assert {
            "targets": [f"127.0.0.1:{r['metrics_port']}"],
            "labels": {"replica": str(r["replica"])},
        } in targets

    killed = replicas[1]["pid"]
    body = features_request(rows, TOY_FEATURES)
    infer = f"{deployed.url}/v2/models/toy_replicas/infer"
    with Load(infer, body, headers=deployed.api_headers) as load:
        time.sleep(0.5)
        os.kill(killed, signal.SIGKILL)
        _wait_started_again(deployed, "toy_replicas", "1", 1, killed)
        # It serves again once Envoy's ejection for its refused connections ends (2 s, longer
        # for each ejection in a row): a fixed second of load after its restart missed it.
        deadline = time.monotonic() + 30
        while not _gauge(
            deployed.version_metrics("toy_replicas", "1", 1),
            "shipway_prediction_score_count",
            labels,
        ):
            assert time.monotonic() < deadline, "the restarted replica never served again"
            time.sleep(0.25)
    assert load.failures == [], f"{len(load.failures)} client-visible failures: {load.failures[:3]}"
    assert load.answers["1"] > 40, load.answers
    restarts = httpx.get(f"{deployed.control_url}/metrics").text
    assert 'shipway_model_server_restarts{model="toy_replicas",version="1"} 1.0' in restarts

    # A control plane killed with -9 is replaced by one that adopts both replicas.
    pids = _pids(deployed.status()["toy_replicas"]["versions"]["1"])
    serving.kill_control()
    serving.start_control()
    assert _pids(deployed.status()["toy_replicas"]["versions"]["1"]) == pids


def test_a_state_file_from_before_sockets_is_served_again_on_sockets_never_adopted(
    serving: Serving, deployed: ServingClient
) -> None:
    # A state file written before replicas (one server's port and pid at the top of each
    # record), when model servers listened on TCP ports anyone could reach: its servers are
    # stopped and the same versions served again, on sockets.
    before = deployed.status()["toy_model"]["versions"]
    serving.kill_control()
    state_path = serving.root / ".control" / "state.json"
    state = json.loads(state_path.read_text())
    for record in state["models"]["toy_model"]["versions"].values():
        (replica,) = record.pop("replicas")
        record.update({"http_port": 8080, "metrics_port": replica["metrics_port"]})
        record["pid"] = replica["pid"]
    state_path.write_text(json.dumps(state))
    serving.start_control()
    after = deployed.status()["toy_model"]["versions"]
    assert set(after) == set(before) and all(s["running"] for s in after.values())
    for version, served in after.items():
        (old,) = _pids(before[version])
        assert _pids(served) != [old] and not Path(f"/proc/{old}").exists()
        assert all(Path(r["socket"]).is_socket() for r in served["replicas"])


def _wait_started_again(
    client: ServingClient, model: str, version: str, replica: int, killed: int
) -> None:
    """Until the supervisor has replaced the killed replica and every replica runs."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = client.status()[model]["versions"][version]
        if now["replicas"][replica]["pid"] != killed and now["running"]:
            return
        time.sleep(0.25)
    raise AssertionError(f"{model} v{version} replica {replica} was not started again in 90s")


def _pids(version: dict[str, Any]) -> list[int]:
    return [r["pid"] for r in version["replicas"]]


def _score_count(client: ServingClient, version: str) -> float:
    return _gauge(
        client.version_metrics("toy_model", version),
        "shipway_prediction_score_count",
        f'model="toy_model",version="{version}"',
    )


def _gauge(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in metrics")
