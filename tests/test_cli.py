"""Bad setups get one line that says what to do, and nothing half-started or lost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import shipway.demo
from shipway.cli import main
from shipway.paths import REPO_ROOT
from tests.conftest import assets_copy

SHIPWAY = str(Path(sys.executable).with_name("shipway"))


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHIPWAY, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        cwd=REPO_ROOT,
    )


def test_help_lists_the_commands() -> None:
    result = _run(["--help"])
    assert result.returncode == 0
    for command in ("demo", "up", "serve", "doctor"):
        assert command in result.stdout


def test_a_missing_prometheus_binary_says_run_setup_and_deletes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("state from an earlier run")
    result = _run(["demo"], SHIPWAY_HOME=str(home), SHIPWAY_PROMETHEUS="/nowhere/prometheus")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "`/nowhere/prometheus` not found; run deploy/setup.sh" in lines[0]
    assert (home / "precious.txt").exists()
    assert not (home / "logs").exists(), "no service may have been started"


def test_a_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(["up", "--mlflow-port", str(port)], SHIPWAY_HOME=str(tmp_path))
    assert result.returncode == 2
    assert f"MLflow server: port 127.0.0.1:{port} is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


def test_a_malformed_declaration_stops_the_demo_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = assets_copy(tmp_path)
    declaration = models / "fraud" / "model.yaml"
    declaration.write_text(
        declaration.read_text().replace("psi_threshold: 0.25", "psi_threshold: -1")
    )
    monkeypatch.setattr(shipway.demo, "ASSETS_DIR", models)
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path / "home"))
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"shipway demo: model declaration {declaration} is invalid")
    assert "drift.psi_threshold: Input should be greater than 0" in err
    assert not (tmp_path / "home").exists()


def test_an_undeclared_model_stops_the_demo_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path / "home"))
    assert main(["demo", "--model", "churn"]) == 2
    assert capsys.readouterr().err.strip() == (
        "shipway demo: no model 'churn' is declared; declared: "
        "['customer_spend', 'fraud_model', 'help_assistant']"
    )
    assert not (tmp_path / "home").exists()


def test_setup_refuses_to_run_without_the_lock_file(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    (copy / "deploy").mkdir(parents=True)
    (copy / "deploy" / "setup.sh").write_text((REPO_ROOT / "deploy" / "setup.sh").read_text())
    result = subprocess.run(
        ["bash", str(copy / "deploy" / "setup.sh")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "uv.lock is missing" in result.stderr
    assert not (copy / ".venv").exists()


def test_data_commands_name_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path))
    assert main(["data", "status"]) == 0
    status = capsys.readouterr().out
    assert "raw_events                  no versions yet" in status
    assert "fraud_model_training_set    no versions yet" in status
    assert "customer_spend_training_set no versions yet" in status
    assert main(["data", "show", "raw_events@v9"]) == 2
    assert capsys.readouterr().err.strip() == (
        "shipway data: no quarantined batch 'raw_events@v9'; quarantined: none"
    )
    assert main(["data", "land", str(tmp_path / "nowhere.parquet")]) == 2
    assert "nowhere.parquet not found: give a Parquet file of events" in capsys.readouterr().err
    assert main(["data", "rebuild-training-set"]) == 2
    assert (
        "materialize the asset that writes `fraud_model_training_set` first"
        in capsys.readouterr().err
    )
    assert main(["data", "rebuild-training-set", "--model", "churn"]) == 2
    assert "no model 'churn' is declared" in capsys.readouterr().err
