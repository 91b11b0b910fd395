"""The Poisson bootstrap of off-policy evaluation: replicate sums with Poisson(1) weights.

Every round gets an independent Poisson(1) weight per replicate. Poisson(1) draws come from a
65,536-entry inverse-CDF table indexed by random 16-bit integers (CDF quantised to 2^-16;
variance 0.99997 instead of 1) and the weighted sums are one float32 matrix product per chunk of
rounds: 1,000 replicates of 262,144 rounds take ~1.5 s on one core; beyond that, rounds are
summed into 2^18 random groups first (see `poisson_bootstrap_sums`), so 1,000,000 rounds take
about as long. `poisson_weights` draws single weight vectors from the same table (e.g. for a
bootstrap that refits a reward model).
"""

from __future__ import annotations

import math

import numpy as np

_CHUNK_ELEMENTS = 1 << 23  # Poisson weights per bootstrap chunk (8M float32 = 32 MiB)
MAX_GROUPS = 1 << 18  # above this many rounds the bootstrap resamples random groups of rounds


def _poisson_table() -> np.ndarray:
    """Poisson(1) draw for each 16-bit integer: the inverse CDF quantised to 2^-16."""
    cdf, term, k = [], math.exp(-1.0), 0
    total = 0.0
    while total < 1.0 - 2.0**-20:
        total += term
        cdf.append(total)
        k += 1
        term /= k
    edges = np.round(np.asarray(cdf) * 65536.0).astype(np.int64)
    return np.searchsorted(edges, np.arange(65536), side="right").astype(np.float32)


_POISSON = _poisson_table()


def poisson_bootstrap_sums(
    values: np.ndarray, resamples: int, seed: int, *, max_groups: int | None = MAX_GROUPS
) -> np.ndarray:
    """(resamples, k) column sums Σ_r P_br values[r] with independent Poisson(1) weights P_br.

    Deterministic for a seed. Chunked over rows, so memory stays at ~32 MiB of weights. With
    more than `max_groups` rows, rows are first summed into `max_groups` groups of (nearly)
    equal size by a seeded random assignment and the groups are resampled: group sums of
    randomly assigned i.i.d. rounds are i.i.d., so ratio estimators keep their bootstrap
    variance (≈ σ²/n) while the cost stops growing with n (1e6 rounds: ~4× fewer draws).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("values must be a 2-D (rounds, columns) array")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    rng = np.random.default_rng(seed)
    if max_groups is not None and x.shape[0] > max_groups:
        group = np.random.default_rng([seed, 1]).permutation(x.shape[0]) % max_groups
        x = np.column_stack(
            [np.bincount(group, weights=x[:, j], minlength=max_groups) for j in range(x.shape[1])]
        )
    n, k = x.shape
    # centre the columns, so float32 products only carry the deviations (precision); the
    # appended column of ones gives Σ_r P_br
    centre = x.mean(axis=0) if n else np.zeros(k)
    xc = np.column_stack([x - centre, np.ones(n)]).astype(np.float32)
    out = np.zeros((resamples, k + 1))
    chunk = max(1, _CHUNK_ELEMENTS // resamples)
    for lo in range(0, n, chunk):
        c = min(chunk, n - lo)
        draws = np.frombuffer(rng.bytes(2 * resamples * c), dtype=np.uint16).reshape(resamples, c)
        out += (_POISSON[draws] @ xc[lo : lo + c]).astype(np.float64)
    return out[:, :k] + out[:, k:] * centre[None, :]


def poisson_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """n independent Poisson(1) bootstrap weights (float64), from the same table."""
    return _POISSON[np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)].astype(np.float64)
