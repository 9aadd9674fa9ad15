"""`write_atomic`, the one way Shipway replaces a state file: whole or not at all."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from shipway.files import write_atomic


def test_a_write_replaces_the_file_whole_with_its_mode_and_leaves_nothing_beside_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "endpoint.json"
    write_atomic(path, '{"old": 1}')
    write_atomic(path, b'{"token": "x"}', mode=0o600)
    assert path.read_bytes() == b'{"token": "x"}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["endpoint.json"]


def test_a_write_that_fails_on_the_way_leaves_the_old_content_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, "old")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
