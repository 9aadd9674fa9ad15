"""The README's `curl` recipes, as a user copies them: every `curl` command of a `bash` block,
its continued lines and quoted body included, and a way to run one against a live platform.

A recipe is true only while a test runs it: `tests/test_readme.py` runs the fraud model's and
the feature service's, the help assistant's lifecycle test runs the application's, and a test
holds every recipe to one of them."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass

from shipway.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
_BLOCK = re.compile(r"^\s*```bash\n(.*?)^\s*```", re.M | re.S)


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def recipes(naming: str | None = None) -> list[str]:
    """Every `curl` command in the README's bash blocks, whole (continuations joined); with
    `naming`, those whose URL names that model."""
    found = []
    for block in _BLOCK.findall(README.read_text()):
        pending = ""
        for line in block.splitlines():
            text = line.strip()
            if not pending and not text.startswith("curl "):
                continue
            pending = f"{pending}\n{line.rstrip()}" if pending else text
            if pending.endswith("\\") or not _whole(pending):
                continue
            found.append(pending)
            pending = ""
    return [r for r in found if naming is None or f"/v2/models/{naming}/" in r]


def _whole(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the body goes on
        return False
    return True


def run(recipe: str, serving_url: str, features_url: str, api_key: str) -> Answer:
    """Run a recipe as written, the front door and the feature service at the given addresses
    (the README's are `shipway up`'s defaults) and `$SHIPWAY_API_KEY` set; its HTTP status and
    body. curl is wrapped only to print the status after the body."""
    command = recipe.replace("localhost:8000", serving_url.removeprefix("http://")).replace(
        "localhost:6566", features_url.removeprefix("http://")
    )
    status = 'curl() { command curl --max-time 120 -w "\\n%{http_code}" "$@"; }\n'
    done = subprocess.run(
        ["bash", "-c", status + command],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SHIPWAY_API_KEY": api_key},
        timeout=180,
    )
    assert done.returncode == 0, (recipe, done.stderr)
    body, _, code = done.stdout.rpartition("\n")
    return Answer(int(code), body)
