"""A declared model's training in Dagster: `<model>_training_set` with its contract's blocking
checks, `<model>` (XGBoost, registered in MLflow) and `<model>_gate`, the blocking release gate
on the version its run trained. The logic is `shipway.features.training_sets`,
`shipway.models.training` and `shipway.release.gate`.
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from shipway.data.admission import accepted_reference
from shipway.data.contracts import Contract, load_contract
from shipway.data.gates import Reference
from shipway.defs.contracts import contract_checks
from shipway.defs.features import FEATURE_VERSIONS, FEATURE_VIEWS
from shipway.defs.resources import DaskResource, MlflowResource, ShipwayHomeResource
from shipway.defs.versions import version_for
from shipway.features.training_sets import TrainingSetInputs, accepted_version, build, write
from shipway.features.version_store import built_home
from shipway.features.versions import current_version
from shipway.models.catalog import DeclaredModel
from shipway.models.tracking import registered_run_url
from shipway.models.training import OnDask, log_and_register, train
from shipway.paths import ShipwayHome
from shipway.release.gate import release_gate
from shipway.release.report import AWAITING_APPROVAL, PROMOTED


def training_definitions(model: DeclaredModel) -> Definitions:
    """The model's training set (and its contract's checks), the model and its gate."""
    declaration = model.declaration
    name = declaration.name
    rules = model.label_rules
    training_set_contract = model.training_set_contract
    retention_days = load_contract(training_set_contract).retention_days
    where = f"Declared in {model.path}"

    @asset(
        name=declaration.training_set,
        group_name=name,
        kinds={"feast", "delta"},
        deps=[
            AssetKey(declaration.label.table),
            AssetKey(FEATURE_VIEWS),
            AssetKey(FEATURE_VERSIONS),
            *[AssetKey(t) for t in model.service.tables],
        ],
        description=f"Rows of {declaration.label.table} with a matured label "
        f"`{declaration.label.column}`, joined point-in-time with feature service "
        f"{declaration.feature_service} (each row sees only features known before it), written "
        f"to Delta with the versions of every input. Contract: {training_set_contract}. {where}",
    )
    def training_set(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> MaterializeResult:
        home = lake.home
        version = current_version(home, model.service.name)
        features = built_home(home, version.digest)
        inputs = TrainingSetInputs.current(features, rules, model.service, version.digest)
        context.log.info(
            "%s: trained on features %s (%s)",
            declaration.training_set,
            version.digest,
            model.service.name,
        )
        frame, derived = build(features, rules, inputs, context.log.info)
        info = write(home, declaration.training_set, frame, inputs, derived, retention_days)
        label = frame[declaration.label.column]
        return MaterializeResult(
            metadata={
                **info.metadata(),
                **inputs.lineage(),
                **derived,
                "label_mean": float(label.mean()) if len(label) else 0.0,
                "preview": MetadataValue.md(frame.head(5).to_markdown(index=False)),
            }
        )

    def reference(home: ShipwayHome, current: Contract) -> Reference | None:
        return accepted_reference(home, declaration.training_set, current)

    training_set_checks = contract_checks(
        AssetKey(declaration.training_set),
        training_set_contract,
        declaration.training_set,
        reference,
    )

    @asset(
        name=name,
        group_name=name,
        kinds={"xgboost", "mlflow"},
        deps=[training_set],
        description=f"{declaration.description or name} ({declaration.problem}, owner "
        f"{declaration.owner}). XGBoost trained on the newest accepted training set with a "
        f"time-based split; every run tracked and registered in MLflow as {name}. {where}",
    )
    def trained_model(
        context: AssetExecutionContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        dask: DaskResource,
    ) -> MaterializeResult:
        found = accepted_version(lake.home, declaration.training_set)
        lineage, features = found.lineage(), found.features
        cluster = dask.cluster()
        context.log.info(
            "training on %s (%d rows, %d features) %s",
            found.where,
            len(found.frame),
            len(features),
            f"on Dask at {cluster.scheduler}" if cluster else "in-process",
        )
        on_dask = (
            OnDask(cluster, lake.home.table(declaration.training_set), found.info.version)
            if cluster
            else None
        )
        trained = train(found.frame, declaration, features, on_dask)
        registered = log_and_register(trained, declaration, mlflow.tracking_uri, lineage)
        context.log.info(
            "registered %s v%s (trained %s): %s",
            name,
            registered.version,
            trained.engine,
            trained.metrics,
        )
        return MaterializeResult(
            metadata={
                "model_version": registered.version,
                "mlflow_run": MetadataValue.url(registered.run_url),
                "mlflow_model_version": MetadataValue.url(registered.version_url),
                **{f"validation_{k}": v for k, v in trained.metrics.items()},
                **lineage,
                "training_engine": trained.engine,
                "train_rows": trained.train_rows,
                "validation_rows": trained.validation_rows,
                "split_at": trained.split_at.isoformat(),
            }
        )

    @asset_check(
        asset=trained_model,
        name=declaration.gate,
        blocking=True,
        description=f"Release gate of the version this run trained: against the champion on the "
        f"same unseen rows (paired bootstrap), absolute thresholds, slices, latency, size, "
        f"calibration and reproducibility, then the approval tier; all from {model.path}. A "
        "blocked version is never deployed; one awaiting approval waits (warning) until "
        "`shipway models approve`.",
    )
    def gate(
        context: AssetCheckExecutionContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        dask: DaskResource,
    ) -> AssetCheckResult:
        run_id = context.op_execution_context.run_id
        version = version_for(context.instance, run_id, name, context.log)
        report = release_gate(
            lake.home, model, mlflow.tracking_uri, version, run_id, context.log.info, dask.cluster()
        )
        summary = report.summary(str(model.path))
        if report.verdict == PROMOTED:
            context.log.info(summary)
        else:
            context.log.warning(summary)
        return AssetCheckResult(
            passed=report.verdict == PROMOTED,
            # Awaiting a person is not a failure: a warning, which does not block the run; the
            # deployment then waits for the approval recorded in the audit table.
            severity=AssetCheckSeverity.WARN
            if report.verdict == AWAITING_APPROVAL
            else AssetCheckSeverity.ERROR,
            description=summary,
            metadata={
                "model_version": version,
                "verdict": report.verdict,
                "champion": report.champion or "none",
                "evaluation_rows": report.rows,
                "report": MetadataValue.md(report.markdown()),
                "mlflow_report": MetadataValue.url(
                    f"{registered_run_url(mlflow.tracking_uri, name, version)}"
                ),
            },
        )

    return Definitions(
        assets=[training_set, trained_model], asset_checks=[training_set_checks, gate]
    )
