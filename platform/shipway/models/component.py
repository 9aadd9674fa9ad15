"""`ShipwayModel`: a Dagster Component that turns one model declaration into its lifecycle.

For a declared model `<name>` it builds, with one name per concept:

- `<name>_training_set`: the point-in-time training set (Delta), with its contract's gates;
- `<name>`: the XGBoost model, an MLflow run and registered model version of that name;
- `<name>_gate`: the blocking metric gate on the version this run trained;
- `<name>_deployment`: that version served by MLServer behind the splitter (only if it passed);
- `<name>_lifecycle` and `<name>_retrain` jobs, and `<name>_drift_sensor` on Prometheus.

The component wires platform functions into Dagster objects; the logic lives in
`shipway.features.training_sets`, `shipway.models.training`, `shipway.models.gates` and
`shipway.monitoring.retraining`, testable without Dagster.
"""

import time

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Component,
    ComponentLoadContext,
    DagsterEventType,
    DagsterInstance,
    DagsterLogManager,
    Definitions,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    define_asset_job,
    sensor,
)
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shipway.data.admission import Ledger, reference_from
from shipway.data.contract_checks import contract_checks
from shipway.data.contracts import Contract, Reference, load_contract
from shipway.data.lake import content_digest, read_table, table_info
from shipway.errors import ShipwayError
from shipway.features.assets import FEATURE_VIEWS, ONLINE_STORE
from shipway.features.training_sets import (
    TrainingSetInputs,
    build,
    recorded_features,
    write,
)
from shipway.models.catalog import DeclaredModel
from shipway.models.gates import evaluate_gates
from shipway.models.tracking import CHALLENGER, CHAMPION, GATE_TAG
from shipway.models.training import download_model, log_and_register, train
from shipway.monitoring.drift import ReferenceProfile
from shipway.monitoring.retraining import decide
from shipway.paths import ShipwayHome
from shipway.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)
from shipway.serving.bundle import write_bundle

LANDING = ("raw_events_batch", "raw_events")


def version_in_run(instance: DagsterInstance, run_id: str, model: str) -> str | None:
    """The model version a run materialized, if it materialized one."""
    records = instance.get_records_for_run(
        run_id=run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key != AssetKey(model):
            continue
        metadata = event.step_materialization_data.materialization.metadata
        if "model_version" in metadata:
            return str(metadata["model_version"].value)
    return None


def latest_model_version(instance: DagsterInstance, model: str) -> str:
    event = instance.get_latest_materialization_event(AssetKey(model))
    materialization = event.asset_materialization if event else None
    if materialization is None or "model_version" not in materialization.metadata:
        raise ShipwayError(f"{model} has no materialization yet: materialize it first")
    return str(materialization.metadata["model_version"].value)


def _version_for(instance: DagsterInstance, run_id: str, model: str, log: DagsterLogManager) -> str:
    """This run's version (never another run's, which concurrent runs could swap in); a gate or
    deployment materialized on its own takes the latest one, and says so."""
    version = version_in_run(instance, run_id, model)
    if version is not None:
        return version
    version = latest_model_version(instance, model)
    log.info("%s was not trained in this run: taking its latest version v%s", model, version)
    return version


class ShipwayModel(Component):
    """One declared model's assets, checks, jobs and sensor, from its `model.yaml`."""

    def __init__(self, model: DeclaredModel) -> None:
        self.model = model

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        return model_definitions(self.model)


def model_definitions(model: DeclaredModel) -> Definitions:
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
        inputs = TrainingSetInputs.current(home, rules, model.service)
        frame, derived = build(home, rules, inputs, context.log.info)
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
        accepted = Ledger(home).last_accepted(current.dataset)
        if accepted is None:
            return None
        return reference_from(
            home,
            declaration.training_set,
            accepted.version,
            list(current.columns),
            f"{declaration.training_set} (accepted)",
        )

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
        context: AssetExecutionContext, lake: ShipwayHomeResource, mlflow: MlflowResource
    ) -> MaterializeResult:
        path = lake.home.table(declaration.training_set)
        # The newest version the training set's contract accepted, never a rejected one.
        accepted = Ledger(lake.home).require_accepted(declaration.training_set)
        info = table_info(path, accepted.version)
        frame = read_table(path, version=info.version)
        lineage = {
            "training_set_version": str(info.version),
            "training_set_digest": content_digest(frame),
            **info.commit_metadata,
        }
        features = recorded_features(info)
        context.log.info(
            "training on %s v%d (%d rows, %d features)",
            declaration.training_set,
            info.version,
            info.row_count,
            len(features),
        )
        trained = train(frame, declaration, features)
        registered = log_and_register(trained, declaration, mlflow.tracking_uri, lineage)
        context.log.info("registered %s v%s: %s", name, registered.version, trained.metrics)
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

    @asset_check(
        asset=trained_model,
        name=declaration.gate,
        blocking=True,
        description=f"Validation metrics of the version this run trained against the gates in "
        f"{model.path}; a failure stops the deployment.",
    )
    def gate(context: AssetCheckExecutionContext, mlflow: MlflowResource) -> AssetCheckResult:
        run_id = context.op_execution_context.run_id
        version = _version_for(context.instance, run_id, name, context.log)
        client = MlflowClient(mlflow.tracking_uri)
        mlflow_run = client.get_model_version(name, version).run_id
        if mlflow_run is None:
            raise ShipwayError(f"{name} v{version} has no MLflow run to read metrics from")
        metrics = client.get_run(mlflow_run).data.metrics
        report = evaluate_gates(name, version, declaration.gates, metrics)
        summary = report.summary(str(model.path))
        client.set_model_version_tag(name, version, GATE_TAG, report.verdict)
        if report.passed:
            client.set_registered_model_alias(name, CHALLENGER, version)
            context.log.info(summary)
        else:
            client.set_model_version_tag(name, version, f"{GATE_TAG}_failures", summary)
            context.log.error(summary)
        return AssetCheckResult(
            passed=report.passed,
            severity=AssetCheckSeverity.ERROR,
            description=summary,
            metadata={
                "model_version": version,
                **{
                    o.metric: MetadataValue.json(
                        {
                            # NaN is no JSON number; a NaN metric shows as null (and fails).
                            "observed": None if o.observed != o.observed else o.observed,
                            "min": o.min,
                            "max": o.max,
                            "passed": o.passed,
                        }
                    )
                    for o in report.outcomes
                },
            },
        )

    @asset(
        name=declaration.deployment,
        group_name=name,
        kinds={"seldon", "mlserver"},
        deps=[trained_model],
        description=f"The {name} version that passed its gate, served by MLServer (Open "
        "Inference Protocol v2) behind Shipway's traffic splitter. The first gated version "
        "becomes the `champion` with 100% of traffic; later ones are deployed at 0% until a "
        f"canary moves them. Serving settings: {model.path}",
    )
    def deployment(
        context: AssetExecutionContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        serving: ServingResource,
    ) -> MaterializeResult:
        version = _version_for(context.instance, context.run_id, name, context.log)
        registry = MlflowClient(mlflow.tracking_uri)
        verdict = registry.get_model_version(name, version).tags.get(GATE_TAG)
        if verdict != "passed":
            raise ShipwayError(
                f"{name} v{version} did not pass its gate ({GATE_TAG}={verdict or 'never run'}); "
                f"nothing was deployed. Materialize {name} to train and gate a new version"
            )
        bundle_dir = lake.home.serving / name / version
        model_file, reference_file = download_model(
            mlflow.tracking_uri, name, version, bundle_dir / "src"
        )
        bundle = write_bundle(
            bundle_dir,
            name,
            version,
            model_file,
            ReferenceProfile.load(reference_file),
            declaration.problem,
            declaration.serving.drift_window,
        )
        client = serving.client()
        client.deploy(name, version, bundle.path)
        try:
            champion: str | None = registry.get_model_version_by_alias(name, CHAMPION).version
        except MlflowException:
            champion = None
        running = client.status().get(name, {}).get("versions", {})
        if champion is None or champion == version or champion not in running:
            status = client.set_traffic(name, {version: 100})
            registry.set_registered_model_alias(name, CHAMPION, version)
            context.log.info("%s v%s is the champion with 100%% of traffic", name, version)
            champion = version
        else:
            status = client.status()[name]
            context.log.info("%s v%s deployed at 0%% beside champion v%s", name, version, champion)
        return MaterializeResult(
            metadata={
                "model_version": version,
                "champion": champion,
                "traffic_weights": MetadataValue.json(status["weights"]),
                "endpoint": MetadataValue.url(f"{client.url}/v2/models/{name}/infer"),
                "bundle": str(bundle.path),
            }
        )

    landing = AssetSelection.assets(*LANDING)
    # Everything the model is built from, except landing (ingestion, not training) and the
    # deployment (a new version ships through its own rollout).
    retrain = define_asset_job(
        declaration.retrain_job,
        selection=AssetSelection.assets(trained_model).upstream()
        - landing.upstream()
        - AssetSelection.assets(deployment),
        description=f"Rebuild features and the training set, retrain, gate and register {name}. "
        f"Requested by {declaration.drift_sensor}.",
    )
    lifecycle = define_asset_job(
        declaration.lifecycle_job,
        selection=(
            AssetSelection.assets(deployment).upstream() | AssetSelection.assets(ONLINE_STORE)
        )
        - landing,
        description=f"Everything after landing for {name}: dbt, Feast, online store, training "
        "set, model, gate, deployment.",
    )
    drift = declaration.drift

    @sensor(
        name=declaration.drift_sensor,
        job=retrain,
        minimum_interval_seconds=drift.evaluation_interval_seconds,
        description=f"Queries Prometheus for per-feature PSI of {name}'s live traffic; requests "
        f"a retrain when a feature passes the drift threshold in {model.path}.",
    )
    def drift_sensor(
        context: SensorEvaluationContext, prometheus: PrometheusResource
    ) -> SensorResult | SkipReason:
        decision = decide(prometheus.client(), name, drift, context.cursor, time.time())
        if not decision.retrain:
            return SkipReason(decision.reason)
        context.log.info(decision.reason)
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=decision.run_key,
                    tags={"shipway/trigger": "drift", "shipway/reason": decision.reason[:200]},
                )
            ],
            cursor=decision.cursor,
        )

    return Definitions(
        assets=[training_set, trained_model, deployment],
        asset_checks=[training_set_checks, gate],
        jobs=[retrain, lifecycle],
        sensors=[drift_sensor],
    )
