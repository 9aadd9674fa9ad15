"""Which model version a Dagster run trained: read from the run's own materializations, so
concurrent runs never swap versions, and the latest one for an asset materialized alone.
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterLogManager

from shipway.errors import ShipwayError


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


def version_for(instance: DagsterInstance, run_id: str, model: str, log: DagsterLogManager) -> str:
    """This run's version (never another run's, which concurrent runs could swap in); a gate or
    deployment materialized on its own takes the latest one, and says so."""
    version = version_in_run(instance, run_id, model)
    if version is not None:
        return version
    version = latest_model_version(instance, model)
    log.info("%s was not trained in this run: taking its latest version v%s", model, version)
    return version
