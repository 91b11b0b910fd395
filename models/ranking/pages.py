"""Scoring a batch of users and building their pages (METHODS §1–5), vectorised over the batch.

`score_batch` does the work that does not depend on w:
  1. candidate carousels from every source (curated, buy it again, trending, category affinity,
     discover, your top brands, new in your categories; in "rerank" mode also "picked for you":
     the user's whole pool by calibrated engagement, `sources.picked_for_you`);
  2. each carousel's item order — the policy layer for items: relevance from the combined
     calibrated engagement score ("rerank") or the source's order ("fixed"); business rules
     (penalise items without an image, down-rank recent purchases in non-repeat categories);
     maximal marginal relevance; the same-brand run rule. Immutable carousels keep their order;
  3. λ (and the Beta a, b), α and γ per candidate, and what carousel similarity needs.

`build_pages` then orders carousels for any w: φ = w·α + (1 − w)·γ, calibrated to the carousel's
engagement probability q, slot assignment by beam search (or Thompson sampling for a share of
users), page assembly with de-duplication, and epsilon-greedy exploration of new items (never in
the rows that promise the user's own history, "Buy it again": `HISTORY_FAMILIES`); every
placement carries its propensity. With `slot_order="value"` and calibrated item scores ("rerank"
mode) the deterministic users' slots are instead filled greedily, each with the feasible carousel
whose items not yet on the page have the largest total score (the most expected engagements), so
de-duplication is part of the choice; the beam plan only breaks ties. In "fixed" mode the item
scores are r̂, not probabilities, and the beam order is kept. A grid search over w scores each batch once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.ranking.candidates import (
    PAD,
    Candidates,
    Catalog,
    CuratedCarousel,
    generate,
    pack_lists,
    top_k_rows,
)
from models.ranking.item_features import FeatureSource
from models.ranking.item_policy import apply_penalties, brand_run_rule, mmr_order, relevance
from models.ranking.policy import ThompsonInputs, assemble, beam_plan, explore_new_items, user_table
from models.ranking.scoring import discounted_sum
from models.ranking.sources import (
    brand_carousels,
    group_pools,
    merge,
    new_in_categories,
    picked_for_you,
)

ITEM_MODES: tuple[str, ...] = ("fixed", "rerank")
PAGE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "slot",
    "carousel_id",
    "carousel_title",
    "family",
    "carousel_score",
    "item_rank",
    "item_id",
    "item_score",
    "reason",
    "propensity",
)
DEFAULT_EXAM = 1.0 / np.log2(1.0 + np.arange(1, 21))  # slot examination when none is estimated
# carousel families that promise items the user bought: exploration leaves them alone (a new item
# the user never bought has no place in "Buy it again", and their cells are the page's most
# valuable: each holds about a fifth of a repeat purchase on Instacart)
HISTORY_FAMILIES = ("buy_again",)


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
    engagement: Any = None  # models.ranking.engagement.EngagementModel
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


@dataclass
class ScoredBatch:
    users: np.ndarray  # batch user ids
    cands: Candidates
    items: np.ndarray  # (n_c, W) item indices in their final order, PAD = -1
    item_scores: np.ndarray  # (n_c, W) score shown per item (NaN on PAD)
    lam: np.ndarray
    a: np.ndarray
    b: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    cvec: np.ndarray  # (n_c, k) unit mean factor of the first M items
    ccat: np.ndarray  # (n_c,) most common category among the first M items
    cbrand: np.ndarray  # (n_c,) most common brand (-1 unknown)
    new_pool: np.ndarray  # (B, P) each user's best new items (exploration), PAD = -1
    new_score: np.ndarray  # (B, P) their r̂
    reason_override: str | None = None
    rel_sum: np.ndarray | None = None  # (n_c,) Σ_l r̂ / log(1 + l): α = λ · rel_sum
    calibrated: bool = False  # item_scores are calibrated engagement scores (rerank mode)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per part of score_batch

    def candidates_frame(self, w: float) -> pd.DataFrame:
        cu = np.asarray(self.cands.user, dtype=np.int64)
        return pd.DataFrame(
            {
                "user_id": self.users[cu],
                "carousel_id": self.cands.carousel_id,
                "family": self.cands.family,
                "lam": self.lam,
                "a": self.a,
                "b": self.b,
                "alpha": self.alpha,
                "gamma": self.gamma,
                "phi": w * self.alpha + (1 - w) * self.gamma,
            }
        )


def personal_pool(
    m: BatchMatrices, params: PageParams, best_sellers: np.ndarray | None = None
) -> np.ndarray:
    """(B, L) items "picked for you" weighs besides the candidate carousels' items: the user's
    `for_you_history` most-bought items, the `for_you_pool` items of highest r̂ over the
    scored universe (in stock) and the first `for_you_popular` of `best_sellers` (the same for
    every user), PAD-padded."""
    hist, _ = pack_lists(m.buy, params.for_you_history)
    if params.for_you_pool and m.r_hat.shape[1]:
        cols = top_k_rows(m.r_hat, params.for_you_pool)
        inv = np.full(m.r_hat.shape[1], PAD, dtype=np.int64)
        inv[m.col_of[m.col_of >= 0]] = np.flatnonzero(m.col_of >= 0)
        top = np.where(cols >= 0, inv[np.maximum(cols, 0)], PAD)
        hist = np.concatenate([hist, top], axis=1)
    if params.for_you_popular and best_sellers is not None and len(best_sellers):
        top = np.asarray(best_sellers, dtype=np.int64)[: params.for_you_popular]
        hist = np.concatenate([hist, np.broadcast_to(top, (len(hist), len(top)))], axis=1)
    return hist


def engagement_scores(
    inputs: RankInputs,
    users: np.ndarray,
    cu: np.ndarray,
    items: np.ndarray,
    m: BatchMatrices,
    with_bought: bool = False,
) -> Any:
    """Combined calibrated engagement score Σ_o w_o·p_o of each (batch user cu, item) pair,
    with the placement fixed to the first slot and position (position debiasing); with
    `with_bought` also whether the user has bought the item before (its purchase count > 0)."""
    if inputs.engagement is None or inputs.features is None:
        raise ValueError("rerank mode needs an engagement model and its feature source")
    n_items = np.int64(len(inputs.catalog.item_ids))
    keys = cu.astype(np.int64) * n_items + items.astype(np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    bu = uniq // n_items
    it = uniq % n_items
    r = m.affinity(bu, it[:, None])[:, 0]
    frame = inputs.features.frame(
        inputs.features.user_rows(users[bu]),
        it,
        mf_score=np.where(np.isfinite(r), r, 0.0),
        cat_affinity=m.aff[bu, inputs.catalog.item_cat[it]],
    )
    preds = inputs.engagement.predict(frame, position_override="first")
    score = inputs.engagement.combined_score(preds, inputs.objective_weights)
    if not with_bought:
        return score[inverse]
    bought = np.nan_to_num(frame["ui_n_purchase"].to_numpy(np.float64)) > 0
    return score[inverse], bought[inverse]


class _Clock:
    """Wall time per named part; `lap(name)` adds the time since the last lap to `name`."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._last = self._now()
        self.parts: dict[str, float] = {}

    def lap(self, name: str) -> dict[str, float]:
        now = self._now()
        self.parts[name] = self.parts.get(name, 0.0) + now - self._last
        self._last = now
        return self.parts


def _row_mode(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Most common valid value per row (ties: the leftmost); -1 for a row with none."""
    eq = (values[:, :, None] == values[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    count = eq.sum(axis=2)
    j = np.argmax(count, axis=1)
    return np.where(valid.any(axis=1), values[np.arange(len(values)), j], -1)


def score_batch(
    inputs: RankInputs,
    users: np.ndarray,
    matrices: BatchMatrices,
    params: PageParams,
    mode: str,
    reason_override: str | None = None,
) -> ScoredBatch:
    """Candidates, item order and λ/α/γ of a batch (everything but the w-dependent order)."""
    if mode not in ITEM_MODES:
        raise ValueError(f"item mode must be one of {ITEM_MODES}, got {mode!r}")
    m = matrices
    cat = inputs.catalog
    width = params.candidate_items
    clock = _Clock()
    cands = generate(
        catalog=cat,
        item_scores=m.r_hat,
        col_of=m.col_of,
        cat_affinity=m.aff,
        cat_eta=m.eta,
        buy_again=m.buy,
        curated=inputs.curated,
        n_items=width,
        min_items=params.min_items,
        n_category=params.category_carousels,
        buy_again_carousels=params.buy_again_carousels,
        per_carousel=params.items_per_carousel,
        best_seller_carousels=params.best_seller_carousels,
    )
    extra = [
        brand_carousels(
            cat,
            inputs.brand_pools,
            m.top_brands,
            m.affinity,
            n_items=width,
            min_items=params.min_items,
        ),
        new_in_categories(
            inputs.new_pools,
            m.aff,
            m.affinity,
            n_cats=params.new_categories,
            n_items=width,
            min_items=params.min_items,
        ),
    ]
    cands = merge([cands, *extra], width)
    clock.lap("candidates")
    cu = cands.user
    mat = cands.item_matrix(width)
    valid = mat != PAD
    r = m.affinity(cu, mat)
    if mode == "rerank" and len(cu):
        rows, cols = np.nonzero(valid)
        score = np.full(mat.shape, np.nan)
        clock.lap("item_policy")
        pair_u, pair_i = cu[rows], mat[rows, cols]
        if params.for_you_carousels:  # one scoring pass over the candidates' and the pool's pairs
            pool = personal_pool(m, params, cat.best_sellers)
            pr, pc = np.nonzero(pool != PAD)
            pair_u = np.concatenate([pair_u, pr])
            pair_i = np.concatenate([pair_i, pool[pr, pc]])
        s_all, b_all = engagement_scores(inputs, users, pair_u, pair_i, m, with_bought=True)
        score[rows, cols] = s_all[: len(rows)]
        clock.lap("engagement")
        value = score
        if params.for_you_carousels:
            fy, fy_score, fy_value = picked_for_you(
                pair_u,
                pair_i,
                s_all,
                b_all,
                n_users=len(users),
                rows=params.for_you_carousels,
                per_carousel=params.items_per_carousel,
                n_items=width,
                min_items=params.min_items,
                explore_weight=params.for_you_explore_weight,
            )
            if len(fy):
                # the same stable order by user that `merge` gives the candidates
                order = np.argsort(np.concatenate([cu, fy.user]), kind="stable")
                r = np.concatenate([r, m.affinity(fy.user, fy.items)])[order]
                mat = np.concatenate([mat, fy.items])[order]
                score = np.concatenate([score, fy_score])[order]
                value = np.concatenate([value, fy_value])[order]
                cands = merge([cands, fy], width)
                cu = cands.user
                valid = mat != PAD
            clock.lap("for_you")
        rel = relevance(value)
    else:
        score = np.where(np.isfinite(r), r, np.where(valid, 0.0, np.nan))
        # fixed mode keeps each source's own order: relevance falls with the position
        rel = np.where(valid, 1.0 - np.arange(width)[None, :] / width, np.nan)
    movable = ~cands.fixed_order
    recent = _recent_mask(m, cu, mat, params, cat) & (cands.reason != "buy_again")[:, None]
    rel = apply_penalties(
        rel,
        mat,
        has_image=cat.has_image,
        no_image_penalty=params.no_image_penalty,
        recent=recent,
        repeat_penalty=params.repeat_penalty,
    )
    order = mmr_order(
        mat,
        rel,
        lam=params.item_lambda,
        m=params.items_per_carousel,
        movable=movable,
        item_cat=cat.item_cat,
        item_brand=cat.item_brand,
        item_cluster=inputs.item_cluster,
        weights=params.similarity_weights,
    )
    mat, score, r = (np.take_along_axis(x, order, axis=1) for x in (mat, score, r))
    order = brand_run_rule(mat, item_brand=cat.item_brand, k=params.brand_run, movable=movable)
    mat, score, r = (np.take_along_axis(x, order, axis=1) for x in (mat, score, r))
    clock.lap("item_policy")

    post = inputs.batch_priors(users, cu, cands.carousel_id)
    lam, a, b = posterior_lambda(
        post, cands.carousel_id, inputs.carousel_ab, inputs.carousel_lam, inputs.p_global
    )

    top = mat[:, : params.items_per_carousel]
    top_ok = top != PAD
    safe = np.where(top_ok, top, 0)
    g_all = m.aff * np.exp(-m.eta)
    g = np.where(top_ok, g_all[cu[:, None], cat.item_cat[safe]], np.nan)
    rel_sum = discounted_sum(r[:, : params.items_per_carousel])
    alpha, gamma = lam * rel_sum, discounted_sum(g)
    cvec, ccat, cbrand = carousel_shape(top, inputs.v_items, cat.item_cat, cat.item_brand)

    new_cols = m.col_of[inputs.new_universe]
    new_s = m.r_hat[:, new_cols].astype(np.float64)
    pick = top_k_rows(new_s, params.explore_pool) if len(new_cols) else np.empty((len(users), 0))
    pick = np.asarray(pick, dtype=np.int64)
    new_pool = np.where(pick >= 0, inputs.new_universe[np.maximum(pick, 0)], PAD)
    new_score = np.where(pick >= 0, np.take_along_axis(new_s, np.maximum(pick, 0), axis=1), np.nan)
    return ScoredBatch(
        users=users,
        cands=cands,
        items=mat,
        item_scores=score,
        lam=lam,
        a=a,
        b=b,
        alpha=alpha,
        gamma=gamma,
        cvec=cvec,
        ccat=ccat,
        cbrand=cbrand,
        new_pool=new_pool,
        new_score=new_score,
        reason_override=reason_override,
        rel_sum=rel_sum,
        calibrated=mode == "rerank",
        timings=clock.lap("carousel_terms"),
    )


def scored_from_state(
    *,
    users: np.ndarray,
    cand_user: np.ndarray,
    carousel_id: np.ndarray,
    title: np.ndarray,
    family: np.ndarray,
    reason: np.ndarray,
    fixed_order: np.ndarray,
    rel_sum: np.ndarray,
    gamma: np.ndarray,
    items: np.ndarray,
    item_scores: np.ndarray,
    new_pool: np.ndarray,
    new_score: np.ndarray,
    post: pd.DataFrame,
    carousel_ab: Mapping[str, tuple[float, float]],
    carousel_lam: Mapping[str, float],
    p_global: float,
    v_items: np.ndarray,
    item_cat: np.ndarray,
    item_brand: np.ndarray,
    per_carousel: int,
    unavailable: np.ndarray | None = None,
    calibrated: bool = False,
) -> ScoredBatch:
    """A ScoredBatch from a daily rank's stored score components and (new) Beta posteriors.

    Everything but λ comes from the store, so `build_pages` on the result gives what a full
    rank with these posteriors (`post`: lam, a, b per candidate, NaN where none) would give:
    α = λ · rel_sum, γ and the carousels' similarity inputs as the daily run computed them.
    `unavailable` (bool per catalogue item, e.g. gone out of stock since): such items are taken
    out of every pool (the carousel fills from deeper in its pool, as de-duplication does) and out
    of the exploration pool; the carousel scores stay the daily run's. `calibrated`: the stored
    item scores are calibrated engagement scores (the daily run ranked in "rerank" mode).
    """
    lam, a, b = posterior_lambda(post, carousel_id, carousel_ab, carousel_lam, p_global)
    items = np.asarray(items, dtype=np.int64)
    cvec, ccat, cbrand = carousel_shape(items[:, :per_carousel], v_items, item_cat, item_brand)
    new_pool = np.asarray(new_pool, dtype=np.int64)
    if unavailable is not None and unavailable.any():
        gone = (items >= 0) & unavailable[np.maximum(items, 0)]
        items = np.where(gone, PAD, items)
        gone_new = (new_pool >= 0) & unavailable[np.maximum(new_pool, 0)]
        new_pool = np.where(gone_new, PAD, new_pool)
        new_score = np.where(gone_new, np.nan, new_score)
    cands = Candidates(
        user=np.asarray(cand_user, dtype=np.int64),
        carousel_id=np.asarray(carousel_id, dtype=object),
        title=np.asarray(title, dtype=object),
        family=np.asarray(family, dtype=object),
        reason=np.asarray(reason, dtype=object),
        fixed_order=np.asarray(fixed_order, dtype=bool),
        items=items,
    )
    return ScoredBatch(
        users=np.asarray(users, dtype=object),
        cands=cands,
        items=items,
        item_scores=np.asarray(item_scores, dtype=np.float64),
        lam=lam,
        a=a,
        b=b,
        alpha=lam * rel_sum,
        gamma=np.asarray(gamma, dtype=np.float64),
        cvec=cvec,
        ccat=ccat,
        cbrand=cbrand,
        new_pool=new_pool,
        new_score=np.asarray(new_score, dtype=np.float64),
        rel_sum=np.asarray(rel_sum, dtype=np.float64),
        calibrated=calibrated,
    )


PRIOR_STRENGTH = 10.0  # pseudo-trials behind a carousel without a prior of its own


def posterior_lambda(
    post: pd.DataFrame,
    carousel_ids: np.ndarray,
    carousel_ab: Mapping[str, tuple[float, float]],
    carousel_lam: Mapping[str, float],
    p_global: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ, a, b) per candidate: the user's Beta posterior (`post`: lam[, a, b], NaN where the
    (user, carousel) pair has none), else the carousel-level prior, else the global rate."""
    cid = pd.Series(np.asarray(carousel_ids, dtype=object))
    a0 = cid.map({k: v[0] for k, v in carousel_ab.items()}).fillna(p_global * PRIOR_STRENGTH)
    b0 = cid.map({k: v[1] for k, v in carousel_ab.items()}).fillna((1 - p_global) * PRIOR_STRENGTH)
    a0, b0 = a0.to_numpy(np.float64), b0.to_numpy(np.float64)
    fallback = cid.map(dict(carousel_lam)).fillna(p_global).to_numpy(np.float64)
    lam = post["lam"].to_numpy(dtype=np.float64)
    lam = np.where(np.isnan(lam), fallback, lam)
    n = len(cid)
    a = post["a"].to_numpy(np.float64) if "a" in post else np.full(n, np.nan)
    b = post["b"].to_numpy(np.float64) if "b" in post else np.full(n, np.nan)
    return lam, np.where(np.isnan(a), a0, a), np.where(np.isnan(b), b0, b)


def carousel_shape(
    top: np.ndarray, v_items: np.ndarray, item_cat: np.ndarray, item_brand: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What carousel similarity needs, from each carousel's first M items (n_c, M; PAD = -1):
    the unit mean MF factor, the most common category and the most common brand (-1: none)."""
    top_ok = top != PAD
    safe = np.where(top_ok, top, 0)
    vec = np.where(top_ok[:, :, None], v_items[safe], 0.0).sum(axis=1)
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    cvec = np.divide(vec, norm, out=np.zeros_like(vec), where=norm > 0)
    ccat = _row_mode(item_cat[safe], top_ok)
    brand = item_brand[safe]
    return cvec, ccat, _row_mode(brand, top_ok & (brand >= 0))


def _recent_mask(
    m: BatchMatrices, cu: np.ndarray, mat: np.ndarray, params: PageParams, cat: Catalog
) -> np.ndarray:
    """Items the user bought recently in a non-repeat category (down-ranked outside buy again)."""
    lens = np.fromiter((len(x) for x in m.recent), dtype=np.int64, count=len(m.recent))
    if not params.non_repeat_categories or not lens.sum():
        return np.zeros(mat.shape, dtype=bool)
    n = np.int64(len(cat.item_ids))
    rows = np.repeat(np.arange(len(m.recent)), lens)
    keys = np.sort(rows * n + np.concatenate(m.recent).astype(np.int64))
    probe = cu[:, None] * n + np.where(mat >= 0, mat, 0)
    pos = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return (keys[pos] == probe) & (mat != PAD)


@dataclass
class PageBatch:
    frame: pd.DataFrame  # PAGE_COLUMNS, one row per shown item
    stats: pd.DataFrame  # user_id, slots, exhausted


def _squash(x: np.ndarray) -> np.ndarray:
    """Uncalibrated fallback q = 1 / (1 + e^−φ): monotone in φ and independent of the batch."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def user_keys(users: np.ndarray) -> np.ndarray:
    """uint64 key of each user's random stream (with the day's seed: Thompson draws, exploration)."""
    return pd.util.hash_array(np.asarray(users, dtype=object), hash_key="homepage-streams")


def _hash_share(users: np.ndarray, share: float, seed: int) -> np.ndarray:
    if share <= 0:
        return np.zeros(len(users), dtype=bool)
    h = pd.util.hash_array(np.asarray(users, dtype=object), hash_key=f"thompson{seed:08d}"[:16])
    return (h % np.uint64(1_000_000)) < np.uint64(int(round(share * 1_000_000)))


def build_pages(
    scored: ScoredBatch,
    w: float,
    params: PageParams,
    item_ids: np.ndarray,
    *,
    exam: np.ndarray | None = None,
    calibration: Callable[[np.ndarray], np.ndarray] | None = None,
    randomise: bool = False,
    seed: int = 0,
    categorical: bool = False,
) -> PageBatch:
    """Each user's page in the export's row format, for this w.

    `categorical`: string columns as pandas categoricals over per-batch vocabularies (no per-row
    Python strings: what the rank job streams to Parquet); plain object columns otherwise.

    q = calibration(φ) is the carousel's engagement probability (without a calibration, the
    logistic function of φ: the same order, not a fitted probability). `randomise` switches
    on Thompson sampling for `thompson_share` of users and epsilon-greedy new items; `seed` (the
    day's) and each user's key (`user_keys`) pick the user's random stream, so a user's page is
    the same whichever batch it is built in (an intra-day refresh rebuilds pages one by one).
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"w must be in [0, 1], got {w}")
    cands = scored.cands
    cu = np.asarray(cands.user, dtype=np.int64)
    n_users = len(scored.users)
    if not len(cu):
        return PageBatch(
            pd.DataFrame({k: [] for k in PAGE_COLUMNS}),
            pd.DataFrame(
                {"user_id": scored.users, "slots": np.zeros(n_users, int), "exhausted": True}
            ),
        )
    exam = DEFAULT_EXAM if exam is None else exam
    phi = w * scored.alpha + (1.0 - w) * scored.gamma
    q = calibration(phi) if calibration is not None else _squash(phi)
    q = np.clip(np.nan_to_num(q, nan=0.0), 0.0, 1.0)
    tab = user_table(cu, n_users)
    # each user's candidates by φ, best first (ties in q then favour the higher φ)
    tab = np.take_along_axis(
        tab, np.argsort(np.where(tab >= 0, -phi[np.maximum(tab, 0)], np.inf), axis=1), axis=1
    )
    has = tab >= 0
    t = np.maximum(tab, 0)
    _, fam_code = np.unique(cands.family.astype(str), return_inverse=True)
    fam = np.where(has, fam_code[t], -1)
    q_t = np.where(has, q[t], np.nan)
    sim = None
    if params.carousel_lambda < 1.0:
        wc, wb, we = params.similarity_weights
        v = scored.cvec[t]
        cos = np.clip(np.einsum("bik,bjk->bij", v, v), 0.0, 1.0)
        cc, cb = scored.ccat[t], scored.cbrand[t]
        sim = (
            we * cos
            + wc * (cc[:, :, None] == cc[:, None, :])
            + wb * ((cb[:, :, None] == cb[:, None, :]) & (cb[:, :, None] >= 0))
        )
    plan, _ = beam_plan(
        q_t,
        fam,
        exam,
        slots=params.slots,
        width=params.beam_width,
        start=params.beam_start,
        sim=sim,
        lam=params.carousel_lambda,
    )
    q_rank = np.argsort(np.argsort(np.where(has, -q_t, np.inf), axis=1, kind="stable"), axis=1)
    prio = np.where(has, params.slots + q_rank, np.nan).astype(np.float64)
    rows = np.arange(n_users)
    for s in range(params.slots):
        ok = plan[:, s] >= 0
        prio[rows[ok], plan[ok, s]] = s
    pools = np.where(has[:, :, None], scored.items[t], PAD)
    values = None
    if params.slot_order not in ("beam", "value"):
        raise ValueError(f"slot_order must be 'beam' or 'value', got {params.slot_order!r}")
    if params.slot_order == "value" and scored.calibrated:
        values = np.where(pools != PAD, np.maximum(scored.item_scores[t], 0.0), 0.0)
    thompson = None
    personal = scored.reason_override is None
    ukeys = user_keys(scored.users) if randomise and personal else None
    if randomise and personal and params.thompson_share > 0:
        lam = np.maximum(scored.lam, 1e-12)
        thompson = ThompsonInputs(
            users=_hash_share(scored.users, params.thompson_share, seed),
            a=np.where(has, scored.a[t], 1.0),
            b=np.where(has, scored.b[t], 1.0),
            slope=np.where(has, (w * scored.alpha / lam)[t], 0.0),
            intercept=np.where(has, ((1.0 - w) * scored.gamma)[t], 0.0),
            draws=params.thompson_draws,
            seed=seed,
            keys=ukeys,
            value_scale=None if values is None else np.where(has, 1.0 / lam[t], 0.0),
        )
    out = assemble(
        pools,
        fam,
        prio,
        slots=params.slots,
        per_carousel=params.items_per_carousel,
        min_items=params.min_items,
        thompson=thompson,
        values=values,
    )
    placed = np.where(out.column >= 0, tab[rows[:, None], np.maximum(out.column, 0)], -1)
    items = out.items
    item_prop = np.ones(items.shape)
    explored = np.zeros(items.shape, dtype=bool)
    if randomise and personal and params.explore_epsilon > 0:
        kept = cands.fixed_order | np.isin(cands.family.astype(str), HISTORY_FAMILIES)
        movable = (placed >= 0) & ~kept[np.maximum(placed, 0)]
        items, item_prop, explored = explore_new_items(
            items,
            movable,
            scored.new_pool,
            np.where(np.isfinite(scored.new_score), scored.new_score, 0.0),
            epsilon=params.explore_epsilon,
            start=params.explore_from,
            user_keys=ukeys,
            seed=seed,
        )
    b_i, s_i, l_i = np.nonzero(items != PAD)
    j = placed[b_i, s_i]
    item = items[b_i, s_i, l_i]
    # an item's score from its carousel's row (organic items may have moved right)
    pos = np.argmax(scored.items[j] == item[:, None], axis=1)
    shown_score = scored.item_scores[j, pos]
    ex = explored[b_i, s_i, l_i]
    if ex.any():
        hit = scored.new_pool[b_i[ex]] == item[ex][:, None]
        shown_score[ex] = scored.new_score[b_i[ex], np.argmax(hit, axis=1)]
    reasons = (
        np.full(len(cands.reason), scored.reason_override, dtype=object)
        if scored.reason_override
        else cands.reason
    )
    reason = _codes(np.append(reasons, "explore"), np.where(ex, len(reasons), j))
    # string columns are categoricals over per-batch vocabularies: no per-row Python objects
    # item ranks are 1..n within each placed carousel (slots are contiguous from 1)
    frame = pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(b_i, _unique(scored.users)),
            "slot": (s_i + 1).astype(np.int32),
            "carousel_id": _codes(cands.carousel_id, j),
            "carousel_title": _codes(cands.title, j),
            "family": _codes(cands.family, j),
            "carousel_score": phi[j],
            "item_rank": (l_i + 1).astype(np.int32),
            "item_id": pd.Categorical.from_codes(item, _unique(item_ids)),
            "item_score": shown_score.astype(np.float64),
            "reason": reason,
            "propensity": out.slot_propensity[b_i, s_i] * item_prop[b_i, s_i, l_i],
        }
    )
    stats = pd.DataFrame(
        {"user_id": scored.users, "slots": out.n_slots.astype(np.int64), "exhausted": out.exhausted}
    )
    if not categorical:
        for c in ("user_id", "carousel_id", "carousel_title", "family", "item_id", "reason"):
            frame[c] = frame[c].astype(object)
    return PageBatch(frame, stats)


def _unique(values: np.ndarray) -> pd.Index:
    """`values` as categories; they must already be distinct (user ids, item ids)."""
    idx = pd.Index(np.asarray(values, dtype=object))
    if not idx.is_unique:
        raise ValueError("page keys must be distinct")
    return idx


def _codes(values: np.ndarray, rows: np.ndarray) -> pd.Categorical:
    """values[rows] as a categorical (one hash per distinct value, not per row)."""
    codes, uniq = pd.factorize(np.asarray(values, dtype=object))
    return pd.Categorical.from_codes(codes[rows], uniq)


def pages(
    scored: ScoredBatch,
    w: float,
    params: PageParams,
    item_ids: np.ndarray,
    **kwargs: Any,
) -> pd.DataFrame:
    """`build_pages(...).frame`: the page rows only."""
    return build_pages(scored, w, params, item_ids, **kwargs).frame
