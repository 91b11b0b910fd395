"""Raw input files checked before Spark reads them (shared by the daily ingest and the intra-day
refresh): each Parquet footer against the input contract (`SchemaError` names the file, column
and types; the rules are in jobs/daily/ingest.py's docstring), files grouped by schema and read
group by group, and the bad-row share check."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from jobs.core import io
from jobs.core.errors import IngestError


class SchemaError(IngestError, ValueError):
    """A raw file breaks the input contract: a required column is missing, or a column's type
    cannot be cast safely. The message names the table, partition, file, column and types."""


def type_problem(column: str, actual: pa.DataType, expected: pa.DataType) -> str | None:
    """Why a column of type `actual` cannot stand for the contract's `expected`; None if it can
    be cast safely (the rules are in jobs/daily/ingest.py's docstring)."""
    t = actual.value_type if pa.types.is_dictionary(actual) else actual
    if pa.types.is_null(t) or t == expected:
        return None
    want = str(expected)
    if pa.types.is_string(expected):
        ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    elif pa.types.is_integer(expected) or pa.types.is_floating(expected):
        ok = (
            pa.types.is_integer(t)
            or pa.types.is_decimal(t)
            or (pa.types.is_floating(t) and not pa.types.is_float16(t))
        )
        want += " or another numeric type"
    elif pa.types.is_timestamp(expected):
        ok = pa.types.is_timestamp(t) and t.unit != "ns"
        if pa.types.is_timestamp(t) and t.unit == "ns":
            want += " (Spark cannot read nanosecond timestamps: write microseconds)"
    elif pa.types.is_date(expected):
        ok = pa.types.is_date(t)
    else:  # bool: exactly the contract's type
        ok = False
    return None if ok else f"column {column} has type {actual}, expected {want}"


def _footer(uri: str) -> pa.Schema | str:
    """A Parquet file's Arrow schema, or why it cannot be read (INT96 timestamps, which Spark
    writes by default, are read as microseconds, as Spark reads them)."""
    import pyarrow.parquet as pq

    fs, path = io.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f, coerce_int96_timestamp_unit="us").schema_arrow
    except (OSError, pa.ArrowException) as exc:
        return f"not a readable Parquet file ({exc})"


def check_files(
    files: list[tuple[str, str]], contract: pa.Schema, required: tuple[str, ...]
) -> dict[tuple[tuple[str, str], ...], list[str]]:
    """Check each (label, uri) file's columns against the contract; group the URIs by schema.

    Files with different (but safe) schemas are read separately and unioned after conforming,
    so e.g. `slot` as int64 one day and int32 the next never meets Spark's schema merging.
    Raises `SchemaError` listing every bad file (the first ten) and its problems.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:  # footers are small reads: overlap them
        schemas = list(pool.map(_footer, [uri for _, uri in files]))
    problems: list[str] = []
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for (label, uri), schema in zip(files, schemas, strict=True):
        if isinstance(schema, str):
            problems.append(f"{label}: {schema}")
            continue
        found = []
        missing = [c for c in required if c not in schema.names]
        if missing:
            found.append(f"missing required column(s): {', '.join(missing)}")
        for field in contract:
            if field.name in schema.names:
                problem = type_problem(field.name, schema.field(field.name).type, field.type)
                if problem:
                    found.append(problem)
        if found:
            problems.append(f"{label}: {'; '.join(found)}")
        else:
            groups.setdefault(tuple((f.name, str(f.type)) for f in schema), []).append(uri)
    if problems:
        more = [f"and {len(problems) - 10} more file(s)"] if len(problems) > 10 else []
        raise SchemaError(" | ".join(problems[:10] + more))
    return groups


def read_groups(
    spark: Any, groups: dict[Any, list[str]], conform: Callable[[Any], Any], base_path: str
) -> Any:
    """The files of each schema group, read and conformed, then unioned (None if no files)."""
    frames = [
        conform(spark.read.option("basePath", base_path).parquet(*uris)) for uris in groups.values()
    ]
    if not frames:
        return None
    return functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def share_error(label: str, counts: dict[str, Any], max_bad_share: float) -> str | None:
    """The failure message when `counts` (raw, quarantined, reasons) exceed the share."""
    raw, bad = counts["raw"], counts["quarantined"]
    if not raw or bad / raw <= max_bad_share:
        return None
    reasons = dict(sorted(counts["reasons"].items()))
    return (
        f"{label}: {bad} of {raw} rows ({bad / raw:.1%}) were rejected, above "
        f"ingest.max_bad_share={max_bad_share:.1%}; reasons: {reasons}"
    )
