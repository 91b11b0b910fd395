"""Rank job: carousel candidates → item order → Walmart score φ → pages of Z × M for every user.

Reads the feature tables of `ds` and the *champion* model bundle (MF factors, calibrated
engagement heads, the w chosen on validation data); writes the scored candidates (λ, α, γ, φ
per user–carousel, reused by later refreshes) and the pages in the export's row format.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io, remote
from jobs.core.config import Config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path
from jobs.daily.context_pages import (
    DAYPARTS,
    context_key,
    context_popularity,
    context_segments,
)
from jobs.daily.page_inputs import (
    carousel_calibration,
    known_users,
    load_inputs,
    page_params,
    slot_examination,
)
from jobs.daily.page_state import STATE_DIR, StateWriter
from jobs.daily.parquet_sink import ParquetSink

log = logging.getLogger(__name__)

BATCH = 1024

BuildResult = tuple[Any, Any, dict[str, float], Any]


def champion_bundle(lake: Lake, ds: str, cfg: Config) -> Any:
    """The bundle that ranks `ds`: the champion, or for a past day the version that served it."""
    from jobs.daily.bundle import load_bundle, load_version
    from jobs.daily.promotion_log import past_day

    past = past_day(lake, ds)
    if past is not None and past["champion_after"] is not None:
        # a day older than the newest decided one (a re-run, a backfill reaching back) is
        # ranked by the version that served it, not by a champion trained on later data
        return load_version(lake, cfg, past["champion_after"])
    return load_bundle(lake, cfg, alias="champion")


class PageRun:
    """One rank run's pages: built batch by batch and streamed to the pages, candidates and
    page-state outputs, with row counts and per-part timings."""

    def __init__(
        self, lake: Lake, ds: str, cfg: Config, bundle: Any, inputs: Any, out_dirs: tuple[str, str]
    ) -> None:
        import zlib

        self.bundle, self.inputs = bundle, inputs
        self.params = page_params(cfg)
        self.exam = slot_examination(lake, ds)
        self.calibration = carousel_calibration(bundle.info)
        self.seed = zlib.crc32(f"{ds}:{cfg.page.seed}".encode())
        out_dir, cand_dir = out_dirs
        os.makedirs(out_dir, exist_ok=True)
        os.makedirs(cand_dir, exist_ok=True)
        # pages and candidates are streamed to Parquet batch by batch: memory stays bounded at 1M+
        self.page_sink = ParquetSink(os.path.join(out_dir, "pages.parquet"))
        self.cand_sink = ParquetSink(os.path.join(cand_dir, "candidates.parquet"))
        # the score components of every warm user's candidates, for intra-day refreshes
        self.state = StateWriter(os.path.join(out_dir, STATE_DIR))
        self.stat_frames: list[pd.DataFrame] = []
        self.defaults: list[pd.DataFrame] = []
        self.counts = {"rows": 0, "explored": 0, "randomised": 0}
        self.parts: dict[str, float] = {}

    def emit(self, frame: pd.DataFrame) -> None:
        frame["model_version"] = self.bundle.model_version
        self.page_sink.write(frame)
        self.counts["rows"] += len(frame)
        self.counts["explored"] += int((frame["reason"] == "explore").sum())
        self.counts["randomised"] += int((frame["propensity"] < 1).sum())

    def build(
        self, batch_users: np.ndarray, matrices: Any, reason: str | None, item_mode: str
    ) -> BuildResult:
        from models.ranking.batch_scoring import score_batch
        from models.ranking.pages import build_pages

        t = time.perf_counter()
        if matrices is None:
            matrices = self.inputs.user_matrices(batch_users)
        timing = {"user_matrices": time.perf_counter() - t}
        scored = score_batch(self.inputs, batch_users, matrices, self.params, item_mode, reason)
        timing |= scored.timings
        t_pages = time.perf_counter()
        built = build_pages(
            scored,
            self.bundle.w,
            self.params,
            self.inputs.catalog.item_ids,
            exam=self.exam,
            calibration=self.calibration,
            randomise=reason is None,
            seed=self.seed,
            categorical=True,
        )
        timing["slots_and_rows"] = time.perf_counter() - t_pages
        timing["total"] = time.perf_counter() - t
        return built, scored.candidates_frame(self.bundle.w), timing, scored

    def add(self, result: BuildResult, reason: str | None) -> None:
        built, cands, timing, scored = result
        if reason is None:
            t = time.perf_counter()
            self.state.add(scored)
            timing["state"] = time.perf_counter() - t
        for key, v in timing.items():
            self.parts[key] = self.parts.get(key, 0.0) + v
        if reason is not None:
            self.defaults.append(built.frame)
        self.emit(built.frame)
        self.stat_frames.append(built.stats)
        self.cand_sink.write(cands)

    def warm_pages(self, warm_users: np.ndarray, mode: str, threads: int, progress: Any) -> None:
        """The personal pages of the warm users, batch by batch."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        starts = list(range(0, len(warm_users), BATCH))
        with ThreadPoolExecutor(threads) as pool:
            pending: deque[Any] = deque()
            for k, start in enumerate(starts):
                bu = warm_users[start : start + BATCH]
                pending.append(pool.submit(self.build, bu, None, None, mode))
                if len(pending) >= 2 * threads:
                    self.add(pending.popleft().result(), None)
                if progress and k % 50 == 0:
                    progress(f"rank: {start + len(bu):,}/{len(warm_users):,} warm users")
            while pending:
                self.add(pending.popleft().result(), None)

    def cold_pages(self, cold: pd.DataFrame, stats_df: pd.DataFrame) -> pd.DataFrame:
        """Users without history get their context's default page under their own id; returns
        the page stats with theirs appended."""
        import pyarrow as pa

        base = pd.concat(self.defaults, ignore_index=True)
        base = base.sort_values(["user_id", "slot", "item_rank"], kind="stable")
        table = pa.Table.from_pandas(base.drop(columns="user_id"), preserve_index=False)
        row_keys = base["user_id"].astype(str).to_numpy(object)
        first = {k: i for i, k in reversed(list(enumerate(row_keys)))}
        size = pd.Series(row_keys).value_counts()
        start_of = cold["key"].map(first).to_numpy(np.int64)
        len_of = cold["key"].map(size).to_numpy(np.int64)
        cold_ids = cold["user_id"].to_numpy(object)
        for lo in range(0, len(cold), 50_000):
            st, ln = start_of[lo : lo + 50_000], len_of[lo : lo + 50_000]
            idx = np.repeat(st - np.cumsum(ln) + ln, ln) + np.arange(ln.sum())
            rows = table.take(pa.array(idx))
            uid = pa.array(np.repeat(cold_ids[lo : lo + 50_000], ln), pa.string())
            self.page_sink.write_table(rows.add_column(0, "user_id", uid))
            self.counts["rows"] += len(idx)
            self.counts["randomised"] += int((base["propensity"].to_numpy()[idx] < 1).sum())
        rep_stats = cold.merge(stats_df.rename(columns={"user_id": "key"}), on="key")
        return pd.concat(
            [stats_df, rep_stats.drop(columns="key")[stats_df.columns]], ignore_index=True
        )

    def close_state(self, ds: str, mode: str) -> Any:
        """Close the sinks and the page state (with what a refresh needs to re-rank)."""
        self.page_sink.close()
        self.cand_sink.close()
        inputs, catalog, params, exam = self.inputs, self.inputs.catalog, self.params, self.exam
        return self.state.close(
            {
                "ds": ds,
                "model_version": self.bundle.model_version,
                "w": self.bundle.w,
                "item_mode": mode,
                "seed": self.seed,
                "width": params.candidate_items,
                "new_pool": params.explore_pool,
                "page_params": dataclasses.asdict(params),
                "carousel_ab": {k: list(v) for k, v in inputs.carousel_ab.items()},
                "carousel_lam": dict(inputs.carousel_lam),
                "p_global": inputs.p_global,
                "carousel_calibration": (self.bundle.info or {}).get("carousel_calibration"),
            },
            {
                "item_ids": catalog.item_ids.astype(str),
                "in_stock": catalog.in_stock,
                "v_items": inputs.v_items,
                "item_cat": catalog.item_cat,
                "item_brand": catalog.item_brand,
                **({"exam": exam} if exam is not None else {}),
            },
        )


def default_page_keys(seg: pd.DataFrame, warm: np.ndarray) -> list[tuple[str, str, str]]:
    """The (device, region, daypart) segments that get a default page."""
    cold_seg = seg[~warm]
    return sorted(
        {("any", "any", "any")}
        | {(d, r, "any") for d, r in zip(cold_seg["device"], cold_seg["region"], strict=True)}
        | {(d, "any", p) for d in seg["device"].unique() for p in DAYPARTS}
    )


def cold_user_keys(cold_seg: pd.DataFrame) -> pd.DataFrame:
    """user_id, key: the default page each user without history gets."""
    return cold_seg.assign(
        key=[
            context_key(d, r, "any") if (d, r) != ("any", "any") else DEFAULT_PAGE_KEY
            for d, r in zip(cold_seg["device"], cold_seg["region"], strict=True)
        ]
    )[["user_id", "key"]]


def output_dirs(lake: Lake, ds: str) -> tuple[str, str, str, str, str | None]:
    """(pages URI, candidates URI, local pages dir, local candidates dir, scratch dir or None)."""
    pages_uri, cand_uri = join(lake.warehouse, "pages", f"ds={ds}"), lake.candidates(ds)
    # on a remote lake both directories are written locally, then uploaded (marker last)
    scratch = remote.scratch_dir("rank") if io.is_remote(pages_uri) else None
    if scratch:
        out_dir, cand_dir = os.path.join(scratch, "pages"), os.path.join(scratch, "candidates")
    else:
        out_dir, cand_dir = local_path(pages_uri), local_path(cand_uri)
    return pages_uri, cand_uri, out_dir, cand_dir, scratch


def run(
    lake: Lake, ds: str, cfg: Config, progress: Any = None, item_mode: str | None = None
) -> dict[str, Any]:
    """Build every known user's page, the `__default__` page and the context default pages,
    with the champion model."""
    t0 = time.perf_counter()
    bundle = champion_bundle(lake, ds, cfg)
    mode = item_mode or bundle.item_mode
    if bundle.engagement is None:
        mode = "fixed"
    users = known_users(lake, ds)
    inputs = load_inputs(lake, ds, cfg, bundle.mf_item, bundle.mf_cat, engagement=bundle.engagement)
    warm = inputs.warm(users)
    pages_uri, cand_uri, out_dir, cand_dir, scratch = output_dirs(lake, ds)
    pr = PageRun(lake, ds, cfg, bundle, inputs, (out_dir, cand_dir))
    t_load = time.perf_counter() - t0

    # default pages rank items by (context) popularity, not by a user's engagement scores
    seg = context_segments(lake, ds, users)
    keys = default_page_keys(seg, warm)
    names = np.array([DEFAULT_PAGE_KEY if k == ("any",) * 3 else context_key(*k) for k in keys])
    pop = context_popularity(lake, ds, inputs.catalog, seg, keys)
    default_matrices = inputs.default_matrices(pop)
    pr.add(pr.build(names.astype(object), default_matrices, "popular", "fixed"), "popular")
    t1 = time.perf_counter()
    warm_users = users[warm]
    pr.parts.clear()  # time the personal pages only
    # numpy and XGBoost release the GIL for most of a batch: a few threads use both cores;
    # results are written in batch order, so the output does not depend on the thread count
    threads = cfg.page.threads or (os.cpu_count() or 1) + 1
    pr.warm_pages(warm_users, mode, threads, progress)
    t_pages = time.perf_counter() - t1

    stats_df = pd.concat(pr.stat_frames, ignore_index=True)
    cold = cold_user_keys(seg[~warm])
    if len(cold):
        stats_df = pr.cold_pages(cold, stats_df)
    state_info = pr.close_state(ds, mode)
    stats_df.to_parquet(os.path.join(out_dir, "page_stats.parquet"), index=False)
    if scratch:
        remote.upload_dir(cand_dir, cand_uri)
        remote.upload_dir(out_dir, pages_uri)
        shutil.rmtree(scratch, ignore_errors=True)
    stats = {
        "ds": ds,
        "users": int(len(users)),
        "warm_users": int(warm.sum()),
        "cold_users": int(len(cold)),
        "context_pages": int(len(keys)),
        "rows": pr.counts["rows"],
        "model_version": bundle.model_version,
        "registry_version": bundle.registry_version,
        "run_id": bundle.info.get("run_id"),
        "bundle": bundle.path,
        "w": bundle.w,
        "item_mode": mode,
        "slot_examination": "estimated" if pr.exam is not None else "default 1/log2(1+s)",
        "carousel_calibration": pr.calibration is not None,
        "explored_items": pr.counts["explored"],
        "randomised_placements": pr.counts["randomised"],
        "short_pages": int((stats_df["slots"] < pr.params.slots).sum()),
        "state": state_info,
        "load_s": round(t_load, 1),
        "pages_s": round(t_pages, 1),
        "users_per_s": round(len(warm_users) / max(t_pages, 1e-9), 1),
        "threads": threads,
        # seconds per part, summed over threads (so they add up to more than the wall time)
        "parts_thread_s": {k: round(v, 1) for k, v in pr.parts.items()},
    }
    io.write_json(join(lake.reports(ds), "rank.json"), stats)
    log.info("ranked pages for %s: %s", ds, stats)
    return stats
