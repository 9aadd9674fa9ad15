"""Local service processes on 127.0.0.1: start, wait until ready, stop cleanly, and start
again when one dies.

Every long-running component Shipway starts (MLflow, Prometheus, MLServer, the serving
controller, Dagster) goes through `ManagedProcess`, so a failed start never leaves a
half-started process behind and Ctrl-C stops the whole group. A `ServiceGroup` that
`supervise`s restarts any of its processes that dies without being asked to (kill -9, a crash,
the kernel's OOM killer), with backoff, as systemd's `Restart=always` or a Kubernetes pod's
restart policy would: each restart is reported and counted (`Supervisor`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from shipway.errors import ServiceError, ShipwayError
from shipway.files import write_atomic

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# What a child that must not see its parent's credentials still needs of the environment.
SAFE_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONDONTWRITEBYTECODE",
)


TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def flag(name: str, default: bool) -> bool:
    """A yes-or-no setting from the environment (`default` when unset or empty); any other
    spelling is refused, so a typo never turns a safeguard off."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ShipwayError(
        f"${name}={os.environ[name]!r} is neither true ({', '.join(TRUE)}) nor false "
        f"({', '.join(FALSE)}); set one of them"
    )


def safe_environment() -> dict[str, str]:
    """The parent's environment without anything secret: locale, paths, user. A service that
    must not hold the serving token, a signing key or another credential starts with this and
    what it needs (`ManagedProcess(inherit_environment=False)`)."""
    return {k: os.environ[k] for k in SAFE_VARIABLES if k in os.environ}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free ports: all are held at once while choosing, since the OS may
    hand out a port it just gave and got back, and two services on one port answer each
    other's health checks."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
    return ports


def ensure_port_free(port: int, service: str, wait: float = 0.0) -> None:
    """Fail with one actionable line when `port` is already taken (after up to `wait` seconds:
    a service restarted right after its predecessor was killed finds the port free once the
    kernel has let go of it).

    The probe binds the way the servers themselves do (`SO_REUSEADDR`), so a port held only by
    a closed connection in TIME_WAIT counts as free, as it does for MLflow, MLServer and
    Prometheus, while a listener or a live connection on it does not.
    """
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise ServiceError(
                        f"{service}: port {LOOPBACK}:{port} is already in use; stop what listens "
                        f"there (`ss -ltnp 'sport = :{port}'`) or choose another port"
                    ) from None
        time.sleep(0.2)


def require_binary(path_or_name: str, service: str, install_hint: str) -> str:
    """Resolve an executable or fail with what to install."""
    found = shutil.which(path_or_name)
    if found is None:
        raise ServiceError(f"{service}: `{path_or_name}` not found; {install_hint}")
    return found


class ManagedProcess:
    """One child process in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready_url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 120.0,
        own_group: bool = True,
        ready_probe: Callable[[], bool] | None = None,
        inherit_environment: bool = True,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """Ready when `ready_url` answers below 400, or `ready_probe` (for a service that does
        not speak HTTP) returns True; with neither, as soon as it is launched. The child's
        environment is the parent's with `env` on top, or `env` alone without
        `inherit_environment`. `prepare` runs before every start (what a predecessor killed
        with -9 left behind, say)."""
        self.name = name
        self.ready_probe = ready_probe
        self.argv = list(argv)
        self.log_path = log_path
        self.ready_url = ready_url
        self.env = {**(os.environ if inherit_environment else {}), **(env or {})}
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.own_group = own_group
        self.prepare = prepare
        self._proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        """Stopped on purpose (`stop`): a supervisor leaves it stopped."""
        self.started_at = 0.0

    def start(self, wait: bool = True) -> ManagedProcess:
        """Launch; with `wait`, block until ready (stopping the process if it never is)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.prepare is not None:
            self.prepare()
        self.stopped = False
        self.started_at = time.monotonic()
        log.info("starting %s: %s", self.name, " ".join(self.argv))
        with self.log_path.open("ab") as out:
            # own_group: the child leads its own process group, so stop() reaches its workers
            # too, and a terminal's Ctrl-C goes to Shipway, which stops it in order. A child
            # that must die with its parent (MLServer under the serving controller) stays in
            # the parent's group instead.
            self._proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.own_group,
                preexec_fn=_default_signals,
            )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self) -> None:
        assert self._proc is not None
        if self.ready_url is None and self.ready_probe is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with code {code} while starting; "
                    f"last log lines: {self.tail()!r} (full log: {self.log_path})"
                )
            if self._ready():
                return
            time.sleep(0.25)
        raise ServiceError(
            f"{self.name} not ready at {self.ready_url or 'its probe'} after "
            f"{self.ready_timeout:.0f}s "
            f"(log: {self.log_path})"
        )

    def _ready(self) -> bool:
        if self.ready_probe is not None:
            return self.ready_probe()
        assert self.ready_url is not None
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.ready_url, timeout=2.0).status_code < 400
        return False

    @property
    def pid(self) -> int:
        assert self._proc is not None, f"{self.name} was not started"
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """How it ended (negative: the signal that killed it); None while it runs."""
        return None if self._proc is None else self._proc.poll()

    def restart(self) -> None:
        """Start it again after it died: first whatever of its process group outlived it
        (a `dagster dev` killed with -9 leaves its webserver holding the port), as systemd
        stops a unit's whole cgroup."""
        if self._proc is not None and self.own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self.start(wait=False)

    def wait(self, timeout: float) -> int:
        """Its exit code, once it has exited (`subprocess.TimeoutExpired` after `timeout`)."""
        assert self._proc is not None, f"{self.name} was not started"
        return self._proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self.stopped = True
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        log.info("stopping %s (pid %s)", self.name, proc.pid)
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                if self.own_group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(text[-lines:])


def _default_signals() -> None:
    # A shell that runs a program in the background ignores SIGINT for it, and ignored
    # signals are inherited: Dagster would then ignore our Ctrl-C. Children get defaults.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


RESTART_BACKOFF = (1.0, 30.0)
"""The first restart waits a second, each one after doubles it, up to 30 s."""
STEADY_SECONDS = 60.0
"""A process up this long has recovered: its next death starts the backoff over."""
Report = Callable[[str], None]


@dataclass
class _Backoff:
    failures: int = 0
    due: float | None = None
    """When it is started again (None: not dead, or not noticed yet)."""


class Supervisor:
    """A thread that starts again each of `processes` that died without being stopped on
    purpose: it reports the death and when the restart comes, waits (doubling from
    `RESTART_BACKOFF`'s first value to its last while deaths keep coming), starts it, and
    counts it in `restarts` (a JSON file `{"restarts": {name: count}}`, written whole), which
    Prometheus gets as `shipway_service_restarts_total{service}`."""

    def __init__(
        self,
        processes: list[ManagedProcess],
        report: Report,
        restarts: Path | None = None,
        poll: float = 0.5,
        backoff: tuple[float, float] = RESTART_BACKOFF,
        steady: float = STEADY_SECONDS,
    ) -> None:
        self.processes = processes
        self.report = report
        self.restarts_path = restarts
        self.poll, self.backoff, self.steady = poll, backoff, steady
        self.restarts: Counter[str] = Counter()
        self._state: dict[str, _Backoff] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._save()

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            for process in list(self.processes):
                if self._stop.is_set():
                    return
                try:
                    self._check(process)
                except Exception as exc:  # the supervisor outlives any one failed restart
                    log.exception("supervising %s failed", process.name)
                    self.report(f"{process.name}: could not be started again ({exc})")

    def _check(self, process: ManagedProcess) -> None:
        state = self._state.setdefault(process.name, _Backoff())
        now = time.monotonic()
        if process.stopped or process.running():
            if state.failures and now - process.started_at > self.steady:
                state.failures = 0
            return
        if state.due is None:
            state.failures += 1
            delay = min(self.backoff[1], self.backoff[0] * 2 ** (state.failures - 1))
            state.due = now + delay
            self.report(
                f"{process.name} {_ended(process.returncode)}; starting it again in "
                f"{delay:g} s (restart {self.restarts[process.name] + 1}; log: "
                f"{process.log_path})"
            )
        if now < state.due:
            return
        state.due = None
        process.restart()
        self.restarts[process.name] += 1
        self._save()
        self.report(f"{process.name} started again (pid {process.pid})")

    def _save(self) -> None:
        if self.restarts_path is not None:
            write_atomic(self.restarts_path, json.dumps({"restarts": dict(self.restarts)}))


def _ended(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class ServiceGroup:
    """Processes started in order and stopped in reverse; a failed start stops the rest.
    Supervised (`supervise`), a process that dies is started again until the group stops."""

    def __init__(self) -> None:
        self._started: list[ManagedProcess] = []
        self._supervisor: Supervisor | None = None

    def start(self, process: ManagedProcess, wait: bool = True) -> ManagedProcess:
        self._started.append(process)
        process.start(wait=wait)
        return process

    def wait_ready(self) -> None:
        for process in self._started:
            process.wait_ready()

    def named(self, name: str) -> ManagedProcess:
        """The started process called `name` (`ManagedProcess.name`)."""
        found = [p for p in self._started if p.name == name]
        if not found:
            raise KeyError(f"no process {name!r}; started: {[p.name for p in self._started]}")
        return found[0]

    def supervise(self, report: Report, restarts: Path | None = None) -> Supervisor:
        """Start again any of the group's processes that dies, from now until `stop`."""
        self._supervisor = Supervisor(self._started, report, restarts).start()
        return self._supervisor

    def stop(self) -> None:
        # The supervisor first: it must not start again what is being stopped.
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        while self._started:
            self._started.pop().stop()

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block, then each variable as it was (or unset)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[None]:
    """Everything written to stdout and stderr, by Python, libraries and subprocesses alike,
    goes to the log; the terminal shows only what the caller prints around it."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
