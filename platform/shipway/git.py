"""The few git questions Shipway asks of its checkout: which commit, what changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shipway.paths import REPO_ROOT


def git(*args: str, cwd: Path = REPO_ROOT) -> str:
    """`git args` in `cwd`, its stdout; raises `subprocess.CalledProcessError` (with stderr)
    or `OSError` when git is missing."""
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
