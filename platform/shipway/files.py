"""Writing a file whole or not at all: one helper for every state, report and config file; and
one writer at a time, across processes, where a file is read, changed and written back.

A reader (Envoy, Prometheus, a restarted control plane) sees the old content or the new, never
half of it; and once `write_atomic` returns, the new content survives a power loss: the data
is flushed to disk before the rename, and the rename is flushed with its folder. Imports only
the standard library: the model servers' prediction spool uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace `path` with `data` (text is UTF-8), created with `mode`: a temporary file beside
    it, fsynced, renamed over it, and the folder fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    # A unique name: two writers of one file never share a temporary file, and the suffix
    # keeps it out of every glob of the real names (`*.json`).
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        temporary.chmod(mode)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it, a file created or removed) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing) while the block runs: a
    process that dies holding it releases it (the kernel closes its files)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Held(Exception):
    """The lock is held by another process, named by its pid (None when it wrote none)."""

    def __init__(self, lock_path: Path, pid: int | None) -> None:
        super().__init__(f"{lock_path} is held by pid {pid if pid is not None else '?'}")
        self.pid = pid


class Holder:
    """An exclusive lock held for as long as a process lives (or until `release`): one control
    plane per serving home. The kernel drops it when its holder dies, kill -9 included, so a
    stale lock is never a thing to clean up; the holder's pid is written in it, for the
    message that names who holds it."""

    def __init__(self, lock_path: Path) -> None:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise Held(lock_path, int(text) if text.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
