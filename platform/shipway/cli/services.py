"""`shipway up`, `shipway serve` and `shipway doctor`: the local platform, serving's control
plane on its own, and a check of what `deploy/setup.sh` installs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from shipway.errors import ShipwayError
from shipway.paths import DBT_PROJECT_DIR, ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    up = sub.add_parser(
        "up",
        help="start Dagster, MLflow, Prometheus and serving on 127.0.0.1 until Ctrl-C",
    )
    up.add_argument("--dagster-port", type=int, default=3000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--prometheus-port", type=int, default=9090)
    up.add_argument(
        "--serving-port", type=int, default=8000, help="the data plane's front door (Envoy)"
    )
    up.add_argument("--serving-stats-port", type=int, default=8001, help="Envoy's /metrics")
    up.add_argument("--control-port", type=int, default=8100, help="the serving control plane")
    up.add_argument(
        "--features-port", type=int, default=6566, help="the feature service (lookups, scoring)"
    )
    up.add_argument(
        "--redis-port",
        type=int,
        default=6379,
        help="Redis, when SHIPWAY_ONLINE_STORE=redis (the online store)",
    )

    up.set_defaults(run=_up)

    serve = sub.add_parser(
        "serve",
        help="run the serving control plane (started by `up`); needs $SHIPWAY_SERVING_TOKEN",
    )
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument("--root", type=Path, required=True, help="serving home: bundles, state")
    serve.add_argument(
        "--dataplane-dir", type=Path, required=True, help="where Envoy reads its xDS files"
    )
    serve.add_argument("--log-dir", type=Path, required=True)
    serve.add_argument("--targets-dir", type=Path, help="Prometheus file_sd folder to update")
    serve.add_argument(
        "--lake-dir", type=Path, help="write each model's prediction log to Delta tables here"
    )

    serve.set_defaults(run=_serve)

    doctor = sub.add_parser(
        "doctor",
        help="check binaries, environments, the dbt manifest and, with serving running, that "
        "the front door runs serving's last change",
    )
    doctor.set_defaults(run=_doctor)


def _up(args: argparse.Namespace) -> int:
    from shipway.models.tracking import VIEWER_USER
    from shipway.stack import Ports, running_stack

    ports = Ports(
        args.mlflow_port,
        args.prometheus_port,
        args.serving_port,
        args.dagster_port,
        args.control_port,
        args.serving_stats_port,
        args.features_port,
        args.redis_port,
    )
    home = ShipwayHome.from_env()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        "starting Dagster, MLflow, Prometheus, serving and the feature service on 127.0.0.1 ...",
        flush=True,
    )

    def report(line: str) -> None:
        print(f"  {line}", flush=True)

    with running_stack(home, ports, with_dagster=True, report=report) as stack:
        print(
            f"  Dagster UI  {stack.dagster_url}\n"
            f"  MLflow      {stack.mlflow_url} (log in as {VIEWER_USER}: password in "
            f"{home.mlflow / 'credentials.json'})\n"
            f"  Prometheus  {stack.prometheus_url}\n"
            f"  serving     {stack.serving_url}/v2/models/<model>/infer (Envoy; an API key "
            "each: `shipway callers add <caller>`)\n"
            f"  Envoy stats http://{stack.dataplane.metrics_target}/stats/prometheus\n"
            f"  control     {stack.control_url}/admin/models "
            "(needs $SHIPWAY_SERVING_TOKEN, in the endpoint file)\n"
            f"  features    {stack.features_url}/get-online-features, "
            f"{stack.features_url}/score/<model> (the same API keys)\n"
            f"  state in {home.root}, logs in {home.logs}\n"
            "A service that dies is started again (said here, counted in "
            "shipway_service_restarts_total). Ctrl-C stops everything.",
            flush=True,
        )
        stop.wait()
        print("stopping ...", flush=True)
    print("stopped.", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shipway.monitoring.quality import QualityCollector
    from shipway.monitoring.services import RestartsCollector
    from shipway.monitoring.skew import SkewCollector
    from shipway.paths import ServingHome
    from shipway.processes import LOOPBACK
    from shipway.rollout.metrics import RolloutCollector, rollout_phase
    from shipway.rollout.state import RolloutStore
    from shipway.scrape import FileErrors
    from shipway.serving.client import TOKEN_ENV
    from shipway.serving.control_api import create_app
    from shipway.serving.control_plane import ControlPlane
    from shipway.serving.dataplane import DataPlane

    home = ServingHome(args.root.resolve())
    rollouts = RolloutStore(home.rollouts)
    errors = FileErrors(home.root)
    plane = ControlPlane(
        home.root,
        DataPlane.attach(args.dataplane_dir),
        args.log_dir,
        args.targets_dir,
        args.lake_dir,
        collectors=[
            RolloutCollector(rollouts, errors),
            QualityCollector(home.quality_reports, errors),
            SkewCollector(home.skew_reports, errors),
            RestartsCollector(home.service_restarts, errors),
            errors,
        ],
        rollout_phase=rollout_phase(rollouts),
    )
    app = create_app(plane, os.environ.get(TOKEN_ENV, ""))
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from shipway.features.process import redis_binary
    from shipway.features.store import ensure_delta_extension
    from shipway.monitoring.prometheus import PROMETHEUS_CONFIG_DIR, check_config
    from shipway.processes import require_binary
    from shipway.serving.runtime import mlserver_binary
    from shipway.stack import PROMETHEUS_HINT

    require_binary("prometheus", "Prometheus", PROMETHEUS_HINT)
    check_config(PROMETHEUS_CONFIG_DIR / "prometheus.yml")
    print("ok  Prometheus config passes promtool check config")
    print(f"ok  MLServer runtime: {mlserver_binary()}")
    print(f"ok  Redis (the online store option): {redis_binary()}")
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
    _doctor_dataplane(home)
    return 0


def _doctor_dataplane(home: ShipwayHome) -> None:
    """With serving running for this home: whether Envoy runs what the control plane last
    published (a rejected configuration freezes the front door at the one before)."""
    from shipway.errors import ServiceError
    from shipway.serving.client import ServingClient

    try:
        dataplane = ServingClient.for_home(home.serving).dataplane()
    except ServiceError as exc:
        print(f"--  serving: not running for this home ({exc})")
        return
    if not dataplane.get("applied"):
        raise ShipwayError(
            f"the front door does not run serving's last change: {dataplane.get('error')}"
        )
    print(f"ok  front door runs serving's last change ({dataplane['generation']})")
