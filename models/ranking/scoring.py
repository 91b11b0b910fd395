"""The Walmart carousel score φ = w·α + (1 − w)·γ (docs/methods.md §1), vectorised over candidates."""

from __future__ import annotations

import numpy as np


def position_discount(m: int) -> np.ndarray:
    """1 / log(1 + l) for l = 1..m: the leftmost item is seen most."""
    return 1.0 / np.log1p(np.arange(1, m + 1, dtype=np.float64))


def carousel_score(alpha: np.ndarray, gamma: np.ndarray, w: float) -> np.ndarray:
    """φ = w·α + (1 − w)·γ: the carousel's score for the Walmart weight w (every caller computes
    it here, so the arithmetic, and with it every bit of φ, is the same everywhere)."""
    return w * alpha + (1.0 - w) * gamma


def walmart_terms(r: np.ndarray, g: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(α, γ) from per-position values: r (n_c, M) = r̂_{u,i_l}, g (n_c, M) = g(u, ψ(i_l)),
    NaN (or ±inf in r) on empty positions, which contribute nothing."""
    return lam * discounted_sum(r), discounted_sum(g)


def discounted_sum(x: np.ndarray) -> np.ndarray:
    """Σ_l x_l / log(1 + l) per row; NaN and ±inf entries (empty positions) count as 0.
    α = λ · discounted_sum(r̂) exactly: a refresh that only changes λ re-uses the sum."""
    disc = position_discount(x.shape[1])[None, :]
    return (np.where(np.isfinite(x), x, 0.0) * disc).sum(axis=1)
