"""Feast as Dagster assets: the applied repository and the online store. Shared by every model:
each model's training set is built by its own component (`shipway.models.component`)."""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from shipway.data.lake import read_table
from shipway.features.service import repository
from shipway.features.store import feast_cli, feature_store, materialize_online
from shipway.resources import ShipwayHomeResource

FEATURE_VIEWS = "feature_views"
ONLINE_STORE = "online_store"


def feature_definitions() -> tuple[AssetsDefinition, AssetsDefinition]:
    """`feature_views` (feast apply) and `online_store`, after every feature table."""
    tables = [AssetKey(t) for t in repository().tables]

    @asset(
        name=FEATURE_VIEWS,
        group_name="features",
        kinds={"feast"},
        deps=tables,
        description="`feast apply` of feature_repo/: entities, feature views on dbt's Delta "
        "outputs, on-demand (request-time) feature views, and the versioned feature services "
        "models train and serve with.",
    )
    def feature_views(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> MaterializeResult:
        output = feast_cli(lake.home, "apply")
        context.log.info(output)
        store = feature_store(lake.home)
        return MaterializeResult(
            metadata={
                "feature_views": ", ".join(sorted(v.name for v in store.list_feature_views())),
                "on_demand_feature_views": ", ".join(
                    sorted(v.name for v in store.list_on_demand_feature_views())
                ),
                "feature_services": ", ".join(
                    sorted(s.name for s in store.list_feature_services())
                ),
                "registry": str(lake.home.feast / "registry.db"),
            }
        )

    @asset(
        name=ONLINE_STORE,
        group_name="features",
        kinds={"feast", "sqlite"},
        deps=[feature_views, *tables],
        description="Latest feature values per entity in Feast's online store, for serving "
        "teams' lookups (SQLite here; Redis at scale).",
    )
    def online_store(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> MaterializeResult:
        home = lake.home
        stamps = [
            read_table(home.table(key.path[-1]), columns=["event_timestamp"])["event_timestamp"]
            for key in tables
        ]
        start = min(s.min() for s in stamps).to_pydatetime()
        end = max(s.max() for s in stamps).to_pydatetime()
        materialize_online(feature_store(home), start, end)
        context.log.info("materialized %s from %s to %s", [k.path[-1] for k in tables], start, end)
        return MaterializeResult(
            metadata={"window_start": start.isoformat(), "window_end": end.isoformat()}
        )

    return feature_views, online_store
