"""The export (Parquet + LMDB + MANIFEST), its atomic publish, and the lookup server that serves
it. Recomputes nothing. Imports jobs.core only."""
