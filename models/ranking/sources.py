"""Rule-based personalised carousel sources beyond `models.ranking.candidates.generate` (docs/methods.md §5):
"your top brands" and "new in your categories"; and merging candidate tables.

Both rank a per-user pool by r̂, given as a function of (batch rows, item matrix), so the pools
need no shared score columns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.ranking.candidates import Candidates
from models.ranking.catalog import PAD, Catalog

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


def picked_for_you(
    user: np.ndarray,  # (n,) batch row of each scored (user, item) pair; pairs may repeat
    item: np.ndarray,  # (n,) item index
    score: np.ndarray,  # (n,) calibrated engagement score (NaN: left out)
    bought: np.ndarray,  # (n,) bool: the user has bought the item before
    *,
    n_users: int,
    rows: int,
    per_carousel: int,
    n_items: int,
    min_items: int,
    explore_weight: float,
) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """ "Picked for you": every distinct item of a user's pool (its other candidates' items and
    whatever else was scored for it), by value, in `rows` rows (the k-th from the k-th block of
    `per_carousel` items, like buy it again).

    The value of an item is its calibrated engagement score p, times 1 + explore_weight·R̂/Ê for
    an item the user never bought, with R̂ = Σ p over the user's pool and Ê = Σ p over its never
    bought items. It is the per-user greedy allocation of cells that maximises the expected page
    recall plus explore_weight × the expected explore recall: a repeat hit is worth 1/|R| and
    an explore hit 1/|R| + explore_weight/|E|, with |R| and |E| estimated by R̂ and Ê. So a user
    with many likely repeats gets mostly repeats, and one who mostly tries new things gets
    mostly new things.

    Returns the candidates (by user, then row), their raw scores and their values, (n_c,
    n_items) each (NaN on PAD).
    """
    if rows < 0 or explore_weight < 0:
        raise ValueError(f"rows and explore_weight must be >= 0, got {rows}, {explore_weight}")
    empty = np.empty((0, n_items))
    ok = np.isfinite(score)
    if rows == 0 or not ok.any():
        return Candidates.empty(n_items), empty, empty.copy()
    user = np.asarray(user, dtype=np.int64)[ok]
    item = np.asarray(item, dtype=np.int64)[ok]
    _, first = np.unique(user * np.int64(item.max() + 1) + item, return_index=True)
    user, item = user[first], item[first]
    p = np.maximum(np.asarray(score, dtype=np.float64)[ok][first], 0.0)
    new = ~np.asarray(bought, dtype=bool)[ok][first]
    total = np.bincount(user, weights=p, minlength=n_users)
    fresh = np.bincount(user, weights=p * new, minlength=n_users)
    boost = np.divide(total, fresh, out=np.zeros(n_users), where=fresh > 0)
    value = p * (1.0 + explore_weight * boost[user] * new)
    order = np.lexsort((item, -value, user))  # by user, value (best first), item
    user, item, p, value = user[order], item[order], p[order], value[order]
    rank = np.arange(len(user)) - np.searchsorted(user, user, side="left")
    # each user's list up to the last row's end; row k is a window of it
    deep = (rows - 1) * per_carousel + n_items
    keep = rank < deep
    ranked = np.full((n_users, deep), PAD, dtype=np.int64)
    ranked_p, ranked_v = np.full((n_users, deep), np.nan), np.full((n_users, deep), np.nan)
    at = (user[keep], rank[keep])
    ranked[at], ranked_p[at], ranked_v[at] = item[keep], p[keep], value[keep]
    window = np.arange(rows)[:, None] * per_carousel + np.arange(n_items)[None, :]  # (rows, L)
    blocks = ranked[:, window]  # (n_users, rows, n_items)
    u, k = np.nonzero((blocks != PAD).sum(axis=2) >= min_items)  # row-major: by user, then row
    return (
        Candidates(
            user=u.astype(np.int64),
            carousel_id=np.array(
                ["for_you" if j == 0 else f"for_you:{j + 1}" for j in k], dtype=object
            ),
            title=np.array(
                ["Picked for you" if j == 0 else "More picked for you" for j in k], dtype=object
            ),
            family=np.full(len(u), "for_you", dtype=object),
            reason=np.full(len(u), "for_you", dtype=object),
            fixed_order=np.zeros(len(u), dtype=bool),
            items=blocks[u, k],
        ),
        ranked_p[:, window][u, k],
        ranked_v[:, window][u, k],
    )
