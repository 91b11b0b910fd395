"""The maths: what decides a page (models.ranking) and how pages and models are judged
(models.evaluation). No Airflow, paths or MLflow. Imports jobs.core only."""
