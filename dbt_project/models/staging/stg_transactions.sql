-- Typed, enriched transactions: one row per transaction_id.
select
    transaction_id,
    event_timestamp,
    cast(event_date as date) as event_date,
    customer_id,
    merchant_id,
    merchant_category,
    list_position({{ var('merchant_categories') }}, merchant_category) - 1
        as merchant_category_code,
    channel,
    cast(channel = 'online' as integer) as is_online,
    amount,
    age_band,
    cast(hour(event_timestamp at time zone 'UTC') as integer) as hour_of_day,
    cast(hour(event_timestamp at time zone 'UTC') < 6 as integer) as is_night,
    is_fraud,
    label_available_at
from {{ source('lake', 'raw_events') }}
