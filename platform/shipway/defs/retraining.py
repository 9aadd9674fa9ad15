"""Continuous training in Dagster: `<model>_retrain` and `<model>_lifecycle`, the sensors that
request a retrain (`<model>_drift_sensor` on live drift, `<model>_quality_sensor` on live
quality, both from one factory) and, with a declared cadence, `<model>_retrain_schedule`.

A sensor never requests a retrain during a rollout, nor when no label has matured since the
last training set (it would learn nothing new); the decisions are
`shipway.monitoring.retraining`'s. (No `from __future__ import annotations`: Dagster reads
these hints.)
"""

import time
from collections.abc import Callable
from datetime import datetime

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

# Not exported by dagster, but what `define_asset_job` returns and sensors and schedules take.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from shipway.data.landing import newest_event
from shipway.defs.data import LANDING
from shipway.defs.features import ONLINE_STORE
from shipway.defs.resources import PrometheusResource, ShipwayHomeResource
from shipway.models.catalog import DeclaredModel
from shipway.models.declaration import ModelDeclaration
from shipway.monitoring.prometheus import PrometheusClient
from shipway.monitoring.retraining import (
    RetrainDecision,
    decide,
    decide_quality,
    waiting_for_labels,
)
from shipway.paths import ShipwayHome
from shipway.rollout.state import RolloutStore

Decide = Callable[[PrometheusClient, ShipwayHome, str | None, float], RetrainDecision]
"""A trigger's decision from Prometheus (and the home), given the sensor's cursor and now."""


def label_cutoff(instance: DagsterInstance, training_set: str) -> datetime | None:
    """The newest event the latest training set saw (its materialization's `label_cutoff`)."""
    event = instance.get_latest_materialization_event(AssetKey(training_set))
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get("label_cutoff") if materialization else None
    return datetime.fromisoformat(str(value.value)) if value is not None else None


def retrain_sensor(
    declaration: ModelDeclaration,
    sensor_name: str,
    trigger: str,
    retrain: UnresolvedAssetJobDefinition,
    decision: Decide,
    minimum_interval_seconds: int,
    description: str,
) -> SensorDefinition:
    """A sensor that requests `retrain` when `decision` says so: never during a rollout
    (checked before Prometheus is asked), nor without new labels; one run per decision's run
    key."""
    name = declaration.name

    @sensor(
        name=sensor_name,
        job=retrain,
        minimum_interval_seconds=minimum_interval_seconds,
        description=description,
    )
    def retrain_tick(
        context: SensorEvaluationContext,
        prometheus: PrometheusResource,
        lake: ShipwayHomeResource,
    ) -> SensorResult | SkipReason:
        home = lake.home
        rollout = RolloutStore(home.served.rollouts).load(name)
        if rollout is not None and not rollout.finished:
            return SkipReason(
                f"{name} v{rollout.challenger} is rolling out ({rollout.phase}); {trigger} is "
                "judged again once it is promoted or rolled back"
            )
        found = decision(prometheus.client(), home, context.cursor, time.time())
        if not found.retrain:
            return SkipReason(found.reason)
        why_not = waiting_for_labels(
            label_cutoff(context.instance, declaration.training_set),
            newest_event(home),
            declaration.label.maturity_days,
        )
        if why_not is not None:
            return SkipReason(f"{trigger} seen ({found.reason}); {why_not}")
        context.log.info(found.reason)
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=found.run_key,
                    tags={"shipway/trigger": trigger, "shipway/reason": found.reason[:200]},
                )
            ],
            cursor=found.cursor,
        )

    return retrain_tick


def retraining_definitions(model: DeclaredModel) -> Definitions:
    """The model's retrain and lifecycle jobs, its drift and quality sensors, and its retrain
    schedule when the policy names a cadence."""
    declaration = model.declaration
    name = declaration.name
    drift, monitoring = declaration.drift, declaration.monitoring
    deployment = AssetSelection.assets(AssetKey(declaration.deployment))
    landing = AssetSelection.assets(*LANDING)
    # Everything the model is built from, except landing (ingestion, not training), and its
    # deployment: a version the gate releases starts its rollout in the same run.
    retrain = define_asset_job(
        declaration.retrain_job,
        selection=deployment.upstream() - landing.upstream(),
        description=f"Rebuild features and the training set, retrain, gate, register {name} "
        f"and start the released version's rollout. Requested by {declaration.drift_sensor}.",
    )
    lifecycle = define_asset_job(
        declaration.lifecycle_job,
        selection=(deployment.upstream() | AssetSelection.assets(ONLINE_STORE)) - landing,
        description=f"Everything after landing for {name}: dbt, Feast, online store, training "
        "set, model, gate, deployment.",
    )
    drift_sensor = retrain_sensor(
        declaration,
        declaration.drift_sensor,
        "drift",
        retrain,
        lambda client, home, cursor, now: decide(client, name, drift, cursor, now),
        drift.evaluation_interval_seconds,
        f"Queries Prometheus for per-feature PSI of {name}'s live traffic; requests a retrain "
        f"when a feature passes the drift threshold in {model.path}.",
    )
    quality_sensor = retrain_sensor(
        declaration,
        declaration.quality_sensor,
        "quality",
        retrain,
        lambda client, home, cursor, now: decide_quality(
            client,
            name,
            monitoring,
            RolloutStore(home.served.rollouts).serving_champion(name),
            cursor,
            now,
        ),
        60,
        f"Queries Prometheus for {name}'s live quality (from {declaration.live_quality}); "
        "requests a retrain when the champion breaks its monitoring.quality limits.",
    )
    schedules = []
    if monitoring.retrain_schedule is not None:
        schedules.append(
            ScheduleDefinition(
                name=declaration.retrain_schedule,
                cron_schedule=monitoring.retrain_schedule,
                job=retrain,
                execution_timezone="UTC",
                default_status=DefaultScheduleStatus.STOPPED,
                tags={"shipway/trigger": "schedule"},
                description=f"Retrains {name} on its declared cadence "
                f"({monitoring.retrain_schedule}, UTC).",
            )
        )
    return Definitions(
        jobs=[retrain, lifecycle],
        sensors=[drift_sensor, quality_sensor],
        schedules=schedules,
    )
