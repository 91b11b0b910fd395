"""The bottom layer: typed config, lake paths and schemas, file-system and atomic helpers, locks, the Spark session, MLflow tracking, the product's exceptions. Imports nothing else of the project."""
