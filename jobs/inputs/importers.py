"""Import the three real datasets in `shared/data/` into a lake in the input contract.

`import_dataset(name, src, lake_root)` reads the Parquet files of one dataset and writes

    events/ds=YYYY-MM-DD/part-0.parquet   EVENT_SCHEMA (+ extra columns, OBD only)
    items/part-0.parquet                  ITEM_SCHEMA, exactly
    users/part-0.parquet                  user_id + profile columns (completejourney, obd)
    carousels/part-0.parquet              CAROUSEL_SCHEMA (completejourney, obd)
    item_changes/part-0.parquet           ITEM_CHANGE_SCHEMA, only when the dataset has dated
                                          changes (completejourney: prices); absent = none

Ids are the source ids as strings (Instacart product 196 -> "196"); only OBD item ids are
prefixed with their campaign, because OBD numbers items per campaign. Event ids are built from
source keys, so they are deterministic and unique and a re-import yields the same ids.
Timestamps are `timestamp[us, UTC]`; an event's `ds` is the UTC date of its `ts`.

Every date written is the day a fact became known (`jobs.core.lake`); each dataset module
says what its data really knows and how it is dated.

A re-import replaces the lake's input tables as a whole (`INPUT_TABLES`: events, items,
item_changes, users, carousels and a generated lake's `_truth/`, which would describe other
data; a table the new import does not write is removed): the new tables are written to a
staging folder inside the lake first and then moved into place, so a failed import leaves the
previous tables untouched and no stale partition survives. Pipeline outputs (`warehouse/`,
`exports/`) are left alone. Local lakes only.

One module per dataset says how its source maps to the contract: `jobs.inputs.instacart`,
`jobs.inputs.completejourney` and `jobs.inputs.obd`; `jobs.inputs.source_tables` holds what they
share.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.lake import INPUT_TABLES, Lake, local_path
from jobs.inputs.completejourney import build_completejourney
from jobs.inputs.instacart import build_instacart
from jobs.inputs.obd import build_obd
from jobs.inputs.source_tables import Progress, Tables

# Input tables an import owns; all are replaced together.


def _require(src: Path, files: tuple[str, ...]) -> None:
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    for name in files:
        if not (src / name).is_file():
            raise FileNotFoundError(f"missing source file {src / name}")


DATASETS: dict[str, tuple[tuple[str, ...], Callable[[Path, Progress], Tables]]] = {
    "instacart": (("orders.parquet", "events.parquet", "items.parquet"), build_instacart),
    "completejourney": (
        ("transactions.parquet", "items.parquet", "households.parquet", "promotions.parquet"),
        build_completejourney,
    ),
    "obd": (("impressions.parquet", "items.parquet"), build_obd),
}


def _write_events(events: pa.Table, folder: str) -> list[str]:
    """One `ds=` partition per UTC day, rows sorted by ts; returns the ds values written."""
    events = events.sort_by([("ts", "ascending"), ("event_id", "ascending")])
    ds = pc.strftime(events["ts"], format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    days, starts = np.unique(ds, return_index=True)  # ds is sorted because ts is
    bounds = [*starts.tolist(), len(ds)]
    for day, lo, hi in zip(days, bounds[:-1], bounds[1:], strict=True):
        part = os.path.join(folder, f"ds={day}")
        os.makedirs(part)
        pq.write_table(events.slice(lo, hi - lo), os.path.join(part, "part-0.parquet"))
    return [str(d) for d in days]


def _write_single(table: pa.Table | None, folder: str) -> None:
    if table is None or table.num_rows == 0:  # an optional table is absent rather than empty
        return
    os.makedirs(folder)
    pq.write_table(table, os.path.join(folder, "part-0.parquet"))


def _swap_in(staging: str, root: str) -> None:
    """Replace every input table of the lake by the staged one (or remove it if not staged)."""
    for table in INPUT_TABLES:
        target = os.path.join(root, table)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
        staged = os.path.join(staging, table)
        if os.path.exists(staged):
            os.rename(staged, target)


def _stats(name: str, tables: Tables, days: list[str], seconds: float) -> dict:
    types = pc.value_counts(tables.events["event_type"]).to_pylist()
    return {
        "dataset": name,
        "events": tables.events.num_rows,
        "event_types": {t["values"]: t["counts"] for t in types},
        "users": pc.count_distinct(tables.events["user_id"]).as_py(),
        "user_profiles": tables.users.num_rows if tables.users is not None else 0,
        "items": tables.items.num_rows,
        "carousels": tables.carousels.num_rows if tables.carousels is not None else 0,
        "item_changes": tables.item_changes.num_rows if tables.item_changes is not None else 0,
        "days": len(days),
        "first_ds": days[0] if days else None,
        "last_ds": days[-1] if days else None,
        "seconds": round(seconds, 2),
    }


def import_dataset(name: str, src: str, lake_root: str, progress: Progress | None = None) -> dict:
    """Convert dataset `name` from the Parquet files in `src` into the lake at `lake_root`.

    Returns stats: dataset, events, event_types, users (distinct in events), user_profiles,
    items, carousels, item_changes, days, first_ds, last_ds, seconds. Raises ValueError for an unknown
    dataset and FileNotFoundError naming a missing source file.
    """
    started = time.monotonic()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    say = progress or (lambda _msg: None)
    files, build = DATASETS[name]
    src_dir = Path(local_path(src))
    _require(src_dir, files)
    root = local_path(Lake(lake_root).root)  # local lakes only: a URI fails here, before work
    tables = build(src_dir, say)

    os.makedirs(root, exist_ok=True)
    staging = os.path.join(root, f".import-{uuid.uuid4().hex[:8]}")
    try:
        say(f"{name}: writing {tables.events.num_rows:,} events")
        days = _write_events(tables.events, os.path.join(staging, "events"))
        _write_single(tables.items, os.path.join(staging, "items"))
        _write_single(tables.users, os.path.join(staging, "users"))
        _write_single(tables.carousels, os.path.join(staging, "carousels"))
        _write_single(tables.item_changes, os.path.join(staging, "item_changes"))
        _swap_in(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stats = _stats(name, tables, days, time.monotonic() - started)
    say(
        f"{name}: {stats['events']:,} events over {stats['days']} days "
        f"({stats['first_ds']}..{stats['last_ds']}) in {stats['seconds']}s"
    )
    return stats


__all__ = ["DATASETS", "import_dataset"]
