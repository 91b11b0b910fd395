"""Paired bootstrap over users: the noise of challenger − champion on the same held-out rows.

Each replicate gives every user one Poisson(1) weight, repeated on all of that user's rows, so
a user's rows are kept or dropped together (rows of one user are not independent) and both
models are measured on the same resampled rows. The batch metrics below take a
(replicates, rows) weight matrix and reproduce `models.evaluation.metrics` exactly when every
weight is 1:

    auc_batch    weighted ROC-AUC, ties count ½ (one sort of p, then O(rows) per replicate)
    ece_batch    weighted ECE over equal-width bins: Σ_b |Σ w p − Σ w y| / Σ w
    mean_batch   weighted mean of per-user values (per-user NDCG)

A replicate where a class has no weight gives NaN and is left out of the interval.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # weights held at once (4M float64 = 32 MiB)


def user_weight_chunks(
    n_users: int, resamples: int, seed: int, *, n_rows: int = 0
) -> Iterator[np.ndarray]:
    """(replicates, n_users) Poisson(1) weights, `resamples` in all, in chunks sized so a
    (chunk, max(n_users, n_rows)) matrix stays near 32 MiB. Deterministic for a seed."""
    if resamples < 2:
        raise ValueError(f"bootstrap resamples must be >= 2, got {resamples}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_users, n_rows))
    for lo in range(0, resamples, chunk):
        yield rng.poisson(1.0, size=(min(chunk, resamples - lo), n_users)).astype(np.float64)


def auc_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted ROC-AUC of (y, p) under each row of weights `w` (replicates, rows)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # one group per distinct score
    pos = np.add.reduceat(ws * ys, starts, axis=1)
    neg = np.add.reduceat(ws * (1.0 - ys), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    out[(n_pos <= 0) | (n_neg <= 0)] = np.nan
    return out


def ece_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray, *, bins: int = 10) -> np.ndarray:
    """Weighted expected calibration error over `bins` equal-width bins of p, per replicate."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    onehot = np.zeros((len(p), bins))
    onehot[np.arange(len(p)), b] = 1.0
    gap = w @ (onehot * (p - y)[:, None])  # Σ_b w (p − y) per bin = mass · (mean p − rate)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.abs(gap).sum(axis=1) / total
    out[total <= 0] = np.nan
    return out


def mean_batch(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean of `values` (one per column of `w`) per replicate."""
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w @ np.asarray(values, dtype=np.float64)) / total
    out[total <= 0] = np.nan
    return out


def percentile_interval(diffs: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of the finite replicates (NaN, NaN without any)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must lie in (0, 1), got {level}")
    finite = np.asarray(diffs, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)
