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


def _demo(tmp_path: Path, model: str, *flags: str) -> str:
    """`shipway demo --model <model>` in its own home: it must exit 0 and leave no service
    running; its timeline."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("shipway")), "demo", "--model", model, *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "SHIPWAY_HOME": str(tmp_path / "home")},
        cwd=REPO_ROOT,
        timeout=900,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out[-3000:]}\n{result.stderr[-3000:]}"
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.strip()
    assert leftover == "", "the demo must stop every service it started"
    return out


# fraud_model: the README's demo as it is (its v2 needs the default 2,000 events a day to pass
# its gates), promoted through shadow and every canary step. customer_spend: smaller data and a
# bad challenger, which its canary rolls back after two failed intervals (its policy). The
# second is `slow` (4 minutes, outside the default run: `pytest -m slow`); the paths it adds are
# tested on their own in the default run (a rollback of a faulty challenger on real servers in
# test_rollout.py, customer_spend's training, gate and serving in test_customer_spend.py).
@pytest.mark.parametrize(
    ("model", "flags", "ending"),
    [
        ("fraud_model", [], "→ gates → rollout → fraud_model v2 is champion"),
        pytest.param(
            "customer_spend",
            ["--events-per-day", "600", "--traffic-rows", "1000", "--bad-challenger"],
            "→ gates → rollout → v2 rolled back, v1 serves: success_rate",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_the_demo_closes_the_loop_from_drift_to_a_rolled_out_or_rolled_back_version(
    tmp_path: Path, model: str, flags: list[str], ending: str
) -> None:
    out = _demo(tmp_path, model, *flags)
    assert f"Shipway demo: {model}," in out
    assert f"{model} v1 passed " in out and "promoted to rollout (first_version)" in out
    assert f"skip: no drift for {model}" in out
    assert f"run requested: drift on {model}" in out
    assert f"loop closed: drift → sensor → retrain {ending}" in out
    assert "Stage timings:" in out


# The LLM application's demo (about 4 minutes): outside the default run, whose
# test_application_lifecycle.py runs the same builds, gates, rollouts and rollback.
@pytest.mark.slow
def test_the_application_demo_releases_blocks_rolls_back_and_monitors(tmp_path: Path) -> None:
    out = _demo(tmp_path, "help_assistant")
    assert "gate: v1 passed" in out and "gate: v2 passed 14 rules against champion v1" in out
    assert "gate: v3 blocked:" in out and "(cases: audit-config" in out
    assert "rollout of v2: promoted" in out
    assert "gate: v4 passed" in out and "rollout of v4: rolled_back (latency_p99_ratio" in out
    assert out.count("champion: help_assistant v2") == 3
    assert "→ v2: I can only help with questions about your Shipway card." in out
    assert "help_assistant_live_quality: unmatched_ratings 0, v1_rated" in out
    assert "check question_drift: every judged version's questions as evaluated" in out
