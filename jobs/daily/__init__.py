"""The daily pipeline's steps (ingest, build_features, train, promote, rank, export, publish) and what only they use. Imports jobs.core, features, models, validation, serving_export."""
