"""Offline metrics for engagement models and ranked pages.

Probability metrics take labels `y` in {0, 1} (log loss also accepts soft labels in [0, 1]),
predictions `p` in [0, 1] and optional non-negative sample weights `sample_weight` (w below):

    auc        P(p_pos > p_neg) + ½ P(p_pos = p_neg) over weighted (positive, negative) pairs
    pr_auc     average precision Σ_n (R_n − R_{n−1}) · P_n over the distinct thresholds
    log_loss   −Σ w [y log p + (1 − y) log(1 − p)] / Σ w, with p clipped to [ε, 1 − ε]
    ECE        Σ_b (W_b / W) · |mean_w(p | b) − mean_w(y | b)| over equal-width bins of p

Ranking metrics use linear gains (DCG = Σ rel / discount):

    ndcg_at_k  discount log2(i + 1) at 1-based rank i; ideal = the same gains sorted
    ndcg_2d    page grid of slots × positions, discount log2(s + l) with 1-based s, l
               (Ferrari Dacrema et al.); ideal = the gains placed on the cells by discount
"""

from __future__ import annotations

import numpy as np

LOG_LOSS_EPS = 1e-15


def _check(
    y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p must have the same length, got {len(y)} and {len(p)}")
    if len(y) == 0:
        raise ValueError("y and p are empty")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("y and p must be finite")
    if y.min() < 0 or y.max() > 1 or p.min() < 0 or p.max() > 1:
        raise ValueError("y and p must lie in [0, 1]")
    if sample_weight is None:
        sample_weight = np.ones_like(y)
    else:
        sample_weight = np.asarray(sample_weight, dtype=np.float64).ravel()
        if sample_weight.shape != y.shape:
            raise ValueError(
                f"sample_weight must have the length of y ({len(y)}), got {len(sample_weight)}"
            )
        if (
            not np.isfinite(sample_weight).all()
            or sample_weight.min() < 0
            or sample_weight.sum() <= 0
        ):
            raise ValueError("sample_weight must be finite, >= 0 and not all 0")
    return y, p, sample_weight


def _check_binary(y: np.ndarray) -> None:
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must be binary (0 or 1)")
    if y.min() == y.max():
        raise ValueError("y needs both positives and negatives")


def auc(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """ROC-AUC: weighted share of (positive, negative) pairs ordered correctly, ties count ½."""
    from sklearn.metrics import roc_auc_score

    y, p, sample_weight = _check(y, p, sample_weight)
    _check_binary(y)
    return float(roc_auc_score(y, p, sample_weight=sample_weight))


def pr_auc(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Average precision Σ_n (R_n − R_{n−1}) · P_n (step-wise, no interpolation)."""
    from sklearn.metrics import average_precision_score

    y, p, sample_weight = _check(y, p, sample_weight)
    _check_binary(y)
    return float(average_precision_score(y, p, sample_weight=sample_weight))


def log_loss(
    y: np.ndarray,
    p: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    eps: float = LOG_LOSS_EPS,
) -> float:
    """Weighted mean negative log-likelihood; p is clipped to [eps, 1 − eps] so 0 and 1 are finite."""
    y, p, sample_weight = _check(y, p, sample_weight)
    p = np.clip(p, eps, 1.0 - eps)
    ll = y * np.log(p) + (1.0 - y) * np.log1p(-p)
    return float(-(sample_weight * ll).sum() / sample_weight.sum())


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin b holds b/bins <= p < (b+1)/bins; the last bin also holds p = 1."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def _binned(
    y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: weight, weighted mean prediction, weighted observed rate, row count (all bins)."""
    b = _bin_index(p, bins)
    mass = np.bincount(b, weights=sample_weight, minlength=bins)
    sum_p = np.bincount(b, weights=sample_weight * p, minlength=bins)
    sum_y = np.bincount(b, weights=sample_weight * y, minlength=bins)
    count = np.bincount(b, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return mass, sum_p / mass, sum_y / mass, count


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, *, bins: int = 10, sample_weight: np.ndarray | None = None
) -> float:
    """ECE over `bins` equal-width bins of p, each bin weighted by its share of the (weighted) mass."""
    y, p, sample_weight = _check(y, p, sample_weight)
    mass, mean_p, rate, _ = _binned(y, p, sample_weight, bins)
    full = mass > 0
    return float((mass[full] * np.abs(mean_p[full] - rate[full])).sum() / mass.sum())


def reliability_curve(
    y: np.ndarray, p: np.ndarray, *, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted, observed rate, row count) for each non-empty equal-width bin of p."""
    y, p, sample_weight = _check(y, p, None)
    _, mean_p, rate, count = _binned(y, p, sample_weight, bins)
    full = count > 0
    return mean_p[full], rate[full], count[full]


def _dcg(gains: np.ndarray, discounts: np.ndarray) -> float:
    return float((gains / discounts).sum())


def ndcg_at_k(relevance_in_ranked_order: np.ndarray, k: int) -> float:
    """NDCG@k with linear gains: Σ_{i≤k} rel_i / log2(i + 1) over the same sum for the gains
    sorted best first. 0 when no item in the list is relevant."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rel = np.asarray(relevance_in_ranked_order, dtype=np.float64).ravel()
    if not np.isfinite(rel).all() or (rel < 0).any():
        raise ValueError("relevance must be finite and >= 0")
    ideal = np.sort(rel)[::-1][:k]
    rel = rel[:k]
    discounts = np.log2(np.arange(2, len(rel) + 2, dtype=np.float64))
    idcg = _dcg(ideal, discounts)
    return _dcg(rel, discounts) / idcg if idcg > 0 else 0.0


def ndcg_2d(grid_relevance: np.ndarray) -> float:
    """NDCG of a page grid (slots × positions): the item in slot s, position l (1-based) is
    discounted by log2(s + l). NaN marks a cell without an item (a shorter carousel).

    The ideal DCG places the page's gains on its cells in order of discount, best gain on the
    least discounted cell. The caller passes each item's gain once (0 on repeats of an item
    already shown higher on the page), so no item is counted twice. 0 when nothing is relevant.
    """
    grid = np.asarray(grid_relevance, dtype=np.float64)
    if grid.ndim != 2:
        raise ValueError(f"grid_relevance must be 2-D (slots × positions), got {grid.ndim}-D")
    cell = ~np.isnan(grid)
    if np.isinf(grid).any() or (grid[cell] < 0).any():
        raise ValueError("relevance must be finite and >= 0 (NaN for an empty cell)")
    slot, position = np.indices(grid.shape) + 1
    discounts = np.log2(slot + position)[cell]
    gains = grid[cell]
    ideal = np.sort(gains)[::-1]
    idcg = _dcg(ideal, np.sort(discounts))
    return _dcg(gains, discounts) / idcg if idcg > 0 else 0.0
