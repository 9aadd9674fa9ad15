"""Feature definitions of the fraud model: entities, feature views over dbt's outputs, and the
versioned feature service the model is trained and served with."""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
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


def _delta_source(table: str) -> FileSource:
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
    ],
    source=_delta_source("customer_features"),
    online=True,
    tags={"dbt_model": "customer_features"},
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
    source=_delta_source("merchant_features"),
    online=True,
    tags={"dbt_model": "merchant_features"},
)

# Versioned: a model records the feature service it was trained with; changing the features
# means a new service (fraud_model_v2), so a deployed version never sees different inputs.
fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[customer_features, merchant_features],
    tags={"model": "fraud_model", "version": "1"},
    description="Features of fraud_model, version 1",
)
