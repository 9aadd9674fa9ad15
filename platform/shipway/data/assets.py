"""Raw card transactions as Dagster assets: each landing is a batch, audited by its contract
before it is admitted to the lake (write, audit, publish). Shared by every model."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
from dagster import (
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from shipway.data.admission import Ledger, reference_from
from shipway.data.contract_checks import contract_checks
from shipway.data.contracts import Contract, load_contract
from shipway.data.events import SCENARIOS, generate_events
from shipway.data.gates import Reference
from shipway.data.lake import TableInfo, land_days, overwrite_table, read_table, table_exists
from shipway.errors import ShipwayError
from shipway.paths import ShipwayHome
from shipway.resources import ShipwayHomeResource

BATCH_TABLE = "raw_events_batch"
RAW_EVENTS = "raw_events"


def newest_event(home: ShipwayHome) -> datetime | None:
    """When the newest published raw event happened (None before the first landing)."""
    path = home.table(RAW_EVENTS)
    if not table_exists(path):
        return None
    stamps = read_table(path, columns=["event_timestamp"])["event_timestamp"]
    return None if stamps.empty else pd.Timestamp(stamps.max()).to_pydatetime()


class LandingConfig(Config):
    """What to land: days from the seeded event generator, or a Parquet file of events."""

    start_date: str = ""
    """First day (YYYY-MM-DD); empty: the `days` days ending yesterday (UTC)."""
    days: int = 28
    scenario: str = "baseline"
    events_per_day: int = 2000
    seed: int = 7
    from_file: str = ""
    """A Parquet file of events to land instead of generated ones (e.g. a fixed batch)."""
    as_of: str = ""
    """When the batch lands (ISO time, UTC); freshness is measured against it. Empty: now."""
    readmits: str = ""
    """The quarantined batch (e.g. raw_events@v3) this one replaces after a fix."""


def _batch(config: LandingConfig) -> tuple[pd.DataFrame, str]:
    if config.from_file:
        path = Path(config.from_file)
        if not path.is_file():
            raise ShipwayError(f"from_file {path} not found: give a Parquet file of events")
        return pd.read_parquet(path), f"file {path}"
    if config.scenario not in SCENARIOS:
        raise ShipwayError(f"unknown scenario {config.scenario!r}; known: {sorted(SCENARIOS)}")
    start = (
        date.fromisoformat(config.start_date)
        if config.start_date
        else datetime.now(UTC).date() - timedelta(days=config.days)
    )
    events = generate_events(
        start, config.days, config.scenario, config.seed, config.events_per_day
    )
    return events, f"generator: {config.days} days from {start}, scenario {config.scenario}"


def _as_of(text: str) -> datetime:
    """An ISO time; without a zone it is UTC."""
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise ShipwayError(
            f"as_of {text!r} is not an ISO time (e.g. 2026-09-15T01:00:00Z)"
        ) from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _landed_at(info: TableInfo) -> datetime | None:
    stamp = info.commit_metadata.get("as_of")
    return _as_of(stamp) if stamp else None


def _raw_events_reference(home: ShipwayHome, current: Contract) -> Reference | None:
    columns = [c for c, rule in current.columns.items() if rule.outliers is not None]
    columns += current.shift.columns if current.shift else []
    volume = current.volume
    return reference_from(
        home,
        RAW_EVENTS,
        None,
        columns,
        "raw_events (accepted)",
        group_by=volume.group_by if volume else None,
        groups=volume.reference_groups if volume else 14,
    )


def landing_definitions(
    contract_path: Path,
) -> tuple[AssetsDefinition, AssetsDefinition, AssetChecksDefinition]:
    """`raw_events_batch` (each landing), its contract's gates, and `raw_events` (published)."""
    retention_days = load_contract(contract_path).retention_days

    @asset(
        name=BATCH_TABLE,
        group_name="data",
        kinds={"delta", "python"},
        description="The batch of card transactions being landed, before its contract admits "
        "it. Each landing is a new Delta version; rejected versions stay here, quarantined. "
        f"Contract: {contract_path}",
    )
    def raw_events_batch(
        context: AssetExecutionContext, config: LandingConfig, lake: ShipwayHomeResource
    ) -> MaterializeResult:
        as_of = (_as_of(config.as_of) if config.as_of else datetime.now(UTC)).isoformat()
        events, source = _batch(config)
        context.log.info("landing %d events (%s) as of %s", len(events), source, as_of)
        info = overwrite_table(
            lake.home.table(BATCH_TABLE),
            events,
            commit_metadata={"source": source, "as_of": as_of, "readmits": config.readmits},
            retention_days=retention_days,
        )
        return MaterializeResult(
            metadata={
                **info.metadata(),
                "batch": f"raw_events@v{info.version}",
                "source": source,
                "as_of": as_of,
                **({"readmits": config.readmits} if config.readmits else {}),
                **(
                    {"scenario": MetadataValue.text(str(SCENARIOS[config.scenario]))}
                    if not config.from_file
                    else {}
                ),
            }
        )

    checks = contract_checks(
        AssetKey(BATCH_TABLE), contract_path, BATCH_TABLE, _raw_events_reference, _landed_at
    )

    @asset(
        name=RAW_EVENTS,
        group_name="data",
        kinds={"delta"},
        deps=[raw_events_batch],
        description="Card transactions with late-arriving fraud labels, by day: every batch its "
        "contract accepted, published here (re-landing a day replaces it). dbt reads this table.",
    )
    def raw_events(context: AssetExecutionContext, lake: ShipwayHomeResource) -> MaterializeResult:
        home = lake.home
        accepted = Ledger(home).require_accepted(RAW_EVENTS)
        batch = read_table(home.table(BATCH_TABLE), accepted.version)
        info = land_days(
            home.table(RAW_EVENTS),
            batch,
            commit_metadata={"batch": accepted.id},
            retention_days=retention_days,
        )
        context.log.info(
            "published %s (%d rows) as raw_events v%d", accepted.id, len(batch), info.version
        )
        return MaterializeResult(
            metadata={
                **info.metadata(),
                "published_batch": accepted.id,
                "published_rows": len(batch),
                "landed_days": f"{batch['event_date'].min()} .. {batch['event_date'].max()}",
                "fraud_rate": float(pd.to_numeric(batch["is_fraud"]).mean()),
            }
        )

    return raw_events_batch, raw_events, checks
