"""Pipeline orchestrators behind one Protocol (``base.py``): Prefect, Airflow, dbt Cloud, Dagster."""
