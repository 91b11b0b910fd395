"""The export: format (file names, LMDB layout, page JSON), page_rows (checks, key order, chunks),
writer (pages.parquet + pages.lmdb + MANIFEST.json), verify (readers and verification)."""
