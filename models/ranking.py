"""Scoring a batch of users: candidates → item order → Walmart φ → pages (METHODS §1, §3–5).

`score_batch` does the work that does not depend on w: candidate carousels, the item order
inside each (the candidate source's own order in "fixed" mode; the combined calibrated
engagement score in "rerank" mode, except for immutable carousels), and λ, α, γ per
candidate. `pages` then orders the carousels by φ = w·α + (1 − w)·γ and fills the slots, so a
grid search over w scores each batch once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.candidates import PAD, Candidates, Catalog, CuratedCarousel, generate
from models.item_features import FeatureSource
from models.page import assemble_page
from models.scoring import carousel_scores

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
)


@dataclass(frozen=True)
class PageParams:
    slots: int = 10
    items_per_carousel: int = 10
    candidate_items: int = 30
    min_items: int = 4
    category_carousels: int = 6


@dataclass
class RankInputs:
    """Everything scoring needs for one as-of date, aligned to the catalogue."""

    catalog: Catalog
    curated: list[CuratedCarousel]
    mf_item: Any  # models.mf.MFModel
    mf_cat: Any
    v_items: np.ndarray  # (n_items, k) item factors aligned to the catalogue (0 = unseen)
    v_cats: np.ndarray  # (n_cats, k)
    buy_again: Mapping[str, np.ndarray]  # user id -> purchased item indices, most bought first
    cat_eta: pd.DataFrame  # user_id, c (category index), eta; sorted by user_id
    priors: pd.Series  # λ indexed by (user_id, carousel_id)
    carousel_lam: Mapping[str, float]  # carousel-level prior mean
    p_global: float
    features: FeatureSource | None = None
    engagement: Any = None  # models.engagement.EngagementModel
    objective_weights: Mapping[str, float] | None = None
    _eta_users: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cat_eta = self.cat_eta.sort_values("user_id", kind="stable").reset_index(drop=True)
        self._eta_users = self.cat_eta["user_id"].to_numpy(object)

    def warm(self, users: np.ndarray) -> np.ndarray:
        """Users both factorisations know (the others get the default page)."""
        return (self.mf_item.user_index(users) >= 0) & (self.mf_cat.user_index(users) >= 0)

    def user_matrices(
        self, users: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """r̂ (B × items), ŝ (B × categories), η (B × categories), buy-again lists, for warm users
        given in sorted order."""
        users = np.asarray(users, dtype=object)
        ui = self.mf_item.user_index(users)
        uc = self.mf_cat.user_index(users)
        if (ui < 0).any() or (uc < 0).any():
            raise ValueError("user_matrices needs warm users (known to both factorisations)")
        r_hat = self.mf_item.user_factors[ui] @ self.v_items.T
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
        buy = [self.buy_again.get(u, np.empty(0, dtype=np.int64)) for u in users]
        return r_hat.astype(np.float64), aff, eta, buy

    def default_matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """A pseudo-user whose tastes are the catalogue's popularity (the `__default__` page)."""
        cat = self.catalog
        cat_pop = np.bincount(cat.item_cat, weights=cat.popularity, minlength=len(cat.cat_ids))
        cat_pop = cat_pop / cat_pop.max() if cat_pop.max() > 0 else cat_pop
        return (
            cat.popularity[None, :].astype(np.float64),
            cat_pop[None, :],
            np.zeros((1, len(cat_pop))),
            [np.empty(0, dtype=np.int64)],
        )


@dataclass
class ScoredBatch:
    users: np.ndarray  # batch user ids
    cands: Candidates
    items: np.ndarray  # (n_c, W) item indices in their final order, PAD = -1
    item_scores: np.ndarray  # (n_c, W) score shown per item (NaN on PAD)
    lam: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    reason_override: str | None = None

    def candidates_frame(self, w: float) -> pd.DataFrame:
        cu = np.asarray(self.cands.user, dtype=np.int64)
        return pd.DataFrame(
            {
                "user_id": self.users[cu],
                "carousel_id": self.cands.carousel_id,
                "family": self.cands.family,
                "lam": self.lam,
                "alpha": self.alpha,
                "gamma": self.gamma,
                "phi": w * self.alpha + (1 - w) * self.gamma,
            }
        )


def engagement_scores(
    inputs: RankInputs,
    users: np.ndarray,
    cu: np.ndarray,
    items: np.ndarray,
    r_hat: np.ndarray,
    aff: np.ndarray,
) -> np.ndarray:
    """Combined calibrated engagement score Σ_o w_o·p_o of each (batch user cu, item) pair,
    with the placement fixed to the first slot and position (position debiasing)."""
    if inputs.engagement is None or inputs.features is None:
        raise ValueError("rerank mode needs an engagement model and its feature source")
    keys = cu.astype(np.int64) * np.int64(r_hat.shape[1]) + items.astype(np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    bu = uniq // r_hat.shape[1]
    it = uniq % r_hat.shape[1]
    frame = inputs.features.frame(
        inputs.features.user_rows(users[bu]),
        it,
        mf_score=r_hat[bu, it],
        cat_affinity=aff[bu, inputs.catalog.item_cat[it]],
    )
    preds = inputs.engagement.predict(frame, position_override="first")
    score = inputs.engagement.combined_score(preds, inputs.objective_weights)
    return score[inverse]


def score_batch(
    inputs: RankInputs,
    users: np.ndarray,
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]],
    params: PageParams,
    mode: str,
    reason_override: str | None = None,
) -> ScoredBatch:
    """Candidates, item order and λ/α/γ of a batch (everything but the w-dependent order)."""
    if mode not in ITEM_MODES:
        raise ValueError(f"item mode must be one of {ITEM_MODES}, got {mode!r}")
    r_hat, aff, eta, buy = matrices
    cat = inputs.catalog
    r_hat = np.where(cat.in_stock[None, :], r_hat, -np.inf)
    cands = generate(
        catalog=cat,
        item_scores=r_hat,
        cat_affinity=aff,
        cat_eta=eta,
        buy_again=buy,
        curated=inputs.curated,
        n_items=params.candidate_items,
        min_items=params.min_items,
        n_category=params.category_carousels,
    )
    width = params.candidate_items
    cu = np.asarray(cands.user, dtype=np.int64)
    mat = cands.item_matrix(width)
    finite_r = np.where(np.isfinite(r_hat), r_hat, 0.0)
    valid = mat != PAD
    safe = np.where(valid, mat, 0)
    if mode == "rerank" and len(cu):
        rows, cols = np.nonzero(valid)
        score = np.full(mat.shape, np.nan)
        score[rows, cols] = engagement_scores(
            inputs, users, cu[rows], mat[rows, cols], finite_r, aff
        )
        movable = ~np.asarray(cands.fixed_order, dtype=bool)
        key = np.where(valid, -score, np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        order[~movable] = np.arange(width)
        mat = np.take_along_axis(mat, order, axis=1)
        score = np.take_along_axis(score, order, axis=1)
    else:
        score = np.where(valid, finite_r[cu[:, None], safe], np.nan)
    keys = pd.MultiIndex.from_arrays([users[cu], np.asarray(cands.carousel_id, dtype=object)])
    lam = inputs.priors.reindex(keys).to_numpy(dtype=np.float64)
    fallback = np.array(
        [inputs.carousel_lam.get(c, inputs.p_global) for c in cands.carousel_id], dtype=np.float64
    )
    lam = np.where(np.isnan(lam), fallback, lam)
    _, alpha, gamma = carousel_scores(
        items=mat[:, : params.items_per_carousel],
        users=cu,
        item_scores=finite_r,
        discovery=aff * np.exp(-eta),
        item_cat=cat.item_cat,
        lam=lam,
        w=0.5,
    )
    return ScoredBatch(users, cands, mat, score, lam, alpha, gamma, reason_override)


def pages(scored: ScoredBatch, w: float, params: PageParams, item_ids: np.ndarray) -> pd.DataFrame:
    """Each user's page in the export's row format, carousels ordered by φ at this w."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"w must be in [0, 1], got {w}")
    cands = scored.cands
    cu = np.asarray(cands.user, dtype=np.int64)
    rows: dict[str, list[Any]] = {k: [] for k in PAGE_COLUMNS}
    if not len(cu):
        return pd.DataFrame(rows)
    phi = w * scored.alpha + (1.0 - w) * scored.gamma
    # a candidate's items by position, with their shown scores
    score_of = {}
    bounds = np.flatnonzero(np.diff(cu)) + 1
    for group in np.split(np.arange(len(cu)), bounds):
        u = cu[group[0]]
        order = group[np.argsort(-phi[group], kind="stable")]
        for placed in assemble_page(
            order=order,
            families=cands.family,
            items=scored.items,
            slots=params.slots,
            per_carousel=params.items_per_carousel,
            min_items=params.min_items,
        ):
            j, n = placed.candidate, len(placed.items)
            if j not in score_of:
                row = scored.items[j]
                score_of[j] = dict(
                    zip(row[row != PAD].tolist(), scored.item_scores[j][row != PAD], strict=True)
                )
            rows["user_id"].extend([scored.users[u]] * n)
            rows["slot"].extend([placed.slot] * n)
            rows["carousel_id"].extend([cands.carousel_id[j]] * n)
            rows["carousel_title"].extend([cands.title[j]] * n)
            rows["family"].extend([cands.family[j]] * n)
            rows["carousel_score"].extend([float(phi[j])] * n)
            rows["item_rank"].extend(range(1, n + 1))
            rows["item_id"].extend(item_ids[placed.items])
            rows["item_score"].extend(float(score_of[j][int(i)]) for i in placed.items)
            rows["reason"].extend([scored.reason_override or cands.reason[j]] * n)
    return pd.DataFrame(rows)
