"""Scoring pages on a time split: the test window's truth, the pipeline's pages and the
baselines built from the same pre-split events, their metrics and paired lifts, the recall
frontier of the baselines mixed, and the engagement heads' own ranked list."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.event_reader import read_event_days
from jobs.core.lake import Lake, join, local_path, shift_ds

if TYPE_CHECKING:
    from models.evaluation.page_eval import PageEvaluation

log = logging.getLogger(__name__)


BASELINES = ("static", "popularity", "top_freq")
LIFT_METRICS = ("ndcg_2d", "page_recall", "repeat_recall", "explore_recall", "carousel_ndcg")


def read_events(lake: Lake, start: str | None, end: str, columns: list[str]) -> pd.DataFrame:
    """Accepted events with start <= ds < end (start None: all before end)."""
    days = [d for d in io.partitions(lake.events) if (start is None or d >= start) and d < end]
    if not days:
        return pd.DataFrame(columns=columns)
    cols = [c for c in columns if c != "ds"]
    return read_event_days(lake.events, days, cols, with_ds="ds" in columns).to_pandas()


def _sample_users(users: pd.Index, max_users: int, seed: int) -> pd.Index:
    if len(users) <= max_users:
        return users
    h = pd.util.hash_array(users.to_numpy(object).astype(str), hash_key=f"{seed:016d}")
    return users[np.argsort(h, kind="stable")[:max_users]].sort_values()


class PageFrames(NamedTuple):
    pages: dict[str, pd.DataFrame]  # by policy: the pipeline and the baselines
    truth: pd.DataFrame
    history: pd.DataFrame
    items: pd.DataFrame
    mixed: Callable[[int], pd.DataFrame]  # history cells k -> the baselines mixed (frontier)


def relevant_pairs(after: pd.DataFrame, relevant: Sequence[str], window: str) -> pd.DataFrame:
    """The distinct (user_id, item_id) of the test window's `relevant` events; a ValueError that
    names the event types the window does log when it has none of them."""
    rel = after[after["event_type"].isin(relevant) & after["item_id"].notna()]
    if rel.empty:
        logged = sorted(after["event_type"].dropna().unique())
        raise ValueError(
            f"no {'/'.join(relevant)} events with an item in the test window {window}: nothing "
            f"to score pages against; it logs {', '.join(logged) or 'no events'}: set "
            "eval.relevant_events to what it logs (e.g. --set 'eval.relevant_events=[click]') "
            "or move the split"
        )
    return rel[["user_id", "item_id"]].drop_duplicates()


BEFORE_COLUMNS = ["user_id", "item_id", "event_type", "ts", "ds"]


def baseline_pages(
    elake: Lake,
    split_ds: str,
    shown: pd.Series,
    cfg: Config,
    read: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> tuple[dict[str, pd.DataFrame], Callable[[int | None], pd.DataFrame]]:
    """The baselines' pages for the users of `shown` (items shown to each by the pipeline), from
    what the run as of `split_ds` knew: its catalogue snapshot and the events before the split
    (`read`: those two frames when the caller holds them, BEFORE_COLUMNS for the events).
    Returns (pages by baseline, history cells k -> the baselines mixed)."""
    from models.evaluation import baselines as bl

    items, before = read or (
        pd.read_parquet(local_path(join(elake.warehouse, "items", f"ds={split_ds}"))),
        read_events(elake, None, split_ds, BEFORE_COLUMNS),
    )
    users = shown.index
    bought = before[(before["event_type"] == "purchase") & before["user_id"].isin(users)]
    recent = before[before["ds"] >= shift_ds(split_ds, -cfg.eval.popularity_days)]
    popular = bl.item_popularity(recent, items)
    if popular.empty:
        popular = bl.item_popularity(before, items)
    slots, per_row = cfg.page.slots, cfg.page.items_per_carousel
    in_stock = pd.Index(items.loc[items["in_stock"].astype(bool), "item_id"])
    purchases = bought[["user_id", "item_id", "ts"]]

    def mixed(history_cells: int | None) -> pd.DataFrame:
        return bl.top_frequency_pages(
            purchases, popular, shown, per_row, in_stock, history_cells=history_cells
        )

    pages = {
        "static": bl.static_page(popular, items, slots, per_row),
        "popularity": bl.popularity_page(popular, slots, per_row),
        "top_freq": mixed(None),
    }
    return pages, mixed


def page_frames(elake: Lake, split_ds: str, end: str, cfg: Config) -> PageFrames:
    """(pages by policy, truth, history, items, the mixed baselines) for the evaluated users."""
    from models.evaluation.page_eval import pages_for_users

    ec = cfg.eval
    items = pd.read_parquet(local_path(join(elake.warehouse, "items", f"ds={split_ds}")))
    before = read_events(elake, None, split_ds, BEFORE_COLUMNS)
    after = read_events(elake, split_ds, end, ["user_id", "item_id", "event_type"])
    truth = relevant_pairs(after, ec.relevant_events, f"[{split_ds}, {end})")
    users = _sample_users(pd.Index(truth["user_id"].unique()), ec.max_users, ec.seed)
    truth = truth[truth["user_id"].isin(users)]
    bought = before[(before["event_type"] == "purchase") & before["user_id"].isin(users)]
    history = bought[["user_id", "item_id"]].drop_duplicates()

    # every user's page: the metrics select the evaluated users, the A/B test serves them all
    pipe = pd.read_parquet(
        local_path(join(elake.warehouse, "pages", f"ds={split_ds}", "pages.parquet"))
    )
    shown = pages_for_users(pipe, users).groupby("user_id").size().reindex(users)
    baselines, mixed = baseline_pages(elake, split_ds, shown, cfg, read=(items, before))
    return PageFrames({"pipeline": pipe, **baselines}, truth, history, items, mixed)


# ---------------------------------------------------------------- the parts


def page_evaluation(
    pages: dict[str, pd.DataFrame],
    truth: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame,
    split_ds: str,
    cfg: Config,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(metrics table: one column per policy, lift table, per-policy evaluations)."""
    from models.evaluation.page_eval import evaluate_pages, lift

    ec = cfg.eval
    evals = {
        name: evaluate_pages(
            p, truth, history, items, split_ds=split_ds, ks=ec.recall_k, new_days=ec.new_days
        )
        for name, p in pages.items()
    }
    table = pd.DataFrame({name: e.summary for name, e in evals.items()})
    metrics = [*LIFT_METRICS, *(f"recall@{k}" for k in ec.recall_k), "mrr", "new_recall"]
    lifts = []
    for b in BASELINES:
        t = lift(
            evals["pipeline"].per_user,
            evals[b].per_user,
            metrics,
            resamples=ec.resamples,
            seed=ec.seed,
        )
        t.insert(0, "baseline", b)
        lifts.append(t)
    return table, pd.concat(lifts, ignore_index=True), evals


BAR = (("top_freq", "popularity"), ("page_recall", "explore_recall"))  # issue 7's bar


def recall_frontier(
    frames: PageFrames, table: pd.DataFrame, split_ds: str, cfg: Config
) -> dict[str, Any]:
    """The baselines mixed (k most-bought items, then popular never-bought ones, for k = 0, M,
    2M, ... up to the pipeline's cells: `models.evaluation.frontier`), the frontier's explore recall at the
    pipeline's page recall, and whether the pipeline beats top frequency and popularity on both
    page and explore recall (`BAR`)."""
    from models.evaluation import frontier as fr
    from models.evaluation.page_eval import evaluate_pages

    ec = cfg.eval
    cells = int(frames.pages["top_freq"].groupby("user_id").size().max())
    front = fr.frontier(
        frames.mixed,
        lambda page: evaluate_pages(
            page, frames.truth, frames.history, frames.items, split_ds=split_ds,
            ks=ec.recall_k, new_days=ec.new_days,
        ).summary,
        fr.history_steps(cells, cfg.page.items_per_carousel),
    )  # fmt: skip
    page, explore = (float(table.loc[m, "pipeline"]) for m in ("page_recall", "explore_recall"))
    at = fr.explore_at(front, page)
    summary = {c: table[c].to_dict() for c in table.columns}
    return {
        "frontier": front.to_dict(orient="records"),
        "pipeline": {"page_recall": page, "explore_recall": explore},
        "frontier_explore_at_pipeline": at,
        "margin_over_frontier": explore - at if np.isfinite(at) else float("nan"),
        "bar": fr.dominance(summary, "pipeline", *BAR),
    }


RANKED_LIST_POLICIES = ("ranked_list", "pipeline", "top_freq", "popularity")
RANKED_LIST_METRICS = ("page_recall", "repeat_recall", "explore_recall", "ndcg_2d")


def ranked_list_evaluation(
    frames: PageFrames,
    evals: Mapping[str, PageEvaluation],
    scored: pd.DataFrame,
    split_ds: str,
    cfg: Config,
    source: str,
) -> dict[str, Any]:
    """The engagement heads' own ranked list (`scored`: each user's candidate items as of the
    split with the combined calibrated score) on the pipeline's cells, one row of M after
    another (`models.evaluation.baselines.ranked_list_pages`), next to the pipeline and the baselines
    (`evals`, from `page_evaluation`) on the users both the test window's examples and the page
    evaluation hold; and whether that list beats top frequency and popularity on page and
    explore recall (`BAR`).

    Only where the examples are the candidates as of the split (`source`
    "time_window_candidates"): logged impressions of the test window are the items the logging
    policy showed in it, which a list built at the split could not know."""
    if source != "time_window_candidates":
        return {"users": 0, "skipped": f"the test window's examples are {source}"}
    from models.evaluation import baselines as bl
    from models.evaluation import frontier as fr
    from models.evaluation.page_eval import evaluate_pages, summarise

    ec = cfg.eval
    shown = frames.pages["top_freq"].groupby("user_id").size()  # the pipeline's cells per user
    in_stock = pd.Index(frames.items.loc[frames.items["in_stock"].astype(bool), "item_id"])
    listed = bl.ranked_list_pages(scored, shown, cfg.page.items_per_carousel, in_stock)
    users = pd.Index(listed["user_id"].unique()).intersection(frames.truth["user_id"].unique())
    if users.empty:
        return {"users": 0}
    truth = frames.truth[frames.truth["user_id"].isin(users)]
    summary = {
        "ranked_list": evaluate_pages(
            listed, truth, frames.history, frames.items, split_ds=split_ds, ks=ec.recall_k,
            new_days=ec.new_days,
        ).summary,
        # per-user metrics: the policies' evaluations restricted to these users
        **{p: summarise(evals[p].per_user.loc[users], evals[p].per_page.loc[users])
           for p in RANKED_LIST_POLICIES[1:]},
    }  # fmt: skip
    return {
        "users": int(len(users)),
        "pages": {p: {m: summary[p][m] for m in RANKED_LIST_METRICS} for p in summary},
        "bar": fr.dominance(summary, "ranked_list", *BAR),
    }
