{#- A gate run (the gateway sets `gateway_branch`) builds every model into its own schema,
    `<target schema>__gate_<branch>`, so testing a branch never rebuilds production's models. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set base = target.schema if custom_schema_name is none else target.schema ~ '_' ~ custom_schema_name | trim -%}
    {%- if var('gateway_branch', none) -%}
        {{ base }}__gate_{{ var('gateway_branch') }}
    {%- else -%}
        {{ base }}
    {%- endif -%}
{%- endmacro %}
