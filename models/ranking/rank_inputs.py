"""What scoring reads: the page parameters (`PageParams`), everything one as-of date provides
aligned to the catalogue (`RankInputs`) and the per-batch score matrices (`BatchMatrices`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.ranking.catalog import PAD, Catalog, CuratedCarousel
from models.ranking.item_features import FeatureSource
from models.ranking.policy import MAX_PLAN_CANDIDATES
from models.ranking.sources import group_pools


@dataclass(frozen=True)
class PageParams:
    slots: int = 10
    items_per_carousel: int = 10
    candidate_items: int = 30
    min_items: int = 4
    category_carousels: int = 6
    buy_again_carousels: int = 5  # "buy it again" rows; the k-th from item (k-1)*M + 1
    best_seller_carousels: int = 2  # "best sellers" candidate rows (the same blocks)
    for_you_carousels: int = 0  # "picked for you" rows (rerank mode; see sources.picked_for_you)
    for_you_history: int = 200  # most-bought items "picked for you" weighs besides the candidates
    for_you_pool: int = 100  # items of highest r̂ it weighs besides the candidates
    for_you_popular: int = 0  # best sellers it weighs besides the candidates
    for_you_explore_weight: float = 0.0  # weight of explore recall in their allocation
    slot_order: str = "beam"  # beam: the beam plan's order | value: greedy by shown item scores
    category_pool: int = 100  # most popular in-stock items per category a carousel draws from
    brand_carousels: int = 1  # "your top brands" carousels per user
    brand_pool: int = 30
    new_categories: int = 3  # categories of "new in your categories"
    new_pool: int = 30
    # slot assignment
    candidate_carousels: int = 48  # each user's best candidates by φ the plan and assembly take
    beam_width: int = 3
    beam_start: int = 1
    carousel_lambda: float = 0.8  # MMR λ for carousels on the page (1 = no diversity term)
    # items
    item_lambda: float = 0.8  # MMR λ for items inside a carousel
    similarity_weights: tuple[float, float, float] = (0.25, 0.25, 0.5)  # category, brand, MF
    brand_run: int = 3  # after this many same-brand items pull a different brand forward
    no_image_penalty: float = 0.3
    repeat_penalty: float = 0.5
    non_repeat_categories: tuple[str, ...] = ()
    non_repeat_days: int = 60
    # exploration (only where build_pages is asked to randomise)
    explore_epsilon: float = 0.05
    explore_from: int = 4
    explore_pool: int = 20
    thompson_share: float = 0.05
    thompson_draws: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.candidate_carousels <= MAX_PLAN_CANDIDATES:
            raise ValueError(
                f"candidate_carousels must be in [1, {MAX_PLAN_CANDIDATES}] (the beam plan's "
                f"limit), got {self.candidate_carousels}"
            )


@dataclass
class RankInputs:
    """Everything scoring needs for one as-of date, aligned to the catalogue."""

    catalog: Catalog
    curated: list[CuratedCarousel]
    mf_item: Any  # models.ranking.mf.MFModel
    mf_cat: Any
    v_items: np.ndarray  # (n_items, k) item factors aligned to the catalogue (0 = unseen)
    v_cats: np.ndarray  # (n_cats, k)
    buy_again: Mapping[str, np.ndarray]  # user id -> purchased item indices, most bought first
    cat_eta: pd.DataFrame  # user_id, c (category index), eta; sorted by user_id
    priors: pd.DataFrame | pd.Series  # (user_id, carousel_id) -> lam [, a, b]
    carousel_lam: Mapping[str, float]  # carousel-level prior mean
    p_global: float
    features: FeatureSource | None = None
    engagement: Any = None  # models.ranking.engagement_model.EngagementModel
    objective_weights: Mapping[str, float] | None = None
    top_brands: Mapping[str, np.ndarray] = field(default_factory=dict)  # user -> brand codes
    recent: Mapping[str, np.ndarray] = field(default_factory=dict)  # user -> sorted item idx
    carousel_ab: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    item_cluster: np.ndarray | None = None  # (n_items,) MF embedding cluster, -1 = none
    params: PageParams = field(default_factory=PageParams)
    _eta_users: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cat_eta = self.cat_eta.sort_values("user_id", kind="stable").reset_index(drop=True)
        self._eta_users = self.cat_eta["user_id"].to_numpy(object)
        if isinstance(self.priors, pd.Series):
            self.priors = self.priors.to_frame("lam")
        # one flat frame sorted by user: a batch takes its slice by binary search
        flat = self.priors.reset_index()
        flat.columns = ["user_id", "carousel_id", *flat.columns[2:]]
        self._priors = flat.sort_values("user_id", kind="stable").reset_index(drop=True)
        self._prior_users = self._priors["user_id"].to_numpy(object)
        cat = self.catalog
        n = len(cat.item_ids)
        if self.item_cluster is None:
            self.item_cluster = np.full(n, -1, dtype=np.int64)
        by_pop = np.argsort(-cat.popularity, kind="stable")
        by_pop = by_pop[cat.in_stock[by_pop]]
        p = self.params
        self.brand_pools = group_pools(cat.item_brand, by_pop, len(cat.brand_names), p.brand_pool)
        new = by_pop[cat.is_new[by_pop]]
        self.new_pools = group_pools(cat.item_cat, new, len(cat.cat_ids), p.new_pool)
        curated = [np.asarray(c.items, dtype=np.int64) for c in self.curated]
        self.universe = np.unique(
            np.concatenate([cat.universe(), *curated, new[:500]]).astype(np.int64)
        )
        self.new_universe = self.universe[cat.is_new[self.universe]]
        self._v_universe = np.ascontiguousarray(self.v_items[self.universe], dtype=np.float32)

    def batch_priors(
        self, users: np.ndarray, cu: np.ndarray, carousel_ids: np.ndarray
    ) -> pd.DataFrame:
        """The Beta posterior columns (lam[, a, b]) of each (batch user cu, carousel), NaN where
        the pair has no prior."""
        cols = [c for c in ("lam", "a", "b") if c in self._priors.columns]
        if not len(users):
            return pd.DataFrame({c: np.empty(0) for c in cols})
        lo = np.searchsorted(self._prior_users, users.min(), side="left")
        hi = np.searchsorted(self._prior_users, users.max(), side="right")
        part = self._priors.iloc[lo:hi]
        want = pd.DataFrame({"user_id": users[cu], "carousel_id": carousel_ids})
        got = want.merge(part, on=["user_id", "carousel_id"], how="left", sort=False)
        return got[cols].reset_index(drop=True)

    def warm(self, users: np.ndarray) -> np.ndarray:
        """Users both factorisations know (the others get a default page)."""
        return (self.mf_item.user_index(users) >= 0) & (self.mf_cat.user_index(users) >= 0)

    def _col_of(self) -> np.ndarray:
        col = np.full(len(self.catalog.item_ids), -1, dtype=np.int64)
        col[self.universe] = np.arange(len(self.universe))
        return col

    def _per_user(self, table: Mapping[str, np.ndarray], users: np.ndarray) -> list[np.ndarray]:
        empty = np.empty(0, dtype=np.int64)
        return [table.get(u, empty) for u in users]

    def user_matrices(self, users: np.ndarray) -> BatchMatrices:
        """r̂ over the scored universe, ŝ, η and the personal lists of warm users (sorted ids)."""
        users = np.asarray(users, dtype=object)
        ui = self.mf_item.user_index(users)
        uc = self.mf_cat.user_index(users)
        if (ui < 0).any() or (uc < 0).any():
            raise ValueError("user_matrices needs warm users (known to both factorisations)")
        u_vecs = np.ascontiguousarray(self.mf_item.user_factors[ui], dtype=np.float32)
        r_hat = u_vecs @ self._v_universe.T
        r_hat[:, ~self.catalog.in_stock[self.universe]] = -np.inf
        aff = self.mf_cat.user_factors[uc] @ self.v_cats.T
        eta = np.zeros_like(aff)
        lo = np.searchsorted(self._eta_users, users.min(), side="left")
        hi = np.searchsorted(self._eta_users, users.max(), side="right")
        part = self.cat_eta.iloc[lo:hi]
        rows = pd.Series(np.arange(len(users)), index=users).reindex(part["user_id"].to_numpy())
        ok = rows.notna().to_numpy()
        eta[rows.to_numpy()[ok].astype(np.int64), part["c"].to_numpy()[ok].astype(np.int64)] = part[
            "eta"
        ].to_numpy()[ok]
        return BatchMatrices(
            inputs=self,
            user_vecs=u_vecs,
            r_hat=r_hat,
            col_of=self._col_of(),
            aff=aff,
            eta=eta,
            buy=self._per_user(self.buy_again, users),
            top_brands=_pad_lists(
                self._per_user(self.top_brands, users), self.params.brand_carousels
            ),
            recent=self._per_user(self.recent, users),
        )

    def default_matrices(self, popularity: np.ndarray | None = None) -> BatchMatrices:
        """Pseudo-users whose tastes are item popularity (rows of `popularity`, (P, n_items);
        the catalogue's own popularity by default): the `__default__` and context pages."""
        cat = self.catalog
        pop = cat.popularity[None, :] if popularity is None else np.atleast_2d(popularity)
        cat_pop = np.stack(
            [np.bincount(cat.item_cat, weights=row, minlength=len(cat.cat_ids)) for row in pop]
        )
        top = cat_pop.max(axis=1, keepdims=True)
        cat_pop = np.divide(cat_pop, top, out=np.zeros_like(cat_pop), where=top > 0)
        r_hat = pop[:, self.universe].astype(np.float32)
        r_hat[:, ~cat.in_stock[self.universe]] = -np.inf
        n = len(pop)
        return BatchMatrices(
            inputs=self,
            user_vecs=None,
            r_hat=r_hat,
            col_of=self._col_of(),
            aff=cat_pop,
            eta=np.zeros_like(cat_pop),
            buy=[np.empty(0, dtype=np.int64)] * n,
            top_brands=np.full((n, 0), -1, dtype=np.int64),
            recent=[np.empty(0, dtype=np.int64)] * n,
            popularity=pop,
        )


def _pad_lists(lists: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for j, x in enumerate(lists):  # width is 0-3: a short loop over users is cheap here
        k = min(width, len(x))
        out[j, :k] = x[:k]
    return out


@dataclass
class BatchMatrices:
    """Per-batch score inputs: r̂ over the scored universe (columns; `col_of` maps items)."""

    inputs: RankInputs
    user_vecs: np.ndarray | None  # (B, k) float32; None for popularity pseudo-users
    r_hat: np.ndarray  # (B, n_cols) float32, -inf out of stock
    col_of: np.ndarray  # (n_items,) column of each item, -1 = outside the universe
    aff: np.ndarray  # (B, n_cats) ŝ
    eta: np.ndarray  # (B, n_cats) η
    buy: list[np.ndarray]
    top_brands: np.ndarray  # (B, nb) brand codes, -1 = none
    recent: list[np.ndarray]  # per user: recently bought items of non-repeat categories
    popularity: np.ndarray | None = None  # (B, n_items) for pseudo-users

    def affinity(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """r̂ of (batch row, item) pairs, shape of `items`; PAD -> NaN, out of stock -> -inf."""
        rows = np.broadcast_to(np.asarray(rows)[:, None], items.shape)
        ok = items != PAD
        safe = np.where(ok, items, 0)
        col = self.col_of[safe]
        out = np.full(items.shape, np.nan)
        hit = ok & (col >= 0)
        out[hit] = self.r_hat[rows[hit], col[hit]]
        miss = ok & (col < 0)
        if miss.any():
            it = safe[miss]
            if self.user_vecs is None:
                vals = self.popularity[rows[miss], it]
            else:
                vals = np.einsum(
                    "nk,nk->n",
                    self.user_vecs[rows[miss]],
                    self.inputs.v_items[it].astype(np.float32),
                )
            out[miss] = np.where(self.inputs.catalog.in_stock[it], vals, -np.inf)
        return out
