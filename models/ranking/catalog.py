"""The item catalogue of a run (`Catalog`: categories, stock, images, novelty, popularity,
trending, per-category pools, brands, best sellers) and the operator's curated carousels. Items
are indices into `Catalog.item_ids`; PAD (-1) marks "no item" in every padded item array."""

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
