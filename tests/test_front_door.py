"""The front door as a hostile key holder meets it: rights come from who the caller is, never
from the request; only the data plane is served; a revoked key stops on the connections it
already holds; a configuration Envoy rejects is reported, never "applied"; every door answers a
hostile body with a named 4xx and stays within its memory.

Real processes: Envoy, the control plane, MLServer replicas of a toy model and of the help
assistant (SmolLM2 through llama.cpp, a few tokens an answer)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipway import callers
from shipway.data.help_centre import generate
from shipway.models.application import DeclaredApplication, load_application, settings_for
from shipway.paths import ASSETS_DIR, ServingHome
from shipway.processes import free_ports
from shipway.serving.bundle import Bundle, write_application_bundle
from shipway.serving.client import ServingClient
from shipway.serving.control_plane import ControlPlane
from shipway.serving.dataplane import GRPC_SERVICE, MODEL_HEADER, DataPlane
from shipway.serving.prediction_log import ANSWER_SCHEMA, read_predictions
from shipway.serving.protocol import features_request, question_request
from tests.conftest import (
    TOKEN,
    TOY_FEATURES,
    Serving,
    resident_bytes,
    served_copy,
    toy_frame,
)

pytestmark = pytest.mark.integration

APP = "toy_assistant"
STAFF_QUESTION = "Which code lifts a fraud block on a card?"
# What the front door serves over gRPC, as the issue states it: inference, model metadata and
# readiness (routed to the model the seldon-model header names), server health.
MODEL_CALLS = ("ModelInfer", "ModelMetadata", "ModelReady")
HEALTH_CALLS = ("ServerLive", "ServerReady")


@pytest.fixture(scope="module")
def deployed(serving: Serving, bundles: dict[str, Bundle]) -> ServingClient:
    """The toy model at 100%, and the help assistant's v1 (its declared prompt and corpus,
    answers cut to a few tokens)."""
    client = serving.client
    client.deploy("toy_model", "1", served_copy(bundles["1"], serving.root))
    client.set_traffic("toy_model", {"1": 100})
    folder = ASSETS_DIR / "help_assistant"
    declared = DeclaredApplication(load_application(folder / "model.yaml"), folder)
    app = dataclasses.replace(settings_for(declared, "1", 1, 0), name=APP, max_tokens=8)
    corpus = generate().documents.drop(columns=["updated_at"])
    bundle = write_application_bundle(
        ServingHome(serving.root).bundle(APP, "1"), APP, "1", app.to_json(), corpus
    )
    client.deploy(APP, "1", bundle.path)
    client.set_traffic(APP, {"1": 100})
    return client


@pytest.fixture(scope="module")
def keys(deployed: ServingClient) -> dict[str, dict[str, str]]:
    """Two callers of the assistant: a customer (public) and the support desk (staff)."""
    found = {}
    for name, acl in (("customer", "public"), ("support-desk", "staff")):
        key = callers.new_key()
        assert deployed.set_caller(name, callers.digest(key), 1000, 1000, acl)["applied"]
        found[name] = {"Authorization": callers.credentials(name, key)}
    return found


def _upstream_requests(serving: Serving, model: str) -> int:
    """Requests Envoy sent to any replica of `model`, over every cluster (REST, gRPC, pinned)."""
    text = httpx.get(f"http://{serving.dataplane.metrics_target}/metrics").text
    found = re.findall(
        rf'^envoy_cluster_upstream_rq_total\{{envoy_cluster_name="{model}__v[^"]*"\}} (\d+)$',
        text,
        re.M,
    )
    return sum(int(n) for n in found)


def test_the_front_door_serves_only_inference_metadata_readiness_and_health_over_rest(
    serving: Serving, deployed: ServingClient
) -> None:
    body = features_request(toy_frame(1, seed=41)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
    auth = deployed.api_headers
    base = f"{deployed.url}/v2/models/toy_model"
    for path in ("", "/ready", "/versions/1", "/versions/1/ready"):
        assert httpx.get(f"{base}{path}", headers=auth).status_code == 200, path
    for path in ("/infer", "/versions/1/infer"):
        assert httpx.post(f"{base}{path}", json=body, headers=auth).status_code == 200, path
    pinned = {**auth, "x-shipway-version": "1"}
    assert httpx.post(f"{base}/infer", json=body, headers=pinned).status_code == 200
    before = _upstream_requests(serving, "toy_model")
    refused = [
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/toy_model/unload"),
        ("POST", "/v2/repository/models/toy_model/load"),
        ("POST", "/v2/models/toy_model/generate"),
        ("POST", "/v2/models/toy_model/infer_stream"),
        ("POST", "/v2/models/toy_model/versions/1/generate"),
        ("GET", "/v2/models/toy_model/docs"),
        ("GET", "/v2/models/toy_model/versions/1/docs/dataframe"),
        ("POST", "/v2/models/toy_model/feedback"),  # a model's callers rate nothing
        ("POST", "/v2/models/toy_model/infer/"),
        ("GET", "/v2"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
    ]
    for method, path in refused:
        for headers in (auth, {**auth, "x-shipway-version": "1"}, {**auth, MODEL_HEADER: "x"}):
            answer = httpx.request(method, f"{deployed.url}{path}", json=body, headers=headers)
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
            assert "the front door serves" in answer.json()["error"], path
    assert _upstream_requests(serving, "toy_model") == before, "a refused path reached a replica"
    assert httpx.get(f"{deployed.url}/v2/health/ready").status_code == 200


def _grpc_call(
    channel: grpc.Channel, method: Any, metadata: list[tuple[str, str]]
) -> grpc.StatusCode:
    """Call `method` of the OIP gRPC service with an empty request (ModelReady and
    ModelMetadata name the toy model); the status it ends with."""
    request_class = message_factory.GetMessageClass(method.input_type)
    named = "name" in request_class.DESCRIPTOR.fields_by_name
    request = request_class(name="toy_model") if named else request_class()
    path = f"{GRPC_SERVICE}{method.name}"
    serialize, parse = request_class.SerializeToString, lambda raw: raw
    try:
        if method.client_streaming:
            call = channel.stream_stream(path, serialize, parse)
            list(call(iter([request]), metadata=metadata, timeout=10))
        else:
            channel.unary_unary(path, serialize, parse)(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_grpc_method_but_the_data_plane_s_is_refused_at_the_door(
    serving: Serving, deployed: ServingClient
) -> None:
    import tritonclient.grpc.service_pb2 as service

    methods = service.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    allowed = {*MODEL_CALLS, *HEALTH_CALLS}
    assert allowed < {m.name for m in methods}, "every allowed call is one of the service's"
    auth = [(k.lower(), v) for k, v in deployed.api_headers.items()]
    address = deployed.url.removeprefix("http://")
    with grpc.insecure_channel(address) as channel:
        for method in methods:
            for metadata in (
                [*auth, (MODEL_HEADER, "toy_model")],
                [*auth, (MODEL_HEADER, "toy_model"), ("x-shipway-version", "1")],
                auth,
            ):
                before = _upstream_requests(serving, "toy_model")
                code = _grpc_call(channel, method, metadata)
                reached = _upstream_requests(serving, "toy_model") - before
                if method.name in allowed and len(metadata) > len(auth):
                    assert code != grpc.StatusCode.PERMISSION_DENIED, method.name
                    assert reached or method.name in HEALTH_CALLS, method.name
                elif method.name not in allowed:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, code)
                    assert reached == 0, f"{method.name} reached a replica"
    # The model is still served: nothing was unloaded.
    ready = f"{deployed.url}/v2/models/toy_model/ready"
    assert httpx.get(ready, headers=deployed.api_headers).status_code == 200


def _exchange(conn: socket.socket, path: str, headers: dict[str, str], body: bytes) -> int:
    """One HTTP/1.1 request on an open connection (kept alive), and its status."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nhost: shipway\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{head}\r\n".encode()
        + body
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, "the front door closed the connection"
        received += chunk
    status_line, rest = received.split(b"\r\n\r\n", 1)
    length = re.search(rb"content-length: (\d+)", status_line, re.I)
    assert length is not None, status_line
    while len(rest) < int(length.group(1)):
        rest += conn.recv(65536)
    return int(status_line.split()[1])


def test_a_removed_caller_s_key_stops_on_the_connections_it_already_holds(
    deployed: ServingClient,
) -> None:
    import tritonclient.grpc as grpc_oip
    from tritonclient.utils import InferenceServerException

    key = callers.new_key()
    assert deployed.set_caller("leaving", callers.digest(key), 1000, 1000)["applied"]
    auth = {"authorization": callers.credentials("leaving", key)}
    body = json.dumps(
        features_request(toy_frame(1, seed=42)[TOY_FEATURES].to_numpy(), TOY_FEATURES)
    ).encode()
    host, port = deployed.url.removeprefix("http://").split(":")
    grpc_client = grpc_oip.InferenceServerClient(f"{host}:{port}")
    other = {k.lower(): v for k, v in deployed.api_headers.items()}
    with (
        socket.create_connection((host, int(port)), timeout=10) as kept,
        socket.create_connection((host, int(port)), timeout=10) as others,
    ):
        assert _exchange(kept, "/v2/models/toy_model/infer", auth, body) == 200
        assert _exchange(others, "/v2/models/toy_model/infer", other, body) == 200
        assert grpc_client.is_model_ready("toy_model", headers={**auth, MODEL_HEADER: "toy_model"})
        assert deployed.remove_caller("leaving")["applied"]
        dataplane = deployed.dataplane()
        assert dataplane["applied"] and dataplane["error"] is None, dataplane
        # The very next request on each open connection is refused: no drain period.
        assert _exchange(kept, "/v2/models/toy_model/infer", auth, body) == 401
        with pytest.raises(InferenceServerException) as refused:
            grpc_client.is_model_ready("toy_model", headers={**auth, MODEL_HEADER: "toy_model"})
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        # Another caller's connection, opened before the change, still answers.
        assert _exchange(others, "/v2/models/toy_model/infer", other, body) == 200
    grpc_client.close()


def _ask(
    deployed: ServingClient, headers: dict[str, str], question: str, acl: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{deployed.url}/v2/models/{APP}/infer",
        json=question_request([question], acl),
        headers=headers,
        timeout=120,
    )


def _retrieved(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return list(answer.json()["outputs"][0]["parameters"]["answers"][0]["retrieved"])


def test_an_application_takes_a_caller_s_access_from_its_record_never_from_the_request(
    serving: Serving, deployed: ServingClient, keys: dict[str, dict[str, str]]
) -> None:
    customer, desk = keys["customer"], keys["support-desk"]
    # A customer's key retrieves no staff document, and cannot ask for them: the request's
    # `acl` may narrow the caller's access, never widen it.
    assert not [d for d in _retrieved(_ask(deployed, customer, STAFF_QUESTION)) if "staff" in d]
    widened = _ask(deployed, customer, STAFF_QUESTION, acl="staff")
    assert widened.status_code == 403, widened.text
    assert "'staff' would widen this caller's access ('public'" in widened.json()["error"]
    # Naming another caller in Envoy's own header changes nothing: Envoy drops the copy.
    spoofed = _ask(deployed, {**customer, "x-shipway-caller": "support-desk"}, STAFF_QUESTION)
    assert not [d for d in _retrieved(spoofed) if "staff" in d]
    # The support desk's key is given the staff document, unless it narrows itself.
    staff_answer = _ask(deployed, desk, STAFF_QUESTION)
    assert _retrieved(staff_answer)[0] == "staff-override"
    narrowed = _ask(deployed, desk, STAFF_QUESTION, acl="public")
    assert not [d for d in _retrieved(narrowed) if "staff" in d]
    assert _ask(deployed, desk, "Hello?", acl="root").status_code == 400
    # A caller's access changed (support desk to public) holds from its next question.
    key = callers.new_key()
    assert deployed.set_caller("temp-staff", callers.digest(key), 100, 100, "staff")["applied"]
    temp = {"Authorization": callers.credentials("temp-staff", key)}
    assert "staff-override" in _retrieved(_ask(deployed, temp, STAFF_QUESTION))
    assert deployed.set_caller("temp-staff", callers.digest(key), 100, 100, "public")["applied"]
    assert not [d for d in _retrieved(_ask(deployed, temp, STAFF_QUESTION)) if "staff" in d]

    # The prediction log records who asked.
    request_id = staff_answer.json()["outputs"][0]["parameters"]["answers"][0]["request_id"]
    deadline = time.monotonic() + 30
    while True:
        log = read_predictions(serving.lake, APP, schema=ANSWER_SCHEMA)
        rows = log[log["request_id"] == request_id]
        if len(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert list(rows["caller"]) == ["support-desk"] and list(rows["acl"]) == ["staff"]


def _rate(
    deployed: ServingClient, headers: dict[str, str], request_id: str, rating: str = "up"
) -> httpx.Response:
    return httpx.post(
        f"{deployed.url}/v2/models/{APP}/feedback",
        json={"request_id": request_id, "rating": rating},
        headers=headers,
        timeout=30,
    )


def test_a_rating_is_taken_only_for_an_answer_given_and_only_from_its_caller(
    deployed: ServingClient, keys: dict[str, dict[str, str]]
) -> None:
    customer, desk = keys["customer"], keys["support-desk"]
    answered = _ask(deployed, customer, "How much cash can I take out at an ATM in one day?")
    request_id = answered.json()["outputs"][0]["parameters"]["answers"][0]["request_id"]
    # Another caller's rating of it, and a rating of an answer never given: one 404 for both,
    # so a caller learns nothing of another's answers.
    for headers, rated in ((desk, request_id), (customer, "never-answered")):
        refused = _rate(deployed, headers, rated)
        assert refused.status_code == 404, refused.text
        assert f"{rated!r} names no answer {APP} gave this caller" in refused.json()["error"]
    assert _rate(deployed, customer, request_id).status_code == 202
    # Its caller may change its mind; the count says what was refused.
    assert _rate(deployed, customer, request_id, "down").status_code == 202
    metrics = httpx.get(
        f"http://127.0.0.1:{deployed.status()[APP]['versions']['1']['replicas'][0]['metrics_port']}"
        "/metrics"
    ).text
    assert re.search(r'shipway_answer_feedback_total\{[^}]*rating="refused"[^}]*\} 2\.0', metrics)


def test_a_caller_over_its_rate_is_told_when_to_try_again(deployed: ServingClient) -> None:
    key = callers.new_key()
    assert deployed.set_caller("burst", callers.digest(key), 1, 1)["applied"]
    auth = {"Authorization": callers.credentials("burst", key)}
    ready = f"{deployed.url}/v2/models/toy_model/ready"
    answers = [httpx.get(ready, headers=auth) for _ in range(3)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(a.headers.get("retry-after") == "1" for a in limited)


def test_envoy_s_files_and_the_access_levels_are_owner_only(serving: Serving) -> None:
    for name in ("lds.yaml", "rds.yaml", "cds.yaml", "bootstrap.yaml"):
        mode = stat.S_IMODE((serving.dataplane.config_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    access = ServingHome(serving.root).access
    assert stat.S_IMODE(access.stat().st_mode) == 0o600
    levels = json.loads(access.read_text())
    assert levels["support-desk"] == "staff" and "digest" not in access.read_text()


@pytest.fixture
def envoy(tmp_path: Path) -> Iterator[DataPlane]:
    front, stats = free_ports(2)
    dataplane = DataPlane(tmp_path / "dataplane", front, stats)
    process = dataplane.process(tmp_path / "logs").start()
    yield dataplane
    process.stop()


def test_a_configuration_envoy_rejects_is_reported_never_applied(
    envoy: DataPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No caller the platform accepts can make Envoy reject its users list any more; should
    anything else, the change is reported as not applied, with Envoy's reason, until one is."""
    plane = ControlPlane(tmp_path / "serving", envoy, tmp_path / "logs", None)
    good = callers.Caller("alice", callers.digest("k"), 1, 1)
    assert asyncio.run(plane.set_caller(good)).applied
    # A record that slipped past validation (built without it): its name ends in a newline.
    broken = object.__new__(callers.Caller)
    for field, value in dataclasses.asdict(good).items():
        object.__setattr__(broken, field, value)
    object.__setattr__(broken, "name", "mallory\n")
    checked = plane._allowed
    monkeypatch.setattr(plane, "_allowed", lambda: {**(checked() or {}), "m": broken})
    refused = asyncio.run(plane.set_caller(callers.Caller("bob", callers.digest("b"), 1, 1)))
    assert not refused.applied
    assert "Envoy rejected configuration" in refused.reason
    assert "invalid htpasswd format" in refused.reason
    status = plane.dataplane_status()
    assert not status["applied"] and "invalid htpasswd format" in status["error"]
    monkeypatch.setattr(plane, "_allowed", checked)
    assert asyncio.run(plane.remove_caller("bob")).applied
    after = plane.dataplane_status()
    assert after["applied"] and after["error"] is None, after


def test_deep_json_is_a_named_400_at_the_admin_api_feedback_and_inference(
    deployed: ServingClient, keys: dict[str, dict[str, str]]
) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    admin = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    answer = httpx.put(f"{deployed.control_url}/admin/callers/x", content=deep, headers=admin)
    assert answer.status_code == 400 and "nested more than 32 levels" in answer.json()["error"]
    # Within the feedback's 4 KiB, and past Python's recursion limit.
    rating = httpx.post(
        f"{deployed.url}/v2/models/{APP}/feedback",
        content=b'{"request_id": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        headers=keys["customer"],
    )
    assert rating.status_code == 400 and "nested more than 32 levels" in rating.text
    nested = b"[" * 1000 + b"1.0" + b"]" * 1000
    for inputs in (
        b'[{"name": "features", "datatype": "FP64", "shape": [1, 3], "data": ' + nested + b"}]",
        b'[{"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.0]}], "parameters": '
        b'{"row_keys": ' + nested + b"}",
    ):
        infer = httpx.post(
            f"{deployed.url}/v2/models/toy_model/infer",
            content=b'{"inputs": ' + inputs + b"}",
            headers={**deployed.api_headers, "content-type": "application/json"},
        )
        assert infer.status_code == 400 and "nested more than 32 levels" in infer.text, infer.text


def _hostile(door_specific: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Bodies no caller should send: deep, wide, long, not JSON, or the door's own worst."""
    return st.one_of(
        st.integers(1, 20_000).map(lambda d: b"[" * d + b"]" * d),
        st.integers(1, 20_000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
        st.integers(0, 3_000_000).map(lambda n: b'{"x": "' + b"y" * n + b'"}'),
        st.integers(0, 200_000).map(lambda n: b"[" + b"0," * n + b"0]"),
        st.binary(max_size=4096),
        door_specific,
    )


MODEL_SERVER_BOUND = 700 << 20
"""A model server (toy model or the assistant, with SmolLM2 loaded) stays under 700 MiB."""
CONTROL_PLANE_BOUND = 400 << 20
"""The control plane stays under 400 MiB."""


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hostile_bodies_get_a_4xx_and_no_door_grows_past_its_memory_bound(
    serving: Serving,
    deployed: ServingClient,
    keys: dict[str, dict[str, str]],
    data: st.DataObject,
) -> None:
    # Each door's worst well-formed body: rows whose shape lies (up to the 1 MiB limit and
    # past it), more questions than a request may ask (up to 5,000 of 100 characters).
    rows = st.integers(1, 60_000).map(
        lambda n: json.dumps(
            {"inputs": [{"name": "features", "shape": [n + 1, 3], "data": [[1.0, 2.0, 3.0]] * n}]}
        ).encode()
    )
    questions = st.integers(17, 5_000).map(
        lambda n: json.dumps(question_request(["?" * 100] * n)).encode()
    )
    admin = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    doors: list[tuple[str, dict[str, str], st.SearchStrategy[bytes]]] = [
        (f"{deployed.url}/v2/models/toy_model/infer", deployed.api_headers, rows),
        (f"{deployed.url}/v2/models/{APP}/infer", keys["customer"], questions),
        (f"{deployed.url}/v2/models/{APP}/feedback", keys["customer"], questions),
        (f"{deployed.control_url}/admin/callers/hostile", admin, rows),
    ]
    url, headers, specific = data.draw(st.sampled_from(doors))
    body = data.draw(_hostile(specific))
    method: Callable[..., httpx.Response] = httpx.put if "/admin/" in url else httpx.post
    answer = method(url, content=body, headers=headers, timeout=120)
    assert 400 <= answer.status_code < 500, (url, answer.status_code, answer.text[:300])
    status = deployed.status()
    for model in ("toy_model", APP):
        for replica in status[model]["versions"]["1"]["replicas"]:
            assert resident_bytes(replica["pid"]) < MODEL_SERVER_BOUND, model
    assert resident_bytes(serving.control.pid) < CONTROL_PLANE_BOUND
    assert httpx.get(f"{deployed.control_url}/health").status_code == 200
