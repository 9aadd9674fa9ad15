{{ config(meta={"delta_table": "customer_features"}) }}
-- One row per customer per active day. Windows are calendar days ending with the row's day.
-- event_timestamp is the end of that day: the features of day d are only known once d
-- closes, which keeps Feast's point-in-time join free of same-day leakage.
select
    customer_id,
    feature_date,
    cast(feature_date + interval 1 day as timestamp) at time zone 'UTC' as event_timestamp,
    txn_count as customer_txn_count_1d,
    cast(sum(txn_count) over w7 as bigint) as customer_txn_count_7d,
    sum(amount_sum) over w7 / sum(txn_count) over w7 as customer_amount_avg_7d,
    sum(amount_sum) over w30 / sum(txn_count) over w30 as customer_amount_avg_30d,
    max(amount_max) over w30 as customer_amount_max_30d,
    sum(night_count) over w30 / sum(txn_count) over w30 as customer_night_share_30d,
    sum(amount_sum) over w7 as customer_amount_sum_7d,
    sum(amount_sum) over w30 as customer_amount_sum_30d,
    cast(count(*) over w30 as bigint) as customer_active_days_30d
from {{ ref('customer_daily') }}
window
    w7 as (
        partition by customer_id order by feature_date
        range between interval 6 days preceding and current row
    ),
    w30 as (
        partition by customer_id order by feature_date
        range between interval 29 days preceding and current row
    )
