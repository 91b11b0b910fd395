"""The carousel score φ of candidates from the full score matrices: the direct, unbatched version
of what `models.ranking.batch_scoring.score_batch` computes, kept for the tests."""

from __future__ import annotations

import numpy as np

from models.ranking.candidates import PAD
from models.ranking.scoring import carousel_score, walmart_terms


def carousel_scores(
    *,
    items: np.ndarray,  # (n_c, M) item indices, PAD = -1
    users: np.ndarray,  # (n_c,) row of each candidate's user in the batch
    item_scores: np.ndarray,  # (B, n_items) r̂_ui
    discovery: np.ndarray,  # (B, n_cats) g(u, c) = ŝ_uc · exp(−η_uc)
    item_cat: np.ndarray,  # (n_items,) category index of each item
    lam: np.ndarray,  # (n_c,) λ_uk from the Beta priors
    w: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(φ, α, γ) per candidate.

    α_uk = λ_uk · Σ_l r̂_{u,i_l} / log(1 + l);  γ_uk = Σ_l g(u, ψ(i_l)) / log(1 + l).
    Padding contributes nothing.
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"w must be in [0, 1], got {w}")
    valid = items != PAD
    safe = np.where(valid, items, 0)
    r = np.where(valid, item_scores[users[:, None], safe], np.nan)
    g = np.where(valid, discovery[users[:, None], item_cat[safe]], np.nan)
    alpha, gamma = walmart_terms(r, g, lam)
    return carousel_score(alpha, gamma, w), alpha, gamma
