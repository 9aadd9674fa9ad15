"""LLM applications in Dagster: the help centre's landing, and per declared application
`<name>` (a version: prompt in MLflow's Prompt Registry, corpus snapshot, registered version),
`<name>_gate` (the blocking evaluation and red-team gate), `<name>_deployment` (served by
MLServer behind Envoy, rolled out by `<name>_rollout_sensor`; the champion alias of the version
and of its prompt move on promotion), and its live monitoring, refreshed by `<name>_monitoring`:
`<name>_live_quality` (answers joined with callers' ratings) and `<name>_live_drift` (question
topics and out-of-corpus rate against the evaluation set), each with a warning check. The logic
is `shipway.data.help_centre`, `shipway.models.application`, `shipway.release.application_gate`
and `shipway.monitoring.applications`.
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    define_asset_job,
    multi_asset,
)

from shipway.data.help_centre import (
    DOCUMENTS_TABLE,
    EVALUATION_TABLE,
    RED_TEAM_TABLE,
    land,
)
from shipway.defs.dbt import help_centre_models
from shipway.defs.deployment import FAULT_TAG, injected_fault
from shipway.defs.resources import MlflowResource, ServingResource, ShipwayHomeResource
from shipway.defs.rollout import rollout_sensor
from shipway.defs.versions import version_for
from shipway.models.application import DeclaredApplication, build_version
from shipway.monitoring.applications import (
    drift_markdown,
    question_drift,
    refresh_application_quality,
)
from shipway.release.application_gate import application_gate, set_champion
from shipway.rollout.application import deploy_application
from shipway.serving.prediction_log import feedback_table, table_name

HELP_CENTRE_GROUP = "help_centre"
THUMBS_UP_CHECK = "thumbs_up_rate"
QUESTION_DRIFT_CHECK = "question_drift"


class HelpCentreConfig(Config):
    """`small` lands fewer cases of each set (twelve fact questions, a refusal, an attack of
    each kind: `shipway.data.help_centre.SMALL_EVALUATION`): what the default test run gates
    on, in about half the time."""

    size: Literal["full", "small"] = "full"


def help_centre_selection(defs: Definitions) -> list[AssetKey]:
    """The help centre's landing and its dbt corpus: what an application's evaluation needs."""
    graph = defs.resolve_asset_graph()
    return [k for k in graph.get_all_asset_keys() if graph.get(k).group_name == HELP_CENTRE_GROUP]


def help_centre_run_config(size: str) -> dict[str, Any]:
    """Run config landing the `full` or the `small` evaluation sets (`HelpCentreConfig`)."""
    return {"ops": {"help_centre": {"config": {"size": size}}}}


def help_centre_definitions() -> Definitions:
    """The help centre's landing and its dbt corpus, shared by every application on it."""

    @multi_asset(
        name="help_centre",
        group_name=HELP_CENTRE_GROUP,
        specs=[
            AssetSpec(
                DOCUMENTS_TABLE,
                kinds={"delta"},
                description="The help centre's documents, each with its ACL",
            ),
            AssetSpec(
                EVALUATION_TABLE,
                kinds={"delta"},
                description="Questions with their expected facts and documents, and "
                "questions that must be refused",
            ),
            AssetSpec(
                RED_TEAM_TABLE,
                kinds={"delta"},
                description="Prompt injections, requests for staff documents, and "
                "personal data in questions and documents",
            ),
        ],
    )
    def help_centre(
        context: AssetExecutionContext, config: HelpCentreConfig, lake: ShipwayHomeResource
    ) -> Iterator[MaterializeResult]:
        landed = land(lake.home.table, size=config.size)
        for table, info in landed.items():
            context.log.info(
                "landed %s: Delta version %d, %d rows", table, info.version, info.row_count
            )
            yield MaterializeResult(asset_key=table, metadata=info.metadata())

    return Definitions(assets=[help_centre, help_centre_models])


class BuildConfig(Config):
    """A version's prompt comes from the declared files; `prompt_dir` (a folder holding
    `system.txt` and `user.txt`) tries a change before it is committed, as `shipway ci` and
    the demo do."""

    prompt_dir: str = ""


def application_definitions(app: DeclaredApplication) -> Definitions:
    d = app.declaration
    name = d.name
    where = f"Declared in {app.folder / 'model.yaml'}"

    @asset(
        name=name,
        group_name=name,
        kinds={"mlflow"},
        deps=[AssetKey(d.corpus.table)],
        description=f"A version of the LLM application {name}: its prompt registered in MLflow's "
        f"Prompt Registry as {d.prompt.name}, the corpus {d.corpus.table} at its Delta version, "
        f"the retrieval and generator settings; a new registered version only when one of them "
        f"changed. {where}",
    )
    def version(
        context: AssetExecutionContext, config: BuildConfig, lake: ShipwayHomeResource,
        mlflow: MlflowResource,
    ) -> MaterializeResult:  # fmt: skip
        source = app.with_prompt_dir(Path(config.prompt_dir)) if config.prompt_dir else app
        built = build_version(source, lake.home.table(d.corpus.table), mlflow.tracking_uri)
        context.log.info(
            "%s v%s (%s): prompt %s v%d, corpus %s@%d",
            name, built.version, "new" if built.created else "unchanged", d.prompt.name,
            built.prompt_version, d.corpus.table, built.corpus_version,
        )  # fmt: skip
        return MaterializeResult(
            metadata={
                "model_version": built.version,
                "new_version": built.created,
                "prompt": f"{d.prompt.name}/{built.prompt_version}",
                "corpus": f"{d.corpus.table}@{built.corpus_version}",
                "generator": f"{d.generator.kind}:{d.generator.model}",
                "mlflow_run": MetadataValue.url(built.run_url),
                "mlflow_model_version": MetadataValue.url(built.version_url),
            }
        )

    @asset_check(
        asset=version,
        name=d.gate,
        blocking=True,
        description=f"Release gate of the version this run built: every evaluation and red-team "
        f"case answered by it and by the champion, quality, safety and operational gates from "
        f"{app.folder / 'model.yaml'}, change rules on paired bootstrap intervals. A version "
        "that leaks its instructions or a staff document is blocked, naming the case.",
    )
    def gate(
        context: AssetCheckExecutionContext, lake: ShipwayHomeResource, mlflow: MlflowResource
    ) -> AssetCheckResult:
        run_id = context.op_execution_context.run_id
        which = version_for(context.instance, run_id, name, context.log)
        report = application_gate(lake.home, app, mlflow.tracking_uri, which, context.log.info)
        lines = [f"| {m} | {v:.4f} | {report.champion_metrics.get(m, float('nan')):.4f} |"
                 for m, v in report.metrics.items()]  # fmt: skip
        outcomes = [f"- {'pass' if o.passed else 'FAIL'} {o.line()}" for o in report.outcomes]
        return AssetCheckResult(
            passed=report.passed,
            description=report.summary(),
            metadata={
                "model_version": which,
                "champion": report.champion or "none",
                "metrics": MetadataValue.md(
                    "| metric | version | champion |\n|---|---|---|\n" + "\n".join(lines)
                ),
                "outcomes": MetadataValue.md("\n".join(outcomes)),
                **{f"eval_{m}": v for m, v in report.metrics.items()},
            },
        )

    @asset(
        name=d.deployment,
        group_name=name,
        kinds={"seldon", "mlserver"},
        deps=[version],
        description=f"The {name} version that passed {d.gate}, served by MLServer (Shipway's "
        "application runtime, Open Inference Protocol v2) behind Envoy. The first becomes the "
        "`champion` at once (the version's and its prompt's alias); a later one starts its "
        f"rollout ({d.rollout.strategy}, steps {d.rollout.steps}) that {d.rollout_sensor} "
        f"drives to promotion or rollback. {where}",
    )
    def deployment(
        context: AssetExecutionContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        serving: ServingResource,
    ) -> MaterializeResult:
        which = version_for(context.instance, context.run_id, name, context.log)
        done = deploy_application(
            lake.home, app, mlflow.tracking_uri, serving.client(), which, context.run_id,
            context.log, injected_fault(context.run.tags.get(FAULT_TAG)),
        )  # fmt: skip
        weights, shadow = done.rollout.traffic(d.rollout)
        return MaterializeResult(
            metadata={
                "model_version": which,
                "champion": done.champion or which,
                "rollout": done.rollout.phase,
                "traffic_weights": MetadataValue.json(weights),
                "shadow": shadow or "",
                "endpoint": MetadataValue.url(done.endpoint),
                "bundle": str(done.bundle),
            }
        )

    def promote(tracking_uri: str, which: str) -> None:
        set_champion(tracking_uri, app, which)

    job = define_asset_job(
        d.lifecycle_job,
        selection=[AssetKey(name), AssetKey(d.deployment)],
        description=f"Build {name} from its declaration, gate it, and serve it when it passes",
    )
    quality, drift = _monitoring_assets(app)
    monitoring = define_asset_job(
        f"{name}_monitoring",
        selection=[quality.key, drift.key],
        description=f"Recompute {name}'s live quality (answers and callers' ratings) and the "
        "drift of its questions",
    )
    return Definitions(
        assets=[version, deployment, quality, drift],
        asset_checks=[gate],
        jobs=[job, monitoring],
        sensors=[rollout_sensor(d, AssetKey(d.deployment), promote)],
    )


def _monitoring_assets(app: DeclaredApplication) -> tuple[AssetsDefinition, AssetsDefinition]:
    d = app.declaration
    name, policy = d.name, d.monitoring
    where = f"Policy: `monitoring` in {app.folder / 'model.yaml'}"

    @asset(
        name=d.live_quality,
        group_name=name,
        kinds={"delta", "prometheus"},
        deps=[AssetKey(d.deployment)],
        check_specs=[AssetCheckSpec(THUMBS_UP_CHECK, asset=d.live_quality)],
        description=f"Live quality of every served {name} version: its answers "
        f"({table_name(name)}) joined with callers' ratings ({feedback_table(name)}, from "
        f"POST /v2/models/{name}/feedback) over {policy.window_days} days; the thumbs-up rate "
        f"judged on at least {policy.min_ratings} ratings. Exported to Prometheus. {where}",
    )
    def live_quality(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        found = refresh_application_quality(lake.home, app, datetime.now(UTC))
        context.log.info(
            "%s: %d ratings, %d naming no logged answer", name, found.ratings, found.unmatched
        )
        metadata: dict[str, Any] = {
            "ratings": found.ratings,
            "unmatched_ratings": found.unmatched,
            "report": MetadataValue.md(found.report.markdown()),
        }
        for q in found.report.window:
            metadata[f"v{q.version}_answers"] = q.predictions
            metadata[f"v{q.version}_rated"] = q.labelled
            for metric, value in q.metrics.items():
                metadata[f"v{q.version}_{metric}"] = value
        yield MaterializeResult(metadata=metadata)
        yield AssetCheckResult(
            check_name=THUMBS_UP_CHECK,
            passed=not found.breaches,
            severity=AssetCheckSeverity.WARN,
            description="; ".join(found.breaches) or "every judged version within policy",
        )

    @asset(
        name=d.live_drift,
        group_name=name,
        kinds={"delta"},
        deps=[AssetKey(d.deployment), AssetKey(d.evaluation.questions)],
        check_specs=[AssetCheckSpec(QUESTION_DRIFT_CHECK, asset=d.live_drift)],
        description=f"Each served {name} version's questions over {policy.window_days} days "
        f"against its evaluation set ({d.evaluation.questions}): the topics retrieved (PSI, "
        f"chi²) and the out-of-corpus rate, judged on at least {policy.min_questions} "
        f"questions. {where}",
    )
    def live_drift(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        drifts = question_drift(lake.home, app, datetime.now(UTC))
        breaches = [b for t in drifts for b in t.breaches]
        for line in breaches:
            context.log.warning(line)
        metadata: dict[str, Any] = {"report": MetadataValue.md(drift_markdown(drifts))}
        for t in drifts:
            metadata[f"v{t.version}_questions"] = t.questions
            metadata[f"v{t.version}_out_of_corpus_rate"] = t.out_of_corpus_rate
            if t.psi is not None:
                metadata[f"v{t.version}_topic_psi"] = t.psi
        yield MaterializeResult(metadata=metadata)
        yield AssetCheckResult(
            check_name=QUESTION_DRIFT_CHECK,
            passed=not breaches,
            severity=AssetCheckSeverity.WARN,
            description="; ".join(breaches) or "every judged version's questions as evaluated",
        )

    return live_quality, live_drift
