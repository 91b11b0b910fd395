"""A Parquet file written one batch at a time: the rank step streams pages and candidates to
disk so that memory stays bounded at a million users and more."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd


class ParquetSink:
    """A Parquet file written one batch at a time (to `<path>.tmp`, renamed in on close)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = f"{path}.tmp-{os.getpid()}"
        self.writer: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        if self.writer is None:
            # categoricals are written as plain strings (Arrow decodes them in C++)
            self.schema = pa.schema(
                [
                    pa.field(
                        f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type
                    )
                    for f in table.schema
                ]
            )
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.writer.write_table(table.cast(self.schema))

    def write_table(self, table: Any) -> None:
        """Rows already in the file's columns (after at least one `write`)."""
        self.writer.write_table(table.select(self.schema.names).cast(self.schema))

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        os.replace(self.tmp, self.path)
