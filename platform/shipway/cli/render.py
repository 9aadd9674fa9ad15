"""`shipway render` (Seldon Core manifests, Prometheus alerts, Grafana dashboards, from each
model's declaration) and `shipway dashboards push`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shipway.cli.catalog import declared_models, model_named
from shipway.paths import ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
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
    render.set_defaults(run=_render)
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
    push.set_defaults(run=lambda args: _push_dashboards(args.model, args.folder))


def _render(args: argparse.Namespace) -> int:
    from shipway.paths import DEPLOY_DIR
    from shipway.rollout import commands

    if args.render_target == "alerts":
        return _render_alerts(args.model)
    if args.render_target == "dashboards":
        from shipway.monitoring import dashboards

        for declared in [model_named(args.model)] if args.model else declared_models():
            print(f"wrote {dashboards.write(declared.declaration)}")
        return 0

    out = args.out or DEPLOY_DIR / "seldon" / args.model
    written = commands.render_seldon(
        ShipwayHome.from_env(), model_named(args.model), out, args.storage, args.namespace
    )
    for path in written:
        print(f"wrote {path}")
    print(f"apply with: kubectl apply -n {args.namespace} -f {out}")
    return 0


def _push_dashboards(model: str | None, folder: str | None) -> int:
    from shipway.monitoring import dashboards

    chosen = [model_named(model)] if model else declared_models()
    urls = dashboards.push([dashboards.dashboard(d.declaration) for d in chosen], folder)
    for declared, url in zip(chosen, urls, strict=True):
        print(f"pushed {declared.declaration.name}: {url}")
    return 0


def _render_alerts(model: str | None) -> int:
    from shipway.monitoring import alerts
    from shipway.monitoring.prometheus import PROMETHEUS_CONFIG_DIR
    from shipway.paths import REPO_ROOT

    chosen = [model_named(model)] if model else declared_models()
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
