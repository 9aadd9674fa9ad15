"""Feast: feature definitions, the online store, and the point-in-time training set."""

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.fraud import CONTRACTS_DIR, contract, policy
from shipway.data.admission import Ledger, reference_from
from shipway.data.contract_checks import contract_checks
from shipway.data.contracts import Contract, Reference
from shipway.data.lake import read_table
from shipway.features.store import LABEL, feast_cli, feature_store, materialize_online
from shipway.features.training_sets import TABLE, TrainingSetInputs, build, write
from shipway.paths import ShipwayHome
from shipway.resources import ShipwayHomeResource

FEATURE_TABLES = [AssetKey("customer_features"), AssetKey("merchant_features")]
TRAINING_SET_CONTRACT = CONTRACTS_DIR / "training_set.yaml"


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
    "(each row sees only features known before it happened), written to Delta with the "
    f"versions of every input. Contract: {TRAINING_SET_CONTRACT}",
)
def training_set(context: AssetExecutionContext, lake: ShipwayHomeResource) -> MaterializeResult:
    home = lake.home
    inputs = TrainingSetInputs.current(home, policy().training)
    frame, derived = build(home, inputs, context.log.info)
    info = write(home, frame, inputs, contract("training_set").retention_days)
    return MaterializeResult(
        metadata={
            **info.metadata(),
            **inputs.lineage(),
            **derived,
            "label_rate": float(frame[LABEL].mean()),
            "preview": MetadataValue.md(frame.head(5).to_markdown(index=False)),
        }
    )


def _training_set_reference(home: ShipwayHome, current: Contract) -> Reference | None:
    accepted = Ledger(home).last_accepted(current.dataset)
    if accepted is None:
        return None
    return reference_from(
        home, TABLE, accepted.version, list(current.columns), "training_set (accepted)"
    )


training_set_contract = contract_checks(
    AssetKey(TABLE), TRAINING_SET_CONTRACT, TABLE, _training_set_reference
)
