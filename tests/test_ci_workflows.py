"""The CI recipes for `shipway ci`: the GitHub workflow against GitHub's workflow schema (and a
timeout on every job), the GitLab job against GitLab's schema (both schemas as vendored by
check-jsonschema, so offline), and every `shipway` command in them, the Jenkinsfile's too,
parsed by the real CLI. GitHub Actions, GitLab and Jenkins themselves cannot run here."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shipway.cli import build_parser
from shipway.paths import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ml-ci.yml"
GITLAB = REPO_ROOT / "deploy" / "ci" / "gitlab-ci.yml"
JENKINSFILE = REPO_ROOT / "deploy" / "ci" / "Jenkinsfile"
CHECK = str(Path(sys.executable).with_name("check-jsonschema"))


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK, "--builtin-schema", schema, str(path)], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.github-workflows", WORKFLOW),
        ("custom.github-workflows-require-timeout", WORKFLOW),
        ("vendor.gitlab-ci", GITLAB),
    ],
)
def test_the_ci_recipes_match_their_platforms_schemas(schema: str, path: Path) -> None:
    checked = schema_check(schema, path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_names_what_is_wrong_in_a_broken_workflow(tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    del workflow["jobs"]["shipway-ci"]["runs-on"]
    broken = tmp_path / "ml-ci.yml"
    broken.write_text(yaml.safe_dump(workflow))
    checked = schema_check("vendor.github-workflows", broken)
    assert checked.returncode == 1
    assert "runs-on" in checked.stdout

    del workflow["jobs"]["shipway-ci"]["timeout-minutes"]
    broken.write_text(yaml.safe_dump(workflow))
    assert schema_check("custom.github-workflows-require-timeout", broken).returncode == 1


def shipway_commands(text: str) -> list[list[str]]:
    """Each `.venv/bin/shipway ...` command line, its shell variables given example values."""
    found = []
    for line in text.splitlines():
        if ".venv/bin/shipway " not in line:
            continue
        command = line[line.index(".venv/bin/shipway ") :].rstrip("'")
        expanded = os.path.expandvars(command.replace("${CHANGE_TARGET:-main}", "main"))
        found.append(shlex.split(expanded)[1:])
    return found


def test_every_recipe_runs_shipway_ci_on_the_change_with_options_the_cli_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASE_REF", "main")
    monkeypatch.setenv("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = "\n".join(step.get("run", "") for step in workflow["jobs"]["shipway-ci"]["steps"])
    gitlab = "\n".join(yaml.safe_load(GITLAB.read_text())["shipway-ci"]["script"])
    for text in (runs, gitlab, JENKINSFILE.read_text()):
        (argv,) = shipway_commands(text)
        args = build_parser().parse_args(argv)
        assert args.command == "ci"
        assert args.changed_since == "origin/main"
        assert args.report_dir == Path("ci-report")
        assert "bash deploy/setup.sh" in text


def test_the_workflow_publishes_reports_and_the_package_and_reads_the_key_from_secrets() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["shipway-ci"]["steps"]
    (ci_step,) = [s for s in steps if s.get("name") == "shipway ci"]
    assert ci_step["env"]["SHIPWAY_SIGNING_KEY"] == "${{ secrets.SHIPWAY_SIGNING_KEY }}"
    uploads = {
        s["with"]["name"]: s["with"]["path"]
        for s in steps
        if "upload-artifact" in s.get("uses", "")
    }
    assert uploads["model-packages"] == "ci-report/packages/"
    assert "ci-report/junit.xml" in uploads["shipway-ci-report"]
    pinned = [s["uses"] for s in steps if "uses" in s]
    assert all(len(u.split("@")[1]) == 40 for u in pinned), "actions pinned by commit"
