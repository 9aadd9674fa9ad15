"""The help assistant's whole loop through Dagster on the real platform (MLflow, Delta, dbt,
MLServer behind Envoy, Prometheus, all on loopback; SmolLM2 generating): land the help centre,
build the corpus, build and gate v1 and serve it as champion; a prompt change (v2) gated
against it, served in shadow and canaried to promotion under live questions; a prompt that leaks
its instructions, blocked at the gate naming the case; and a good prompt served slow, which only
fails under traffic and is rolled back. One test: the versions build on each other."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from dagster import (
    AssetSelection,
    Definitions,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from mlflow import MlflowClient

from shipway.data.help_centre import generate
from shipway.data.lake import table_info
from shipway.defs.code_location import code_location
from shipway.defs.deployment import FAULT_TAG
from shipway.defs.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)
from shipway.models.catalog import load_applications, load_models
from shipway.models.tracking import CHAMPION
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.rollout.state import FINISHED, Phase, RolloutStore
from shipway.serving.protocol import question_request
from tests.conftest import Platform, assets_copy, check_evaluation, materialization

pytestmark = pytest.mark.integration

NAME = "help_assistant"
PROMPT = "help_assistant_prompt"
CHANGES = ASSETS_DIR / NAME / "prompt_changes"
QUESTIONS = [q for q, refuse in zip(
    generate().evaluation["question"], generate().evaluation["must_refuse"], strict=True
) if not refuse][:8]  # fmt: skip


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> Definitions:
    """The code location with help_assistant's rollout twice as quick (10 s intervals, two
    questions an interval), so the test's canary takes a minute, not two."""
    assets = assets_copy(tmp_path_factory.mktemp("quick"))
    path = assets / NAME / "model.yaml"
    text = path.read_text().replace("interval_seconds: 20", "interval_seconds: 10")
    path.write_text(text.replace("min_requests: 3 ", "min_requests: 2 "))
    models = load_models(assets, RAW_EVENTS_CONTRACT)
    apps = load_applications(assets, taken=[m.name for m in models])
    assert apps[0].declaration.rollout.interval_seconds == 10
    assert apps[0].declaration.rollout.min_requests == 2
    return code_location(models, RAW_EVENTS_CONTRACT, apps)


def _build(
    defs: Definitions, platform: Platform, prompt_dir: str = "", tags: dict[str, str] | None = None
) -> Any:
    config = {"ops": {NAME: {"config": {"prompt_dir": prompt_dir}}}}
    return defs.resolve_job_def(f"{NAME}_lifecycle").execute_in_process(
        instance=platform.instance, run_config=config, raise_on_error=False, tags=tags
    )


def _ask(platform: Platform, question: str, acl: str = "public") -> httpx.Response:
    return httpx.post(
        f"{platform.stack.serving_url}/v2/models/{NAME}/infer",
        json=question_request([question], acl),
        headers=platform.caller,
        timeout=60,
    )


def _roll_out(defs: Definitions, platform: Platform, limit: float = 300.0) -> str:
    """Live questions from a thread while the rollout sensor ticks, until the rollout ends."""
    stack = platform.stack
    resources = {
        "prometheus": PrometheusResource(url=stack.prometheus_url),
        "lake": ShipwayHomeResource(path=str(stack.home.root)),
        "mlflow": MlflowResource(tracking_uri=stack.mlflow_url),
        "serving": ServingResource(
            control_url=stack.control_url, url=stack.serving_url, token=stack.token
        ),
    }
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            _ask(platform, QUESTIONS[i % len(QUESTIONS)])
            i += 1

    # Three callers: about as many questions as the champion's replica answers.
    senders = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
    for sender in senders:
        sender.start()
    store = RolloutStore(stack.home.served.rollouts)
    sensor = defs.resolve_sensor_def(f"{NAME}_rollout_sensor")
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            with build_sensor_context(instance=platform.instance, resources=resources) as ctx:
                outcome = sensor(ctx)
            assert isinstance(outcome, SensorResult | SkipReason)
            state = store.load(NAME)
            assert state is not None
            if state.phase in FINISHED:
                return str(state.phase)
            time.sleep(2)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=60)
    raise AssertionError(f"the rollout did not finish in {limit}s: {store.load(NAME)}")


def test_prompt_changes_are_gated_canaried_promoted_blocked_or_rolled_back(
    platform: Platform, defs: Definitions
) -> None:
    home = platform.stack.home
    landed = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=platform.instance,
        asset_selection=list(
            AssetSelection.groups("help_centre").resolve(defs.resolve_asset_graph())
        ),
    )
    assert landed.success
    corpus = table_info(home.table("help_corpus"))
    assert corpus.row_count == 11
    checks = landed.get_asset_check_evaluations()
    assert checks and all(e.passed for e in checks)
    client = MlflowClient(platform.stack.mlflow_url)

    # v1: built, gated, served as champion at once.
    first = _build(defs, platform)
    gate = check_evaluation(first, f"{NAME}_gate")
    assert gate.passed, gate.description
    assert first.success
    built = materialization(first, NAME)
    assert built["model_version"] == "1" and built["prompt"] == f"{PROMPT}/1"
    assert built["corpus"] == f"help_corpus@{corpus.version}"
    assert materialization(first, f"{NAME}_deployment")["rollout"] == Phase.PROMOTED
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "1"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 1
    run = client.get_run(client.get_model_version(NAME, "1").run_id or "")
    assert run.data.params["corpus_version"] == str(corpus.version)
    assert run.data.tags["shipway.prompt"] == f"{PROMPT}/1"
    assert run.data.metrics["eval_injection_success_rate"] == 0.0

    # Served through Envoy's front door over the Open Inference Protocol, with the caller's ACL.
    answered = _ask(platform, "Which code lifts a fraud block on a card?", acl="staff")
    assert answered.status_code == 200, answered.text
    output = answered.json()["outputs"][0]
    assert output["name"] == "answer" and answered.json()["model_version"] == "1"
    assert output["parameters"]["answers"][0]["retrieved"][0] == "staff-override"
    public = _ask(platform, "Which code lifts a fraud block on a card?")
    details = public.json()["outputs"][0]["parameters"]["answers"][0]
    assert not [d for d in details["retrieved"] if d.startswith("staff-")]
    bad = httpx.post(
        f"{platform.stack.serving_url}/v2/models/{NAME}/infer",
        json={"inputs": [{"name": "query", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
        headers=platform.caller,
        timeout=30,
    )
    assert bad.status_code == 400 and "no input named 'question'" in bad.text
    assert _ask(platform, "Hello?", acl="root").status_code == 400

    # The same prompt, corpus and settings again: no new version.
    again = _build(defs, platform)
    assert materialization(again, NAME)["model_version"] == "1"
    assert materialization(again, NAME)["new_version"] is False

    # v2: a prompt change, gated against v1 on the same cases, then shadow and canary steps.
    second = _build(defs, platform, str(CHANGES / "concise"))
    gate = check_evaluation(second, f"{NAME}_gate")
    assert gate.passed, gate.description
    assert gate.metadata["champion"].value == "1"
    assert "fact_coverage vs champion" in str(gate.metadata["outcomes"].value)
    assert materialization(second, f"{NAME}_deployment")["rollout"] == Phase.SHADOW
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "1"
    assert _roll_out(defs, platform) == Phase.PROMOTED
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "2"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 2
    assert _ask(platform, QUESTIONS[0]).json()["model_version"] == "2"

    # v3: instructions moved into the user turn leak them: blocked at the gate, never served.
    third = _build(defs, platform, str(CHANGES / "leaky"))
    assert not third.success
    gate = check_evaluation(third, f"{NAME}_gate")
    assert not gate.passed
    assert "injection_success_rate: observed" in (gate.description or "")
    assert "(cases: audit-config" in (gate.description or "")
    assert f"{NAME}_deployment" not in {
        e.asset_key.to_user_string() for e in third.get_asset_materialization_events()
    }
    assert client.get_model_version(NAME, "3").tags["shipway.release"] == "blocked"

    # v4: a good prompt (it passes the gate) served 4 s slower: only traffic shows it.
    slow = {FAULT_TAG: '{"latency_ms": 4000}'}
    fourth = _build(defs, platform, str(CHANGES / "exact_figures"), tags=slow)
    assert check_evaluation(fourth, f"{NAME}_gate").passed
    assert _roll_out(defs, platform) == Phase.ROLLED_BACK
    state = RolloutStore(home.served.rollouts).load(NAME)
    assert state is not None and "latency_p99_ratio" in state.reason
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "2"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 2
