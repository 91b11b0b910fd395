"""Shared building blocks of the dataset importers: the `Tables` an importer returns, reading a
source file, and pandas-to-Arrow conversions into the input contract (ids, UTC timestamps,
category paths, first-seen dates, hashed pseudo ids)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

Progress = Callable[[str], None]


@dataclass
class Tables:
    """The input tables of one dataset, ready to write."""

    events: pa.Table
    items: pa.Table
    users: pa.Table | None = None
    carousels: pa.Table | None = None
    item_changes: pa.Table | None = None  # ITEM_CHANGE_SCHEMA; None or empty: no dated changes


def read_source(src: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(src / name, columns=columns).to_pandas()


def to_table(df: pd.DataFrame, schema: pa.Schema, extra: pa.Schema | None = None) -> pa.Table:
    """Build a table with exactly `schema` (+ `extra`) columns; absent columns become nulls."""
    fields = list(schema) + (list(extra) if extra is not None else [])
    arrays = []
    for f in fields:
        if f.name in df.columns:
            arrays.append(pa.array(df[f.name], type=f.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(len(df), type=f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def plain_table(df: pd.DataFrame) -> pa.Table:
    """A table without pandas metadata (profile columns keep their pandas-inferred types)."""
    return pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)


def to_utc(values: pd.Series) -> pd.Series:
    """Naive or aware datetimes as UTC microseconds (naive ones are read as UTC)."""
    out = pd.to_datetime(values)
    out = out.dt.tz_localize("UTC") if out.dt.tz is None else out.dt.tz_convert("UTC")
    return out.astype("datetime64[us, UTC]")


def path_part(values: pd.Series) -> pd.Series:
    # category_path is "/"-separated, so a "/" inside a name would add a level.
    return values.astype("string").str.replace("/", "-", regex=False).str.strip()


def first_seen(events: pd.DataFrame, item_ids: pd.Series) -> pd.Series:
    """Date each item is first seen in the events; the earliest event date otherwise.

    A listing date the data can vouch for: the item is in the catalogue of runs with
    `ds` > that day, and no event of the item precedes it. An item without events gets the
    earliest event date (the data says nothing about when it was listed)."""
    days = events["ts"].dt.floor("D")
    first = days.groupby(events["item_id"]).min()
    return item_ids.map(first).fillna(days.min()).dt.date


def short_hash(parts: pd.DataFrame) -> pd.Series:
    """First 12 hex digits of sha1 over the "|"-joined values of each row."""
    cols = [parts[c].astype("string").fillna("") for c in parts.columns]
    joined = cols[0].str.cat(cols[1:], sep="|")  # vectorised; a row-wise join is 100x slower
    unique = joined.drop_duplicates()  # few distinct rows: hash each once
    digest = {v: hashlib.sha1(v.encode()).hexdigest()[:12] for v in unique}
    return joined.map(digest)
