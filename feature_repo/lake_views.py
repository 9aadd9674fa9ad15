"""Entities and the feature views over the lake's Delta tables, shared by every model.

Each view reads a Delta table that a dbt model publishes; the view, the dbt model, the Delta
table and the Dagster asset share one name. The `default` tag is the value a feature takes for
an entity with no row in the view's ttl (no history is a count of zero): training and serving
fill it the same way, so a missing entity is never a different vector on each side. The
`max_online_lag_hours` tag is how far the online store may fall behind the view's Delta table
before `ShipwayOnlineStoreBehind` fires (a day's rows land once a day).
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import DeltaFormat
from feast.types import Float64, Int64

LAKE = Path(os.environ.get("SHIPWAY_LAKE", Path(__file__).resolve().parents[1] / ".shipway/lake"))

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A card holder",
)
merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="A card acceptor",
)


def delta_source(table: str) -> FileSource:
    return FileSource(
        name=table,
        path=str(LAKE / table),
        file_format=DeltaFormat(),
        timestamp_field="event_timestamp",
        description=f"Delta table {table}, published by dbt model {table}",
    )


# A feature row describes a closed day, stamped at the day's end; the ttl bounds how old a
# customer's or merchant's last active day may be and still count.
customer_features = FeatureView(
    name="customer_features",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[
        Field(name="customer_txn_count_1d", dtype=Int64),
        Field(name="customer_txn_count_7d", dtype=Int64),
        Field(name="customer_amount_avg_7d", dtype=Float64),
        Field(name="customer_amount_avg_30d", dtype=Float64),
        Field(name="customer_amount_max_30d", dtype=Float64),
        Field(name="customer_night_share_30d", dtype=Float64),
        Field(name="customer_amount_sum_7d", dtype=Float64),
        Field(name="customer_amount_sum_30d", dtype=Float64),
        Field(name="customer_active_days_30d", dtype=Int64),
    ],
    source=delta_source("customer_features"),
    online=True,
    tags={"dbt_model": "customer_features", "default": "0", "max_online_lag_hours": "26"},
)

merchant_features = FeatureView(
    name="merchant_features",
    entities=[merchant],
    ttl=timedelta(days=30),
    schema=[
        Field(name="merchant_txn_count_7d", dtype=Int64),
        Field(name="merchant_amount_avg_7d", dtype=Float64),
        Field(name="merchant_distinct_customers_7d", dtype=Int64),
        Field(name="merchant_online_share_7d", dtype=Float64),
    ],
    source=delta_source("merchant_features"),
    online=True,
    tags={"dbt_model": "merchant_features", "default": "0", "max_online_lag_hours": "26"},
)
