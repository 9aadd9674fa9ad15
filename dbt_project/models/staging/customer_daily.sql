-- One row per customer per active day: the day's count, spend, largest ticket and night
-- transactions. What a customer's rolling features and forward-looking labels add up. The age
-- band (one per customer) rides along for fairness rules; it is never a feature.
select
    customer_id,
    event_date as feature_date,
    any_value(age_band) as age_band,
    count(*) as txn_count,
    sum(amount) as amount_sum,
    max(amount) as amount_max,
    sum(is_night) as night_count
from {{ ref('stg_transactions') }}
group by 1, 2
