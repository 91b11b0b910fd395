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

from dataclasses import dataclass, field

import numpy as np

PAD = -1


@dataclass
class Catalog:
    """Item and category arrays aligned by index; built once per run.

    `cat_items` must not be modified after the first `generate` (its padded matrix is cached).
    """

    item_ids: np.ndarray  # object (n_items,)
    item_cat: np.ndarray  # int (n_items,) index into cat_ids
    cat_ids: np.ndarray  # object (n_cats,)
    cat_names: np.ndarray  # object (n_cats,) display names
    in_stock: np.ndarray  # bool
    has_image: np.ndarray  # bool
    is_new: np.ndarray  # bool
    popularity: np.ndarray  # float in [0, 1]
    trending: np.ndarray  # int item indices, best first, in stock only
    cat_items: list[np.ndarray] = field(
        default_factory=list
    )  # per category: in-stock items by popularity (at most `category_pool` of them)
    item_brand: np.ndarray = field(
        default_factory=lambda: np.empty(0, dtype=np.int64)
    )  # int64 (n_items,) index into brand_names, -1 = no brand
    best_sellers: np.ndarray = field(
        default_factory=lambda: np.empty(0, dtype=np.int64)
    )  # int item indices, in stock, by recent engagement (the "Best sellers" rows)
    brand_names: np.ndarray = field(
        default_factory=lambda: np.empty(0, dtype=object)
    )  # object (n_brands,) sorted

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        brand = np.asarray(self.item_brand, dtype=np.int64)
        if len(brand) == 0 and n:
            brand = np.full(n, -1, dtype=np.int64)
        if len(brand) != n:
            raise ValueError(f"item_brand has {len(brand)} entries for {n} items")
        self.item_brand = brand
        self.brand_names = np.asarray(self.brand_names, dtype=object)
        self._pools: np.ndarray | None = None
        self._cat_labels: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def build(
        cls,
        item_ids: np.ndarray,
        categories: np.ndarray,
        cat_names: dict[str, str],
        in_stock: np.ndarray,
        has_image: np.ndarray,
        is_new: np.ndarray,
        pop_total: np.ndarray,
        pop_recent: np.ndarray,
        trend: np.ndarray,
        trending_n: int,
        category_pool: int | None = None,
        brands: np.ndarray | None = None,
        pop_window: np.ndarray | None = None,
        best_sellers_n: int = 0,
    ) -> Catalog:
        """`category_pool`: keep only each category's first `category_pool` in-stock items by
        popularity. `brands`: brand name per item (None, NaN or blank = no brand).
        `best_sellers_n`: the in-stock items of most engagement in `pop_window` (e.g. the last
        30 days; popularity breaks ties), best first, that "Best sellers" rows draw from."""
        if category_pool is not None and category_pool < 0:
            raise ValueError(f"category_pool must be >= 0 or None, got {category_pool}")
        cat_ids, item_cat = np.unique(np.asarray(categories, dtype=object), return_inverse=True)
        pop = np.log1p(np.maximum(np.asarray(pop_total, dtype=np.float64), 0))
        popularity = pop / pop.max() if pop.max() > 0 else pop
        # trending: recent engagement, boosted by growth over the previous window
        trend_score = np.asarray(pop_recent, dtype=np.float64) * np.sqrt(
            np.asarray(trend, dtype=np.float64)
        )
        order = np.lexsort((-popularity, -trend_score))
        order = order[in_stock[order] & (trend_score[order] > 0)]
        by_pop = np.argsort(-popularity, kind="stable")
        by_pop = by_pop[in_stock[by_pop]]
        cat_items = [np.empty(0, dtype=np.int64) for _ in range(len(cat_ids))]
        if len(by_pop):
            cats_sorted = item_cat[by_pop]
            order_c = np.argsort(cats_sorted, kind="stable")
            bounds = np.searchsorted(cats_sorted[order_c], np.arange(len(cat_ids) + 1))
            for c in range(len(cat_ids)):
                hi = bounds[c + 1]
                if category_pool is not None:
                    hi = min(hi, bounds[c] + category_pool)
                cat_items[c] = by_pop[order_c[bounds[c] : hi]].astype(np.int64)
        item_brand, brand_names = _brand_codes(brands, len(item_cat))
        best = np.empty(0, dtype=np.int64)
        if best_sellers_n > 0 and pop_window is not None:
            recent = np.asarray(pop_window, dtype=np.float64)
            best = np.lexsort((-popularity, -recent))
            best = best[in_stock[best] & (recent[best] > 0)][:best_sellers_n]
        return cls(
            item_ids=np.asarray(item_ids, dtype=object),
            item_cat=item_cat.astype(np.int64),
            cat_ids=cat_ids,
            cat_names=np.array([cat_names.get(c, c) for c in cat_ids], dtype=object),
            in_stock=np.asarray(in_stock, dtype=bool),
            has_image=np.asarray(has_image, dtype=bool),
            is_new=np.asarray(is_new, dtype=bool),
            popularity=popularity,
            trending=order[:trending_n].astype(np.int64),
            cat_items=cat_items,
            item_brand=item_brand,
            brand_names=brand_names,
            best_sellers=best.astype(np.int64),
        )

    def pool_matrix(self) -> np.ndarray:
        """`cat_items` as an (n_cats, P) int64 matrix, each row padded with PAD (P >= 1)."""
        if self._pools is None:
            lens = np.array([len(x) for x in self.cat_items], dtype=np.int64)
            width = max(int(lens.max()) if len(lens) else 0, 1)
            pools = np.full((len(lens), width), PAD, dtype=np.int64)
            if lens.sum():
                flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in self.cat_items])
                pools[np.arange(width)[None, :] < lens[:, None]] = flat
            self._pools = pools
        return self._pools

    def category_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Per category: the category carousel's id and title (object arrays)."""
        if self._cat_labels is None:
            self._cat_labels = (
                np.array([f"category:{c}" for c in self.cat_ids], dtype=object),
                np.array([f"More in {n}" for n in self.cat_names], dtype=object),
            )
        return self._cat_labels

    def universe(self) -> np.ndarray:
        """Sorted unique item indices a non-personal candidate source can use: every category
        pool and trending (curated items are the caller's to add)."""
        pools = self.pool_matrix()
        return np.unique(
            np.concatenate([pools[pools != PAD], np.asarray(self.trending, dtype=np.int64)])
        ).astype(np.int64)

    def score_items(self, extra: np.ndarray | None = None) -> np.ndarray:
        """The items of `universe()` plus `extra` (e.g. the curated items), each once, in an
        order that suits `generate` as the score columns' order: category pool after category
        pool (so a pool's scores sit side by side), then the others sorted. Optional: any
        column order gives the same candidates."""
        pools = self.pool_matrix()
        in_pools = pools[pools != PAD]  # pools are disjoint: an item has one category
        rest = np.asarray(self.trending, dtype=np.int64)
        if extra is not None:
            rest = np.concatenate([rest, np.asarray(extra, dtype=np.int64).reshape(-1)])
        rest = np.setdiff1d(rest, in_pools)
        return np.concatenate([in_pools, rest]).astype(np.int64)


def _brand_codes(brands: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Brand code per item (-1 = null or blank) and the sorted code -> name vocabulary."""
    if brands is None:
        return np.full(n, -1, dtype=np.int64), np.empty(0, dtype=object)
    import pandas as pd

    raw = np.asarray(brands, dtype=object)
    if raw.shape != (n,):
        raise ValueError(f"brands has shape {raw.shape}, expected ({n},)")
    null = np.asarray(pd.isna(raw), dtype=bool)
    text = np.where(null, "", raw).astype(str)
    named = ~null & (np.char.strip(text) != "")
    names, codes = np.unique(text[named], return_inverse=True)
    item_brand = np.full(n, -1, dtype=np.int64)
    item_brand[named] = codes
    return item_brand, names.astype(object)


@dataclass(frozen=True)
class CuratedCarousel:
    carousel_id: str
    title: str
    family: str
    items: np.ndarray  # item indices in the operator's order (in stock)
    immutable: bool


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


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first (-inf entries are never chosen)."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, idx, axis=1)), idx, PAD)


def _columns(items: np.ndarray, col_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score column of each item index (0 where unusable) and whether it is usable (not PAD,
    has a column)."""
    col = col_of[np.where(items >= 0, items, 0)]
    ok = (items >= 0) & (col >= 0)
    return np.where(ok, col, 0), ok


_INF_KEY = np.array([np.inf]).view(np.int64)[0]  # the sort key of -(-inf), see _best_first


def _best_first(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of s (M, L) (-inf = left out; no NaN): the positions of its n best entries by
    descending score, equal scores in position order (exactly what a stable argsort of -s
    gives), PAD-padded to (M, n); and how many there are (M,)."""
    m, length = s.shape
    if n <= 0:
        return np.empty((m, 0), dtype=np.int64), np.zeros(m, dtype=np.int64)
    if length == 0:
        return np.full((m, n), PAD, dtype=np.int64), np.zeros(m, dtype=np.int64)
    # Sort one int64 key per entry, much faster than an argsort: the bits of -s (best first;
    # 0.0 - (-0.0) = 0.0) made order-preserving, with the low `bits` replaced by the position.
    # Only entries whose truncated scores collide can come out in the wrong order; rows where
    # that happens within the first n + 1 are sorted again, stably: the result is exact.
    key = np.subtract(0.0, s, dtype=np.float64).view(np.int64)
    sign = key >> 63  # -1 where negative: flip the magnitude bits there
    sign &= np.int64(0x7FFFFFFFFFFFFFFF)
    key ^= sign
    bits = max(int(length - 1).bit_length(), 1)
    low = np.int64((1 << bits) - 1)
    key &= ~low
    key |= np.arange(length, dtype=np.int64)
    key.sort(axis=1)
    head = key[:, : n + 1]
    top = head & low
    high = head >> bits
    inf_high = _INF_KEY >> bits  # a left-out entry (the largest finite key is below it)
    clash = (high[:, 1:] == high[:, :-1]) & (high[:, 1:] < inf_high)
    redo = np.flatnonzero(clash.any(axis=1))
    if len(redo):
        top[redo] = np.argsort(-s[redo], axis=1, kind="stable")[:, : n + 1]
        high[redo] = np.where(s[redo] > -np.inf, 0, inf_high)[
            np.arange(len(redo))[:, None], top[redo]
        ]
    keep = high[:, :n] < inf_high  # the left-out ones sort last
    best = np.where(keep, top[:, :n], PAD)
    if best.shape[1] < n:
        best = np.concatenate([best, np.full((m, n - best.shape[1]), PAD, np.int64)], axis=1)
    return best, keep.sum(axis=1)


def _top_k_fast(scores: np.ndarray, k: int) -> np.ndarray:
    """`top_k_rows(scores, k)`, the same output, faster: rows whose k + 1 best are distinct and
    whose scores are finite or -inf have one answer, taken from `_best_first`; the others (equal
    scores, where `top_k_rows`'s argpartition picks, or +inf/NaN) go through `top_k_rows`."""
    m, width = scores.shape
    k = min(k, width)
    if k <= 0 or m == 0:
        return np.empty((m, max(k, 0)), dtype=np.int64)
    s = scores.astype(np.float64, copy=False)
    odd = (np.isnan(s) | (s == np.inf)).any(axis=1)
    s = np.where(odd[:, None], -np.inf, s)  # those rows are redone below
    best, _ = _best_first(s, k + 1)
    vals = np.where(best >= 0, np.take_along_axis(s, np.maximum(best, 0), axis=1), -np.inf)
    tied = ((vals[:, 1:] == vals[:, :-1]) & (vals[:, 1:] > -np.inf)).any(axis=1)
    out = best[:, :k].copy()
    redo = np.flatnonzero(tied | odd)
    if len(redo):
        out[redo] = top_k_rows(scores[redo], k)
    return out


def _shared_list(
    scores: np.ndarray, items: np.ndarray, col_of: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One item list ranked by every user's scores: (B, n) items and (B,) counts."""
    items = np.asarray(items, dtype=np.int64)
    col, ok = _columns(items, col_of)
    s = np.fmax(np.take(scores, col, axis=1), -np.inf)  # NaN -> -inf
    s[:, ~ok] = -np.inf
    best, count = _best_first(s, n)
    return np.where(best >= 0, items[np.maximum(best, 0)] if len(items) else PAD, PAD), count


def _usable_counts(
    scores: np.ndarray, pools: np.ndarray, pcol: np.ndarray, pok: np.ndarray
) -> np.ndarray:
    """Per user and category: the pool items with a column and a score > -inf, (B or 1, n_cats).
    Only the pool entries whose column is -inf/NaN for some user are looked at per user."""
    col_ok = scores.min(axis=0) > -np.inf  # False also where a NaN is
    sure = pok & col_ok[pcol]
    counts = sure.sum(axis=1)[None, :]
    unsure = pok & ~col_ok[pcol]
    if not unsure.any():
        return counts
    uc, up = np.nonzero(unsure)  # row-major: uc is sorted
    fin = (scores[:, pcol[uc, up]] > -np.inf).astype(np.int64)
    cats, starts = np.unique(uc, return_index=True)
    counts = np.repeat(counts, scores.shape[0], axis=0)
    counts[:, cats] += np.add.reduceat(fin, starts, axis=1)
    return counts


def pack_lists(lists: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user item lists (e.g. buy again, most bought first) packed into (B, n), their first
    n items PAD-padded, and their full lengths (B,)."""
    b = len(lists)
    lens = np.fromiter((len(a) for a in lists), dtype=np.int64, count=b)
    out = np.full((b, n), PAD, dtype=np.int64)
    if not b or not lens.sum() or not n:
        return out, lens
    flat = np.concatenate([np.asarray(a).reshape(-1) for a in lists]).astype(np.int64)
    starts = np.cumsum(lens) - lens
    pos = np.arange(n)[None, :]
    take = pos < lens[:, None]
    out[take] = flat[(starts[:, None] + pos)[take]]
    return out, lens


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
    n = int(n_items)
    if len(buy_again) != b or cat_affinity.shape[0] != b or cat_eta.shape[0] != b:
        raise ValueError("item_scores, cat_affinity, cat_eta and buy_again need B rows each")
    if b == 0:
        return Candidates.empty(n)
    if scores.shape[1] == 0:  # nothing scored: every score-ranked list is empty
        scores = np.full((b, 1), -np.inf)
    rows = np.arange(b)

    # slots in emission order: (items (B, n), emitted (B,), id, title, family, reason, fixed)
    slots: list[tuple] = []
    for cc in curated:
        if cc.immutable:
            fixed = np.full(n, PAD, dtype=np.int64)
            head = np.asarray(cc.items, dtype=np.int64)[:n]
            fixed[: len(head)] = head
            items = np.broadcast_to(fixed, (b, n))
        else:
            items, _ = _shared_list(scores, cc.items, col_of, n)
        slots.append(
            (items, True, cc.carousel_id, cc.title, cc.family, "curated", bool(cc.immutable))
        )

    if buy_again_carousels < 1:
        raise ValueError(f"buy_again_carousels must be >= 1, got {buy_again_carousels}")
    step = int(per_carousel)
    ba_all, ba_len = pack_lists(buy_again, n + (buy_again_carousels - 1) * step)
    # most bought first, re-ranked by engagement in "rerank" mode; the k-th row's pool starts
    # at the k-th block of M items, so each row adds the next most-bought items
    for k in range(buy_again_carousels):
        slots.append(
            (
                ba_all[:, k * step : k * step + n],
                ba_len - k * step >= min_items,
                "buy_again" if k == 0 else f"buy_again:{k + 1}",
                "Buy it again" if k == 0 else "Buy it again: more of your regulars",
                "buy_again",
                "buy_again",
                False,
            )
        )

    if best_seller_carousels < 0:
        raise ValueError(f"best_seller_carousels must be >= 0, got {best_seller_carousels}")
    best = np.asarray(catalog.best_sellers, dtype=np.int64)
    for k in range(best_seller_carousels):
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

    if len(catalog.trending):
        tr_items, tr_count = _shared_list(scores, catalog.trending, col_of, n)
        slots.append(
            (tr_items, tr_count > 0, "trending", "Trending now", "trending", "trending", False)
        )

    pools = catalog.pool_matrix()
    pcol, pok = _columns(pools, col_of)
    eligible = _usable_counts(scores, pools, pcol, pok) >= min_items
    top_cats = _top_k_fast(np.where(eligible, cat_affinity, -np.inf), n_category)
    undiscovered = np.where(eligible & (cat_eta <= 0), cat_affinity, -np.inf)
    disc_cats = _top_k_fast(undiscovered, n_discover_cats)
    n_top = top_cats.shape[1]
    picked = np.concatenate([top_cats, disc_cats], axis=1)  # (B, R)
    if picked.shape[1]:
        # the picked categories' pools, scored: one gather from the flat score matrix
        safe = np.where(picked >= 0, picked, 0)
        flat_at = np.take(pcol, safe, axis=0)  # (B, R, P)
        flat_at += (rows * np.int64(scores.shape[1]))[:, None, None]
        p_scores = np.take(scores.reshape(-1), flat_at)
        np.fmax(p_scores, -np.inf, out=p_scores)  # NaN -> -inf
        left_out = np.take(~pok, safe, axis=0)
        left_out[picked < 0] = True
        np.putmask(p_scores, left_out, -np.inf)
        best, _ = _best_first(p_scores.reshape(-1, pools.shape[1]), n)
        ranked = np.where(best >= 0, pools[safe.reshape(-1, 1), np.maximum(best, 0)], PAD).reshape(
            b, picked.shape[1], n
        )
    else:
        ranked = np.empty((b, 0, n), dtype=np.int64)

    cat_cid, cat_title = catalog.category_labels()
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
