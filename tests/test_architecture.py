"""The layering rule of README "Architecture", held to the code: every import points down the
layers, no package's modules import each other in a circle, and only the entry points import
the code location. The contracts are in pyproject.toml; `shipway ci` checks them too."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from shipway import ci
from shipway.paths import PLATFORM_DIR


def test_every_import_points_down_the_layers_and_no_package_has_a_cycle() -> None:
    assert ci.layering() == "Contracts: 3 kept, 0 broken."


def test_an_import_that_runs_up_a_layer_fails_naming_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same check on a copy of the source with one import added from data up to defs.
    copy = tmp_path / "repo"
    shutil.copytree(PLATFORM_DIR, copy / "platform", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        PLATFORM_DIR.parent / "assets",
        copy / "assets",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(PLATFORM_DIR.parent / "pyproject.toml", copy)
    lake = copy / "platform" / "shipway" / "data" / "lake.py"
    lake.write_text(
        lake.read_text()
        + "\n\ndef _up() -> None:\n    from shipway.defs import resources  # noqa: F401\n"
    )
    monkeypatch.setattr(ci, "REPO_ROOT", copy)
    monkeypatch.setenv("PYTHONPATH", f"{copy / 'platform'}:{copy}")
    with pytest.raises(ci.CIFailure, match=r"shipway\.data\.lake -> shipway\.defs\.resources"):
        ci.layering()


def test_every_package_says_what_lives_there_and_what_it_may_import() -> None:
    for init in sorted((PLATFORM_DIR / "shipway").glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in docstring, f"{init.parent.name}/__init__.py: say what it may import"
