"""The README's first command, end to end, on small data, for each shipped model: the loop
must close."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipway.paths import REPO_ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("model", ["fraud_model", "customer_spend"])
def test_the_demo_closes_the_loop_from_drift_to_a_retrained_gated_version(
    tmp_path: Path, model: str
) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("shipway")),
            "demo",
            "--model",
            model,
            "--events-per-day",
            "600",
            "--traffic-rows",
            "1000",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SHIPWAY_HOME": str(tmp_path / "home")},
        cwd=REPO_ROOT,
        timeout=900,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out[-3000:]}\n{result.stderr[-3000:]}"
    assert f"Shipway demo: {model}," in out
    assert f"{model} v1 passed " in out and "promoted to rollout (first_version)" in out
    assert f"skip: no drift for {model}" in out
    assert f"run requested: drift on {model}" in out
    assert f"loop closed: drift → sensor → retrain → {model} v2" in out
    assert "Stage timings:" in out
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.strip()
    assert leftover == "", "the demo must stop every service it started"
