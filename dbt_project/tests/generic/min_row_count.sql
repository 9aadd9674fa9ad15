{% test min_row_count(model, min_rows) %}
-- One row when the model has fewer than min_rows rows: an empty feature table is a broken build.
select count(*) as row_count
from {{ model }}
having count(*) < {{ min_rows }}
{% endtest %}
