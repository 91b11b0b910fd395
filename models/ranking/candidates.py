"""Carousel candidates per user: curated, buy it again, category affinity, discover, trending.

Everything is numpy over a batch of users, with no Python loop over the users. A batch's
candidates are rows of a `Candidates` table (a struct of arrays): the user (row in the batch),
the carousel's id/title/family/reason, its ordered item indices (padded with -1) and whether its
item order is fixed.

Item scores come as a (B, n_cols) matrix over score *columns* plus `col_of`, each item's column
(-1: none), so the matrix only needs the items some candidate source can use
(`Catalog.universe()` plus the curated items), not the whole catalogue. An item without a
column, or whose score is -inf (how out-of-stock is expressed), is left out of every list ranked
by score; lists in their own order (an immutable curated carousel, buy it again) keep all their
items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ranking.catalog import PAD, Catalog, CuratedCarousel
from models.ranking.item_lists import (
    best_first,
    item_columns,
    pack_lists,
    shared_list,
    top_k_fast,
    usable_counts,
)


@dataclass
class Candidates:
    """Candidate carousels of a batch, one row each, sorted by user (then in emission order)."""

    user: np.ndarray  # int64 (n_c,) row in the batch
    carousel_id: np.ndarray  # object (n_c,)
    title: np.ndarray  # object (n_c,)
    family: np.ndarray  # object (n_c,)
    reason: np.ndarray  # object (n_c,)
    fixed_order: np.ndarray  # bool (n_c,)
    items: np.ndarray  # int64 (n_c, n_items) item indices, padded with PAD at the end

    @classmethod
    def empty(cls, width: int = 0) -> Candidates:
        obj = np.empty(0, dtype=object)
        return cls(
            user=np.empty(0, dtype=np.int64),
            carousel_id=obj,
            title=obj.copy(),
            family=obj.copy(),
            reason=obj.copy(),
            fixed_order=np.empty(0, dtype=bool),
            items=np.empty((0, width), dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.user)

    def item_matrix(self, width: int) -> np.ndarray:
        """Items truncated or PAD-padded to `width` columns (a new array)."""
        have = self.items.shape[1]
        if width <= have:
            return self.items[:, :width].copy()
        out = np.full((len(self.items), width), PAD, dtype=np.int64)
        out[:, :have] = self.items
        return out


def generate(
    *,
    catalog: Catalog,
    item_scores: np.ndarray,  # (B, n_cols) r̂ per score column, -inf where not allowed
    col_of: np.ndarray,  # (n_items,) int: item -> column of item_scores, -1 = none
    cat_affinity: np.ndarray,  # (B, n_cats) ŝ_uc
    cat_eta: np.ndarray,  # (B, n_cats) η_uc
    buy_again: list[np.ndarray],  # per user: purchased item indices, most bought first
    curated: list[CuratedCarousel],
    n_items: int,
    min_items: int,
    n_category: int,
    n_discover_cats: int = 3,
    buy_again_carousels: int = 1,
    per_carousel: int = 10,
    best_seller_carousels: int = 0,
) -> Candidates:
    """All candidate carousels for a batch of B users.

    Per user, in this order: each curated carousel (an immutable one in the operator's order,
    else by score), `buy_again_carousels` buy it again rows (most bought first; the k-th from
    item (k-1)·per_carousel on; each if it has >= min_items items), `best_seller_carousels`
    best sellers rows (the same blocks over `catalog.best_sellers`), trending (by score), the n_category categories of highest affinity among those with >= min_items
    scored pool items (pool by score), and discover (the best items of the n_discover_cats
    undiscovered categories of highest affinity, interleaved; if >= min_items items). Lists
    ranked by score hold no item without a column or scored -inf; trending is left out when
    none of its items is left.
    """
    scores, col_of = _check_inputs(catalog, item_scores, col_of, cat_affinity, cat_eta, buy_again)
    b = scores.shape[0]
    n = int(n_items)
    if b == 0:
        return Candidates.empty(n)
    if scores.shape[1] == 0:  # nothing scored: every score-ranked list is empty
        scores = np.full((b, 1), -np.inf)
    step = int(per_carousel)
    # slots in emission order: (items (B, n), emitted (B,), id, title, family, reason, fixed)
    slots: list[tuple] = _curated_slots(curated, scores, col_of, b, n)
    slots += _buy_again_slots(buy_again, buy_again_carousels, step, n, min_items)
    slots += _best_seller_slots(catalog, best_seller_carousels, step, b, n, min_items)
    if len(catalog.trending):
        tr_items, tr_count = shared_list(scores, catalog.trending, col_of, n)
        slots.append(
            (tr_items, tr_count > 0, "trending", "Trending now", "trending", "trending", False)
        )
    slots += _category_slots(
        catalog, scores, col_of, cat_affinity, cat_eta, n, min_items, n_category, n_discover_cats
    )
    return _emitted(slots, b)


def _check_inputs(
    catalog: Catalog,
    item_scores: np.ndarray,
    col_of: np.ndarray,
    cat_affinity: np.ndarray,
    cat_eta: np.ndarray,
    buy_again: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, col_of) as arrays, after checking that their shapes fit the catalogue and B."""
    scores = np.asarray(item_scores)
    col_of = np.asarray(col_of, dtype=np.int64)
    n_all = len(catalog.item_ids)
    if col_of.shape != (n_all,):
        raise ValueError(f"col_of has shape {col_of.shape}, expected ({n_all},)")
    if scores.ndim != 2:
        raise ValueError(f"item_scores must be 2-D (B, n_cols), got shape {scores.shape}")
    if len(col_of) and col_of.max() >= scores.shape[1]:
        raise ValueError(
            f"col_of points at column {col_of.max()} but item_scores has {scores.shape[1]}"
        )
    b = scores.shape[0]
    if len(buy_again) != b or cat_affinity.shape[0] != b or cat_eta.shape[0] != b:
        raise ValueError("item_scores, cat_affinity, cat_eta and buy_again need B rows each")
    return scores, col_of


def _curated_slots(
    curated: list[CuratedCarousel], scores: np.ndarray, col_of: np.ndarray, b: int, n: int
) -> list[tuple]:
    """Each curated carousel: an immutable one in the operator's order, else by score."""
    slots: list[tuple] = []
    for cc in curated:
        if cc.immutable:
            fixed = np.full(n, PAD, dtype=np.int64)
            head = np.asarray(cc.items, dtype=np.int64)[:n]
            fixed[: len(head)] = head
            items = np.broadcast_to(fixed, (b, n))
        else:
            items, _ = shared_list(scores, cc.items, col_of, n)
        slots.append(
            (items, True, cc.carousel_id, cc.title, cc.family, "curated", bool(cc.immutable))
        )
    return slots


def _buy_again_slots(
    buy_again: list[np.ndarray], rows: int, step: int, n: int, min_items: int
) -> list[tuple]:
    """The "buy it again" rows, most bought first."""
    if rows < 1:
        raise ValueError(f"buy_again_carousels must be >= 1, got {rows}")
    ba_all, ba_len = pack_lists(buy_again, n + (rows - 1) * step)
    # most bought first, re-ranked by engagement in "rerank" mode; the k-th row's pool starts
    # at the k-th block of M items, so each row adds the next most-bought items
    return [
        (
            ba_all[:, k * step : k * step + n],
            ba_len - k * step >= min_items,
            "buy_again" if k == 0 else f"buy_again:{k + 1}",
            "Buy it again" if k == 0 else "Buy it again: more of your regulars",
            "buy_again",
            "buy_again",
            False,
        )
        for k in range(rows)
    ]


def _best_seller_slots(
    catalog: Catalog, rows: int, step: int, b: int, n: int, min_items: int
) -> list[tuple]:
    """The "best sellers" rows: blocks of the shared best-seller list, in its own order."""
    if rows < 0:
        raise ValueError(f"best_seller_carousels must be >= 0, got {rows}")
    best = np.asarray(catalog.best_sellers, dtype=np.int64)
    slots: list[tuple] = []
    for k in range(rows):
        # every user's row k is the k-th block of the shared list, in its own order
        block = np.full(n, PAD, dtype=np.int64)
        part = best[k * step : k * step + n]
        block[: len(part)] = part
        slots.append(
            (
                np.broadcast_to(block, (b, n)),
                len(part) >= min_items,
                "best_sellers" if k == 0 else f"best_sellers:{k + 1}",
                "Best sellers" if k == 0 else "More best sellers",
                "best_sellers",
                "best_sellers",
                False,
            )
        )
    return slots


def _category_slots(
    catalog: Catalog,
    scores: np.ndarray,
    col_of: np.ndarray,
    cat_affinity: np.ndarray,
    cat_eta: np.ndarray,
    n: int,
    min_items: int,
    n_category: int,
    n_discover_cats: int,
) -> list[tuple]:
    """The category rows of highest affinity and "discover" (the best items of the undiscovered
    categories of highest affinity, interleaved)."""
    b = scores.shape[0]
    pools = catalog.pool_matrix()
    pcol, pok = item_columns(pools, col_of)
    eligible = usable_counts(scores, pools, pcol, pok) >= min_items
    top_cats = top_k_fast(np.where(eligible, cat_affinity, -np.inf), n_category)
    undiscovered = np.where(eligible & (cat_eta <= 0), cat_affinity, -np.inf)
    disc_cats = top_k_fast(undiscovered, n_discover_cats)
    n_top = top_cats.shape[1]
    picked = np.concatenate([top_cats, disc_cats], axis=1)  # (B, R)
    ranked = _ranked_pools(scores, pools, pcol, pok, picked, n)
    cat_cid, cat_title = catalog.category_labels()
    slots: list[tuple] = []
    for r in range(n_top):
        c = top_cats[:, r]
        safe = np.where(c >= 0, c, 0)
        slots.append(
            (
                ranked[:, r],
                c != PAD,
                cat_cid[safe],
                cat_title[safe],
                "category",
                "category_affinity",
                False,
            )
        )
    if disc_cats.shape[1]:
        # interleave the best items of each undiscovered category so the row shows variety
        flat = ranked[:, n_top:].transpose(0, 2, 1).reshape(b, -1)
        first = np.argsort(flat == PAD, axis=1, kind="stable")[:, :n]
        disc = np.take_along_axis(flat, first, axis=1)
        if disc.shape[1] < n:
            disc = np.concatenate([disc, np.full((b, n - disc.shape[1]), PAD, np.int64)], axis=1)
        d_count = (disc != PAD).sum(axis=1)
        emit = (disc_cats != PAD).any(axis=1) & (d_count >= min_items)
        slots.append(
            (disc, emit, "discover", "Discover something new", "discover", "discover", True)
        )
    return slots


def _ranked_pools(
    scores: np.ndarray,
    pools: np.ndarray,
    pcol: np.ndarray,
    pok: np.ndarray,
    picked: np.ndarray,
    n: int,
) -> np.ndarray:
    """(B, R, n) the pools of each user's picked categories (B, R), each ranked by score."""
    b = scores.shape[0]
    if not picked.shape[1]:
        return np.empty((b, 0, n), dtype=np.int64)
    rows = np.arange(b)
    # the picked categories' pools, scored: one gather from the flat score matrix
    safe = np.where(picked >= 0, picked, 0)
    flat_at = np.take(pcol, safe, axis=0)  # (B, R, P)
    flat_at += (rows * np.int64(scores.shape[1]))[:, None, None]
    p_scores = np.take(scores.reshape(-1), flat_at)
    np.fmax(p_scores, -np.inf, out=p_scores)  # NaN -> -inf
    left_out = np.take(~pok, safe, axis=0)
    left_out[picked < 0] = True
    np.putmask(p_scores, left_out, -np.inf)
    best, _ = best_first(p_scores.reshape(-1, pools.shape[1]), n)
    return np.where(best >= 0, pools[safe.reshape(-1, 1), np.maximum(best, 0)], PAD).reshape(
        b, picked.shape[1], n
    )


def _emitted(slots: list[tuple], b: int) -> Candidates:
    """The candidate table of the emitted slots, by user, then in slot order."""
    k = len(slots)
    emitted = np.zeros((b, k), dtype=bool)
    ids = np.empty((b, k), dtype=object)
    titles = np.empty((b, k), dtype=object)
    for j, (_, emit, cid, title, _, _, _) in enumerate(slots):
        emitted[:, j] = emit
        ids[:, j] = cid
        titles[:, j] = title
    u, j = np.nonzero(emitted)  # row-major: by user, then slot order
    all_items = np.stack([s[0] for s in slots], axis=1)  # (B, K, n)
    return Candidates(
        user=u.astype(np.int64),
        carousel_id=ids[u, j],
        title=titles[u, j],
        family=np.array([s[4] for s in slots], dtype=object)[j],
        reason=np.array([s[5] for s in slots], dtype=object)[j],
        fixed_order=np.array([s[6] for s in slots], dtype=bool)[j],
        items=all_items[u, j].astype(np.int64, copy=False),
    )
