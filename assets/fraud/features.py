"""Feast: feature definitions, the online store, and the point-in-time training set."""

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.fraud import policy
from shipway.features import (
    ENTITY_KEYS,
    LABEL,
    feast_cli,
    feature_store,
    historical_features,
    materialize_online,
    model_frame,
)
from shipway.lake import overwrite_table, read_table, table_info
from shipway.resources import ShipwayHomeResource

FEATURE_TABLES = [AssetKey("customer_features"), AssetKey("merchant_features")]
RAW_COLUMNS = [
    "transaction_id",
    *ENTITY_KEYS,
    "event_timestamp",
    "merchant_category",
    "channel",
    "amount",
    LABEL,
    "label_available_at",
]


@asset(
    group_name="features",
    kinds={"feast"},
    deps=FEATURE_TABLES,
    description="`feast apply` of feature_repo/: entities, feature views on dbt's Delta "
    "outputs, and the versioned feature service the model uses.",
)
def feature_views(context: AssetExecutionContext, lake: ShipwayHomeResource) -> MaterializeResult:
    output = feast_cli(lake.home, "apply")
    context.log.info(output)
    store = feature_store(lake.home)
    return MaterializeResult(
        metadata={
            "feature_views": ", ".join(sorted(v.name for v in store.list_feature_views())),
            "feature_services": ", ".join(sorted(s.name for s in store.list_feature_services())),
            "registry": str(lake.home.feast / "registry.db"),
        }
    )


@asset(
    group_name="features",
    kinds={"feast", "sqlite"},
    deps=[feature_views, *FEATURE_TABLES],
    description="Latest feature values per customer and merchant in Feast's online store, "
    "for serving teams' lookups (SQLite here; Redis at scale).",
)
def online_store(context: AssetExecutionContext, lake: ShipwayHomeResource) -> MaterializeResult:
    home = lake.home
    stamps = [
        read_table(home.table(key.path[-1]), columns=["event_timestamp"])["event_timestamp"]
        for key in FEATURE_TABLES
    ]
    start = min(s.min() for s in stamps).to_pydatetime()
    end = max(s.max() for s in stamps).to_pydatetime()
    materialize_online(feature_store(home), start, end)
    return MaterializeResult(
        metadata={"window_start": start.isoformat(), "window_end": end.isoformat()}
    )


@asset(
    group_name="features",
    kinds={"feast", "delta"},
    deps=[AssetKey("raw_events"), feature_views, *FEATURE_TABLES],
    description="Labelled transactions joined point-in-time with the feature service "
    "(each row sees only features known before it happened), written to Delta.",
)
def training_set(context: AssetExecutionContext, lake: ShipwayHomeResource) -> MaterializeResult:
    home = lake.home
    model_policy = policy()
    service = model_policy.training.feature_service
    raw = table_info(home.table("raw_events"))
    events = read_table(home.table("raw_events"), version=raw.version, columns=RAW_COLUMNS)
    # Labels arrive late: train only on matured events whose label is known at the newest one.
    cutoff = events["event_timestamp"].max()
    matured = cutoff - pd.Timedelta(days=model_policy.training.label_maturity_days)
    warm = events["event_timestamp"].min() + pd.Timedelta(
        days=model_policy.training.feature_warmup_days
    )
    known = (
        (events["event_timestamp"] >= warm)
        & (events["event_timestamp"] <= matured)
        & (events["label_available_at"] <= cutoff)
    )
    labelled = events[known].drop(columns="label_available_at")
    context.log.info(
        "%d of %d events are past feature warm-up (%s) and labelled by %s; joining with %s",
        len(labelled),
        len(events),
        warm,
        cutoff,
        service,
    )
    joined = historical_features(feature_store(home), labelled, service)
    frame = model_frame(joined, joined)
    keys = joined[["transaction_id", *ENTITY_KEYS, "event_timestamp", LABEL]]
    out = keys.join(frame).sort_values("event_timestamp").reset_index(drop=True)
    lineage = {
        "raw_events_version": str(raw.version),
        "feature_service": service,
        "label_cutoff": cutoff.isoformat(),
        "matured_before": matured.isoformat(),
        "warm_from": warm.isoformat(),
        **{
            f"{key.path[-1]}_version": str(table_info(home.table(key.path[-1])).version)
            for key in FEATURE_TABLES
        },
    }
    info = overwrite_table(home.table("training_set"), out, commit_metadata=lineage)
    return MaterializeResult(
        metadata={
            **info.metadata(),
            **lineage,
            "label_rate": float(out[LABEL].mean()),
            "unlabelled_events_excluded": len(events) - len(labelled),
            "preview": MetadataValue.md(out.head(5).to_markdown(index=False)),
        }
    )
