"""The review's attack on the feature service, measured: lookups listing one feature reference
~20,000 times, sent one after another, against the feature service of this tree and, side by
side, of another tree (`--peer`, e.g. a worktree of the commit before the bounds). After each
request: its status, its time and the service's resident memory.

    git worktree add /tmp/before 9e9178f
    .venv/bin/python bench/hostile_lookups.py --peer /tmp/before/platform

At review, a few dozen such requests grew the service to 13.9 GB until the kernel killed it.
Its memory is watched while each request runs, and a service past `--stop-at` MiB is killed
there, so the benchmark never takes the machine down (a first run, watching only between
requests, saw the kernel kill the peer at 23.9 GB on its first request).
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
from feature_service import lake

from shipway import callers
from shipway.features.process import feature_server_process
from shipway.features.store import feast_cli, materialize_incremental
from shipway.paths import PLATFORM_DIR, ShipwayHome
from shipway.processes import LOOPBACK, ManagedProcess, free_ports

REFERENCE = "customer_features:customer_txn_count_7d"


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    if "VmRSS:" not in status:  # killed, not yet reaped
        return 0.0
    return int(status.split("VmRSS:", 1)[1].split()[0]) / 1024


class Watch:
    """The service's peak resident memory while a request runs; past `limit` MiB it is killed."""

    def __init__(self, pid: int, limit: float) -> None:
        self.pid, self.limit, self.peak, self.killed = pid, limit, 0.0, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, _rss_mib(self.pid))
            if self.peak > self.limit and not self.killed:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib(self.pid))


def attack(name: str, platform: Path, home: ShipwayHome, args: argparse.Namespace) -> list[str]:
    (port,) = free_ports(1)
    service: ManagedProcess = feature_server_process(home, port)
    service.env[callers.REQUIRE_ENV] = "no"
    service.env["PYTHONPATH"] = str(platform)
    service.start()
    url = f"http://{LOOPBACK}:{port}/get-online-features"
    body = {
        "features": [REFERENCE] * args.references,
        "entities": {"customer_id": list(range(1, args.entities + 1))},
    }
    lines = [f"{name} ({platform}): idle {_rss_mib(service.pid):.0f} MiB"]
    try:
        for n in range(1, args.requests + 1):
            began = time.perf_counter()
            with Watch(service.pid, args.stop_at) as watch:
                try:
                    answer = httpx.post(url, json=body, timeout=300)
                    status = str(answer.status_code)
                except httpx.HTTPError as exc:
                    status = f"no answer ({type(exc).__name__})"
            seconds = time.perf_counter() - began
            line = f"  request {n}: {status}, {seconds:.2f} s, peak {watch.peak:,.0f} MiB"
            if watch.killed:
                lines.append(f"{line}; killed past {args.stop_at:,.0f} MiB")
                break
            if not service.running():
                lines.append(f"{line}; the service died")
                break
            lines.append(line)
            print(line, flush=True)
    finally:
        service.stop()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", type=Path, help="another tree's platform/ folder to compare")
    parser.add_argument("--references", type=int, default=20_000)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--stop-at", type=float, default=6_000, help="MiB (6000)")
    args = parser.parse_args()
    home = ShipwayHome(Path(tempfile.mkdtemp(prefix="shipway-hostile-")))
    os.environ.update(home.environment())
    lake(home, customers=10_000, merchants=100)
    feast_cli(home, "apply")
    materialize_incremental(home)
    body_mib = len(str([REFERENCE] * args.references)) / 2**20
    print(
        f"{args.requests} lookups of {args.references:,} references ({body_mib:.2f} MiB) and "
        f"{args.entities} entities each",
        flush=True,
    )
    report = attack("this tree", PLATFORM_DIR, home, args)
    if args.peer is not None:
        report += attack("peer", args.peer, home, args)
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
