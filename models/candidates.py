"""Carousel candidates per user: curated, buy it again, category affinity, discover, trending.

Everything is numpy over a batch of users. A batch's candidates are rows of a `Candidates`
table: the user (row in the batch), the carousel's id/title/family, its ordered item indices
(padded with -1) and whether its item order is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD = -1


@dataclass
class Catalog:
    """Item and category arrays aligned by index; built once per run."""

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
    )  # per category: in-stock items by popularity

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
    ) -> Catalog:
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
                cat_items[c] = by_pop[order_c[bounds[c] : bounds[c + 1]]]
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
        )


@dataclass(frozen=True)
class CuratedCarousel:
    carousel_id: str
    title: str
    family: str
    items: np.ndarray  # item indices in the operator's order (in stock)
    immutable: bool


@dataclass
class Candidates:
    user: list[int] = field(default_factory=list)
    carousel_id: list[str] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    fixed_order: list[bool] = field(default_factory=list)
    items: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        user: int,
        cid: str,
        title: str,
        family: str,
        reason: str,
        fixed: bool,
        items: np.ndarray,
    ) -> None:
        self.user.append(user)
        self.carousel_id.append(cid)
        self.title.append(title)
        self.family.append(family)
        self.reason.append(reason)
        self.fixed_order.append(fixed)
        self.items.append(np.asarray(items, dtype=np.int64))

    def item_matrix(self, width: int) -> np.ndarray:
        out = np.full((len(self.items), width), PAD, dtype=np.int64)
        for j, arr in enumerate(self.items):
            arr = arr[:width]
            out[j, : len(arr)] = arr
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


def generate(
    *,
    catalog: Catalog,
    item_scores: np.ndarray,  # (B, n_items) r̂, -inf where not allowed
    cat_affinity: np.ndarray,  # (B, n_cats) ŝ_uc
    cat_eta: np.ndarray,  # (B, n_cats) η_uc
    buy_again: list[np.ndarray],  # per user: purchased item indices, most bought first
    curated: list[CuratedCarousel],
    n_items: int,
    min_items: int,
    n_category: int,
    n_discover_cats: int = 3,
) -> Candidates:
    """All candidate carousels for a batch of B users."""
    cands = Candidates()
    b = item_scores.shape[0]
    n_cat_items = np.array([len(x) for x in catalog.cat_items])
    eligible = n_cat_items >= min_items
    aff = np.where(eligible[None, :], cat_affinity, -np.inf)
    top_cats = top_k_rows(aff, n_category)
    undiscovered = np.where(eligible[None, :] & (cat_eta <= 0), cat_affinity, -np.inf)
    disc_cats = top_k_rows(undiscovered, n_discover_cats)
    for u in range(b):
        scores = item_scores[u]
        for cc in curated:
            items = (
                cc.items if cc.immutable else cc.items[np.argsort(-scores[cc.items], kind="stable")]
            )
            cands.add(
                u, cc.carousel_id, cc.title, cc.family, "curated", cc.immutable, items[:n_items]
            )
        if len(buy_again[u]) >= min_items:
            cands.add(
                u,
                "buy_again",
                "Buy it again",
                "buy_again",
                "buy_again",
                False,  # most bought first, re-ranked by engagement in "rerank" mode
                buy_again[u][:n_items],
            )
        if len(catalog.trending):
            t = catalog.trending
            cands.add(
                u,
                "trending",
                "Trending now",
                "trending",
                "trending",
                False,
                t[np.argsort(-scores[t], kind="stable")][:n_items],
            )
        for c in top_cats[u]:
            if c == PAD:
                continue
            pool = catalog.cat_items[c]
            items = pool[np.argsort(-scores[pool], kind="stable")][:n_items]
            cid = catalog.cat_ids[c]
            cands.add(
                u,
                f"category:{cid}",
                f"More in {catalog.cat_names[c]}",
                "category",
                "category_affinity",
                False,
                items,
            )
        picks = [catalog.cat_items[c] for c in disc_cats[u] if c != PAD]
        if picks:
            ranked = [p[np.argsort(-scores[p], kind="stable")][:n_items] for p in picks]
            # interleave the best items of each undiscovered category so the row shows variety
            width = max(len(r) for r in ranked)
            inter = np.full((len(ranked), width), PAD, dtype=np.int64)
            for j, r in enumerate(ranked):
                inter[j, : len(r)] = r
            flat = inter.T.reshape(-1)
            flat = flat[flat != PAD][:n_items]
            if len(flat) >= min_items:
                cands.add(
                    u, "discover", "Discover something new", "discover", "discover", True, flat
                )
    return cands
