"""Step 3 of an intra-day refresh (see `jobs.refresh.run`): rebuild the changed pages from the
daily rank's stored page state and write the delta export."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path
from jobs.refresh.stock import (
    newly_out_of_stock,
    pages_with,
    previous_delta,
    served_rows,
    trim_pages,
)
from jobs.refresh.windows import REBUILD_CHUNK, Window, delta_dir, find_window, stamp, window_dir

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 3. pages


class _Laps:
    """Seconds per part of the step, each from the end of the previous one."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.t0, 3)
        self.t0 = now


def pages(lake: Lake, wm: dt.datetime, cfg: Config) -> dict[str, Any]:
    """Rebuild the changed pages and write the delta export (step 3)."""
    from jobs.daily.page_state import STATE_DIR, StateReader
    from validation.export import check_summary

    laps = _Laps()
    win = find_window(lake, wm)
    out = window_dir(lake, win.base, wm)
    state = StateReader(local_path(join(lake.warehouse, "pages", f"ds={win.base}", STATE_DIR)))
    item_ids = state.arrays["item_ids"].astype(object)
    post_all = io.read_parquet(join(out, "priors.parquet"))
    new_users = io.read_parquet(join(out, "events"), ["user_id"], marker=None)["user_id"]
    new_users = set(new_users.dropna().astype(str))
    laps.lap("load")

    # stock: the latest catalogue against the one the daily run used
    gone = newly_out_of_stock(lake, win.base, item_ids, state.arrays["in_stock"])
    gone_ids = set(item_ids[gone].tolist())
    prev_delta = previous_delta(lake, win)
    served = pages_with(lake, win.base, prev_delta, gone_ids)
    laps.lap("stock")

    with_state = {k for k in served if state.has(k)}
    rebuild = sorted(new_users | with_state)
    job, items_table = _prepare_rebuild(lake, win, state, item_ids, post_all, rebuild, gone)
    tables, summaries, rebuilt_users = _rebuild_pages(job, rebuild)
    laps.lap("rebuild")

    # pages without a state (cold users' context pages, default pages) only lose gone items
    stateless = sorted(served - with_state)
    trimmed = trim_pages(served_rows(lake, win.base, prev_delta, stateless), gone_ids, job.params)
    changed = rebuilt_users | set(stateless)
    carried = prev_delta[~prev_delta["user_id"].isin(changed)] if prev_delta is not None else None
    for other in (carried, trimmed):
        if other is not None and len(other):
            tables.append(job.table(other))
            summaries.append(job.summarise(tables[-1]))
    delta = pa.concat_tables(tables) if tables else job.table(_empty_pages())
    laps.lap("assemble")

    expected = rebuilt_users | set(stateless)
    if carried is not None:
        expected |= set(carried["user_id"])
    summary = pd.concat(summaries, ignore_index=True) if summaries else job.summarise(delta)
    validation = check_summary(
        summary, np.array(sorted(expected), dtype=object), slots=job.params.slots, page_stats=None
    )
    laps.lap("validate")
    final = local_path(delta_dir(lake, win.base, wm))
    manifest = _write_delta(final, delta, items_table, win, wm, job.model_version, cfg)
    laps.lap("write")
    report = {
        "base": win.base,
        "watermark": wm.isoformat(),
        "new_event_users": len(new_users),
        "out_of_stock_items": int(gone.sum()),
        "out_of_stock_pages": len(served),
        "rebuilt_users": len(rebuilt_users),
        "trimmed_pages": len(stateless),
        "carried_users": int(carried["user_id"].nunique()) if carried is not None else 0,
        "delta_pages_checked": len(summary),
        "delta_users": manifest["users"],
        "delta_rows": manifest["rows"],
        "delta_bytes": sum(f["bytes"] for f in manifest["files"].values()),
        "path": final,
        "validation": validation,
        "timings_s": laps.timings,
    }
    io.write_json(join(out, "pages.json"), report)
    log.info(
        "refresh pages %s: %s", stamp(wm), {k: v for k, v in report.items() if k != "validation"}
    )
    return report


@dataclass
class _PageRebuild:
    """What every chunk of a window's rebuild reads: the daily run's page state and parameters,
    the posteriors to score with, the items gone out of stock."""

    state: Any  # jobs.daily.page_state.StateReader
    item_ids: np.ndarray
    params: Any  # models.ranking.rank_inputs.PageParams
    calibration: Callable[[np.ndarray], np.ndarray] | None
    carousel_ab: dict[str, tuple]
    post_by_user: pd.DataFrame
    gone: np.ndarray
    in_stock_items: pa.Array
    model_version: str

    def table(self, frame: pd.DataFrame) -> pa.Table:
        from serving_export.export.page_rows import pages_table

        return pages_table(frame)

    def summarise(self, table: pa.Table) -> pd.DataFrame:
        from validation.export import page_summary

        return page_summary(
            table,
            slots=self.params.slots,
            per_carousel=self.params.items_per_carousel,
            in_stock_items=self.in_stock_items,
        )

    def chunk(self, users: list[str]) -> tuple[pa.Table, pd.DataFrame, np.ndarray]:
        """The pages of `users` (those with a state), their summary, the users rebuilt."""
        from models.ranking.pages import build_pages

        scored, st = self._scored(users)
        meta, arrays = self.state.meta, self.state.arrays
        frame = build_pages(
            scored,
            meta["w"],
            self.params,
            self.item_ids,
            exam=arrays.get("exam"),
            calibration=self.calibration,
            randomise=True,
            seed=int(meta["seed"]),
            categorical=True,
        ).frame
        # Arrow straight from the categoricals (no per-row Python objects), checked here, on
        # the worker thread
        table = self.table(frame.assign(model_version=self.model_version))
        return table, self.summarise(table), st.users

    def _scored(self, users: list[str]) -> tuple[Any, Any]:
        from models.ranking.scored_batch import scored_from_state

        state, meta, arrays = self.state, self.state.meta, self.state.arrays
        st = state.read(users)
        cid = state.carousel_id[st.code]
        want = pd.DataFrame({"user_id": st.users[st.cand_user], "carousel_id": cid})
        post_tab = self.post_by_user[self.post_by_user["user_id"].isin(set(st.users.tolist()))]
        post = want.merge(post_tab, on=["user_id", "carousel_id"], how="left")
        scored = scored_from_state(
            users=st.users,
            cand_user=st.cand_user,
            carousel_id=cid,
            title=state.title[st.code],
            family=state.family[st.code],
            reason=state.reason[st.code],
            fixed_order=state.fixed_order[st.code],
            rel_sum=st.rel_sum,
            gamma=st.gamma,
            items=st.items,
            item_scores=st.scores,
            new_pool=st.new_pool,
            new_score=st.new_score,
            post=post,
            carousel_ab=self.carousel_ab,
            carousel_lam=meta["carousel_lam"],
            p_global=meta["p_global"],
            v_items=arrays["v_items"],
            item_cat=arrays["item_cat"],
            item_brand=arrays["item_brand"],
            per_carousel=self.params.items_per_carousel,
            unavailable=self.gone,
            calibrated=meta.get("item_mode") == "rerank",
        )
        return scored, st


def _prepare_rebuild(
    lake: Lake,
    win: Window,
    state: Any,
    item_ids: np.ndarray,
    post_all: pd.DataFrame,
    rebuild: list[str],
    gone: np.ndarray,
) -> tuple[_PageRebuild, pd.DataFrame]:
    """The rebuild's inputs (from the page state's meta, the window's and the daily run's
    posteriors, the base's items table) and that items table."""
    from models.ranking.rank_inputs import PageParams

    meta = state.meta
    params = PageParams(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["page_params"].items()}
    )
    cal = meta.get("carousel_calibration")
    calibration = None
    if cal:
        x, y = np.asarray(cal["x"], np.float64), np.asarray(cal["y"], np.float64)

        def calibration(phi: np.ndarray) -> np.ndarray:
            return np.interp(phi, x, y)

    refreshed = set(post_all["user_id"].unique())
    carousel_ab = {k: tuple(v) for k, v in meta["carousel_ab"].items()}
    # users rebuilt without refreshed posteriors (stock changes only, or events that are no
    # carousel trial) keep the daily run's: read once, not per chunk
    daily_post = _daily_priors(lake, win.base, [u for u in rebuild if u not in refreshed])
    post_by_user = post_all[["user_id", "carousel_id", "lam", "a", "b"]]
    if len(daily_post):
        post_by_user = pd.concat([post_by_user, daily_post], ignore_index=True)
    items_table = io.read_parquet(
        join(lake.warehouse, "items", f"ds={win.base}"),
        ["item_id", "title", "category_id", "brand", "price", "in_stock"],
        marker=None,
    )
    in_stock = set(items_table.loc[items_table["in_stock"].fillna(True).astype(bool), "item_id"])
    gone_ids = set(item_ids[gone].tolist())
    job = _PageRebuild(
        state=state,
        item_ids=item_ids,
        params=params,
        calibration=calibration,
        carousel_ab=carousel_ab,
        post_by_user=post_by_user,
        gone=gone,
        in_stock_items=pa.array(sorted(in_stock - gone_ids), pa.string()),
        model_version=str(meta["model_version"]),
    )
    return job, items_table


def _rebuild_pages(
    job: _PageRebuild, rebuild: list[str]
) -> tuple[list[pa.Table], list[pd.DataFrame], set[str]]:
    """The pages of `rebuild` with a state: tables and summaries in key order, the users."""
    # in chunks, on a few threads (numpy and Arrow release the GIL): memory stays bounded, and
    # a page does not depend on its chunk (per-user random streams); results keep the chunks'
    # order, so the rebuilt pages stay in key order
    chunks = [rebuild[lo : lo + REBUILD_CHUNK] for lo in range(0, len(rebuild), REBUILD_CHUNK)]
    with ThreadPoolExecutor((os.cpu_count() or 1) + 1) as pool:
        built = list(pool.map(job.chunk, chunks))
    tables = [t for t, _, _ in built]
    summaries = [sm for _, sm, _ in built]
    rebuilt_users = set().union(*(set(u.tolist()) for _, _, u in built))  # those with a state
    return tables, summaries, rebuilt_users


def _write_delta(
    final: str,
    delta: pa.Table,
    items_table: pd.DataFrame,
    win: Window,
    wm: dt.datetime,
    model_version: str,
    cfg: Config,
) -> dict[str, Any]:
    """The delta export (user pages, default pages, items) into `final`, atomically."""
    from serving_export.export.writer import write_export

    is_default = pc.equal(delta["user_id"], DEFAULT_PAGE_KEY)
    default = delta.filter(is_default)
    user_pages = delta.filter(pc.invert(is_default))
    with io.atomic_dir(final) as staging:
        return write_export(
            staging,
            user_pages,
            default,
            items_table,
            ds=win.base,
            model_versions={"model": model_version},
            config_hash=cfg.hash(),
            delta={"watermark": wm.isoformat(), "refreshed_at": _iso(wm)},
        )


def _empty_pages() -> pd.DataFrame:
    from models.ranking.pages import PAGE_COLUMNS

    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*PAGE_COLUMNS, "model_version")})


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _daily_priors(lake: Lake, base: str, users: list[str]) -> pd.DataFrame:
    """The daily run's posteriors of `users` (for pages rebuilt only for stock changes)."""
    cols = ["user_id", "carousel_id", "lam", "a", "b"]
    if not users:
        return pd.DataFrame(columns=cols)
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    data = pads.dataset(local_path(lake.feature("user_carousel_priors", base)), format="parquet")
    return data.to_table(columns=cols, filter=pc.field("user_id").isin(users)).to_pandas()
