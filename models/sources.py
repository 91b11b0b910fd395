"""Rule-based personalised carousel sources beyond `models.candidates.generate` (METHODS §5):
"your top brands" and "new in your categories"; and merging candidate tables.

Both rank a per-user pool by r̂, given as a function of (batch rows, item matrix), so the pools
need no shared score columns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.candidates import PAD, Candidates, Catalog

Affinity = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rows (n,), items (n, L)) -> (n, L)


def group_pools(group: np.ndarray, order: np.ndarray, n_groups: int, width: int) -> np.ndarray:
    """(n_groups, width) item indices of each group (e.g. brand) in `order` (best first), PAD
    padded; items with group < 0 and items missing from `order` are left out."""
    order = np.asarray(order, dtype=np.int64)
    g = np.asarray(group, dtype=np.int64)[order]
    keep = g >= 0
    order, g = order[keep], g[keep]
    by = np.argsort(g, kind="stable")
    order, g = order[by], g[by]
    starts = np.searchsorted(g, np.arange(n_groups))
    rank = np.arange(len(g)) - starts[g]
    out = np.full((n_groups, width), PAD, dtype=np.int64)
    ok = rank < width
    out[g[ok], rank[ok]] = order[ok]
    return out


def _rank_pool(
    pool: np.ndarray, rows: np.ndarray, affinity: Affinity, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's pool items by descending r̂ (stable), items scored -inf left out: ((m, n), count)."""
    ok = pool != PAD
    s = np.where(ok, affinity(rows, np.where(ok, pool, 0)), -np.inf)
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :n]
    keep = np.take_along_axis(s, order, axis=1) > -np.inf
    top = np.where(keep, np.take_along_axis(pool, order, axis=1), PAD)
    if top.shape[1] < n:
        top = np.concatenate([top, np.full((len(top), n - top.shape[1]), PAD)], axis=1)
    return top.astype(np.int64), keep.sum(axis=1)


def brand_carousels(
    catalog: Catalog,
    brand_pools: np.ndarray,  # (n_brands, P)
    top_brands: np.ndarray,  # (B, nb) brand codes, best first, -1 = none
    affinity: Affinity,
    *,
    n_items: int,
    min_items: int,
) -> Candidates:
    """ "Your top brands": one carousel per top brand of the user, its items by r̂."""
    b, nb = top_brands.shape
    if b == 0 or nb == 0 or brand_pools.shape[0] == 0:
        return Candidates.empty(n_items)
    users, rank = np.nonzero(top_brands >= 0)
    brand = top_brands[users, rank]
    items, count = _rank_pool(brand_pools[brand], users, affinity, n_items)
    keep = count >= min_items
    users, brand, items = users[keep], brand[keep], items[keep]
    names = catalog.brand_names[brand]
    return Candidates(
        user=users.astype(np.int64),
        carousel_id=np.array([f"brand:{x}" for x in names], dtype=object),
        title=np.array([f"More from {x}" for x in names], dtype=object),
        family=np.full(len(users), "brand", dtype=object),
        reason=np.full(len(users), "top_brands", dtype=object),
        fixed_order=np.zeros(len(users), dtype=bool),
        items=items,
    )


def new_in_categories(
    new_pools: np.ndarray,  # (n_cats, P) new in-stock items per category, most popular first
    cat_affinity: np.ndarray,  # (B, n_cats)
    affinity: Affinity,
    *,
    n_cats: int,
    n_items: int,
    min_items: int,
) -> Candidates:
    """ "New in your categories": new items of the user's n_cats categories of highest affinity
    (among those with new items), by r̂."""
    b = cat_affinity.shape[0]
    if b == 0 or new_pools.shape[1] == 0:
        return Candidates.empty(n_items)
    has_new = (new_pools != PAD).any(axis=1)
    aff = np.where(has_new[None, :], cat_affinity, -np.inf)
    k = min(n_cats, aff.shape[1])
    top = np.argsort(-aff, axis=1, kind="stable")[:, :k]
    top = np.where(np.isfinite(np.take_along_axis(aff, top, axis=1)), top, -1)
    pool = np.where((top >= 0)[:, :, None], new_pools[np.maximum(top, 0)], PAD).reshape(b, -1)
    items, count = _rank_pool(pool, np.arange(b), affinity, n_items)
    keep = np.flatnonzero(count >= min_items)
    m = len(keep)
    return Candidates(
        user=keep.astype(np.int64),
        carousel_id=np.full(m, "new_in_categories", dtype=object),
        title=np.full(m, "New in your categories", dtype=object),
        family=np.full(m, "new", dtype=object),
        reason=np.full(m, "new_in_categories", dtype=object),
        fixed_order=np.zeros(m, dtype=bool),
        items=items[keep],
    )


def merge(parts: list[Candidates], width: int) -> Candidates:
    """Concatenate candidate tables of one batch, sorted by user (stable: each table's rows keep
    their order, earlier tables first)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Candidates.empty(width)
    user = np.concatenate([p.user for p in parts])
    order = np.argsort(user, kind="stable")
    return Candidates(
        user=user[order],
        carousel_id=np.concatenate([p.carousel_id for p in parts])[order],
        title=np.concatenate([p.title for p in parts])[order],
        family=np.concatenate([p.family for p in parts])[order],
        reason=np.concatenate([p.reason for p in parts])[order],
        fixed_order=np.concatenate([p.fixed_order for p in parts])[order],
        items=np.concatenate([p.item_matrix(width) for p in parts])[order],
    )
