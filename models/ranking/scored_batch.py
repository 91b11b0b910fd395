"""A scored batch (`ScoredBatch`: candidates, item order, λ/α/γ) and what builds one from stored
state: the Beta posterior λ per candidate and the carousel-similarity inputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.ranking.candidates import Candidates
from models.ranking.catalog import PAD
from models.ranking.scoring import carousel_score


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
                "phi": carousel_score(self.alpha, self.gamma, w),
            }
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


def _row_mode(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Most common valid value per row (ties: the leftmost); -1 for a row with none."""
    eq = (values[:, :, None] == values[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    count = eq.sum(axis=2)
    j = np.argmax(count, axis=1)
    return np.where(valid.any(axis=1), values[np.arange(len(values)), j], -1)
