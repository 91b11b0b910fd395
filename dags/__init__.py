"""Airflow DAG files: schedule, task wiring, params. Each task calls one jobs entry point."""
