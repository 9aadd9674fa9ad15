"""Seldon Core v2 as the serving target: rendered manifests against the CRD schemas, and the
rollout controller driving a cluster by patching the Experiment's weights.

Kubernetes cannot run on this machine: `KubeStandIn` stands in for its API server. It speaks
the resource paths, bearer token, label selectors, merge patches and schema validation of the
two Seldon kinds, enough for what `SeldonServing` asks; it runs no Seldon scheduler, so no
model is loaded and no request is routed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from shipway.cli import main
from shipway.defs.resources import ServingResource
from shipway.errors import BadRequest, ServiceError, ShipwayError
from shipway.models.declaration import RolloutChecks, RolloutPolicy
from shipway.paths import ShipwayHome
from shipway.processes import free_port
from shipway.rollout.analysis import Analysis
from shipway.rollout.controller import Controller, start
from shipway.rollout.state import Phase, RolloutState, RolloutStore
from shipway.serving import seldon
from shipway.serving.bundle import write_bundle
from shipway.serving.seldon import SeldonServing
from shipway.stats.drift import DriftRules, build_reference
from tests.conftest import TOY_FEATURES, JsonHandler, toy_frame

TOKEN = "kube-test-token"
POLICY = RolloutPolicy(
    strategy="shadow_then_canary",
    steps=[10, 50, 100],
    interval_seconds=10,
    min_requests=10,
    grace_seconds=5,
    checks=RolloutChecks(max_score_divergence=0.2),
)
GOOD = Analysis(500, 1.0, 4.0, 4.0, 0.1, 0.1)
FAILING = Analysis(500, 0.5, 4.0, 4.0, 0.1, 0.1)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


class KubeStandIn:
    """In-memory objects per (plural, name) in one namespace; a request log for assertions."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.generation = 0
        standin = self

        class Handler(JsonHandler):
            def _handle(self) -> None:
                url = urlparse(self.path)
                standin.requests.append((self.command, url.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.answer(401, {"message": "Unauthorized"})
                parts = url.path.strip("/").split("/")
                # apis / mlops.seldon.io / v1alpha1 / namespaces / <ns> / <plural> [/ <name>]
                if parts[:3] != ["apis", "mlops.seldon.io", "v1alpha1"] or len(parts) < 6:
                    return self.answer(404, {"message": f"no route {url.path}"})
                plural, name = parts[5], parts[6] if len(parts) > 6 else None
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, answer = standin.handle(self.command, plural, name, body, parse_qs(url.query))
                self.answer(code, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(
        self,
        method: str,
        plural: str,
        name: str | None,
        body: Any,
        query: dict[str, list[str]],
    ) -> tuple[int, dict[str, Any]]:
        key = (plural, name or "")
        if name is None and method == "GET":
            selector = query.get("labelSelector", [""])[0]
            items = [
                o
                for (p, _), o in sorted(self.objects.items())
                if p == plural and (not selector or selector in o["metadata"].get("labels", {}))
            ]
            return 200, {"items": items}
        if name is None and method == "POST":
            key = (plural, body["metadata"]["name"])
            if key in self.objects:
                return 409, {"message": f"{plural} {key[1]} already exists"}
            return self._store(key, body, 201)
        if key not in self.objects:
            return 404, {"message": f"{plural} {name} not found"}
        if method == "GET":
            return 200, self.objects[key]
        if method == "DELETE":
            return 200, self.objects.pop(key)
        if method == "PUT":
            return self._store(key, body, 200)
        if method == "PATCH":
            return self._store(key, _merge(self.objects[key], body), 200)
        return 405, {"message": f"{method} not allowed"}

    def _store(
        self, key: tuple[str, str], obj: dict[str, Any], code: int
    ) -> tuple[int, dict[str, Any]]:
        try:
            seldon.validate(obj)
        except BadRequest as exc:
            return 422, {"message": f"{key[0]} {key[1]} is invalid: {exc}"}
        self.generation += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.generation)
        self.objects[key] = obj
        return code, obj

    def experiment(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.objects[("experiments", name)]["spec"]
        return spec

    def models(self) -> list[str]:
        return sorted(n for p, n in self.objects if p == "models")


@pytest.fixture
def kube() -> Iterator[KubeStandIn]:
    standin = KubeStandIn()
    thread = threading.Thread(target=standin.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        standin.server.shutdown()
        standin.server.server_close()


def _bundle(tmp_path: Path, version: str, replicas: int = 1) -> Path:
    """A bundle folder as the deployment asset writes it (the model file is not read here)."""
    (tmp_path / "model.ubj").write_bytes(b"not read")
    reference = build_reference(toy_frame(200, seed=3), TOY_FEATURES, bins=4)
    rules = DriftRules()
    dest = tmp_path / "bundles" / version
    kind = "binary_classification"
    return write_bundle(
        dest,
        "fraud_model",
        version,
        tmp_path / "model.ubj",
        reference,
        kind,
        rules,
        replicas=replicas,
    ).path


def _cluster(kube: KubeStandIn) -> SeldonServing:
    client = ServingResource(
        control_url="unused",
        url="unused",
        token="unused",
        seldon_api_url=kube.url,
        seldon_token=TOKEN,
        seldon_namespace="ml",
        seldon_storage="gs://models/{model}/{version}",
    ).client()
    assert isinstance(client, SeldonServing), "seldon_api_url selects Seldon Core"
    return client


def test_manifests_for_a_shadow_point_follow_the_crd_schemas() -> None:
    objects = seldon.manifests("fraud_model", {"3": 100, "4": 0}, "4", "s3://m/{model}/{version}")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Model", "fraud-model-v3"),
        ("Model", "fraud-model-v4"),
        ("Experiment", "fraud-model"),
    ]
    assert objects[1]["spec"]["storageUri"] == "s3://m/fraud_model/4"
    assert objects[1]["metadata"]["labels"] == {
        "shipway.io/model": "fraud_model",
        "shipway.io/version": "4",
    }
    assert objects[2]["spec"] == {
        "candidates": [{"name": "fraud-model-v3", "weight": 100}],
        "mirror": {"name": "fraud-model-v4", "percent": 100},
    }
    canary = seldon.experiment_manifest("fraud_model", {"3": 90, "4": 10}, None, "default")
    assert canary["spec"] == {
        "candidates": [
            {"name": "fraud-model-v3", "weight": 90},
            {"name": "fraud-model-v4", "weight": 10},
        ]
    }


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        (lambda m: m["spec"].pop("storageUri"), r"spec: 'storageUri' is a required property"),
        (lambda m: m["metadata"].update(name="fraud_model-v4"), r"metadata\.name: 'fraud_model"),
        (lambda m: m["spec"].update(replicas="two"), r"spec\.replicas: 'two' is not of type"),
        (lambda m: m["spec"].update(storageUrl="s3://x"), r"'storageUrl' was unexpected"),
    ],
)
def test_a_broken_model_manifest_names_the_field_and_the_rule(broken: Any, named: str) -> None:
    manifest = seldon.model_manifest("fraud_model", "4", "s3://m/fraud_model/4", "default")
    broken(manifest)
    with pytest.raises(BadRequest, match=named):
        seldon.validate(manifest)


def test_an_experiment_weight_out_of_range_and_an_unknown_template_key_are_refused() -> None:
    experiment = seldon.experiment_manifest("fraud_model", {"3": 100}, None, "default")
    experiment["spec"]["candidates"][0]["weight"] = 150
    with pytest.raises(BadRequest, match=r"spec\.candidates\.0\.weight: 150 is greater than"):
        seldon.validate(experiment)
    with pytest.raises(BadRequest, match=r"names 'bucket'; it may use \{model\} and \{version\}"):
        seldon.storage_uri("s3://{bucket}/{model}", "fraud_model", "4")
    with pytest.raises(BadRequest, match="no version has traffic"):
        seldon.experiment_manifest("fraud_model", {"3": 0}, None, "default")


def _ticks(controller: Controller, start_at: float, count: int, kube: KubeStandIn) -> list[str]:
    """Tick once per interval; after each, the Experiment as the cluster holds it."""
    seen = []
    for i in range(count):
        state, decision = controller.tick(start_at + (i + 1) * (POLICY.interval_seconds + 1))
        assert state is not None
        spec = kube.experiment("fraud-model")
        weights = ",".join(f"{c['name'][-2:]}={c['weight']}" for c in spec["candidates"])
        mirror = spec.get("mirror", {}).get("name", "")[-2:]
        seen.append(f"{decision.action}:{weights}" + (f"+mirror {mirror}" if mirror else ""))
        if state.finished and (state.phase != Phase.PROMOTED or state.retired):
            break
    return seen


def test_the_rollout_controller_drives_seldon_through_every_step_on_a_stand_in_kubernetes_api(
    kube: KubeStandIn, tmp_path: Path
) -> None:
    cluster = _cluster(kube)
    for version, replicas in (("1", 1), ("2", 2)):
        cluster.deploy("fraud_model", version, _bundle(tmp_path, version, replicas))
    assert kube.objects[("models", "fraud-model-v2")]["spec"]["replicas"] == 2
    cluster.set_traffic("fraud_model", {"1": 100})
    store = RolloutStore(tmp_path)
    now = 1_000.0
    state = start("fraud_model", "2", "1", POLICY, now)
    store.save(state)
    cluster.set_traffic("fraud_model", *state.traffic(POLICY))
    assert kube.experiment("fraud-model")["mirror"] == {"name": "fraud-model-v2", "percent": 100}
    champions: list[str] = []
    controller = Controller(
        "fraud_model",
        POLICY,
        store,
        cluster,
        champions.append,
        lambda s, d: None,
        lambda s, seconds: GOOD,
    )
    seen = _ticks(controller, now, 8, kube)
    assert seen == [
        "advance:v1=90,v2=10",
        "advance:v1=50,v2=50",
        "advance:v2=100",
        "promote:v2=100",
        "retire:v2=100",
    ]
    assert champions[-1] == "2"
    assert kube.models() == ["fraud-model-v2"], "the old champion's Model is deleted at retire"
    assert cluster.status()["fraud_model"] == {
        "versions": {"2": {"name": "fraud-model-v2", "storage_uri": "gs://models/fraud_model/2"}},
        "weights": {"2": 100},
        "shadow": None,
    }
    patches = [path for method, path in kube.requests if method == "PATCH"]
    assert patches and all(p.endswith("/namespaces/ml/experiments/fraud-model") for p in patches)


def _canary_on_cluster(
    kube: KubeStandIn, tmp_path: Path, analysis: Analysis, step: int = 0
) -> tuple[SeldonServing, Controller, RolloutState]:
    """v1 and v2 as Models, v2's canary saved at `step`, a controller judging `analysis`;
    the Experiment is left for the test to set."""
    cluster = _cluster(kube)
    canary = POLICY.model_copy(update={"strategy": "canary"})
    for version in ("1", "2"):
        cluster.deploy("fraud_model", version, _bundle(tmp_path, version))
    store = RolloutStore(tmp_path)
    state = start("fraud_model", "2", "1", canary, 0.0)
    state.step = step
    store.save(state)
    controller = Controller(
        "fraud_model",
        canary,
        store,
        cluster,
        lambda v: None,
        lambda s, d: None,
        lambda s, n: analysis,
    )
    return cluster, controller, state


def test_a_failing_challenger_on_seldon_is_rolled_back_and_its_model_deleted(
    kube: KubeStandIn, tmp_path: Path
) -> None:
    cluster, controller, state = _canary_on_cluster(kube, tmp_path, FAILING)
    cluster.set_traffic("fraud_model", *state.traffic(controller.policy))
    found, decision = controller.tick(controller.policy.interval_seconds + 1.0)
    assert found is not None and found.phase == Phase.ROLLED_BACK
    assert "success_rate 0.5 (limit 0.99) FAILED" in decision.reason
    assert kube.experiment("fraud-model") == {
        "candidates": [{"name": "fraud-model-v1", "weight": 100}]
    }
    assert kube.models() == ["fraud-model-v1"]


def test_a_weight_change_lost_on_the_cluster_is_re_applied_from_the_rollout_state(
    kube: KubeStandIn, tmp_path: Path
) -> None:
    cluster, controller, _ = _canary_on_cluster(kube, tmp_path, GOOD, step=1)
    # Someone (or a crash between saving and patching) left the Experiment at 10%.
    cluster.set_traffic("fraud_model", {"1": 90, "2": 10})
    _, decision = controller.tick(1.0)
    assert decision.action == "wait"
    assert cluster.status()["fraud_model"]["weights"] == {"1": 50, "2": 50}


def test_the_cluster_refusing_an_object_or_not_answering_is_a_clear_error(
    kube: KubeStandIn, tmp_path: Path
) -> None:
    wrong_token = SeldonServing(kube.url, "not-the-token")
    with pytest.raises(ShipwayError, match=r"Kubernetes GET .*/models -> 401: Unauthorized"):
        wrong_token.status()
    gone = SeldonServing(f"http://127.0.0.1:{free_port()}", TOKEN)
    with pytest.raises(ServiceError, match=r"Kubernetes API at .* unreachable"):
        gone.status()
    cluster = _cluster(kube)
    bundle = _bundle(tmp_path, "1")
    cluster.deploy("fraud_model", "1", bundle)
    cluster.deploy("fraud_model", "1", bundle)  # idempotent: replaced, not duplicated
    assert kube.models() == ["fraud-model-v1"]


def test_render_seldon_writes_the_rollout_s_current_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ShipwayHome(tmp_path / "home")
    monkeypatch.setenv("SHIPWAY_HOME", str(home.root))
    out = tmp_path / "seldon"
    args = ["render", "seldon", "fraud_model", "--out", str(out), "--namespace", "ml"]
    assert main(args) == 2
    assert "fraud_model serves nothing" in capsys.readouterr().err
    state = start("fraud_model", "7", "6", POLICY, 0.0)
    state.phase, state.step = "canary", 1
    RolloutStore(home.served.rollouts).save(state)
    assert main([*args, "--storage", "s3://bucket/{model}/{version}"]) == 0
    files = sorted(p.name for p in out.glob("*.yaml"))
    assert files == [
        "experiment-fraud-model.yaml",
        "model-fraud-model-v6.yaml",
        "model-fraud-model-v7.yaml",
    ]
    experiment = yaml.safe_load((out / "experiment-fraud-model.yaml").read_text())
    assert experiment["metadata"]["namespace"] == "ml"
    assert experiment["spec"]["candidates"] == [
        {"name": "fraud-model-v6", "weight": 50},
        {"name": "fraud-model-v7", "weight": 50},
    ]
    model = yaml.safe_load((out / "model-fraud-model-v7.yaml").read_text())
    assert model["spec"]["storageUri"] == "s3://bucket/fraud_model/7"
    assert f"kubectl apply -n ml -f {out}" in capsys.readouterr().out


def test_the_seldon_token_is_configured_by_its_name_and_read_at_run_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dagster shows a resource's configuration in its UI: an EnvVar shows as its name."""
    from dagster import EnvVar, build_resources

    from shipway.defs.resources import SELDON_TOKEN_ENV, resources

    monkeypatch.setenv(SELDON_TOKEN_ENV, TOKEN)
    monkeypatch.setenv("SHIPWAY_SELDON_API_URL", "http://127.0.0.1:1")
    serving = resources()["serving"]
    assert isinstance(serving, ServingResource)
    assert isinstance(serving.seldon_token, EnvVar) and serving.seldon_token == SELDON_TOKEN_ENV
    for key in ("SHIPWAY_SERVING_URL", "SHIPWAY_CONTROL_URL", "SHIPWAY_SERVING_TOKEN"):
        monkeypatch.setenv(key, "unused")
    with build_resources({"serving": serving}) as built:
        assert built.serving.seldon_token == TOKEN

    monkeypatch.delenv(SELDON_TOKEN_ENV)
    assert resources()["serving"].seldon_token == ""  # type: ignore[attr-defined]
