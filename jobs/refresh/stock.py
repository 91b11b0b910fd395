"""What a stock change does to the served pages during the day (for `jobs.refresh.pages`): the
items gone out of stock since the daily run, the served pages (the previous delta's, else the
daily export's) that show them, and those pages without them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.lake import Lake, local_path
from jobs.refresh.windows import RefreshError, Window, delta_dir, stamp


def stock_now(lake: Lake, day: str, item_ids: np.ndarray) -> pd.Series:
    """Each item's stock flag during `day` (NaN where unknown): the catalogue row's, overridden
    by its latest `item_changes` stock flag dated on or before `day` (today's changes count:
    the refresh reacts to them within the day)."""
    flags = pd.Series(np.nan, index=pd.Index(item_ids, dtype=object), dtype=object)
    for table, dated in ((lake.items, None), (lake.item_changes, "changed_on")):
        if not io.list_files(table):
            continue
        frame = io.read_parquet(table, marker=None)
        if "in_stock" not in frame.columns:
            continue
        frame = frame.dropna(subset=["item_id", "in_stock"])
        if dated is not None:
            frame = frame.dropna(subset=[dated])
            frame = frame[pd.to_datetime(frame[dated]) <= pd.Timestamp(day)]
            frame = frame.sort_values(dated, kind="stable")
        latest = frame.assign(item_id=frame["item_id"].astype(str)).drop_duplicates(
            "item_id", keep="last"
        )
        known = latest.set_index("item_id")["in_stock"].reindex(flags.index)
        flags = known.where(known.notna(), flags)
    return flags


def newly_out_of_stock(
    lake: Lake, day: str, item_ids: np.ndarray, daily_in_stock: np.ndarray
) -> np.ndarray:
    """Per catalogue item of the daily run of `day`: in stock for it, out of stock now."""
    now = stock_now(lake, day, item_ids)
    out_now = np.array([flag is False or flag is np.False_ for flag in now], dtype=bool)
    return out_now & np.asarray(daily_in_stock, dtype=bool)


def previous_delta(lake: Lake, win: Window) -> pd.DataFrame | None:
    """The previous window's delta pages (what was served before this window), or None."""
    if win.prev is None:
        return None
    from serving_export.export.format import PARQUET_FILE

    path = os.path.join(local_path(delta_dir(lake, win.base, win.prev)), PARQUET_FILE)
    if not os.path.exists(path):
        raise RefreshError(
            f"the previous window {stamp(win.prev)} has no delta: re-run it before this one"
        )
    frame = pd.read_parquet(path)
    return frame.drop(columns=[c for c in ("refreshed_at",) if c in frame.columns])


def pages_with(lake: Lake, base: str, prev_delta: pd.DataFrame | None, gone: set[str]) -> set[str]:
    """Page keys whose served page (the previous delta's, else the daily export's) shows a
    gone item."""
    if not gone:
        return set()
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from serving_export.export.format import PARQUET_FILE

    daily = pads.dataset(os.path.join(local_path(lake.export(base)), PARQUET_FILE))
    hit = daily.to_table(columns=["user_id"], filter=pc.field("item_id").isin(sorted(gone)))
    keys = set(hit["user_id"].to_pylist())
    if prev_delta is not None:
        in_delta = set(prev_delta["user_id"])
        keys = {k for k in keys if k not in in_delta}  # the delta's page is the served one
        keys |= set(prev_delta.loc[prev_delta["item_id"].isin(gone), "user_id"])
    return keys


def served_rows(
    lake: Lake, base: str, prev_delta: pd.DataFrame | None, keys: list[str]
) -> pd.DataFrame:
    """The served page rows of `keys` (the previous delta's where it has them)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from serving_export.export.format import PARQUET_FILE

    if not keys:
        return pd.DataFrame()
    frames = []
    rest = set(keys)
    if prev_delta is not None:
        mine = prev_delta[prev_delta["user_id"].isin(rest)]
        frames.append(mine)
        rest -= set(mine["user_id"])
    if rest:
        daily = pads.dataset(os.path.join(local_path(lake.export(base)), PARQUET_FILE))
        frames.append(daily.to_table(filter=pc.field("user_id").isin(sorted(rest))).to_pandas())
    return pd.concat(frames, ignore_index=True)


def trim_pages(rows: pd.DataFrame, gone: set[str], params: Any) -> pd.DataFrame:
    """Pages without their gone items: items move left, a carousel left with fewer than
    `min_items` drops out and the slots below move up, as long as no two adjacent slots then
    share a family (else the short carousel keeps its remaining items)."""
    if not len(rows):
        return rows
    keep = rows[~rows["item_id"].isin(gone)].copy()
    keep = keep.sort_values(["user_id", "slot", "item_rank"], kind="stable")
    size = keep.groupby(["user_id", "slot"])["item_id"].transform("size")
    out = []
    for _, page in keep.assign(_n=size).groupby("user_id", sort=False):
        slots = page.drop_duplicates("slot")[["slot", "family", "_n"]].to_numpy(object)
        kept: list[int] = []
        for s, fam, n in slots:
            if n < params.min_items:
                continue
            if (
                kept
                and page.loc[page["slot"] == kept[-1], "family"].iloc[0] == fam
                and fam is not None
            ):
                continue
            kept.append(int(s))
        part = page[page["slot"].isin(kept)].copy()
        part["slot"] = part["slot"].map({s: i + 1 for i, s in enumerate(kept)}).astype(np.int32)
        part["item_rank"] = part.groupby("slot").cumcount().add(1).astype(np.int32)
        out.append(part.drop(columns="_n"))
    return pd.concat(out, ignore_index=True) if out else rows.iloc[0:0]
