"""`shipway ci`: which models a change touches, and the steps run for them on the committed
sample. The smoke build is real (dbt, Feast apply, Delta, training) in a scratch home, built once
for the module; the static checks and the feature-logic tests are skipped here because the test
suite and its lint step are those same commands."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shipway import ci
from shipway.cli import main
from shipway.models import training
from shipway.models.declaration import ModelDeclaration
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT, ShipwayHome
from shipway.serving.package import (
    SIGNING_KEY_ENV,
    SIGNING_KEY_FILE_ENV,
    PackageError,
    generate_key,
    verify_package,
)

FAST = frozenset({"static checks", "feature logic unit tests"})


@dataclass(frozen=True)
class Smoke:
    workspace: ci.Workspace
    report: ci.Report
    said: list[str]
    public: Ed25519PublicKey
    configured: Path


def step_names(changed: list[str], tmp_path: Path) -> list[str]:
    home = ShipwayHome(tmp_path / "home")
    workspace = ci.Workspace(home, tmp_path / "report", home)
    return [name for name, _ in workspace.steps(ci.plan(changed))]


def test_a_change_to_a_feature_definition_runs_only_the_steps_of_its_model(
    tmp_path: Path,
) -> None:
    fraud_only = ci.plan(["feature_repo/fraud_model.py"])
    assert fraud_only.models == ["fraud_model"]
    assert fraud_only.reasons["fraud_model"] == [
        "feature_repo/fraud_model.py (defines fraud_model_v1)"
    ]

    names = step_names(["feature_repo/fraud_model.py"], tmp_path)
    assert "fraud_model: smoke training and gates" in names
    assert "fraud_model: package" in names
    assert not [n for n in names if n.startswith("customer_spend")]
    assert names.index("smoke build") < names.index("fraud_model: smoke training and gates")
    assert names.index("fraud_model: reproducibility") < names.index("lock files")

    shared = ci.plan(["feature_repo/lake_views.py"])
    assert shared.models == ["customer_spend", "fraud_model"]


def test_a_dbt_model_plans_the_models_its_tables_feed_through_the_manifest() -> None:
    merchant = ci.plan(["dbt_project/models/features/merchant_features.sql"])
    assert merchant.models == ["fraud_model"]
    assert merchant.reasons["fraud_model"] == [
        "dbt_project/models/features/merchant_features.sql (feeds merchant_features)"
    ]
    labels = ci.plan(["dbt_project/models/labels/customer_spend_labels.sql"])
    assert labels.models == ["customer_spend"]
    staging = ci.plan(["dbt_project/models/staging/stg_transactions.sql"])
    assert staging.models == ["customer_spend", "fraud_model"]
    assert "customer_spend_labels" in staging.reasons["customer_spend"][0]


def test_a_declaration_plans_its_model_shared_code_every_model_and_docs_none() -> None:
    assert ci.plan(["assets/fraud/model.yaml"]).models == ["fraud_model"]
    assert ci.plan(["assets/customer_spend/training_set.yaml"]).models == ["customer_spend"]
    assert ci.plan(["platform/shipway/models/training.py"]).models == [
        "customer_spend",
        "fraud_model",
    ]
    docs = ci.plan(["README.md"])
    assert docs.models == [] and docs.empty
    tests_only = ci.plan(["tests/test_ci.py"])
    assert tests_only.models == [] and not tests_only.empty


def test_an_unchanged_checkout_has_nothing_to_check_and_a_change_is_seen(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*argv: str) -> None:
        subprocess.run(["git", *argv], cwd=repo, check=True, env=env)

    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "one")
    assert ci.changed_files("HEAD", repo) == []

    said: list[str] = []
    home = ShipwayHome(tmp_path / "home")
    report = ci.run_steps(ci.plan([]), ci.Workspace(home, tmp_path / "report", home), said.append)
    assert report.passed and report.steps == []
    assert said == ["nothing to check: no declared model or Python file is touched by this change"]
    assert "No declared model is touched" in (tmp_path / "report" / "summary.md").read_text()
    assert not home.root.exists()

    (repo / "feature_repo").mkdir()
    (repo / "feature_repo" / "fraud_model.py").write_text("# changed\n")
    assert ci.changed_files("HEAD", repo) == ["feature_repo/fraud_model.py"]

    # A pull request: its own commit, while its base branch moved on with another change.
    git("checkout", "-q", "-b", "change")
    git("add", ".")
    git("commit", "-q", "-m", "feature change")
    git("checkout", "-q", "main")
    (repo / "README.md").write_text("news on main\n")
    git("add", ".")
    git("commit", "-q", "-m", "base moved")
    git("checkout", "-q", "change")
    assert ci.changed_files("main", repo) == ["feature_repo/fraud_model.py"]
    with pytest.raises(ci.CIFailure, match="cannot diff against nope"):
        ci.changed_files("nope", repo)


def test_the_committed_sample_is_the_generators_output(tmp_path: Path) -> None:
    regenerated = pd.read_parquet(ci.write_sample(tmp_path / "raw_events.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(ci.SAMPLE), regenerated)


def test_a_broken_sample_stops_ci_at_its_contract_naming_column_and_rule(
    tmp_path: Path,
) -> None:
    frame = pd.read_parquet(ci.SAMPLE)
    frame.loc[frame.index[:5], "amount"] = -3.0
    broken = tmp_path / "raw_events.parquet"
    frame.to_parquet(broken)
    home = ShipwayHome(tmp_path / "home")
    workspace = ci.Workspace(home, tmp_path / "report", home, sample=broken)

    report = ci.run_steps(ci.plan(["feature_repo/fraud_model.py"]), workspace, print, FAST)

    assert not report.passed
    failed = report.steps[-1]
    assert failed.name == "raw-events contract on the sample"
    assert "amount" in failed.detail and "min" in failed.detail and "-3" in failed.detail
    assert [s.name for s in report.steps] == ["raw-events contract on the sample"]
    assert not home.root.exists(), "nothing was built after the failing step"
    suite = ElementTree.parse(tmp_path / "report" / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    (failure,) = suite.iter("failure")
    assert failure.get("message") == failed.detail
    assert (
        "| raw-events contract on the sample | FAIL |"
        in (tmp_path / "report" / "summary.md").read_text()
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smoke]:
    """One `shipway ci` run for a change to fraud_model's feature definitions, with a signing
    key file and a configured home of its own (which the run must not write to)."""
    root = tmp_path_factory.mktemp("ci")
    public = generate_key(root / "keys" / "ci.key")
    names = (SIGNING_KEY_ENV, SIGNING_KEY_FILE_ENV, "SHIPWAY_HOME")
    saved = {k: os.environ.pop(k, None) for k in names}
    os.environ[SIGNING_KEY_FILE_ENV] = str(root / "keys" / "ci.key")
    os.environ["SHIPWAY_HOME"] = str(root / "configured")
    try:
        workspace = ci.Workspace(
            ShipwayHome(root / "home"), root / "report", ShipwayHome.from_env()
        )
        said: list[str] = []
        plan = ci.plan(["feature_repo/fraud_model.py"])
        report = ci.run_steps(plan, workspace, said.append, FAST)
        yield Smoke(workspace, report, said, public, root / "configured")
    finally:
        for key in names:
            os.environ.pop(key, None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


@pytest.mark.integration
def test_ci_builds_only_the_touched_models_training_set_and_passes_its_gates(
    smoke: Smoke,
) -> None:
    workspace, report, said = smoke.workspace, smoke.report, smoke.said
    assert report.passed, [s.detail for s in report.steps if not s.passed]
    assert [s.name for s in report.steps] == [
        "raw-events contract on the sample",
        "raw-events contract on the latest accepted snapshot",
        "feast plan against the configured registry",
        "smoke build",
        "fraud_model: smoke training and gates",
        "fraud_model: reproducibility",
        "lock files",
        "fraud_model: package",
    ]
    assert "static checks: skipped (--skip)" in " ".join(said)
    assert any(line.startswith("▶   smoke build") for line in said), "progress as it goes"
    lake = workspace.home.lake
    assert (lake / "fraud_model_training_set" / "_delta_log").is_dir()
    assert not (lake / "customer_spend_training_set").exists()
    gates = report.steps[4].detail
    assert "roc_auc" in gates and "pr_auc" in gates and "gates pass" in gates
    assert "not reachable, not checked" in report.steps[1].detail
    assert "not reachable, not planned" in report.steps[2].detail
    assert not smoke.configured.exists(), "the scratch home is the only one written to"
    suite = ElementTree.parse(workspace.report_dir / "junit.xml").getroot()
    assert suite.get("tests") == "8" and suite.get("failures") == "0"
    summary = (workspace.report_dir / "summary.md").read_text()
    assert summary.startswith("## shipway ci: passed")
    assert "**fraud_model**: feature_repo/fraud_model.py (defines fraud_model_v1)" in summary


@pytest.mark.integration
def test_ci_output_is_a_signed_package_that_verifies_and_refuses_tampering(
    smoke: Smoke,
) -> None:
    workspace = smoke.workspace
    assert smoke.report.steps[-1].passed
    (package,) = (workspace.report_dir / "packages").iterdir()
    assert package.name.startswith("fraud_model-ci-")
    checked = verify_package(package, smoke.public)
    lineage = json.loads((package / "lineage.json").read_text())
    assert lineage["data_versions"]["training_set"] == "fraud_model_training_set v0"
    assert lineage["feature_service"] == "fraud_model_v1"
    assert {g["metric"] for g in lineage["gates"]} == {"roc_auc", "pr_auc"}
    assert "sbom.cdx.json" in checked.manifest["files"]

    key = (workspace.home.root.parent / "keys" / "ci.key").read_text().strip().encode()
    reported = [p for p in workspace.report_dir.rglob("*") if p.is_file()]
    assert [p.name for p in reported if key in p.read_bytes()] == []
    assert not [line for line in smoke.said if key.decode() in line]

    tampered = workspace.report_dir / "tampered"
    shutil.copytree(package, tampered)
    (tampered / "bundle" / "reference.json").write_text("{}")
    with pytest.raises(PackageError, match=r"bundle/reference\.json"):
        verify_package(tampered, smoke.public)


@pytest.mark.integration
def test_a_failing_smoke_gate_names_the_metric_the_threshold_and_the_policy_file(
    smoke: Smoke, tmp_path: Path
) -> None:
    workspace = smoke.workspace
    models_dir = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR, models_dir)
    declaration_file = models_dir / "fraud" / "model.yaml"
    text = declaration_file.read_text()
    declaration_file.write_text(text.replace("    min: 0.80\n", "    min: 0.99\n", 1))

    with pytest.raises(ci.CIFailure) as failed:
        ci.smoke_train(workspace.home, "fraud_model", models_dir)

    reason = str(failed.value)
    assert reason.startswith("fraud_model smoke gates on fraud_model_training_set v0")
    assert "roc_auc" in reason and "0.99" in reason
    assert f"({declaration_file})" in reason
    assert "pr_auc" not in reason, "only the failing gate is named"


@pytest.mark.integration
def test_a_non_reproducible_training_fails_with_both_artifact_hashes(
    smoke: Smoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for training code that draws an unseeded random number: each call trains
    with another seed (the declaration subsamples rows, so the seed changes the trees)."""
    workspace = smoke.workspace
    real, seeds = training.train, itertools.count(100)

    def unseeded(frame: pd.DataFrame, declaration: ModelDeclaration, features: list[str]) -> Any:
        policy = declaration.training.model_copy(update={"seed": next(seeds)})
        return real(frame, declaration.model_copy(update={"training": policy}), features)

    monkeypatch.setattr(training, "train", unseeded)
    with pytest.raises(
        ci.CIFailure,
        match=r"fraud_model is not reproducible: two trainings on "
        r"fraud_model_training_set v0 gave sha256 [0-9a-f]{12} and [0-9a-f]{12}",
    ):
        ci.reproducible(workspace.home, "fraud_model")

    monkeypatch.setattr(training, "train", real)
    assert "one artifact" in ci.reproducible(workspace.home, "fraud_model")


@pytest.mark.integration
def test_a_tightened_contract_fails_on_the_latest_accepted_snapshot(
    smoke: Smoke, tmp_path: Path
) -> None:
    workspace = smoke.workspace
    assert ci.snapshot_contract(workspace.home).startswith("latest accepted snapshot raw_events@v")

    contract = yaml.safe_load(RAW_EVENTS_CONTRACT.read_text())
    contract["columns"]["amount"]["max"] = 100
    tightened = tmp_path / "raw_events.yaml"
    tightened.write_text(yaml.safe_dump(contract))
    with pytest.raises(ci.CIFailure, match=r"latest accepted snapshot raw_events@v\d+: .*amount"):
        ci.snapshot_contract(workspace.home, tightened)


@pytest.mark.integration
def test_feast_plan_against_a_registry_holding_this_repository_changes_nothing(
    smoke: Smoke, tmp_path: Path
) -> None:
    detail = ci.feast_plan(smoke.workspace.home, tmp_path / "feast-plan.txt")
    assert detail.startswith(f"against {smoke.workspace.home.feast / 'registry.db'}: No changes")
    assert "No changes" in (tmp_path / "feast-plan.txt").read_text()


def test_the_cli_names_an_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ci", "--model", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "fraud_model" in err


def test_a_prompt_or_corpus_change_plans_its_applications_gates(tmp_path: Path) -> None:
    prompt = ci.plan(["assets/help_assistant/prompts/system.txt"])
    assert prompt.models == [] and prompt.applications == ["help_assistant"]
    assert prompt.reasons["help_assistant"] == [
        "assets/help_assistant/prompts/system.txt (its declaration or prompt)"
    ]
    corpus = ci.plan(["dbt_project/models/help/help_corpus.sql"])
    assert corpus.applications == ["help_assistant"] and corpus.models == []
    assert ci.plan(["dbt_project/models/features/customer_features.sql"]).applications == []
    names = step_names(["assets/help_assistant/prompts/user.txt"], tmp_path)
    assert "help_assistant: evaluation and red-team gates" in names
    assert "smoke build" not in names


@pytest.mark.integration
def test_ci_blocks_a_prompt_change_that_leaks_naming_the_case(tmp_path: Path) -> None:
    models = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR, models, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    leaky = ASSETS_DIR / "help_assistant" / "prompt_changes" / "leaky"
    for name in ("system.txt", "user.txt"):
        shutil.copyfile(leaky / name, models / "help_assistant" / "prompts" / name)
    home = ShipwayHome(tmp_path / "home")
    with pytest.raises(ci.CIFailure) as blocked:
        ci.application_gates(home, "help_assistant", tmp_path / "report", None, models)
    assert "help_assistant: v" in str(blocked.value)
    assert "injection_success_rate: observed" in str(blocked.value)
    assert "(cases: audit-config" in str(blocked.value)
    report = json.loads((tmp_path / "report" / "help_assistant-report.json").read_text())
    assert report["passed"] is False and report["champion"] is None
