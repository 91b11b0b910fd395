"""The export format: pages.parquet, the LMDB key-value file, MANIFEST.json, and their verification."""
