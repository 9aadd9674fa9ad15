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

import json
import time
from collections.abc import Iterator
from datetime import datetime

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
from shipway.data.assets import newest_event
from shipway.data.contract_checks import contract_checks
from shipway.data.contracts import Contract, load_contract
from shipway.data.gates import Reference
from shipway.data.lake import content_digest, read_table, table_info
from shipway.errors import ShipwayError
from shipway.features.assets import FEATURE_VIEWS, ONLINE_STORE
from shipway.features.training_sets import TrainingSetInputs, build, recorded_features, write
from shipway.models.catalog import DeclaredModel
from shipway.models.tracking import CHAMPION, RELEASE_TAG, registered_run_url
from shipway.models.training import log_and_register, registered_bundle, train
from shipway.monitoring.assets import monitoring_definitions, retrain_tick
from shipway.monitoring.retraining import decide, waiting_for_labels
from shipway.paths import ShipwayHome
from shipway.release.audit import APPROVED, RELEASABLE, Audit
from shipway.release.commands import package_bundle
from shipway.release.gate import release_gate
from shipway.release.report import AWAITING_APPROVAL, PROMOTED
from shipway.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)
from shipway.rollout.sensor import begin, rollout_sensor
from shipway.serving.package import signing_configured

LANDING = ("raw_events_batch", "raw_events")
# Run tag naming the version a release run deploys (set by the release sensor).
VERSION_TAG = "shipway/model_version"
# Run tag for rehearsing a rollback (chaos testing): the version is served with these injected
# faults, e.g. {"error_ratio": 0.3, "latency_ms": 80}; its bundle records them.
FAULT_TAG = "shipway/inject_fault"


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


def _fault(tag: str | None) -> dict[str, float] | None:
    if not tag:
        return None
    try:
        fault = {str(k): float(v) for k, v in json.loads(tag).items()}
    except (ValueError, AttributeError, TypeError):
        raise ShipwayError(
            f'run tag {FAULT_TAG} must be JSON like {{"error_ratio": 0.3, "latency_ms": 80}}, '
            f"got {tag!r}"
        ) from None
    unknown = set(fault) - {"error_ratio", "latency_ms"}
    if unknown:
        raise ShipwayError(f"run tag {FAULT_TAG}: unknown fault(s) {sorted(unknown)}")
    return fault


def _label_cutoff(instance: DagsterInstance, training_set: str) -> datetime | None:
    """The newest event the latest training set saw (its materialization's `label_cutoff`)."""
    event = instance.get_latest_materialization_event(AssetKey(training_set))
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get("label_cutoff") if materialization else None
    return datetime.fromisoformat(str(value.value)) if value is not None else None


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
        description=f"Release gate of the version this run trained: against the champion on the "
        f"same unseen rows (paired bootstrap), absolute thresholds, slices, latency, size, "
        f"calibration and reproducibility, then the approval tier; all from {model.path}. A "
        "blocked version is never deployed; one awaiting approval waits (warning) until "
        "`shipway models approve`.",
    )
    def gate(
        context: AssetCheckExecutionContext, lake: ShipwayHomeResource, mlflow: MlflowResource
    ) -> AssetCheckResult:
        run_id = context.op_execution_context.run_id
        version = _version_for(context.instance, run_id, name, context.log)
        report = release_gate(
            lake.home, model, mlflow.tracking_uri, version, run_id, context.log.info
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

    @asset(
        name=declaration.deployment,
        group_name=name,
        kinds={"seldon", "mlserver"},
        deps=[trained_model],
        output_required=False,
        description=f"The {name} version that passed its gate, served by MLServer (Open "
        "Inference Protocol v2) behind Envoy, the data plane. The first released version "
        "becomes the `champion` with 100% of traffic; a later one starts its rollout (shadow, "
        f"canary steps) that {declaration.rollout_sensor} drives to promotion or rollback. "
        f"Policy: {model.path}",
    )
    def deployment(
        context: AssetExecutionContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        serving: ServingResource,
    ) -> Iterator[MaterializeResult]:
        version = context.run.tags.get(VERSION_TAG) or _version_for(
            context.instance, context.run_id, name, context.log
        )
        state = Audit(lake.home).state(name, version)
        if state is not None and state.state == AWAITING_APPROVAL:
            context.log.warning(
                "%s v%s awaits approval (%s); nothing deployed. `shipway models approve %s %s "
                "--reason ...` records it, and %s deploys it",
                name,
                version,
                "; ".join(state.details.get("approval_reasons", [])),
                name,
                version,
                declaration.release_sensor,
            )
            return
        if state is None or state.state not in RELEASABLE:
            raise ShipwayError(
                f"{name} v{version} is not released ({RELEASE_TAG}="
                f"{state.state if state else 'never gated'}); nothing was deployed. Materialize "
                f"{name} to train and gate a new version"
            )
        registry = MlflowClient(mlflow.tracking_uri)
        bundle = registered_bundle(
            mlflow.tracking_uri,
            declaration,
            version,
            lake.home.serving / name / version,
            fault=_fault(context.run.tags.get(FAULT_TAG)),
        )
        if bundle.fault:
            context.log.warning(
                "%s v%s is served with injected faults %s (run tag %s)",
                name,
                version,
                bundle.fault,
                FAULT_TAG,
            )
        served, signed_by = bundle.path, ""
        if signing_configured():
            package = package_bundle(
                lake.home, mlflow.tracking_uri, bundle.path, lake.home.serving / "packages"
            )
            served, signed_by = package.bundle, package.key_id
            context.log.info(
                "%s v%s packaged and signed with key %s: %s", name, version, signed_by, package.path
            )
        client = serving.client()
        client.deploy(name, version, served)
        try:
            champion: str | None = registry.get_model_version_by_alias(name, CHAMPION).version
        except MlflowException:
            champion = None
        running = client.status().get(name, {}).get("versions", {})
        if champion == version or champion not in running:
            champion = None
        rollout = begin(lake.home, declaration, client, version, champion, context.run_id)
        weights, shadow = rollout.traffic(declaration.rollout)
        if champion is None:
            registry.set_registered_model_alias(name, CHAMPION, version)
            context.log.info("%s v%s is the champion with 100%% of traffic", name, version)
        else:
            policy = declaration.rollout
            context.log.info(
                "%s v%s deployed beside champion v%s: %s rollout started at %s; %s moves it "
                "through %s%% every %ss",
                name,
                version,
                champion,
                policy.strategy,
                rollout.phase,
                declaration.rollout_sensor,
                policy.steps,
                policy.interval_seconds,
            )
        yield MaterializeResult(
            metadata={
                "model_version": version,
                "release": f"{state.state} by {state.actor}",
                "champion": champion or version,
                "rollout": rollout.phase,
                "traffic_weights": MetadataValue.json(weights),
                "shadow": shadow or "",
                "endpoint": MetadataValue.url(client.endpoint(name)),
                "bundle": str(served),
                "signed_by": signed_by or "unsigned (no $SHIPWAY_SIGNING_KEY)",
            }
        )

    landing = AssetSelection.assets(*LANDING)
    # Everything the model is built from, except landing (ingestion, not training), and its
    # deployment: a version the gate releases starts its rollout in the same run.
    retrain = define_asset_job(
        declaration.retrain_job,
        selection=AssetSelection.assets(deployment).upstream() - landing.upstream(),
        description=f"Rebuild features and the training set, retrain, gate, register {name} "
        f"and start the released version's rollout. Requested by {declaration.drift_sensor}.",
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

    def waiting(context: SensorEvaluationContext, home: ShipwayHome) -> str | None:
        return waiting_for_labels(
            _label_cutoff(context.instance, declaration.training_set),
            newest_event(home),
            declaration.label.maturity_days,
        )

    @sensor(
        name=declaration.drift_sensor,
        job=retrain,
        minimum_interval_seconds=drift.evaluation_interval_seconds,
        description=f"Queries Prometheus for per-feature PSI of {name}'s live traffic; requests "
        f"a retrain when a feature passes the drift threshold in {model.path}.",
    )
    def drift_sensor(
        context: SensorEvaluationContext,
        prometheus: PrometheusResource,
        lake: ShipwayHomeResource,
    ) -> SensorResult | SkipReason:
        return retrain_tick(
            context,
            lake.home,
            name,
            "drift",
            lambda: decide(prometheus.client(), name, drift, context.cursor, time.time()),
            waiting,
        )

    release = define_asset_job(
        declaration.release_job,
        selection=AssetSelection.assets(deployment),
        description=f"Deploy an approved {name} version (run tag {VERSION_TAG}); requested by "
        f"{declaration.release_sensor}.",
    )

    @sensor(
        name=declaration.release_sensor,
        job=release,
        minimum_interval_seconds=30,
        description=f"Watches the release audit for {name} versions a person approved, and "
        "deploys each once. Lists the releases still awaiting approval.",
    )
    def release_sensor(
        context: SensorEvaluationContext, lake: ShipwayHomeResource
    ) -> SensorResult | SkipReason:
        audit = Audit(lake.home)
        approved = [e for e in audit.entries(name) if e.event == "approval" and e.state == APPROVED]
        seen = int(context.cursor or 0)
        fresh = approved[seen:]
        if not fresh:
            waiting = ", ".join(f"v{e.version}" for e in audit.pending(name)) or "none"
            return SkipReason(f"no new approval of {name}; awaiting approval: {waiting}")
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=f"{name}-v{e.version}-approved",
                    tags={VERSION_TAG: e.version, "shipway/approved_by": e.actor},
                )
                for e in fresh
            ],
            cursor=str(len(approved)),
        )

    return Definitions.merge(
        Definitions(
            assets=[training_set, trained_model, deployment],
            asset_checks=[training_set_checks, gate],
            jobs=[retrain, lifecycle, release],
            sensors=[drift_sensor, release_sensor, rollout_sensor(declaration, deployment.key)],
        ),
        monitoring_definitions(model, deployment.key, retrain, waiting),
    )
