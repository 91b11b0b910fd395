"""The Walmart carousel score φ = w·α + (1 − w)·γ (METHODS §1), vectorised over candidates."""

from __future__ import annotations

import numpy as np

from models.ranking.candidates import PAD


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
    r = np.where(valid, item_scores[users[:, None], safe], np.nan)
    g = np.where(valid, discovery[users[:, None], item_cat[safe]], np.nan)
    alpha, gamma = walmart_terms(r, g, lam)
    return w * alpha + (1.0 - w) * gamma, alpha, gamma


def walmart_terms(r: np.ndarray, g: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(α, γ) from per-position values: r (n_c, M) = r̂_{u,i_l}, g (n_c, M) = g(u, ψ(i_l)),
    NaN (or ±inf in r) on empty positions, which contribute nothing."""
    return lam * discounted_sum(r), discounted_sum(g)


def discounted_sum(x: np.ndarray) -> np.ndarray:
    """Σ_l x_l / log(1 + l) per row; NaN and ±inf entries (empty positions) count as 0.
    α = λ · discounted_sum(r̂) exactly: a refresh that only changes λ re-uses the sum."""
    disc = position_discount(x.shape[1])[None, :]
    return (np.where(np.isfinite(x), x, 0.0) * disc).sum(axis=1)
