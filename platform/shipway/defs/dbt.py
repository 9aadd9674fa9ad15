"""dbt as Dagster assets: staging, feature and label tables, built in DuckDB and published to
Delta for Feast and training sets. Shared by every model; dbt tests become asset checks."""

from collections.abc import Iterator, Mapping
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, Output
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from shipway.data.warehouse import delta_outputs, publish_to_delta
from shipway.defs.resources import ShipwayHomeResource, dbt_project

dbt_project.prepare_if_dev()


class ShipwayDbtTranslator(DagsterDbtTranslator):
    """dbt names are asset names: `raw_events` the source, `customer_features` the model.
    Feature tables are in the `transform` group, label tables in `labels`, the help assistant's
    corpus in `help_centre`."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        return AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        folder = (dbt_resource_props.get("fqn", [])[1:2] or [""])[0]
        return {"labels": "labels", "help": "help_centre"}.get(folder, "transform")

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = dict(super().get_tags(dbt_resource_props))
        if dbt_resource_props.get("config", {}).get("meta", {}).get("delta_table"):
            tags["dagster/kind/delta"] = ""
        return tags


DBT_POOL = "dbt_warehouse"
HELP_CENTRE = "tag:help_centre"
"""The help assistant's dbt models: built by their own asset from the landed help centre, so a
repository without it still builds every other table."""


def _build_and_publish(
    context: AssetExecutionContext, dbt: DbtCliResource, lake: ShipwayHomeResource
) -> Iterator[Any]:
    invocation = dbt.cli(["build"], context=context)
    publish = delta_outputs(invocation.manifest)
    deferred: list[tuple[Output[Any], str]] = []
    for event in invocation.stream():
        model = _model_name(event)
        if isinstance(event, Output) and model is not None and model in publish:
            # dbt holds the DuckDB file for writing until the build ends; publish after.
            deferred.append((event, model))
        else:
            yield event
    home = lake.home
    for event, model in deferred:
        info = publish_to_delta(home.warehouse, model, home.table(publish[model]))
        context.log.info("published %s to Delta version %d", model, info.version)
        yield event.with_metadata({**event.metadata, **info.metadata()})


def _dbt_assets(name: str, select: str, exclude: str | None) -> AssetsDefinition:
    @dbt_assets(
        name=name,
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        select=select,
        exclude=exclude,
        # One dbt build at a time: they share the DuckDB warehouse, which one process writes.
        pool=DBT_POOL,
        dagster_dbt_translator=ShipwayDbtTranslator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
        ),
    )
    def _assets(
        context: AssetExecutionContext, dbt: DbtCliResource, lake: ShipwayHomeResource
    ) -> Iterator[Any]:
        yield from _build_and_publish(context, dbt, lake)

    return _assets


dbt_models = _dbt_assets("dbt_models", "fqn:*", HELP_CENTRE)
help_centre_models = _dbt_assets("help_centre_models", HELP_CENTRE, None)


def _model_name(event: Any) -> str | None:
    unique_id = getattr(event, "metadata", {}).get("unique_id")
    text = getattr(unique_id, "value", unique_id)
    return str(text).rsplit(".", 1)[-1] if text else None
