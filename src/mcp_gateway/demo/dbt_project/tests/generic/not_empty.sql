{% test not_empty(model) %}
select 1 as empty_table where not exists (select 1 from {{ model }})
{% endtest %}
