"""Continuous training: retrain the fraud model when live feature drift passes the policy."""

import time

from dagster import (
    AssetSelection,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from assets.fraud import policy
from assets.fraud.deployment import fraud_deployment
from assets.fraud.model import fraud_model
from shipway.monitoring.retraining import decide
from shipway.resources import PrometheusResource

_POLICY = policy()

# Everything the model is built from, except landing raw events (ingestion, not training)
# and the deployment (a new version ships through its own rollout).
fraud_model_retrain = define_asset_job(
    "fraud_model_retrain",
    selection=AssetSelection.assets(fraud_model).upstream()
    - AssetSelection.assets("raw_events").upstream()
    - AssetSelection.assets(fraud_deployment),
    description="Rebuild features and the training set, retrain, gate and register "
    "fraud_model. Requested by fraud_model_drift_sensor.",
)


@sensor(
    job=fraud_model_retrain,
    minimum_interval_seconds=_POLICY.drift.evaluation_interval_seconds,
    description="Queries Prometheus for per-feature PSI of live traffic; requests a retrain "
    "when any feature passes the drift threshold in assets/fraud/policy.yaml.",
)
def fraud_model_drift_sensor(
    context: SensorEvaluationContext, prometheus: PrometheusResource
) -> SensorResult | SkipReason:
    model_policy = policy()
    decision = decide(
        prometheus.client(), model_policy.model, model_policy.drift, context.cursor, time.time()
    )
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
