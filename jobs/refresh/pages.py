"""Step 3 of an intra-day refresh (see `jobs.refresh.run`): rebuild the changed pages from the
daily rank's stored page state and write the delta export."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path
from jobs.refresh.windows import (
    REBUILD_CHUNK,
    RefreshError,
    Window,
    delta_dir,
    find_window,
    stamp,
    window_dir,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 3. pages


def pages(lake: Lake, wm: dt.datetime, cfg: Config) -> dict[str, Any]:
    """Rebuild the changed pages and write the delta export (step 3)."""
    from jobs.daily.page_state import STATE_DIR, StateReader
    from models.ranking.pages import PageParams, build_pages, scored_from_state
    from serving_export.export.page_rows import pages_table
    from serving_export.export.writer import write_export
    from validation.export import check_summary, page_summary

    t0 = time.perf_counter()
    win = find_window(lake, wm)
    out = window_dir(lake, win.base, wm)
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        t0 = now

    state = StateReader(local_path(join(lake.warehouse, "pages", f"ds={win.base}", STATE_DIR)))
    meta, arrays = state.meta, state.arrays
    item_ids = arrays["item_ids"].astype(object)
    post_all = io.read_parquet(join(out, "priors.parquet"))
    new_users = io.read_parquet(join(out, "events"), ["user_id"], marker=None)["user_id"]
    new_users = set(new_users.dropna().astype(str))
    lap("load")

    # stock: the latest catalogue against the one the daily run used
    gone = _newly_out_of_stock(lake, item_ids, arrays["in_stock"])
    gone_ids = set(item_ids[gone].tolist())
    prev_delta = _previous_delta(lake, win)
    served = _pages_with(lake, win.base, prev_delta, gone_ids)
    lap("stock")

    with_state = {k for k in served if state.has(k)}
    rebuild = sorted(new_users | with_state)
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
    in_stock_items = pa.array(sorted(in_stock - gone_ids), pa.string())
    model_version = str(meta["model_version"])

    def summarise(table: pa.Table) -> pd.DataFrame:
        return page_summary(
            table,
            slots=params.slots,
            per_carousel=params.items_per_carousel,
            in_stock_items=in_stock_items,
        )

    def rebuild_chunk(users: list[str]) -> tuple[pa.Table, pd.DataFrame, np.ndarray]:
        st = state.read(users)
        cid = state.carousel_id[st.code]
        want = pd.DataFrame({"user_id": st.users[st.cand_user], "carousel_id": cid})
        post_tab = post_by_user[post_by_user["user_id"].isin(set(st.users.tolist()))]
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
            carousel_ab=carousel_ab,
            carousel_lam=meta["carousel_lam"],
            p_global=meta["p_global"],
            v_items=arrays["v_items"],
            item_cat=arrays["item_cat"],
            item_brand=arrays["item_brand"],
            per_carousel=params.items_per_carousel,
            unavailable=gone,
            calibrated=meta.get("item_mode") == "rerank",
        )
        frame = build_pages(
            scored,
            meta["w"],
            params,
            item_ids,
            exam=arrays.get("exam"),
            calibration=calibration,
            randomise=True,
            seed=int(meta["seed"]),
            categorical=True,
        ).frame
        # Arrow straight from the categoricals (no per-row Python objects), checked here, on
        # the worker thread
        table = pages_table(frame.assign(model_version=model_version))
        return table, summarise(table), st.users

    # in chunks, on a few threads (numpy and Arrow release the GIL): memory stays bounded, and
    # a page does not depend on its chunk (per-user random streams); results keep the chunks'
    # order, so the rebuilt pages stay in key order
    chunks = [rebuild[lo : lo + REBUILD_CHUNK] for lo in range(0, len(rebuild), REBUILD_CHUNK)]
    with ThreadPoolExecutor((os.cpu_count() or 1) + 1) as pool:
        built = list(pool.map(rebuild_chunk, chunks))
    tables = [t for t, _, _ in built]
    summaries = [sm for _, sm, _ in built]
    rebuilt_users = set().union(*(set(u.tolist()) for _, _, u in built))  # those with a state
    n_rebuilt = len(rebuilt_users)
    lap("rebuild")

    # pages without a state (cold users' context pages, default pages) only lose gone items
    stateless = sorted(served - with_state)
    trimmed = _trim(_served_rows(lake, win.base, prev_delta, stateless), gone_ids, params)
    changed = rebuilt_users | set(stateless)
    carried = prev_delta[~prev_delta["user_id"].isin(changed)] if prev_delta is not None else None
    for other in (carried, trimmed):
        if other is not None and len(other):
            tables.append(pages_table(other))
            summaries.append(summarise(tables[-1]))
    delta = pa.concat_tables(tables) if tables else pages_table(_empty_pages())
    lap("assemble")

    expected = rebuilt_users | set(stateless)
    if carried is not None:
        expected |= set(carried["user_id"])
    summary = pd.concat(summaries, ignore_index=True) if summaries else summarise(delta)
    validation = check_summary(
        summary, np.array(sorted(expected), dtype=object), slots=params.slots, page_stats=None
    )
    lap("validate")
    is_default = pc.equal(delta["user_id"], DEFAULT_PAGE_KEY)
    default = delta.filter(is_default)
    user_pages = delta.filter(pc.invert(is_default))
    final = local_path(delta_dir(lake, win.base, wm))
    with io.atomic_dir(final) as staging:
        manifest = write_export(
            staging,
            user_pages,
            default,
            items_table,
            ds=win.base,
            model_versions={"model": model_version},
            config_hash=cfg.hash(),
            delta={"watermark": wm.isoformat(), "refreshed_at": _iso(wm)},
        )
    lap("write")
    report = {
        "base": win.base,
        "watermark": wm.isoformat(),
        "new_event_users": len(new_users),
        "out_of_stock_items": int(gone.sum()),
        "out_of_stock_pages": len(served),
        "rebuilt_users": n_rebuilt,
        "trimmed_pages": len(stateless),
        "carried_users": int(carried["user_id"].nunique()) if carried is not None else 0,
        "delta_pages_checked": len(summary),
        "delta_users": manifest["users"],
        "delta_rows": manifest["rows"],
        "delta_bytes": sum(f["bytes"] for f in manifest["files"].values()),
        "path": final,
        "validation": validation,
        "timings_s": timings,
    }
    io.write_json(join(out, "pages.json"), report)
    log.info(
        "refresh pages %s: %s", stamp(wm), {k: v for k, v in report.items() if k != "validation"}
    )
    return report


def _empty_pages() -> pd.DataFrame:
    from models.ranking.pages import PAGE_COLUMNS

    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*PAGE_COLUMNS, "model_version")})


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _newly_out_of_stock(lake: Lake, item_ids: np.ndarray, daily_in_stock: np.ndarray) -> np.ndarray:
    """Per catalogue item of the base: in stock for the daily run, out of stock now."""
    files = io.list_files(lake.items)
    if not files:
        return np.zeros(len(item_ids), dtype=bool)
    latest = io.read_parquet(lake.items, marker=None)
    if "in_stock" not in latest.columns:
        return np.zeros(len(item_ids), dtype=bool)
    latest = latest.dropna(subset=["item_id"])
    flag = latest.assign(item_id=latest["item_id"].astype(str)).drop_duplicates(
        "item_id", keep="last"
    )
    now = flag.set_index("item_id")["in_stock"].reindex(item_ids)
    out_now = (now.notna() & (now.fillna(True) == False)).to_numpy()  # noqa: E712 - pandas mask
    return out_now & np.asarray(daily_in_stock, dtype=bool)


def _previous_delta(lake: Lake, win: Window) -> pd.DataFrame | None:
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


def _pages_with(lake: Lake, base: str, prev_delta: pd.DataFrame | None, gone: set[str]) -> set[str]:
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


def _served_rows(
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


def _trim(rows: pd.DataFrame, gone: set[str], params: Any) -> pd.DataFrame:
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


def _daily_priors(lake: Lake, base: str, users: list[str]) -> pd.DataFrame:
    """The daily run's posteriors of `users` (for pages rebuilt only for stock changes)."""
    cols = ["user_id", "carousel_id", "lam", "a", "b"]
    if not users:
        return pd.DataFrame(columns=cols)
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    data = pads.dataset(local_path(lake.feature("user_carousel_priors", base)), format="parquet")
    return data.to_table(columns=cols, filter=pc.field("user_id").isin(users)).to_pandas()
