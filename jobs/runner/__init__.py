"""Running the DAGs through Airflow in-process: dag.test() and backfills on the embedded metadata DB. Imports jobs.refresh, jobs.daily and below."""
