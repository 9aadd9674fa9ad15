{{ config(meta={"delta_table": "customer_spend_labels"}) }}
-- One row per customer per active day: the spend of the 7 calendar days after that day.
-- Stamped like the day's feature row (the day's end), so the point-in-time join gives the
-- features known when the forecast is made; the label is known 7 days later.
select
    customer_id,
    feature_date,
    age_band,
    cast(feature_date + interval 1 day as timestamp) at time zone 'UTC' as event_timestamp,
    coalesce(
        sum(amount_sum) over (
            partition by customer_id order by feature_date
            range between interval 1 day following and interval 7 days following
        ),
        0
    ) as spend_next_7d,
    cast(feature_date + interval 8 day as timestamp) at time zone 'UTC' as label_available_at
from {{ ref('customer_daily') }}
