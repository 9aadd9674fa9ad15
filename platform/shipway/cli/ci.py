"""`shipway ci`: what runs when someone pushes a change to a model (`shipway.ci`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shipway.cli.catalog import model_named


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    ci = sub.add_parser(
        "ci",
        help="CI for a model change: static checks, feature tests, the sample's contract, a "
        "smoke build, training and gates, reproducibility, lock files; for an LLM application, "
        "its evaluation and red-team gates against the prompt at REF",
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

    ci.set_defaults(run=_ci)


def _ci(args: argparse.Namespace) -> int:
    from shipway import ci

    if args.model:
        from shipway.models.catalog import application_files, load_application
        from shipway.paths import ASSETS_DIR

        apps = {load_application(p).name for p in application_files(ASSETS_DIR)}
        models = [m for m in args.model if m not in apps]
        for name in models:
            model_named(name)
        plan = ci.Plan(
            [], models, {m: ["named with --model"] for m in args.model}, True,
            applications=[m for m in args.model if m in apps], since=args.changed_since,
        )  # fmt: skip
    else:
        plan = ci.plan(ci.changed_files(args.changed_since), since=args.changed_since)
        if any(p.startswith(ci.VERSIONED_SOURCES) for p in plan.changed):
            from shipway.models.catalog import load_models
            from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT

            services: dict[str, list[str]] = {}
            for m in load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT):
                services.setdefault(m.declaration.feature_service, []).append(m.name)
            for line in ci.feature_version_changes(args.changed_since, services) or [
                "no feature version changes: every served model keeps its features"
            ]:
                print(line, flush=True)
    started = time.perf_counter()
    for model in [*plan.models, *plan.applications]:
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
