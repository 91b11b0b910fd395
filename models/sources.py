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


def _distinct(
    cand_user: np.ndarray, items: np.ndarray, scores: np.ndarray, *extra: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The distinct scored (user, item) pairs of candidate rows: user, item, score and the
    `extra` (n_c, L) arrays' values, one entry per pair (PAD and NaN scores left out)."""
    ok = (items != PAD) & np.isfinite(scores)
    r, c = np.nonzero(ok)
    user = np.asarray(cand_user, dtype=np.int64)[r]
    item = items[r, c].astype(np.int64)
    n_all = np.int64(item.max() + 1) if len(item) else np.int64(1)
    _, first = np.unique(user * n_all + item, return_index=True)
    return (user[first], item[first], scores[r, c][first], *(x[r, c][first] for x in extra))


def _ranked(
    user: np.ndarray, item: np.ndarray, value: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """The order of the entries by user, then value (highest first), then item; and each
    sorted entry's rank within its user (0-based)."""
    order = np.lexsort((item, -value, user))
    starts = np.searchsorted(user[order], np.arange(n_users + 1))
    return order, np.arange(len(order)) - starts[user[order]]


def _block(
    user: np.ndarray,
    rank: np.ndarray,
    k: np.ndarray | int,
    per_carousel: int,
    n_items: int,
    n_users: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each sorted entry goes in the (n_users, n_items) matrix of the block that starts at
    rank k·per_carousel (k per user or one for all): (take mask, position)."""
    lo = (np.broadcast_to(np.asarray(k, dtype=np.int64), (n_users,)) * per_carousel)[user]
    take = (rank >= lo) & (rank < lo + n_items)
    return take, rank - lo


def picked_for_you(
    cand_user: np.ndarray,  # (n_c,) batch row of each candidate carousel
    items: np.ndarray,  # (n_c, L) its items, PAD-padded
    scores: np.ndarray,  # (n_c, L) calibrated engagement score of each item (NaN: none)
    bought: np.ndarray,  # (n_c, L) bool: the user has bought the item before
    *,
    rows: int,
    per_carousel: int,
    n_items: int,
    min_items: int,
    explore_weight: float,
) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """ "Picked for you": every distinct item of a user's other candidates, by value, in `rows`
    rows (the k-th from the k-th block of `per_carousel` items, like buy it again).

    The value of an item is its calibrated engagement score p, times 1 + explore_weight·R̂/Ê for
    an item the user never bought, with R̂ = Σ p over the user's pool and Ê = Σ p over its never
    bought items. It is the per-user greedy allocation of cells that maximises the expected page
    recall plus explore_weight × the expected explore recall: a repeat hit is worth 1/|R| and
    an explore hit 1/|R| + explore_weight/|E|, with |R| and |E| estimated by R̂ and Ê. So a user
    with many likely repeats gets mostly repeats, and one who mostly tries new things gets
    mostly new things.

    Returns the candidates, their raw scores and their values, (n, n_items) each (NaN on PAD).
    """
    if rows < 0 or explore_weight < 0:
        raise ValueError(f"rows and explore_weight must be >= 0, got {rows}, {explore_weight}")
    empty = np.empty((0, n_items))
    if rows == 0 or not len(cand_user):
        return Candidates.empty(n_items), empty, empty.copy()
    user, item, p, bought_pair = _distinct(cand_user, items, scores, bought)
    p = np.maximum(p, 0.0)
    new = ~bought_pair.astype(bool)
    b = int(user.max()) + 1 if len(user) else 0
    total = np.bincount(user, weights=p, minlength=b)
    fresh = np.bincount(user, weights=p * new, minlength=b)
    boost = np.divide(total, fresh, out=np.zeros(b), where=fresh > 0)
    value = p * (1.0 + explore_weight * boost[user] * new)
    order, rank = _ranked(user, item, value, b)
    user, item, p, value = user[order], item[order], p[order], value[order]
    out_users, out_items, out_p, out_v, out_k = [], [], [], [], []
    for k in range(rows):  # rows is small (a few): one vectorised pass per row
        take, pos = _block(user, rank, k, per_carousel, n_items, b)
        counts = np.bincount(user[take], minlength=b)
        emit = np.flatnonzero(counts >= min_items)
        if not len(emit):
            continue
        mat = np.full((b, n_items), PAD, dtype=np.int64)
        pm, vm = np.full((b, n_items), np.nan), np.full((b, n_items), np.nan)
        uu, pp = user[take], pos[take]
        mat[uu, pp], pm[uu, pp], vm[uu, pp] = item[take], p[take], value[take]
        out_users.append(emit)
        out_items.append(mat[emit])
        out_p.append(pm[emit])
        out_v.append(vm[emit])
        out_k.append(np.full(len(emit), k))
    if not out_users:
        return Candidates.empty(n_items), empty, empty.copy()
    users = np.concatenate(out_users)
    ks = np.concatenate(out_k)
    order = np.argsort(users, kind="stable")  # by user, then row
    users, ks = users[order], ks[order]
    return (
        Candidates(
            user=users.astype(np.int64),
            carousel_id=np.array(
                ["for_you" if k == 0 else f"for_you:{k + 1}" for k in ks], dtype=object
            ),
            title=np.array(
                ["Picked for you" if k == 0 else "More picked for you" for k in ks], dtype=object
            ),
            family=np.full(len(users), "for_you", dtype=object),
            reason=np.full(len(users), "for_you", dtype=object),
            fixed_order=np.zeros(len(users), dtype=bool),
            items=np.concatenate(out_items)[order],
        ),
        np.concatenate(out_p)[order],
        np.concatenate(out_v)[order],
    )
