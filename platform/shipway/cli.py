"""`shipway`: run the demo, bring the platform up, serve models, check the installation."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from shipway.errors import ShipwayError
from shipway.paths import DBT_PROJECT_DIR, ShipwayHome

EPILOG = """examples:
  shipway demo                 the whole loop once, headless (about 5 minutes)
  shipway up                   Dagster, MLflow, Prometheus and serving until Ctrl-C
  shipway doctor               check what deploy/setup.sh installs
state lives in $SHIPWAY_HOME (default: .shipway/ in the repository)"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shipway",
        description="Shipway: ML CI/CD on Dagster, from raw events to a monitored deployment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the whole loop once: train v1, deploy, drift, sensor, retrain v2",
        description="Runs headless on embedded defaults and exits 0 once the loop has closed. "
        "Starts from a clean $SHIPWAY_HOME unless --keep is given.",
    )
    demo.add_argument("--days", type=int, default=75, help="baseline days to land (75)")
    demo.add_argument("--drift-days", type=int, default=20, help="drifted days to land (20)")
    demo.add_argument("--events-per-day", type=int, default=2000, help="events per day (2000)")
    demo.add_argument("--traffic-rows", type=int, default=1200, help="rows per traffic phase")
    demo.add_argument("--keep", action="store_true", help="keep existing state in $SHIPWAY_HOME")

    up = sub.add_parser(
        "up",
        help="start Dagster, MLflow, Prometheus and serving on 127.0.0.1 until Ctrl-C",
    )
    up.add_argument("--dagster-port", type=int, default=3000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--prometheus-port", type=int, default=9090)
    up.add_argument("--serving-port", type=int, default=8000)

    serve = sub.add_parser(
        "serve", help="run the serving controller and traffic splitter (started by `up`)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-dir", type=Path, required=True)
    serve.add_argument("--drift-window", type=int, default=1000)
    serve.add_argument("--targets-dir", type=Path, help="Prometheus file_sd folder to update")

    sub.add_parser("doctor", help="check binaries, environments, the dbt manifest")

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "up":
            return _up(args)
        if args.command == "serve":
            return _serve(args)
        return _doctor()
    except ShipwayError as exc:
        print(f"shipway {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shipway {args.command}: interrupted; services stopped", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    from shipway.demo import DemoConfig, run_demo

    config = DemoConfig(
        days=args.days,
        drift_days=args.drift_days,
        events_per_day=args.events_per_day,
        traffic_rows=args.traffic_rows,
    )
    run_demo(ShipwayHome.from_env(), config, keep=args.keep)
    return 0


def _up(args: argparse.Namespace) -> int:
    from assets.fraud import policy
    from shipway.stack import Ports, running_stack

    ports = Ports(args.mlflow_port, args.prometheus_port, args.serving_port, args.dagster_port)
    home = ShipwayHome.from_env()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("starting Dagster, MLflow, Prometheus and serving on 127.0.0.1 ...", flush=True)
    drift_window = policy().serving.drift_window
    with running_stack(home, ports, drift_window, with_dagster=True) as stack:
        print(
            f"  Dagster UI  {stack.dagster_url}\n"
            f"  MLflow      {stack.mlflow_url}\n"
            f"  Prometheus  {stack.prometheus_url}\n"
            f"  serving     {stack.serving_url}/v2/models/<model>/infer\n"
            f"  state in {home.root}, logs in {home.logs}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        stop.wait()
        print("stopping ...", flush=True)
    print("stopped.", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shipway.processes import LOOPBACK
    from shipway.serving.controller import create_app

    app = create_app(args.log_dir, args.drift_window, args.targets_dir)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")
    return 0


def _doctor() -> int:
    from shipway.features import ensure_delta_extension
    from shipway.monitoring import PROMETHEUS_CONFIG_DIR, check_config
    from shipway.processes import require_binary
    from shipway.serving.runtime import mlserver_binary
    from shipway.stack import PROMETHEUS_HINT

    require_binary("prometheus", "Prometheus", PROMETHEUS_HINT)
    check_config(PROMETHEUS_CONFIG_DIR / "prometheus.yml")
    print("ok  Prometheus config passes promtool check config")
    print(f"ok  MLServer runtime: {mlserver_binary()}")
    ensure_delta_extension()
    print("ok  DuckDB delta extension installed from its wheel")
    home = ShipwayHome.from_env()
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run(
        [str(dbt), "parse", "--project-dir", str(DBT_PROJECT_DIR)],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, **home.environment(), "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ShipwayError(f"dbt parse failed: {result.stdout.strip().splitlines()[-1:]}")
    print("ok  dbt manifest: dbt_project/target/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
