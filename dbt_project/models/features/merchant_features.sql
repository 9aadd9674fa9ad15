{{ config(meta={"delta_table": "merchant_features"}) }}
-- One row per merchant per active day, over the 7 calendar days ending with that day.
-- Distinct customers need the transactions themselves (a distinct count does not add up
-- across days), hence the self-join on the 7-day range.
with days as (
    select distinct merchant_id, event_date as feature_date
    from {{ ref('stg_transactions') }}
)

select
    d.merchant_id,
    d.feature_date,
    cast(d.feature_date + interval 1 day as timestamp) at time zone 'UTC' as event_timestamp,
    count(*) as merchant_txn_count_7d,
    avg(t.amount) as merchant_amount_avg_7d,
    count(distinct t.customer_id) as merchant_distinct_customers_7d,
    avg(t.is_online) as merchant_online_share_7d
from days as d
inner join {{ ref('stg_transactions') }} as t
    on t.merchant_id = d.merchant_id
    and t.event_date between d.feature_date - interval 6 days and d.feature_date
group by 1, 2, 3
