"""A declared model's deployment in Dagster: `<model>_deployment` serves the version its run
released and starts its rollout (`shipway.rollout.deploy`); `<model>_release_sensor` deploys,
through the `<model>_release` job, each version a person approved.
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

import json
from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Definitions,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

from shipway.defs.resources import MlflowResource, ServingResource, ShipwayHomeResource
from shipway.defs.versions import version_for
from shipway.errors import ShipwayError
from shipway.models.catalog import DeclaredModel
from shipway.release.audit import APPROVED, Audit
from shipway.rollout.deploy import deploy_release

# Run tag naming the version a release run deploys (set by the release sensor).
VERSION_TAG = "shipway/model_version"
# Run tag for rehearsing a rollback (chaos testing): the version is served with these injected
# faults, e.g. {"error_ratio": 0.3, "latency_ms": 80}; its bundle records them.
FAULT_TAG = "shipway/inject_fault"


def injected_fault(tag: str | None) -> dict[str, float] | None:
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


def deployment_definitions(model: DeclaredModel) -> Definitions:
    """`<model>_deployment`, and the release job and sensor that deploy approved versions."""
    declaration = model.declaration
    name = declaration.name

    @asset(
        name=declaration.deployment,
        group_name=name,
        kinds={"seldon", "mlserver"},
        deps=[AssetKey(name)],
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
        version = context.run.tags.get(VERSION_TAG) or version_for(
            context.instance, context.run_id, name, context.log
        )
        fault = injected_fault(context.run.tags.get(FAULT_TAG))
        client = serving.client()
        done = deploy_release(
            lake.home,
            declaration,
            mlflow.tracking_uri,
            client,
            version,
            context.run_id,
            context.log,
            fault,
        )
        if done is None:
            return
        weights, shadow = done.rollout.traffic(declaration.rollout)
        yield MaterializeResult(
            metadata={
                "model_version": version,
                "release": f"{done.release.state} by {done.release.actor}",
                "champion": done.champion or version,
                "rollout": done.rollout.phase,
                "traffic_weights": MetadataValue.json(weights),
                "shadow": shadow or "",
                "endpoint": MetadataValue.url(done.endpoint),
                "bundle": str(done.bundle),
                "signed_by": done.signed_by or "unsigned (no $SHIPWAY_SIGNING_KEY)",
            }
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

    return Definitions(assets=[deployment], jobs=[release], sensors=[release_sensor])
