"""Carousel-aware offline evaluation of whole pages against what users did after the split.

Inputs are plain frames:

    pages    user_id, slot, item_rank, item_id[, carousel_id, family]: one row per placement
    truth    user_id, item_id: the distinct items each user engaged with in the test window
    history  user_id, item_id: the items each user bought before the split (repeat vs explore)
    items    item_id, category_id, brand[, first_seen]

Per evaluated user (a user with at least one relevant item; users without a page get the
`__default__` page, as the server does), with relevant set R, shown set S (each item counted
once, at its first place in reading order) and the page's cells (s, l), 1-based:

    ndcg_2d            Σ_{i ∈ S∩R} 1/log2(s_i + l_i)  /  Σ_{j ≤ min(|R|, cells)} 1/d_(j)
                       d_(j) the page's cell discounts log2(s + l) in increasing order
                       (Ferrari Dacrema et al.); relevant items the page missed count in the
                       ideal, an item shown twice gains once
    page_recall        |S ∩ R| / |R|;  repeat_recall over R ∩ history, explore_recall over
                       R \\ history (users with such items only)
    carousel_ndcg      NDCG@Z of the slots, the gain of a carousel = its relevant items
    recall@k           |top-k ∩ R| / |R|, top-k in reading order (s + l, then s)
    mrr                1 / reading rank of the first relevant item (0 if none)
    new_recall         recall of the relevant items that are new (first_seen within
                       `new_days` before the split): novelty

Per page (evaluated users): longest same-brand run inside a carousel, distinct categories,
adjacent-family violations (two neighbouring slots of one family; NaN for pages without
families). Whole set: catalogue coverage = distinct items shown / in-stock items.

`lift` compares two page sets on the same users: relative lift mean(a)/mean(b) − 1 of each
per-user metric with a 95% percentile bootstrap interval (users resampled, pairs kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.core.lake import DEFAULT_PAGE_KEY

USER_METRICS = (
    "ndcg_2d",
    "page_recall",
    "repeat_recall",
    "explore_recall",
    "carousel_ndcg",
    "mrr",
    "new_recall",
)
PAGE_METRICS = ("longest_brand_run", "distinct_categories", "adjacent_family_violations")


@dataclass
class PageEvaluation:
    per_user: pd.DataFrame  # index user_id; USER_METRICS + recall@k columns (NaN: not defined)
    per_page: pd.DataFrame  # index user_id; PAGE_METRICS
    summary: dict[str, float]


def pages_for_users(pages: pd.DataFrame, users: Sequence[str] | np.ndarray) -> pd.DataFrame:
    """Each user's rows; users without a page get a copy of the `__default__` page."""
    users = pd.Index(pd.unique(np.asarray(users, dtype=object)))
    own = pages[pages["user_id"].isin(users)]
    missing = users.difference(pd.Index(own["user_id"].unique()))
    if len(missing) == 0:
        return own.reset_index(drop=True)
    default = pages[pages["user_id"] == DEFAULT_PAGE_KEY]
    if default.empty:
        raise ValueError(
            f"{len(missing)} evaluated users have no page and there is no {DEFAULT_PAGE_KEY} page"
        )
    rep = default.iloc[np.tile(np.arange(len(default)), len(missing))].copy()
    rep["user_id"] = np.repeat(missing.to_numpy(), len(default))
    return pd.concat([own, rep], ignore_index=True)


def _reading_order(pages: pd.DataFrame, keep: Sequence[str] = ()) -> pd.DataFrame:
    """Rows sorted per user by (s + l, s); `first` marks an item's first place on the page.
    `keep` names further columns of `pages` to carry along."""
    p = pages[["user_id", "slot", "item_rank", "item_id", *keep]].copy()
    p["slot"] = p["slot"].astype(np.int64)
    p["item_rank"] = p["item_rank"].astype(np.int64)
    p["diag"] = p["slot"] + p["item_rank"]
    p = p.sort_values(["user_id", "diag", "slot"], kind="stable").reset_index(drop=True)
    p["first"] = ~p.duplicated(["user_id", "item_id"])
    return p


def evaluate_pages(
    pages: pd.DataFrame,
    truth: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame,
    *,
    split_ds: str,
    ks: Sequence[int] = (10, 30),
    new_days: int = 30,
) -> PageEvaluation:
    """Metrics of `pages` for every user in `truth` (see the module docstring)."""
    if truth.empty:
        raise ValueError("no relevant (user, item) pairs in the test window: nothing to evaluate")
    truth = truth[["user_id", "item_id"]].drop_duplicates()
    users = pd.Index(truth["user_id"].unique())
    grid = pages_for_users(pages, users)
    p = _reading_order(grid)

    hist = history[["user_id", "item_id"]].drop_duplicates()
    hist_key = pd.MultiIndex.from_frame(hist)
    t = truth.copy()
    t["repeat"] = pd.MultiIndex.from_frame(t[["user_id", "item_id"]]).isin(hist_key)
    new_items = _new_items(items, split_ds, new_days)
    t["new"] = t["item_id"].isin(new_items)
    rel_key = pd.MultiIndex.from_frame(t[["user_id", "item_id"]])

    p["rel"] = pd.MultiIndex.from_frame(p[["user_id", "item_id"]]).isin(rel_key) & p["first"]
    p["disc"] = 1.0 / np.log2(p["diag"].to_numpy(np.float64))
    p["rank"] = p.groupby("user_id", sort=False)["first"].cumsum().where(p["first"])

    n_rel = t.groupby("user_id").size().reindex(users)
    out = pd.DataFrame(index=users)
    out.index.name = "user_id"
    hits = p[p["rel"]]
    shown = hits.groupby("user_id").size().reindex(users, fill_value=0)
    out["page_recall"] = shown / n_rel

    out["ndcg_2d"] = _ndcg_2d(p, hits, n_rel, users)

    # subsets of R: repeat, explore, new
    shown_key = pd.MultiIndex.from_frame(hits[["user_id", "item_id"]])
    t["shown"] = rel_key.isin(shown_key)
    for name, mask in (("repeat", t["repeat"]), ("explore", ~t["repeat"]), ("new", t["new"])):
        sub = t[mask].groupby("user_id")["shown"].agg(["sum", "size"])
        out[f"{name}_recall"] = (sub["sum"] / sub["size"]).reindex(users)

    out["carousel_ndcg"] = _carousel_ndcg(p, users)

    first_hit = hits.groupby("user_id")["rank"].min().reindex(users)
    out["mrr"] = (1.0 / first_hit).fillna(0.0)
    for k in ks:
        in_k = hits[hits["rank"] <= k].groupby("user_id").size().reindex(users, fill_value=0)
        out[f"recall@{k}"] = in_k / n_rel

    per_page = page_shape(grid, items)
    summary = summarise(out, per_page)
    in_stock = items[items["in_stock"]] if "in_stock" in items else items
    summary["coverage"] = float(grid["item_id"].nunique() / max(1, in_stock["item_id"].nunique()))
    summary["users"] = float(len(users))
    summary["items_per_page"] = float(grid.groupby("user_id").size().mean())
    summary["new_relevant_items"] = float(t["new"].sum())
    return PageEvaluation(out, per_page, summary)


def _ndcg_2d(p: pd.DataFrame, hits: pd.DataFrame, n_rel: pd.Series, users: pd.Index) -> np.ndarray:
    """NDCG_2D per user; ideal = the |R| best cells of the user's own page."""
    dcg = hits.groupby("user_id")["disc"].sum().reindex(users, fill_value=0.0)
    cells = p.sort_values(["user_id", "disc"], ascending=[True, False], kind="stable")
    j = cells.groupby("user_id", sort=False).cumcount()
    take = j.to_numpy() < n_rel.reindex(cells["user_id"]).to_numpy()
    idcg = cells[take].groupby("user_id")["disc"].sum().reindex(users, fill_value=0.0)
    return np.where(idcg > 0, dcg / idcg.where(idcg > 0, 1.0), 0.0)


def _carousel_ndcg(p: pd.DataFrame, users: pd.Index) -> np.ndarray:
    """Carousel NDCG@Z per user: slot gains = relevant items first shown in that carousel."""
    slot_gain = (
        p.groupby(["user_id", "slot"])["rel"].sum().reset_index().sort_values(["user_id", "slot"])
    )
    slot_gain["pos"] = slot_gain.groupby("user_id").cumcount() + 1
    slot_gain["d"] = 1.0 / np.log2(slot_gain["pos"] + 1.0)
    slot_gain["g"] = slot_gain["rel"].astype(np.float64)
    c_dcg = (slot_gain["g"] * slot_gain["d"]).groupby(slot_gain["user_id"]).sum()
    ideal = slot_gain.sort_values(["user_id", "g"], ascending=[True, False], kind="stable")
    ideal_g = ideal["g"].to_numpy()
    ideal_d = 1.0 / np.log2(ideal.groupby("user_id").cumcount().to_numpy() + 2.0)
    c_idcg = pd.Series(ideal_g * ideal_d).groupby(ideal["user_id"].to_numpy()).sum()
    c_dcg, c_idcg = c_dcg.reindex(users, fill_value=0.0), c_idcg.reindex(users, fill_value=0.0)
    return np.where(c_idcg > 0, c_dcg / c_idcg.where(c_idcg > 0, 1.0), 0.0)


def cell_yield(pages: pd.DataFrame, truth: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """What each kind of carousel's cells are worth: per carousel kind (`carousel_id` up to the
    first ":", so "for_you:3" is "for_you") and per item kind (repeat: bought before the split;
    explore: never bought), the cells of the evaluated users' pages (`truth`'s users; an item
    counts at its first place on the page only), the relevant items among them and hits per
    cell. Tells which rows spend the page's cells well (for `homepage evaluate`)."""
    users = pd.Index(truth["user_id"].unique())
    grid = pages_for_users(pages, users)
    grid = grid.assign(kind=grid["carousel_id"].astype(str).str.split(":", n=1).str[0])
    p = _reading_order(grid, keep=["kind"])
    p = p[p["first"]]
    key = pd.MultiIndex.from_frame(p[["user_id", "item_id"]])
    p = p.assign(
        item=np.where(key.isin(pd.MultiIndex.from_frame(history[["user_id", "item_id"]])),
                      "repeat", "explore"),
        hit=key.isin(pd.MultiIndex.from_frame(truth[["user_id", "item_id"]])),
    )  # fmt: skip
    out = p.groupby(["kind", "item"]).agg(cells=("hit", "size"), hits=("hit", "sum")).reset_index()
    out["cells_per_page"] = out["cells"] / max(1, len(users))
    out["hit_rate"] = out["hits"] / out["cells"]
    return out.sort_values(["item", "hit_rate"], ascending=[False, False], ignore_index=True)


def _new_items(items: pd.DataFrame, split_ds: str, new_days: int) -> pd.Index:
    if "first_seen" not in items:
        return pd.Index([])
    seen = pd.to_datetime(items["first_seen"], errors="coerce")
    start = pd.Timestamp(split_ds) - pd.Timedelta(days=new_days)
    return pd.Index(items.loc[seen >= start, "item_id"])


def page_shape(grid: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per page: longest same-brand run in a carousel, distinct categories, adjacent-family
    violations (NaN when the rows carry no family)."""
    meta = items.set_index("item_id")[["brand", "category_id"]]
    g = grid[["user_id", "slot", "item_rank", "item_id"]].join(meta, on="item_id")
    g = g.sort_values(["user_id", "slot", "item_rank"], kind="stable")
    brand = g["brand"].astype(object).to_numpy()
    same = np.zeros(len(g), dtype=bool)
    if len(g) > 1:
        same[1:] = (
            (g["user_id"].to_numpy()[1:] == g["user_id"].to_numpy()[:-1])
            & (g["slot"].to_numpy()[1:] == g["slot"].to_numpy()[:-1])
            & (brand[1:] == brand[:-1])
            & pd.notna(brand[1:])
        )
    run_id = np.cumsum(~same)
    run_len = pd.Series(1, index=g.index).groupby(run_id).transform("size")
    has_brand = pd.notna(brand)
    longest = (
        pd.Series(np.where(has_brand, run_len.to_numpy(), 0), index=g.index)
        .groupby(g["user_id"].to_numpy())
        .max()
    )
    if not has_brand.any():  # the catalogue has no brands: not defined
        longest = longest.astype(np.float64) * np.nan
    out = pd.DataFrame({"longest_brand_run": longest})
    out["distinct_categories"] = g.groupby("user_id")["category_id"].nunique()
    if "family" in grid and grid["family"].notna().any():
        slots = grid.drop_duplicates(["user_id", "slot"]).sort_values(["user_id", "slot"])
        fam = slots["family"].astype(object).to_numpy()
        u = slots["user_id"].to_numpy()
        s = slots["slot"].to_numpy()
        adj = np.zeros(len(slots), dtype=bool)
        known = pd.notna(fam)
        adj[1:] = (u[1:] == u[:-1]) & (s[1:] == s[:-1] + 1) & (fam[1:] == fam[:-1]) & known[1:]
        count = pd.Series(adj, index=slots.index).groupby(u).sum().astype(np.float64)
        has_family = pd.Series(known).groupby(u).any()
        out["adjacent_family_violations"] = count.where(has_family).reindex(out.index)
    else:
        out["adjacent_family_violations"] = np.nan
    out.index.name = "user_id"
    return out


def summarise(per_user: pd.DataFrame, per_page: pd.DataFrame) -> dict[str, float]:
    """Means of the per-user metrics (over users where defined) and of the page metrics."""
    s = {c: float(per_user[c].mean()) for c in per_user.columns}
    s["longest_brand_run_max"] = float(per_page["longest_brand_run"].max())
    for c in PAGE_METRICS:
        s[c] = float(per_page[c].mean())
    s["adjacent_family_violations_total"] = float(per_page["adjacent_family_violations"].sum())
    if per_page["adjacent_family_violations"].isna().all():
        s["adjacent_family_violations_total"] = float("nan")
    return s


def lift(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metrics: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Relative lift mean(a)/mean(b) − 1 per metric on the users both define, with a paired
    percentile bootstrap interval (users resampled with replacement, `resamples` times)."""
    rng = np.random.default_rng(seed)
    rows = []
    q = (100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2)
    for m in metrics:
        both = pd.concat([a[m], b[m]], axis=1, keys=["a", "b"], join="inner").dropna()
        n = len(both)
        x, y = both["a"].to_numpy(np.float64), both["b"].to_numpy(np.float64)
        row = {"metric": m, "users": n, "a": np.nan, "b": np.nan, "lift": np.nan}
        row.update(ci_low=np.nan, ci_high=np.nan, diff=np.nan, diff_low=np.nan, diff_high=np.nan)
        if n == 0:
            rows.append(row)
            continue
        ma, mb = x.mean(), y.mean()
        row.update(a=ma, b=mb, diff=ma - mb, lift=ma / mb - 1.0 if mb > 0 else np.nan)
        sa, sb = np.empty(resamples), np.empty(resamples)
        chunk = max(1, 2_000_000 // n)
        for start in range(0, resamples, chunk):
            stop = min(resamples, start + chunk)
            idx = rng.integers(0, n, size=(stop - start, n))
            sa[start:stop], sb[start:stop] = x[idx].mean(axis=1), y[idx].mean(axis=1)
        d = sa - sb
        row["diff_low"], row["diff_high"] = np.percentile(d, q)
        ok = sb > 0
        if ok.any():
            row["ci_low"], row["ci_high"] = np.percentile(sa[ok] / sb[ok] - 1.0, q)
        rows.append(row)
    return pd.DataFrame(rows)
