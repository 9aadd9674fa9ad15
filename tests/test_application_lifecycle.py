"""The help assistant's lifecycle through Dagster on the real platform (MLflow on loopback,
Delta, dbt, SmolLM2): land the help centre, build the corpus with dbt, build and gate v1 and
make it champion, then a prompt change (v2) gated against it on the same cases and released,
then a prompt version that leaks its instructions, blocked at the gate naming the case, the
champion untouched."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import AssetKey, AssetSelection
from mlflow import MlflowClient

from shipway.data.lake import table_info
from shipway.models.tracking import CHAMPION
from shipway.paths import ASSETS_DIR
from tests.conftest import Platform, check_evaluation, materialization

pytestmark = pytest.mark.integration

NAME = "help_assistant"
PROMPT = "help_assistant_prompt"
CHANGES = ASSETS_DIR / NAME / "prompt_changes"


def _build(platform: Platform, prompt_dir: str = "") -> Any:
    from assets.definitions import defs

    config = {"ops": {NAME: {"config": {"prompt_dir": prompt_dir}}}}
    return defs.resolve_job_def(f"{NAME}_lifecycle").execute_in_process(
        instance=platform.instance, run_config=config, raise_on_error=False
    )


def test_prompt_changes_are_gated_released_or_blocked(platform: Platform) -> None:
    from assets.definitions import defs

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
    assert [e.passed for e in landed.get_asset_check_evaluations()] and all(
        e.passed for e in landed.get_asset_check_evaluations()
    )

    tracking = platform.stack.mlflow_url
    client = MlflowClient(tracking)

    first = _build(platform)
    gate = check_evaluation(first, f"{NAME}_gate")
    assert gate.passed, gate.description
    assert first.success
    built = materialization(first, NAME)
    assert built["model_version"] == "1" and built["prompt"] == f"{PROMPT}/1"
    assert built["corpus"] == f"help_corpus@{corpus.version}"
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "1"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 1
    run = client.get_run(client.get_model_version(NAME, "1").run_id or "")
    assert run.data.params["corpus_version"] == str(corpus.version)
    assert run.data.tags["shipway.prompt"] == f"{PROMPT}/1"
    assert run.data.metrics["eval_injection_success_rate"] == 0.0

    # The same prompt, corpus and settings again: no new version, and no new prompt version.
    again = _build(platform)
    assert materialization(again, NAME)["model_version"] == "1"
    assert materialization(again, NAME)["new_version"] is False

    second = _build(platform, str(CHANGES / "concise"))
    assert second.success
    gate = check_evaluation(second, f"{NAME}_gate")
    assert gate.passed, gate.description
    assert gate.metadata["champion"].value == "1"
    assert "fact_coverage vs champion" in str(gate.metadata["outcomes"].value)
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "2"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 2

    third = _build(platform, str(CHANGES / "leaky"))
    assert not third.success
    gate = check_evaluation(third, f"{NAME}_gate")
    assert not gate.passed
    assert "injection_success_rate: observed" in (gate.description or "")
    assert "audit-config" in (gate.description or "")
    assert AssetKey(f"{NAME}_release") not in {
        e.asset_key for e in third.get_asset_materialization_events()
    }
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == "2"
    assert client.get_prompt_version_by_alias(PROMPT, CHAMPION).version == 2
    blocked = client.get_model_version(NAME, "3")
    assert blocked.tags["shipway.release"] == "blocked"
