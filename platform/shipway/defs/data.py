"""Raw card transactions in Dagster: each landing is a batch (`raw_events_batch`), audited by
its contract's blocking checks before it is published to `raw_events` (write, audit, publish),
and the `land_raw_events` job that does both. Shared by every model; the logic is
`shipway.data.landing`. (No `from __future__ import annotations`: Dagster reads these hints.)
"""

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Config,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)

from shipway.data.contracts import load_contract
from shipway.data.events import SCENARIOS
from shipway.data.lake import read_table
from shipway.data.landing import (
    BATCH_TABLE,
    RAW_EVENTS,
    batch_of_run,
    events_to_land,
    landed_at,
    parse_as_of,
    publish,
    raw_events_reference,
    write_batch,
)
from shipway.defs.contracts import contract_checks
from shipway.defs.resources import ShipwayHomeResource

LANDING = (BATCH_TABLE, RAW_EVENTS)
LANDING_JOB = "land_raw_events"


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


def landing_definitions(contract_path: Path) -> Definitions:
    """`raw_events_batch` (each landing), its contract's gates, `raw_events` (published) and
    the job that lands a batch."""
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
        as_of = (parse_as_of(config.as_of) if config.as_of else datetime.now(UTC)).isoformat()
        events, source = events_to_land(
            config.from_file,
            config.start_date,
            config.days,
            config.scenario,
            config.events_per_day,
            config.seed,
        )
        context.log.info("landing %d events (%s) as of %s", len(events), source, as_of)
        info = write_batch(
            lake.home, events, source, as_of, config.readmits, retention_days, context.run_id
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
        AssetKey(BATCH_TABLE),
        contract_path,
        BATCH_TABLE,
        raw_events_reference,
        landed_at,
        lambda home, run_id: batch_of_run(home, run_id).version,
    )

    @asset(
        name=RAW_EVENTS,
        group_name="data",
        kinds={"delta"},
        deps=[raw_events_batch],
        description="Card transactions with late-arriving fraud labels, by day: every batch its "
        "contract accepted, published here in landing order (re-landing a day replaces it). "
        "dbt reads this table.",
    )
    def raw_events(context: AssetExecutionContext, lake: ShipwayHomeResource) -> MaterializeResult:
        info, batches, rows = publish(lake.home, retention_days)
        if batches:
            context.log.info(
                "published %s (%d rows) as raw_events v%d", ", ".join(batches), rows, info.version
            )
        else:
            context.log.info("raw_events v%d already holds every accepted batch", info.version)
        table = read_table(lake.home.table(RAW_EVENTS), info.version, ["event_date", "is_fraud"])
        return MaterializeResult(
            metadata={
                **info.metadata(),
                "published_batches": ", ".join(batches) or "none new",
                "published_rows": rows,
                "days": f"{table['event_date'].min()} .. {table['event_date'].max()}",
                "fraud_rate": float(pd.to_numeric(table["is_fraud"]).mean()),
            }
        )

    return Definitions(
        assets=[raw_events_batch, raw_events],
        asset_checks=[checks],
        jobs=[
            define_asset_job(
                LANDING_JOB,
                selection=AssetSelection.assets(*LANDING),
                description="Land a batch of card transactions (days and scenario, or a Parquet "
                "file, in the launchpad); its contract admits it to raw_events or quarantines it.",
            )
        ],
    )
