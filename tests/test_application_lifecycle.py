"""The help assistant's whole loop through Dagster on the real platform (MLflow, Delta, dbt,
MLServer behind Envoy, Prometheus, all on loopback; SmolLM2 generating): land the help centre
(its small evaluation sets: the full ones are the demo's and CI's), build the corpus, build and
gate v1 and serve it as champion, its answers logged and rated through the front door; a prompt
change (v2) gated against it, served in shadow and canaried to promotion under live questions
that callers rate; a prompt that leaks its instructions, blocked at the gate naming the case; a
good prompt served slow, which only fails under traffic and is rolled back; and the live
monitoring of ratings and questions. One test: the versions build on each other."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pandas as pd
import pytest
from dagster import Definitions
from mlflow import MlflowClient

from shipway import callers
from shipway.data.help_centre import SMALL, generate
from shipway.data.lake import table_info
from shipway.defs.applications import help_centre_run_config, help_centre_selection
from shipway.defs.code_location import code_location
from shipway.defs.deployment import FAULT_TAG
from shipway.demo import Timeline, rate, roll_out_application
from shipway.models.application import DeclaredApplication
from shipway.models.catalog import load_applications, load_models
from shipway.models.tracking import CHAMPION
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.rollout.state import Phase, RolloutState
from shipway.serving.prediction_log import ANSWER_SCHEMA, read_predictions
from shipway.serving.protocol import question_request
from tests import readme
from tests.conftest import Platform, assets_copy, check_evaluation, materialization

pytestmark = pytest.mark.integration

NAME = "help_assistant"
PROMPT = "help_assistant_prompt"
CHANGES = ASSETS_DIR / NAME / "prompt_changes"
QUESTIONS = [q for q, refuse in zip(
    generate().evaluation["question"], generate().evaluation["must_refuse"], strict=True
) if not refuse][:8]  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> DeclaredApplication:
    """help_assistant's declaration with its rollout twice as quick (10 s intervals, two
    questions an interval), so the test's canary takes a minute, not two, and its live quality
    judged on a few ratings."""
    assets = assets_copy(tmp_path_factory.mktemp("quick"))
    path = assets / NAME / "model.yaml"
    text = path.read_text().replace("interval_seconds: 20", "interval_seconds: 10")
    text = text.replace("min_requests: 3 ", "min_requests: 2 ")
    path.write_text(text.replace("min_ratings: 20", "min_ratings: 5"))
    models = load_models(assets, RAW_EVENTS_CONTRACT)
    (found,) = load_applications(assets, taken=[m.name for m in models])
    assert found.declaration.rollout.interval_seconds == 10
    assert found.declaration.rollout.min_requests == 2
    assert found.declaration.monitoring.min_ratings == 5
    return found


@pytest.fixture(scope="module")
def defs(app: DeclaredApplication) -> Definitions:
    models = load_models(app.folder.parent, RAW_EVENTS_CONTRACT)
    return code_location(models, RAW_EVENTS_CONTRACT, [app])


def _build(
    defs: Definitions, platform: Platform, prompt_dir: str = "", tags: dict[str, str] | None = None
) -> Any:
    config = {"ops": {NAME: {"config": {"prompt_dir": prompt_dir}}}}
    return defs.resolve_job_def(f"{NAME}_lifecycle").execute_in_process(
        instance=platform.instance, run_config=config, raise_on_error=False, tags=tags
    )


def _ask(
    platform: Platform,
    question: str,
    acl: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A question through the front door, as the platform's caller (public) or `headers`'."""
    return httpx.post(
        f"{platform.stack.serving_url}/v2/models/{NAME}/infer",
        json=question_request([question], acl),
        headers=headers or platform.caller,
        timeout=60,
    )


def _roll_out(defs: Definitions, platform: Platform, app: DeclaredApplication) -> RolloutState:
    """The demo's callers (three, who rate the answers) while the rollout sensor ticks; the
    sensor's every step is printed, so a failing run shows each analysis."""
    said = io.StringIO()
    state = roll_out_application(
        defs, platform.instance, platform.stack, app, Timeline(said), QUESTIONS, limit=300.0
    )
    print(said.getvalue())
    return state


def _spool_drained(platform: Platform, wait: float = 30.0) -> None:
    """Until the control plane has ingested every spooled answer and rating (after the model
    servers' half-second flush has written what their callers left queued)."""
    folder = platform.home.served.prediction_spool / NAME
    deadline = time.monotonic() + wait
    time.sleep(1.0)
    while any(folder.glob("*.json*")):
        assert time.monotonic() < deadline, f"spool files left in {folder} after {wait}s"
        time.sleep(0.5)


def _logged(platform: Platform, request_id: str, wait: float = 30.0) -> pd.DataFrame:
    """The answer's rows in the prediction log, once the control plane has ingested them."""
    deadline = time.monotonic() + wait
    while True:
        log = read_predictions(platform.home.lake, NAME, schema=ANSWER_SCHEMA)
        rows = log[log["request_id"] == request_id]
        if len(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_prompt_changes_are_gated_canaried_promoted_blocked_or_rolled_back(
    platform: Platform, defs: Definitions, app: DeclaredApplication
) -> None:
    home = platform.stack.home
    landed = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=platform.instance,
        asset_selection=help_centre_selection(defs),
        run_config=help_centre_run_config(SMALL),
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

    # Served through Envoy's front door over the Open Inference Protocol, with the access of
    # the caller's record: the support desk's key is given the staff document, the platform's
    # (public) is not, and cannot ask for it.
    key = callers.new_key()
    desk = platform.stack.serving().set_caller(
        "support-desk", callers.digest(key), 100, 100, "staff"
    )
    assert desk["applied"]
    staff = {"Authorization": callers.credentials("support-desk", key)}
    answered = _ask(platform, "Which code lifts a fraud block on a card?", headers=staff)
    assert answered.status_code == 200, answered.text
    output = answered.json()["outputs"][0]
    assert output["name"] == "answer" and answered.json()["model_version"] == "1"
    assert output["parameters"]["answers"][0]["retrieved"][0] == "staff-override"
    public = _ask(platform, "Which code lifts a fraud block on a card?")
    details = public.json()["outputs"][0]["parameters"]["answers"][0]
    assert not [d for d in details["retrieved"] if d.startswith("staff-")]
    assert _ask(platform, "Which code lifts a fraud block on a card?", "staff").status_code == 403
    # The README's recipes for the application, as a user copies them.
    for recipe in readme.recipes(NAME):
        stack = platform.stack
        copied = readme.run(recipe, stack.serving_url, stack.features_url, stack.api_key)
        assert copied.status in (200, 202), (recipe, copied.status, copied.body[:300])
    bad = httpx.post(
        f"{platform.stack.serving_url}/v2/models/{NAME}/infer",
        json={"inputs": [{"name": "query", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
        headers=platform.caller,
        timeout=30,
    )
    assert bad.status_code == 400 and "no input named 'question'" in bad.text
    assert _ask(platform, "Hello?", acl="root").status_code == 400

    # Each answer is logged (question redacted by the in-guard, documents, topic, tokens,
    # verdicts) and rated by its request id through the same front door.
    asked = _ask(platform, "My card 4111 1111 1111 1111 was stolen, how do I block it?")
    detail = asked.json()["outputs"][0]["parameters"]["answers"][0]
    logged = _logged(platform, detail["request_id"])
    assert len(logged) == 1, "the answer never reached the prediction log"
    row = logged.iloc[0]
    assert "4111" not in row["question"] and list(row["pii"]) == ["CREDIT_CARD"]
    assert row["topic"] == detail["topic"] == "card_blocks" and row["prompt"] == f"{PROMPT}/1"
    assert row["served"] and row["tokens"] == detail["tokens"] > 0
    stack = platform.stack
    assert rate(stack, NAME, detail["request_id"], "up").status_code == 202
    refused = rate(stack, NAME, detail["request_id"], "5 stars")
    assert refused.status_code == 400 and "feedback.rating: '5 stars'" in refused.text
    # A rating is bound to an answer its caller was given: none, and none of another's.
    assert rate(stack, NAME, "never-answered", "up").status_code == 404
    others = httpx.post(
        f"{stack.serving_url}/v2/models/{NAME}/feedback",
        json={"request_id": detail["request_id"], "rating": "down"},
        headers=staff,
        timeout=30,
    )
    assert others.status_code == 404, others.text
    stranger = httpx.post(
        f"{stack.serving_url}/v2/models/{NAME}/feedback",
        json={"request_id": detail["request_id"], "rating": "down"},
        timeout=30,
    )
    assert stranger.status_code == 401, "feedback must not open a side door to the front door"

    # The same prompt, corpus and settings again: no new version.
    again = _build(defs, platform)
    assert again.success, "serving an unchanged version again is a no-op, not an error"
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
    promoted = _roll_out(defs, platform, app)
    assert promoted.phase == Phase.PROMOTED, promoted.reason
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
    state = _roll_out(defs, platform, app)
    assert state.phase == Phase.ROLLED_BACK and "latency_p99_ratio" in state.reason, state.reason
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "2"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 2

    # Live monitoring: every answer callers rated (the demo's callers rate an answer up, a
    # fallback or a refusal down), joined by request id; the questions against the evaluation's.
    # Once the spool is empty: a rating spooled a moment before its answer's file is
    # otherwise ingested a pass ahead of it and counts as unmatched. The door took no rating
    # of an answer never given, so none is unmatched.
    _spool_drained(platform)
    monitored = platform.materialize(defs, f"{NAME}_monitoring")
    assert monitored.success
    quality = materialization(monitored, f"{NAME}_live_quality")
    assert quality["unmatched_ratings"] == 0
    assert int(str(quality["v2_rated"])) >= 5
    assert 0.0 <= float(str(quality["v2_thumbs_up_rate"])) <= 1.0
    assert int(str(quality["v1_rated"])) >= 2, quality
    drift = materialization(monitored, f"{NAME}_live_drift")
    assert int(str(drift["v2_questions"])) > 0 and drift["v2_out_of_corpus_rate"] == 0.0
    assert "card_blocks" in str(drift["report"])
