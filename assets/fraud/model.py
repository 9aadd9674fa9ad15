"""The fraud model: trained from the training set, tracked and registered in MLflow, gated."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from mlflow.tracking import MlflowClient

from assets.fraud import POLICY_PATH, policy
from assets.fraud.features import training_set
from shipway.data.admission import Ledger
from shipway.data.lake import content_digest, read_table, table_info
from shipway.errors import ShipwayError
from shipway.models.gates import evaluate_gates
from shipway.models.tracking import CHALLENGER
from shipway.models.training import log_and_register, train
from shipway.resources import MlflowResource, ShipwayHomeResource

MODEL_KEY = AssetKey("fraud_model")


@asset(
    group_name="model",
    kinds={"xgboost", "mlflow"},
    deps=[training_set],
    description="XGBoost fraud classifier trained on the latest training set with a "
    f"time-based split; every run tracked and registered in MLflow. Policy: {POLICY_PATH}",
)
def fraud_model(
    context: AssetExecutionContext, lake: ShipwayHomeResource, mlflow: MlflowResource
) -> MaterializeResult:
    model_policy = policy()
    path = lake.home.table("training_set")
    # The newest version the training set's contract accepted, never a rejected one.
    accepted = Ledger(lake.home).require_accepted("training_set")
    info = table_info(path, accepted.version)
    frame = read_table(path, version=info.version)
    lineage = {
        "training_set_version": str(info.version),
        "training_set_digest": content_digest(frame),
        **info.commit_metadata,
    }
    context.log.info("training on training_set v%d (%d rows)", info.version, info.row_count)
    trained = train(frame, model_policy)
    registered = log_and_register(trained, model_policy, mlflow.tracking_uri, lineage)
    context.log.info("registered %s v%s: %s", registered.name, registered.version, trained.metrics)
    return MaterializeResult(
        metadata={
            "model_version": registered.version,
            "mlflow_run": MetadataValue.url(registered.run_url),
            "mlflow_model_version": MetadataValue.url(registered.version_url),
            **{f"validation_{k}": v for k, v in trained.metrics.items()},
            **lineage,
            "train_rows": trained.train_rows,
            "validation_rows": trained.validation_rows,
            "split_at": trained.split_at.isoformat(),
        }
    )


def latest_model_version(instance: DagsterInstance) -> str:
    event = instance.get_latest_materialization_event(MODEL_KEY)
    materialization = event.asset_materialization if event else None
    if materialization is None or "model_version" not in materialization.metadata:
        raise ShipwayError("fraud_model has no materialization yet: materialize it first")
    return str(materialization.metadata["model_version"].value)


@asset_check(
    asset=fraud_model,
    blocking=True,
    description=f"Validation metrics against the thresholds in {POLICY_PATH}; "
    "a failure stops the deployment.",
)
def fraud_model_gate(
    context: AssetCheckExecutionContext, mlflow: MlflowResource
) -> AssetCheckResult:
    model_policy = policy()
    version = latest_model_version(context.instance)
    client = MlflowClient(mlflow.tracking_uri)
    run_id = client.get_model_version(model_policy.model, version).run_id
    if run_id is None:
        raise ShipwayError(
            f"{model_policy.model} v{version} has no MLflow run to read metrics from"
        )
    metrics = client.get_run(run_id).data.metrics
    report = evaluate_gates(model_policy.model, version, model_policy.gates, metrics)
    summary = report.summary(str(POLICY_PATH))
    client.set_model_version_tag(
        model_policy.model, version, "shipway.gate", "passed" if report.passed else "failed"
    )
    if report.passed:
        client.set_registered_model_alias(model_policy.model, CHALLENGER, version)
        context.log.info(summary)
    else:
        client.set_model_version_tag(model_policy.model, version, "shipway.gate_failures", summary)
        context.log.error(summary)
    return AssetCheckResult(
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=summary,
        metadata={
            "model_version": version,
            **{
                f"{o.metric}": MetadataValue.json(
                    {"observed": o.observed, "min": o.min, "max": o.max, "passed": o.passed}
                )
                for o in report.outcomes
            },
        },
    )
