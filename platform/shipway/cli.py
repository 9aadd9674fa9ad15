"""`shipway`: run the demo, bring the platform up, serve models, check the installation."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shipway.errors import ShipwayError

if TYPE_CHECKING:
    from shipway.models.catalog import DeclaredModel
from shipway.paths import DBT_PROJECT_DIR, ShipwayHome

DEFAULT_MODEL = "fraud_model"
EPILOG = """examples:
  shipway demo                 the whole loop once, headless (about 3 minutes)
  shipway demo --model customer_spend
                               the same loop for another declared model
  shipway up                   Dagster, MLflow, Prometheus and serving until Ctrl-C
  shipway doctor               check what deploy/setup.sh installs
  shipway data quarantine      batches a data contract rejected, and why
  shipway data readmit raw_events@v3 --from fixed.parquet
                               land a fixed batch in place of a rejected one
  shipway models pending       releases waiting for a named approver
  shipway models approve fraud_model 4 --reason "reviewed the slice table"
                               approve one (identity: $SHIPWAY_IDENTITY or the OS user)
  shipway models lineage fraud_model 4
                               commit -> data -> features -> parameters -> gate -> approval
  shipway ci --changed-since origin/main
                               a change's checks, for the models it touches
  shipway models package fraud_model 4 --out dist
                               the signed package: bundle, runtime, lock, SBOM, lineage
  shipway rollout status fraud_model
                               phase, intended vs served weights, latest decisions
  shipway render seldon fraud_model
                               Seldon Core v2 Model + Experiment for what is served now
  shipway render alerts        Prometheus alert rules + tests from every model.yaml
state lives in $SHIPWAY_HOME (default: .shipway/ in the repository)"""


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of `shipway` (tests parse the CI recipes' commands with it)."""
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
        help="run the whole loop once: train v1, deploy, drift, sensor, retrain v2, roll it out",
        description="Runs headless on embedded defaults and exits 0 once the loop has closed. "
        "Starts from a clean $SHIPWAY_HOME unless --keep is given.",
    )
    demo.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a declared model (assets/*/model.yaml), default {DEFAULT_MODEL}",
    )
    demo.add_argument("--days", type=int, default=75, help="baseline days to land (75)")
    demo.add_argument("--drift-days", type=int, default=20, help="drifted days to land (20)")
    demo.add_argument("--events-per-day", type=int, default=2000, help="events per day (2000)")
    demo.add_argument("--traffic-rows", type=int, default=1200, help="rows per traffic phase")
    demo.add_argument("--keep", action="store_true", help="keep existing state in $SHIPWAY_HOME")
    demo.add_argument(
        "--bad-challenger",
        action="store_true",
        help="serve v2 with injected errors and latency, and watch its rollout roll it back",
    )

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

    sub.add_parser("doctor", help="check binaries, environments, the dbt manifest")

    data = sub.add_parser(
        "data",
        help="data contracts: land batches, inspect and re-admit quarantined ones, rebuild "
        "training sets",
        description="Every batch is audited by its contract (assets/contracts/ for raw events, "
        "assets/<model>/contracts/ for training sets); a rejected one stays in its Delta "
        "table, quarantined, until a fixed batch re-admits it.",
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    data_sub.add_parser("status", help="latest and accepted version of each dataset")
    data_sub.add_parser("quarantine", help="rejected batches, why, and whether re-admitted")
    show = data_sub.add_parser("show", help="one rejected batch: reasons and first rows")
    show.add_argument("batch", help="batch id, e.g. raw_events@v3")
    show.add_argument("--rows", type=int, default=10, help="rows to print (10)")
    export = data_sub.add_parser("export", help="write a rejected batch to Parquet to fix it")
    export.add_argument("batch", help="batch id, e.g. raw_events@v3")
    export.add_argument("path", type=Path, help="destination .parquet file")
    readmit = data_sub.add_parser(
        "readmit",
        help="land a rejected batch again: fixed (--from) or as it was, under a fixed contract",
    )
    readmit.add_argument("batch", help="batch id, e.g. raw_events@v3")
    readmit.add_argument("--from", dest="fixed", type=Path, help="the fixed batch (.parquet)")
    readmit.add_argument("--as-of", help="landing time for freshness (default: the original)")
    land = data_sub.add_parser("land", help="land a Parquet file of events through the contract")
    land.add_argument("path", type=Path, help="events .parquet (columns as raw_events)")
    land.add_argument("--as-of", default="", help="landing time (ISO, UTC; default: now)")
    rebuild = data_sub.add_parser(
        "rebuild-training-set",
        help="rebuild a training set from its recorded input versions and compare digests",
    )
    rebuild.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"whose training set (default {DEFAULT_MODEL})"
    )
    rebuild.add_argument("--version", type=int, help="its version (default: latest)")

    models = sub.add_parser(
        "models",
        help="releases: pending approvals, approve/reject, audit history, lineage, reproduce",
        description="Every gate verdict, approval, rejection and reproduction is appended to "
        "the release audit (Delta table release_audit in $SHIPWAY_HOME). Talks to the MLflow "
        "server at $MLFLOW_TRACKING_URI (default http://127.0.0.1:5000, as `shipway up`).",
    )
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pending = models_sub.add_parser("pending", help="versions whose release awaits approval")
    pending.add_argument("model", nargs="?", help="only this model")
    for action, text in (
        ("approve", "approve a release awaiting approval; its release sensor deploys it"),
        ("reject", "reject a release awaiting approval (final)"),
    ):
        decision = models_sub.add_parser(action, help=text)
        decision.add_argument("model")
        decision.add_argument("version")
        decision.add_argument("--reason", required=True, help="why, for the audit trail")
    history = models_sub.add_parser("history", help="the model's audit trail, oldest first")
    history.add_argument("model")
    lineage = models_sub.add_parser(
        "lineage", help="commit, data versions, features, parameters, gate report, approval"
    )
    lineage.add_argument("model")
    lineage.add_argument("version")
    reproduce = models_sub.add_parser(
        "reproduce",
        help="retrain a version from its recorded training set (time travel) with the "
        "repository as it is now, and compare the artifact hash",
    )
    reproduce.add_argument("model")
    reproduce.add_argument("version")
    package = models_sub.add_parser(
        "package",
        help="write a version's signed package: bundle, runtime, environment lock, SBOM, "
        "lineage, Dockerfile, manifest of digests",
        description="Signs with the Ed25519 key in $SHIPWAY_SIGNING_KEY_FILE (a file outside "
        "the repository) or $SHIPWAY_SIGNING_KEY (base64, e.g. from CI secrets). The key is "
        "never printed.",
    )
    package.add_argument("model")
    package.add_argument("version")
    package.add_argument(
        "--out", type=Path, default=Path("dist"), help="folder for <model>-<version>/ (dist)"
    )
    verify = models_sub.add_parser(
        "verify",
        help="check a package's signature and every file's digest (exit 1 if refused)",
        description="Verifies with the public key in $SHIPWAY_VERIFY_KEY_FILE or "
        "$SHIPWAY_VERIFY_KEY.",
    )
    verify.add_argument("package", type=Path)

    ci = sub.add_parser(
        "ci",
        help="CI for a model change: static checks, feature tests, the sample's contract, a "
        "smoke build, training and gates, reproducibility, lock files",
        description="Runs the steps for the models the change touches (the files changed "
        "since the merge base of REF and HEAD, or --model), in order, stopping at the first "
        "failure with its reason. Writes junit.xml and summary.md (for a PR comment) to "
        "--report-dir. Exit 0 passed, 1 failed.",
    )
    ci.add_argument(
        "--changed-since",
        default="HEAD",
        metavar="REF",
        help="what the change is measured against (HEAD: uncommitted work; a PR: its base)",
    )
    ci.add_argument(
        "--model", action="append", default=[], help="check this model whatever changed"
    )
    ci.add_argument(
        "--report-dir", type=Path, default=Path("ci-report"), help="reports (ci-report/)"
    )
    ci.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="STEP",
        help='leave out steps whose name starts with this (e.g. "static checks")',
    )

    keys = sub.add_parser("keys", help="signing keys for model packages")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = keys_sub.add_parser(
        "generate",
        help="a new Ed25519 signing key in a file (mode 0600, outside the repository); prints "
        "the public key for $SHIPWAY_VERIFY_KEY",
    )
    generate.add_argument("--out", type=Path, required=True, help="the private key's file")

    rollout = sub.add_parser(
        "rollout",
        help="a model's rollout: status, pause, resume, promote now, abort (roll back now)",
        description="The rollout sensor (<model>_rollout_sensor) moves a released version "
        "through shadow and canary steps on Prometheus' analysis. These commands act through "
        "the same controller, under the same lock, and append to the release audit. They find "
        "serving through $SHIPWAY_CONTROL_URL / $SHIPWAY_SERVING_TOKEN or the endpoint file "
        "`shipway up` writes in $SHIPWAY_HOME.",
    )
    rollout_sub = rollout.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    rollout_status = rollout_sub.add_parser("status", help="phase, weights, latest decisions")
    rollout_status.add_argument("model")
    for action, text in (
        ("pause", "stop at the current step (traffic stays as it is)"),
        ("resume", "continue a paused rollout"),
        ("promote", "make the challenger the champion now, skipping the remaining steps"),
        ("abort", "roll back now: the champion takes all traffic, the challenger stops"),
    ):
        acting = rollout_sub.add_parser(action, help=text)
        acting.add_argument("model")
        acting.add_argument("--reason", required=True, help="why, for the audit trail")

    render = sub.add_parser(
        "render",
        help="write deployment manifests for a cluster: Seldon Core v2 Model and Experiment",
        description="Renders what the model serves now (its rollout's current point: weights, "
        "and the mirror in shadow) as Seldon Core v2 manifests, checked against "
        "deploy/seldon/schemas/. Upload each version's bundle ($SHIPWAY_HOME/serving/<model>/"
        "<version>/) to the storage URI, then `kubectl apply -f` the folder.",
    )
    render_sub = render.add_subparsers(dest="render_target", required=True, metavar="TARGET")
    render_seldon = render_sub.add_parser("seldon", help="Seldon Core v2 Model + Experiment")
    render_seldon.add_argument("model")
    render_seldon.add_argument(
        "--out", type=Path, help="folder to write (default: deploy/seldon/<model>/)"
    )
    render_seldon.add_argument(
        "--storage",
        default=os.environ.get("SHIPWAY_SELDON_STORAGE", "s3://shipway-models/{model}/{version}"),
        help="storage URI template of a version's bundle, with {model} and {version} "
        "(default $SHIPWAY_SELDON_STORAGE or s3://shipway-models/{model}/{version})",
    )
    render_seldon.add_argument("--namespace", default="default", help="Kubernetes namespace")
    render_alerts = render_sub.add_parser(
        "alerts",
        help="Prometheus alert rules and their promtool tests, from each model's declaration",
        description="Writes deploy/prometheus/rules/<model>.yml and "
        "deploy/prometheus/tests/<model>_rules_test.yml for every declared model (or --model): "
        "drift, error rate, latency, live quality, missing traffic, a stale prediction log, "
        "each with the limit its model.yaml declares. Commit them: a test checks they are "
        "current.",
    )
    render_alerts.add_argument("--model", help="one declared model (default: all)")
    render_dashboards = render_sub.add_parser(
        "dashboards",
        help="Grafana dashboards (deploy/grafana/<model>.json) from each model's declaration",
    )
    render_dashboards.add_argument("--model", help="one declared model (default: all)")
    dashboards = sub.add_parser(
        "dashboards",
        help="Grafana dashboards: push deploy/grafana/*.json to the Grafana of $GRAFANA_URL",
        description="Pushes every model's dashboard (rendered from its declaration) to Grafana "
        "with grafana-client: $GRAFANA_URL, and $GRAFANA_TOKEN (a service account token with "
        "dashboard write access; never printed).",
    )
    dashboards_sub = dashboards.add_subparsers(
        dest="dashboards_command", required=True, metavar="ACTION"
    )
    push = dashboards_sub.add_parser("push", help="create or update each model's dashboard")
    push.add_argument("--model", help="one declared model (default: all)")
    push.add_argument("--folder", help="Grafana folder uid (default: General)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        if args.command == "data":
            return _data(args)
        if args.command == "models":
            return _models(args)
        if args.command == "rollout":
            return _rollout(args)
        if args.command == "render":
            return _render(args)
        if args.command == "dashboards":
            return _push_dashboards(args.model, args.folder)
        if args.command == "keys":
            return _keys(args)
        if args.command == "ci":
            return _ci(args)
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
        bad_challenger=args.bad_challenger,
    )
    run_demo(ShipwayHome.from_env(), config, args.model, keep=args.keep)
    return 0


def _up(args: argparse.Namespace) -> int:
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
    with running_stack(home, ports, with_dagster=True) as stack:
        print(
            f"  Dagster UI  {stack.dagster_url}\n"
            f"  MLflow      {stack.mlflow_url}\n"
            f"  Prometheus  {stack.prometheus_url}\n"
            f"  serving     {stack.serving_url}/v2/models/<model>/infer (Envoy)\n"
            f"  Envoy stats http://{stack.dataplane.metrics_target}/stats/prometheus\n"
            f"  control     {stack.control_url}/admin/models "
            "(changes need $SHIPWAY_SERVING_TOKEN)\n"
            f"  features    {stack.features_url}/get-online-features, "
            f"{stack.features_url}/score/<model>\n"
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
    from shipway.serving.dataplane import DataPlane

    app = create_app(
        args.root, DataPlane(args.dataplane_dir), args.log_dir, args.targets_dir, args.lake_dir
    )
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")
    return 0


def _data(args: argparse.Namespace) -> int:
    from shipway.data import commands as data

    home = ShipwayHome.from_env()
    action = args.data_command
    if action == "status":
        print("\n".join(data.status_lines(home, _training_sets())))
    elif action == "quarantine":
        print("\n".join(data.quarantine_lines(home)))
    elif action == "show":
        print("\n".join(data.show_lines(home, args.batch, args.rows)))
    elif action == "export":
        rows = data.export(home, args.batch, args.path)
        print(f"wrote {rows} rows of {args.batch} to {args.path}")
    elif action in ("readmit", "land"):
        if action == "readmit":
            outcome = data.readmit(home, args.batch, args.fixed, args.as_of)
        else:
            if not args.path.is_file():
                raise ShipwayError(f"{args.path} not found: give a Parquet file of events")
            outcome = data.land(home, {"from_file": str(args.path), "as_of": args.as_of})
        print("\n".join(outcome.gate_lines))
        if outcome.admission is None:
            raise ShipwayError("the contract did not run; see the Dagster run log")
        verdict = "accepted and published to raw_events" if outcome.accepted else "rejected"
        print(f"{outcome.admission.id}: {verdict}")
        return 0 if outcome.accepted else 1
    else:
        return _rebuild(home, args.model, args.version)
    return 0


def _models(args: argparse.Namespace) -> int:
    from shipway.release import commands

    home = ShipwayHome.from_env()
    uri = commands.tracking_uri()
    action = args.models_command
    if action == "pending":
        print("\n".join(commands.pending_lines(home, args.model)))
    elif action in ("approve", "reject"):
        print(
            commands.decide(home, uri, args.model, args.version, action == "approve", args.reason)
        )
    elif action == "history":
        print("\n".join(commands.history_lines(home, args.model)))
    elif action == "lineage":
        print("\n".join(commands.lineage_lines(home, uri, args.model, args.version)))
    elif action == "package":
        built = commands.package_version(home, uri, _declared(args.model), args.version, args.out)
        print(
            f"{built.model} v{built.version}: {built.path} ({len(built.manifest['files'])} files, "
            f"signed by key {built.key_id})"
        )
    elif action == "verify":
        from shipway.serving.package import PackageError, verify_key, verify_package

        public = verify_key()
        if public is None:
            raise ShipwayError(
                "no verifying key: set $SHIPWAY_VERIFY_KEY_FILE or $SHIPWAY_VERIFY_KEY"
            )
        try:
            checked = verify_package(args.package, public)
        except PackageError as exc:
            print(f"REFUSED: {exc}", file=sys.stderr)
            return 1
        print(
            f"verified: {checked.model} v{checked.version}, "
            f"{len(checked.manifest['files'])} files, signed by key {checked.key_id}"
        )
    else:
        result, lines = commands.reproduce_version(
            home, uri, _declared(args.model), args.version, lambda line: print(f"  {line}")
        )
        print("\n".join(lines))
        return 0 if result.result.identical else 1
    return 0


def _ci(args: argparse.Namespace) -> int:
    from shipway import ci

    if args.model:
        for name in args.model:
            _declared(name)
        plan = ci.Plan([], list(args.model), {m: ["named with --model"] for m in args.model}, True)
    else:
        plan = ci.plan(ci.changed_files(args.changed_since))
    started = time.perf_counter()
    for model in plan.models:
        print(f"{model}: {'; '.join(plan.reasons[model])}", flush=True)
    report = ci.run_ci(
        plan, args.report_dir, lambda line: print(line, flush=True), frozenset(args.skip)
    )
    verdict = "passed" if report.passed else "FAILED"
    print(
        f"shipway ci {verdict} in {time.perf_counter() - started:.1f}s; "
        f"{args.report_dir}/junit.xml, {args.report_dir}/summary.md"
    )
    return 0 if report.passed else 1


def _keys(args: argparse.Namespace) -> int:
    from shipway.serving.package import VERIFY_KEY_ENV, generate_key, key_id, public_key_text

    public = generate_key(args.out)
    print(f"signing key {key_id(public)} written to {args.out} (mode 0600); keep it out of git")
    print(f"{VERIFY_KEY_ENV}={public_key_text(public)}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from shipway.rollout import commands

    home = ShipwayHome.from_env()
    declared = _declared(args.model)
    if args.rollout_command != "status":
        state = commands.command(home, declared, args.rollout_command, args.reason)
        print(f"{args.model} v{state.challenger}: {state.decisions[-1]['reason']}")
    print("\n".join(commands.status_lines(home, declared)))
    return 0


def _render(args: argparse.Namespace) -> int:
    from shipway.paths import DEPLOY_DIR
    from shipway.rollout import commands

    if args.render_target == "alerts":
        return _render_alerts(args.model)
    if args.render_target == "dashboards":
        from shipway.monitoring import dashboards

        for declared in [_declared(args.model)] if args.model else _declared_models():
            print(f"wrote {dashboards.write(declared.declaration)}")
        return 0

    out = args.out or DEPLOY_DIR / "seldon" / args.model
    written = commands.render_seldon(
        ShipwayHome.from_env(), _declared(args.model), out, args.storage, args.namespace
    )
    for path in written:
        print(f"wrote {path}")
    print(f"apply with: kubectl apply -n {args.namespace} -f {out}")
    return 0


def _push_dashboards(model: str | None, folder: str | None) -> int:
    from shipway.monitoring import dashboards

    chosen = [_declared(model)] if model else _declared_models()
    urls = dashboards.push([dashboards.dashboard(d.declaration) for d in chosen], folder)
    for declared, url in zip(chosen, urls, strict=True):
        print(f"pushed {declared.declaration.name}: {url}")
    return 0


def _declared_models() -> list[DeclaredModel]:
    from assets.definitions import models  # the code location, imported only when needed

    return models


def _render_alerts(model: str | None) -> int:
    from shipway.monitoring import alerts
    from shipway.monitoring.prometheus import PROMETHEUS_CONFIG_DIR
    from shipway.paths import REPO_ROOT

    chosen = [_declared(model)] if model else _declared_models()
    for declared in chosen:
        source = declared.path.relative_to(REPO_ROOT)
        for path in alerts.write(declared.declaration, str(source), PROMETHEUS_CONFIG_DIR):
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    if not model:
        from shipway.features.service import repository
        from shipway.paths import FEATURE_REPO_DIR

        rendered = alerts.render_features(
            repository().freshness, str(FEATURE_REPO_DIR.relative_to(REPO_ROOT))
        )
        for path in alerts.write_files(rendered, PROMETHEUS_CONFIG_DIR):
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    print("check with: promtool test rules deploy/prometheus/tests/*_rules_test.yml")
    return 0


def _declared(model: str) -> DeclaredModel:
    from shipway.models.catalog import declared_model

    return declared_model(_declared_models(), model)


def _training_sets() -> list[str]:
    from assets.definitions import models

    return [m.declaration.training_set for m in models]


def _rebuild(home: ShipwayHome, model: str, version: int | None) -> int:
    from shipway.features.training_sets import rebuild

    declared = _declared(model)
    table = declared.declaration.training_set
    result = rebuild(
        home, table, declared.label_rules, version, lambda line: print(f"  {line}", flush=True)
    )
    inputs = ", ".join(f"{t} v{v}" for t, v in result.inputs.versions.items())
    print(f"{table} v{result.version} from {inputs} ({result.inputs.feature_service})")
    print(f"  recorded digest {result.recorded_digest}")
    print(f"  rebuilt digest  {result.rebuilt_digest} ({result.rows} rows)")
    print("identical" if result.identical else "DIFFERENT: the training set is not reproducible")
    return 0 if result.identical else 1


def _doctor() -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
