"""`score_batch`: a batch's candidate carousels from every source, each carousel's item order
(the policy layer for items) and λ/α/γ per candidate, the work that does not depend on w
(see `models.ranking.pages` for the whole flow)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.ranking.candidates import Candidates, generate
from models.ranking.catalog import PAD, Catalog
from models.ranking.item_lists import pack_lists, top_k_rows
from models.ranking.item_policy import apply_penalties, brand_run_rule, mmr_order, relevance
from models.ranking.rank_inputs import BatchMatrices, PageParams, RankInputs
from models.ranking.scored_batch import ScoredBatch, carousel_shape, posterior_lambda
from models.ranking.scoring import discounted_sum
from models.ranking.sources import brand_carousels, merge, new_in_categories, picked_for_you

ITEM_MODES: tuple[str, ...] = ("fixed", "rerank")


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
    width = params.candidate_items
    clock = _Clock()
    cands = batch_candidates(inputs, m, params)
    clock.lap("candidates")
    cu = cands.user
    mat = cands.item_matrix(width)
    valid = mat != PAD
    r = m.affinity(cu, mat)
    if mode == "rerank" and len(cu):
        cands, mat, score, r, rel = _rerank_relevance(
            inputs, users, m, params, cands, mat, r, clock
        )
    else:
        score = np.where(np.isfinite(r), r, np.where(valid, 0.0, np.nan))
        # fixed mode keeps each source's own order: relevance falls with the position
        rel = np.where(valid, 1.0 - np.arange(width)[None, :] / width, np.nan)
    mat, score, r = _order_items(inputs, m, params, cands, mat, score, r, rel)
    clock.lap("item_policy")
    post = inputs.batch_priors(users, cands.user, cands.carousel_id)
    lam, a, b = posterior_lambda(
        post, cands.carousel_id, inputs.carousel_ab, inputs.carousel_lam, inputs.p_global
    )
    rel_sum, gamma = _carousel_terms(inputs, m, params, cands.user, mat, r)
    top = mat[:, : params.items_per_carousel]
    cvec, ccat, cbrand = carousel_shape(
        top, inputs.v_items, inputs.catalog.item_cat, inputs.catalog.item_brand
    )
    new_pool, new_score = _new_item_pool(inputs, m, params, len(users))
    return ScoredBatch(
        users=users,
        cands=cands,
        items=mat,
        item_scores=score,
        lam=lam,
        a=a,
        b=b,
        alpha=lam * rel_sum,
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


def batch_candidates(inputs: RankInputs, m: BatchMatrices, params: PageParams) -> Candidates:
    """Every source's candidate carousels of the batch (`generate`, "your top brands", "new in
    your categories"), merged in the stable order by user."""
    cat = inputs.catalog
    width = params.candidate_items
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
    return merge([cands, *extra], width)


def _rerank_relevance(
    inputs: RankInputs,
    users: np.ndarray,
    m: BatchMatrices,
    params: PageParams,
    cands: Candidates,
    mat: np.ndarray,
    r: np.ndarray,
    clock: _Clock,
) -> tuple[Candidates, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ "rerank" mode: each candidate item's calibrated engagement score, with the "picked for
    you" rows (if any) merged in. Returns (cands, items, score, r̂, relevance)."""
    width = params.candidate_items
    cu = cands.user
    valid = mat != PAD
    rows, cols = np.nonzero(valid)
    score = np.full(mat.shape, np.nan)
    clock.lap("item_policy")
    pair_u, pair_i = cu[rows], mat[rows, cols]
    if params.for_you_carousels:  # one scoring pass over the candidates' and the pool's pairs
        pool = personal_pool(m, params, inputs.catalog.best_sellers)
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
        clock.lap("for_you")
    return cands, mat, score, r, relevance(value)


def _order_items(
    inputs: RankInputs,
    m: BatchMatrices,
    params: PageParams,
    cands: Candidates,
    mat: np.ndarray,
    score: np.ndarray,
    r: np.ndarray,
    rel: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The item policy: business-rule penalties, MMR and the same-brand run rule; (items, score,
    r̂) in each carousel's final order (immutable carousels keep theirs)."""
    cat = inputs.catalog
    cu = cands.user
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
    return mat, score, r


def _carousel_terms(
    inputs: RankInputs,
    m: BatchMatrices,
    params: PageParams,
    cu: np.ndarray,
    mat: np.ndarray,
    r: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(Σ_l r̂ / log(1 + l), γ) per candidate over its first M items (α = λ · the first)."""
    top = mat[:, : params.items_per_carousel]
    top_ok = top != PAD
    safe = np.where(top_ok, top, 0)
    g_all = m.aff * np.exp(-m.eta)
    g = np.where(top_ok, g_all[cu[:, None], inputs.catalog.item_cat[safe]], np.nan)
    return discounted_sum(r[:, : params.items_per_carousel]), discounted_sum(g)


def _new_item_pool(
    inputs: RankInputs, m: BatchMatrices, params: PageParams, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """(B, P) each user's best new items by r̂ (the exploration pool, PAD = -1) and their r̂."""
    new_cols = m.col_of[inputs.new_universe]
    new_s = m.r_hat[:, new_cols].astype(np.float64)
    pick = top_k_rows(new_s, params.explore_pool) if len(new_cols) else np.empty((n_users, 0))
    pick = np.asarray(pick, dtype=np.int64)
    new_pool = np.where(pick >= 0, inputs.new_universe[np.maximum(pick, 0)], PAD)
    new_score = np.where(pick >= 0, np.take_along_axis(new_s, np.maximum(pick, 0), axis=1), np.nan)
    return new_pool, new_score


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
