"""Feast as Dagster assets: the applied repository, every feature version in use (built side
by side), the online store, and the `refresh_features` job. Shared by every model: each
model's training set is its own (`shipway.defs.models`). The logic is `shipway.features`."""

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Definitions,
    MaterializeResult,
    OpExecutionContext,
    ScheduleDefinition,
    asset,
    define_asset_job,
    job,
    op,
)

from shipway.defs.data import LANDING
from shipway.defs.resources import MlflowResource, ShipwayHomeResource
from shipway.features.online_state import Freshness, OnlineState, online_store_kind
from shipway.features.service import repository
from shipway.features.store import apply_repository, feature_store, materialize_incremental
from shipway.features.version_store import KEEP_LAST, build_versions, collect
from shipway.features.versions import applied_versions, mark_applied, record
from shipway.release.pins import in_use

FEATURE_VIEWS = "feature_views"
FEATURE_VERSIONS = "feature_versions"
ONLINE_STORE = "online_store"
ONLINE_LAG_CHECK = "online_store_up_to_date"


def feature_definitions(keep_last: Mapping[str, int] | None = None) -> Definitions:
    """`feature_views` (feast apply), `feature_versions` and `online_store`, after every feature
    table; the job that refreshes them (with dbt's tables) after a landing; and the nightly
    collection of unpinned versions, each service keeping its `keep_last` newest (declared per
    model: `release.keep_feature_versions`)."""
    keep_last = dict(keep_last or {})
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
        applied = apply_repository(lake.home)
        if applied.skipped:
            context.log.info(
                "feature_repo/ unchanged since the last feast apply (digest %s): registry kept",
                applied.digest,
            )
        else:
            context.log.info(applied.output)
        recorded = record(lake.home, repository().services)
        mark_applied(lake.home, recorded)
        for service, found in sorted(recorded.items()):
            context.log.info("%s: feature version %s", service, found.version.digest)
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
                "feast_apply": "skipped: repository unchanged" if applied.skipped else "applied",
                "repository_digest": applied.digest,
                **{
                    f"feature_version/{service}": found.version.digest
                    for service, found in sorted(recorded.items())
                },
            }
        )

    @asset(
        name=ONLINE_STORE,
        group_name="features",
        kinds={"feast", "redis" if online_store_kind() == "redis" else "sqlite"},
        deps=[feature_views, *tables],
        description="Latest feature values per entity in Feast's online store, for the feature "
        "service and serving teams' lookups (SQLite by default, Redis with "
        "SHIPWAY_ONLINE_STORE=redis). Incremental: each view loads only rows newer than the "
        "newest it holds.",
        check_specs=[
            AssetCheckSpec(
                ONLINE_LAG_CHECK,
                asset=ONLINE_STORE,
                description="Each view's newest online row is its Delta table's newest row",
            )
        ],
    )
    def online_store(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        home = lake.home
        done = materialize_incremental(home)
        for window in done.loaded:
            context.log.info("materialized %s", window.describe())
        for reason in done.skipped:
            context.log.info("skipped %s", reason)
        fresh = OnlineState.load(home).freshness(home)
        yield MaterializeResult(
            metadata={
                "online_store": online_store_kind(),
                "loaded": "\n".join(w.describe() for w in done.loaded) or "nothing new",
                "skipped": "\n".join(done.skipped) or "none",
                **{
                    f"{view}_newest_row": _iso(status.online_newest)
                    for view, status in fresh.items()
                },
            }
        )
        yield lag_check(fresh)

    @asset(
        name=FEATURE_VERSIONS,
        group_name="features",
        kinds={"feast", "dbt", "delta"},
        deps=[feature_views, *tables],
        description="Every feature version in use, each built side by side in its own home "
        "(`<home>/features/<digest>/`: dbt from its saved sources, Delta tables, its own Feast "
        "project and online rows): the version each service's sources compute now, and every "
        "version a serving, champion or challenger model version pins. Models train and serve "
        "on their own version; a changed transformation never rebuilds one in place.",
    )
    def feature_versions(
        context: AssetExecutionContext, lake: ShipwayHomeResource, mlflow: MlflowResource
    ) -> MaterializeResult:
        home = lake.home
        live = in_use(home, mlflow.tracking_uri)
        built = build_versions(home, live, context.log.info)
        lines = []
        for digest, done in built.items():
            tables = ", ".join(f"{t} v{v}" for t, v in sorted(done.table_versions.items()))
            lines.append(f"{digest}: {'; '.join(live[digest])}; tables {tables}")
        return MaterializeResult(
            metadata={
                "built": "\n".join(lines),
                **{
                    f"feature_version/{service}": digest
                    for service, digest in applied_versions(home).items()
                },
            }
        )

    @op(
        name="collect_unpinned_feature_versions",
        description="Free the built data of feature versions nothing pins (each service's "
        f"newest kept as its model declares, else {KEEP_LAST}): what `shipway features "
        "collect` does.",
    )
    def collect_op(
        context: OpExecutionContext, lake: ShipwayHomeResource, mlflow: MlflowResource
    ) -> None:
        home = lake.home
        keep = in_use(home, mlflow.tracking_uri)
        freed = collect(home, keep, keep_last)
        for found in freed:
            context.log.info(
                "freed feature version %s (%s): %d bytes",
                found.digest,
                found.service,
                found.freed_bytes,
            )
        context.log.info(
            "%d version(s) collected, %d bytes freed; kept %s",
            len(freed),
            sum(f.freed_bytes for f in freed),
            sorted(keep),
        )

    @job(
        name="collect_feature_versions",
        description="Free the tables, warehouse and online rows of feature versions no "
        "serving, champion or challenger model version pins.",
    )
    def collect_job() -> None:
        collect_op()

    return Definitions(
        assets=[feature_views, feature_versions, online_store],
        schedules=[
            ScheduleDefinition(
                name="collect_feature_versions_daily",
                job=collect_job,
                cron_schedule="30 3 * * *",
                description="Every night: free feature versions nothing pins.",
            )
        ],
        jobs=[
            collect_job,
            define_asset_job(
                "refresh_features",
                selection=AssetSelection.assets(ONLINE_STORE, FEATURE_VERSIONS).upstream()
                - AssetSelection.assets(*LANDING),
                description="dbt's feature tables, feast apply and the online store: what "
                "serving looks up, fresh after a landing.",
            ),
        ],
    )


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lag_check(fresh: dict[str, Freshness]) -> AssetCheckResult:
    """Passes when every view's online store holds its Delta table's newest row."""
    behind = {view: status for view, status in fresh.items() if status.lag_seconds > 0}
    lines = [
        f"{view}: online newest {_iso(s.online_newest)}, Delta newest {_iso(s.offline_newest)} "
        f"({s.lag_seconds / 3600:.1f} h behind)"
        for view, s in sorted(behind.items())
    ]
    return AssetCheckResult(
        check_name=ONLINE_LAG_CHECK,
        asset_key=ONLINE_STORE,
        passed=not behind,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(lines) or "every view is up to date",
        metadata={
            f"{view}_lag_hours": round(status.lag_seconds / 3600, 2)
            for view, status in fresh.items()
        },
    )
