"""The Walmart carousel score φ = w·α + (1 − w)·γ (METHODS §1), vectorised over candidates."""

from __future__ import annotations

import numpy as np

from models.candidates import PAD


def position_discount(m: int) -> np.ndarray:
    """1 / log(1 + l) for l = 1..m: the leftmost item is seen most."""
    return 1.0 / np.log1p(np.arange(1, m + 1, dtype=np.float64))


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
    disc = position_discount(items.shape[1])[None, :]
    r = item_scores[users[:, None], safe]
    r = np.where(valid & np.isfinite(r), r, 0.0)
    g = discovery[users[:, None], item_cat[safe]]
    g = np.where(valid, g, 0.0)
    alpha = lam * (r * disc).sum(axis=1)
    gamma = (g * disc).sum(axis=1)
    return w * alpha + (1.0 - w) * gamma, alpha, gamma
