"""One proxy hop, three proxies, in one run: Envoy as Shipway's data plane configures it and
Envoy with a minimal configuration (one route, the router filter only), nginx and HAProxy as
plain keep-alive reverse proxies (no weights, no mirror, no statistics), each in front of the
same MLServer (Shipway's runtime, prediction log on), and that MLServer direct.

    apt-get install nginx-light haproxy      # Debian's; only this benchmark uses them
    .venv/bin/python bench/proxy_hop.py      # 50 req/s paced, 2000 requests per target
    .venv/bin/python bench/proxy_hop.py --rate 200

What the hop costs a caller: p50 / p99 of single-row requests paced at `--rate` (the targets
interleaved request by request, as in `bench/serving_latency.py`) and each proxy's p50 minus
the direct one; then requests per second saturated with `--connections` (wrk when on PATH),
and the CPU time the proxy's processes spent per request meanwhile (from /proc). A proxy that
is not installed is left out and named.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.serving_latency import (
    FEATURES,
    Target,
    bench_bundle,
    load_arguments,
    paced,
    saturate,
    train,
)
from shipway.processes import LOOPBACK, ManagedProcess, free_ports
from shipway.serving.dataplane import DataPlane, Route, envoy_binary
from shipway.serving.protocol import features_request
from shipway.serving.runtime import start_mlserver


def nginx(root: Path, port: int, upstream: int) -> ManagedProcess:
    conf = root / "nginx.conf"
    temp = root / "nginx-temp"
    temp.mkdir(parents=True)
    conf.write_text(
        f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  upstream mlserver {{ server {LOOPBACK}:{upstream}; keepalive 32; }}
  server {{
    listen {LOOPBACK}:{port};
    location / {{
      proxy_pass http://mlserver;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    )
    return ManagedProcess(
        "nginx",
        [str(shutil.which("nginx")), "-c", str(conf), "-p", str(root)],
        root / "nginx.log",
        ready_url=f"http://{LOOPBACK}:{port}/v2/health/ready",
    )


def minimal_envoy(root: Path, port: int, upstream: int) -> ManagedProcess:
    root.mkdir(parents=True)
    address = {"socket_address": {"address": LOOPBACK, "port_value": upstream}}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager",
        "stat_prefix": "hop",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "mlserver"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "hop",
        "address": {"socket_address": {"address": LOOPBACK, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    cluster = {
        "name": "mlserver",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "mlserver",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
    conf = root / "envoy.json"
    conf.write_text(
        json.dumps({"static_resources": {"listeners": [listener], "clusters": [cluster]}})
    )
    return ManagedProcess(
        "minimal Envoy",
        [envoy_binary(), "-c", str(conf), "--concurrency", "1", "--use-dynamic-base-id"],
        root / "envoy.log",
        ready_url=f"http://{LOOPBACK}:{port}/v2/health/ready",
    )


def haproxy(root: Path, port: int, upstream: int) -> ManagedProcess:
    root.mkdir(parents=True)
    conf = root / "haproxy.cfg"
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 1000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend front
  bind {LOOPBACK}:{port}
  default_backend mlserver
backend mlserver
  server mlserver {LOOPBACK}:{upstream}
"""
    )
    return ManagedProcess(
        "HAProxy",
        [str(shutil.which("haproxy")), "-f", str(conf), "-db"],
        root / "haproxy.log",
        ready_url=f"http://{LOOPBACK}:{port}/v2/health/ready",
    )


def main() -> int:
    parser = load_arguments(__doc__)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="shipway-bench-proxy-"))
    _, frame = train(root)
    rows = frame.sample(args.requests, random_state=1, replace=True).to_numpy()
    bundle = bench_bundle(root, frame)
    processes: list[ManagedProcess] = []
    try:
        # On a loopback port: nginx, HAProxy and wrk speak TCP.
        server = start_mlserver(
            bundle, root / "logs", root / "metrics", own_group=True, spool_dir=root / "spool"
        )
        port = server.port
        processes.append(server.process)
        front, stats, minimal_port, nginx_port, haproxy_port = free_ports(5)
        dataplane = DataPlane(root / "dataplane", front, stats)
        processes.append(dataplane.process(root / "logs").start())
        dataplane.publish([Route("bench_model", {"1": [port]}, {"1": 100})], callers=None)
        time.sleep(1.0)
        infer = "/v2/models/bench_model/infer"
        targets: list[Target] = [
            ("Envoy (Shipway's front door)", f"{dataplane.url}{infer}", _oip, {}),
        ]
        pids = {targets[0][0]: processes[-1].pid}
        processes.append(minimal_envoy(root / "envoy-minimal", minimal_port, port).start())
        targets.append(
            ("Envoy, minimal configuration", f"http://{LOOPBACK}:{minimal_port}{infer}", _oip, {})
        )
        pids[targets[-1][0]] = processes[-1].pid
        for name, start, port in (("nginx", nginx, nginx_port), ("HAProxy", haproxy, haproxy_port)):
            if shutil.which(name.lower()) is None:
                print(f"{name}: not installed (apt-get install {name.lower()}); left out")
                continue
            processes.append(start(root / name.lower(), port, port).start())
            targets.append((name, f"http://{LOOPBACK}:{port}{infer}", _oip, {}))
            pids[name] = processes[-1].pid
        targets.append(("MLServer direct", f"http://{LOOPBACK}:{port}{infer}", _oip, {}))
        print(
            f"{args.requests} single-row requests per target at {args.rate:.0f} req/s overall; "
            f"saturation: {args.connections} connections x {args.seconds}s",
            flush=True,
        )
        with httpx.Client(timeout=30.0) as http:
            paced(http, targets, rows[:50], args.rate)  # warm-up
            results = paced(http, targets, rows, args.rate)
        direct = float(np.percentile(results["MLServer direct"], 50))
        print(
            f"{'target':<30} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'req/s sat.':>11} "
            f"{'proxy CPU us/req':>17}"
        )
        for name, url, body, headers in targets:
            ms = results[name]
            p50 = float(np.percentile(ms, 50))
            before = cpu_seconds(pids[name]) if name in pids else 0.0
            throughput = saturate(url, body(rows[:1]), headers, args.seconds, args.connections)
            used = cpu_seconds(pids[name]) - before if name in pids else None
            per_request = "-" if used is None else f"{used / (throughput * args.seconds) * 1e6:.0f}"
            print(
                f"{name:<30} {p50:7.2f} {np.percentile(ms, 99):7.2f} {p50 - direct:8.2f} "
                f"{throughput:11.0f} {per_request:>17}",
                flush=True,
            )
    finally:
        for process in reversed(processes):
            process.stop()
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, its threads and its children (nginx's workers)."""
    ticks = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    children = (Path(f"/proc/{pid}/task/{pid}/children")).read_text().split()
    return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(int(c)) for c in children)


def _oip(row: np.ndarray) -> dict[str, object]:
    return features_request(row, FEATURES)


if __name__ == "__main__":
    sys.exit(main())
