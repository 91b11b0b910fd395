"""Baseline pages the pipeline is compared with, built from the events before the split.

All three use only in-stock items and the page grid of the pipeline (Z carousels of M items),
and return frames of the page contract (user_id, slot, item_rank, item_id, carousel_id, family).

    static      one global carousel order for everyone (Walmart's control): the categories
                with the most engagement, one carousel each ("Popular in <category>", its
                best sellers), in that order; the same page for every user
    popularity  the Z·M most engaged-with items, in order, M per row; the same for everyone
    top_freq    the user's most-bought items (count, then the latest purchase), padded with the
                popularity list, cut to the number of items the pipeline shows that user
                (grocery's strong repeat baseline: "personal top frequency"); with
                `history_cells=k` at most k of them, the rest the most popular items the user
                never bought (the two baselines mixed: `models.evaluation.frontier`)

Not a baseline but a reference, `ranked_list_pages` lays out a model's own ranked list on the
same grid: what the pipeline's scores give without the carousels (`jobs.experiments.evaluate`).

`popularity` is the engagement weight Σ over events of purchase 5, add_to_cart 3, click 1
(the feature stage's weights) in the last `days` before the split.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from jobs.core.lake import DEFAULT_PAGE_KEY

WEIGHTS = {"purchase": 5.0, "add_to_cart": 3.0, "click": 1.0}


def item_popularity(
    events: pd.DataFrame, items: pd.DataFrame, weights: Mapping[str, float] = WEIGHTS
) -> pd.Series:
    """Engagement weight per in-stock item, descending (ties by item id for determinism)."""
    event_weight = events["event_type"].map(weights).fillna(0.0)
    pop = event_weight.groupby(events["item_id"]).sum()
    pop = pop[pop > 0]
    stock = items.loc[items["in_stock"].astype(bool), "item_id"] if "in_stock" in items else None
    if stock is not None:
        pop = pop[pop.index.isin(stock)]
    order = np.lexsort((pop.index.to_numpy().astype(str), -pop.to_numpy()))
    return pop.iloc[order]


def _grid(
    users: np.ndarray, item_lists: list[np.ndarray], per_row: int, carousel: str
) -> pd.DataFrame:
    n = np.array([len(x) for x in item_lists], dtype=np.int64)
    k = np.concatenate([np.arange(m) for m in n]) if len(n) else np.zeros(0, np.int64)
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n),
            "slot": k // per_row + 1,
            "item_rank": k % per_row + 1,
            "item_id": np.concatenate(item_lists) if len(n) else np.zeros(0, object),
            "carousel_id": [f"{carousel}:{s}" for s in k // per_row + 1],
            "family": None,  # rows of one ranked list, not carousels: no family rule applies
        }
    )


def popularity_page(popular: pd.Series, slots: int, per_row: int) -> pd.DataFrame:
    """The `__default__` page of the Z·M most popular items (every user gets it)."""
    top = popular.index.to_numpy(object)[: slots * per_row]
    return _grid(np.array([DEFAULT_PAGE_KEY], object), [top], per_row, "popular")


def static_page(popular: pd.Series, items: pd.DataFrame, slots: int, per_row: int) -> pd.DataFrame:
    """One global carousel order: the Z most engaged-with categories, each its top M items."""
    cat = items.set_index("item_id")["category_id"].reindex(popular.index)
    frame = pd.DataFrame({"item_id": popular.index, "pop": popular.to_numpy(), "cat": cat.values})
    frame = frame.dropna(subset=["cat"])
    cat_order = (
        frame.groupby("cat", sort=False)["pop"].sum().sort_values(ascending=False, kind="stable")
    )
    rows = []
    for s, c in enumerate(cat_order.index[:slots], start=1):
        top = frame.loc[frame["cat"] == c, "item_id"].to_numpy(object)[:per_row]
        rows.append(
            pd.DataFrame(
                {
                    "user_id": DEFAULT_PAGE_KEY,
                    "slot": s,
                    "item_rank": np.arange(1, len(top) + 1),
                    "item_id": top,
                    "carousel_id": f"static:{c}",
                    "family": f"static:{c}",  # distinct carousels: no family constraint
                }
            )
        )
    if not rows:
        raise ValueError("no engaged-with in-stock items before the split: no static page")
    return pd.concat(rows, ignore_index=True)


def top_frequency_pages(
    purchases: pd.DataFrame,
    popular: pd.Series,
    items_shown: pd.Series,
    per_row: int,
    in_stock: pd.Index | None = None,
    history_cells: int | None = None,
) -> pd.DataFrame:
    """Each user's most-bought items padded with popular ones to `items_shown[user]` items.

    `purchases` has user_id, item_id, ts (one row per purchase line before the split).
    `history_cells` caps the user's own items (None: as many as fit); the padding is always the
    most popular items the user never bought."""
    if history_cells is not None and history_cells < 0:
        raise ValueError(f"history_cells must be >= 0, got {history_cells}")
    users = items_shown.index.to_numpy(object)
    bought = purchases[purchases["user_id"].isin(users)]
    if in_stock is not None:
        bought = bought[bought["item_id"].isin(in_stock)]
    freq = (
        bought.groupby(["user_id", "item_id"], observed=True)
        .agg(n=("item_id", "size"), last=("ts", "max"))
        .reset_index()
        .sort_values(["user_id", "n", "last", "item_id"], ascending=[True, False, False, True])
    )
    own = {u: s.to_numpy(object) for u, s in freq.groupby("user_id", sort=False)["item_id"]}
    pop = popular.index.to_numpy(object)
    none = np.zeros(0, object)
    lists = []
    for u, want in zip(users, items_shown.to_numpy(), strict=True):
        everything = own.get(u, none)
        keep = want if history_cells is None else min(want, history_cells)
        mine = everything[:keep]
        if len(mine) < want:
            # at most len(everything) of the first want + len(everything) popular items are owned
            head = pop[: want + len(everything)]
            pad = head[~np.isin(head, everything)][: want - len(mine)]
            mine = np.concatenate([mine, pad])
        lists.append(mine)
    return _grid(users, lists, per_row, "top_freq")


def ranked_list_pages(
    scored: pd.DataFrame,
    items_shown: pd.Series,
    per_row: int,
    in_stock: pd.Index | None = None,
) -> pd.DataFrame:
    """Each user's scored items, best first, cut to `items_shown[user]` and laid out M per row:
    a model's own ranked list without carousels (no family rule, no de-duplication to do).

    `scored` has user_id, item_id, score (one row per user and item). Users of `items_shown`
    without scored rows get no page; ties keep the item id order."""
    rows = scored[scored["user_id"].isin(items_shown.index)]
    if in_stock is not None:
        rows = rows[rows["item_id"].isin(in_stock)]
    rows = rows.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    by_user = {u: s.to_numpy(object) for u, s in rows.groupby("user_id", sort=False)["item_id"]}
    users = np.array([u for u in items_shown.index if u in by_user], dtype=object)
    lists = [by_user[u][: int(items_shown[u])] for u in users]
    return _grid(users, lists, per_row, "ranked_list")
