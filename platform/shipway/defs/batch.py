"""A declared model's batch scoring in Dagster: `<model>_batch_scores`, a daily-partitioned
asset (one partition per day: that day's population scored by the champion as of its end),
its job and a schedule that scores the day just ended. The logic is `shipway.models.batch`.
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

from datetime import date
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from shipway.defs.features import FEATURE_VIEWS
from shipway.defs.resources import DaskResource, MlflowResource, ShipwayHomeResource
from shipway.models.batch import score_day
from shipway.models.catalog import DeclaredModel
from shipway.names import SCORE


def batch_definitions(model: DeclaredModel) -> Definitions:
    declaration = model.declaration
    batch = declaration.batch
    if batch is None:
        return Definitions()
    name = declaration.name
    partitions = DailyPartitionsDefinition(start_date=batch.start_date.isoformat(), timezone="UTC")

    @asset(
        name=declaration.batch_scores,
        group_name=name,
        kinds={"xgboost", "delta"},
        partitions_def=partitions,
        deps=[AssetKey(name), AssetKey(batch.population), AssetKey(FEATURE_VIEWS)],
        description=f"Each day, every entity of {batch.population} active in the "
        f"{batch.lookback_days} days before the day's end, scored as of that end by {name}'s "
        "champion (its registered bundle, through the serving runtime's scorer, so a row scores "
        "exactly as online), with the feature service's point-in-time values. One Delta "
        "partition per day; the rows enter the prediction log as batch rows. On Dask when "
        f"$SHIPWAY_DASK_SCHEDULER is set. Declared in {model.path}",
    )
    def batch_scores(
        context: AssetExecutionContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        dask: DaskResource,
    ) -> MaterializeResult:
        day = date.fromisoformat(context.partition_key)
        found = score_day(
            lake.home, mlflow.tracking_uri, model, day, dask.cluster(), context.log.info
        )
        scores = found.scores[SCORE]
        metadata: dict[str, Any] = {
            "model_version": found.version,
            "rows": len(found.scores),
            "engine": found.engine,
            "prediction_log_rows": found.logged_rows,
        }
        if found.table is not None:
            metadata |= {
                **found.table.metadata(),
                "score_mean": float(scores.mean()),
                "score_p90": float(scores.quantile(0.9)),
                "preview": MetadataValue.md(found.scores.head(5).to_markdown(index=False)),
            }
        return MaterializeResult(metadata=metadata)

    job = define_asset_job(
        declaration.batch_job,
        selection=[batch_scores],
        partitions_def=partitions,
        description=f"Score a day's population with {name}'s champion",
    )
    schedule = build_schedule_from_partitioned_job(job, hour_of_day=batch.hour_utc)
    return Definitions(assets=[batch_scores], jobs=[job], schedules=[schedule])
