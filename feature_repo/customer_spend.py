"""Features of customer_spend: a customer's recent spending, to forecast the next 7 days."""

from feast import FeatureService
from lake_views import customer_features

customer_spend_v1 = FeatureService(
    name="customer_spend_v1",
    features=[
        customer_features[
            [
                "customer_txn_count_7d",
                "customer_amount_avg_7d",
                "customer_amount_avg_30d",
                "customer_amount_max_30d",
                "customer_amount_sum_7d",
                "customer_amount_sum_30d",
                "customer_active_days_30d",
            ]
        ],
    ],
    tags={"model": "customer_spend", "version": "1"},
    description="Features of customer_spend, version 1",
)
