"""The one pandas-side reader of event partitions (`<root>/ds=<day>/*.parquet`).

Spark jobs read events through `jobs.daily.build_features.read_events`; everything that reads
them into pandas (evaluation, off-policy estimates) goes through `read_event_days`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.core.lake import join, local_path


def read_event_days(
    root: str,
    days: Sequence[str],
    columns: Sequence[str],
    *,
    event_types: Sequence[str] | None = None,
    present_only: bool = False,
    with_ds: bool = False,
) -> Any:
    """The rows of `root`'s partitions `days`, in day order, as one Arrow table (None when
    `days` is empty).

    `columns` are read from each partition (`present_only`: only those its files have);
    `event_types` keeps those event types only; `with_ds` appends each row's partition day as a
    string column `ds`. Partitions whose columns differ are concatenated permissively.
    """
    import pyarrow as pa
    import pyarrow.dataset as pads

    parts = []
    for day in days:
        dataset = pads.dataset(local_path(join(root, f"ds={day}")), format="parquet")
        cols = [c for c in columns if c in dataset.schema.names] if present_only else list(columns)
        flt = None if event_types is None else pads.field("event_type").isin(list(event_types))
        table = dataset.to_table(columns=cols, filter=flt)
        if with_ds:
            table = table.append_column("ds", pa.array([day] * table.num_rows, pa.string()))
        parts.append(table)
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")
