"""`shipway models`: releases (pending, approve, reject, history, lineage, reproduce), signed
packages (package, verify) and model cards (card)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shipway.cli.catalog import model_named
from shipway.errors import ShipwayError
from shipway.paths import ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    models = sub.add_parser(
        "models",
        help="releases: pending approvals, approve/reject, audit history, lineage, reproduce, "
        "signed packages, model cards",
        description="Every gate verdict, approval, rejection and reproduction is appended to "
        "the release audit (Delta table release_audit in $SHIPWAY_HOME). Talks to the MLflow "
        "server at $MLFLOW_TRACKING_URI (default http://127.0.0.1:5000, as `shipway up`) as "
        "$MLFLOW_TRACKING_USERNAME, else as the platform (credentials in $SHIPWAY_HOME).",
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
    card = models_sub.add_parser(
        "card",
        help="write a version's model card (Markdown and JSON) and log it to its MLflow run",
        description="The card gathers the declaration's owner, intended use and limitations "
        "(card: in model.yaml), the run's lineage and validation metrics, the gate's report "
        "(metrics with intervals, slices, fairness, explanations, business cost), the release "
        "audit's decisions and the quality estimator. Every signed package carries it too.",
    )
    card.add_argument("model")
    card.add_argument("version")
    card.add_argument(
        "--out",
        type=Path,
        default=Path("dist") / "cards",
        help="folder for <model>-<version>-card.md and -card.json (dist/cards)",
    )
    verify = models_sub.add_parser(
        "verify",
        help="check a package's signature and every file's digest (exit 1 if refused)",
        description="Verifies with the public key in $SHIPWAY_VERIFY_KEY_FILE or "
        "$SHIPWAY_VERIFY_KEY.",
    )
    verify.add_argument("package", type=Path)

    models.set_defaults(run=_models)


def _models(args: argparse.Namespace) -> int:
    from shipway.models.tracking import use_platform_credentials
    from shipway.release import commands

    home = ShipwayHome.from_env()
    use_platform_credentials(home)
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
        built = commands.package_version(home, uri, model_named(args.model), args.version, args.out)
        print(
            f"{built.model} v{built.version}: {built.path} ({len(built.manifest['files'])} files, "
            f"signed by key {built.key_id})"
        )
    elif action == "card":
        from shipway.release.card import log_card, write_card

        made = commands.version_card(home, uri, model_named(args.model), args.version)
        for path in write_card(made, args.out):
            print(f"wrote {path}")
        # Written first: a user who may not write to MLflow still gets the card.
        log_card(uri, made)
        verdict = made.release["verdict"] if made.release else "never gated"
        print(
            f"{made.model} v{made.version}: release {verdict}; logged to MLflow run "
            f"{made.lineage['mlflow_run_id']} (card/)"
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
            home, uri, model_named(args.model), args.version, lambda line: print(f"  {line}")
        )
        print("\n".join(lines))
        return 0 if result.result.identical else 1
    return 0
