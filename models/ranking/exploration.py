"""Epsilon-greedy exploration of new items on built pages (docs/methods.md §4, Zalando) and the
per-user counter-based random streams it (and any rebuild of one user's page) draws from."""

from __future__ import annotations

import numpy as np

from models.ranking.catalog import PAD

_EPS = 1e-12  # smallest draw weight of an item in the exploration pool


def user_uniforms(keys: np.ndarray, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
    """(B, *shape) uniforms in (0, 1), each a pure function of (user key, seed, stream, index):
    a user's random draws do not depend on which other users share the batch, so a page rebuilt
    alone (an intra-day refresh) gets exactly the draws it got in the daily batch.

    Counter-based: the splitmix64 finaliser over key ⊕ mix(seed, stream) + index · φ64."""
    n = int(np.prod(shape)) if shape else 1
    k = np.asarray(keys, dtype=np.uint64).reshape(-1, 1)
    salt = _mix64(np.array([(seed & 0xFFFFFFFFFFFFFFFF) ^ (stream << 48)], dtype=np.uint64))
    with np.errstate(over="ignore"):
        x = (k ^ salt) + np.arange(1, n + 1, dtype=np.uint64)[None, :] * np.uint64(_GOLDEN)
    u = (_mix64(x) >> np.uint64(11)).astype(np.float64)
    return ((u + 0.5) * 2.0**-53).reshape((len(k), *shape))


_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection on uint64 with good avalanche), wrapping arithmetic."""
    x = np.array(x, dtype=np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def explore_new_items(
    items: np.ndarray,
    movable: np.ndarray,
    new_pool: np.ndarray,
    new_weight: np.ndarray,
    *,
    epsilon: float,
    start: int,
    user_keys: np.ndarray,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epsilon-greedy exploration of new items (docs/methods.md §4, Zalando).

    items: (B, Z, M) placed items; movable: (B, Z) carousels whose order may change; new_pool:
    (B, P) each user's candidate new items (PAD = -1); new_weight: (B, P) their relevance (> 0).
    Positions 1..start−1 stay organic. From position `start`, each position of a movable carousel
    shows, with probability ε, a new item drawn ∝ relevance without replacement from the user's
    pool (items already on the page excluded), otherwise the next organic item (organic items move
    right; the last ones fall off). Returns (items, per-position propensity (B, Z, M), explored
    flags (B, Z, M)). The propensity is the probability of that position's decision given the ones
    before it: 1 before `start`, 1 − ε for an organic item, ε · weight_i / Σ weight_remaining for a new item,
    and 1 where the pool has run out. `user_keys` (B,) and `seed` select each user's random stream
    (`user_uniforms`), so a user's draws do not depend on the rest of the batch.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"exploration epsilon must be in [0, 1], got {epsilon}")
    if start < 1:
        raise ValueError(f"exploration start position must be >= 1, got {start}")
    n, z, m = items.shape
    out = items.copy()
    prop = np.ones((n, z, m))
    explored = np.zeros((n, z, m), dtype=bool)
    if epsilon == 0.0 or start > m or new_pool.shape[1] == 0:
        return out, prop, explored
    rows = np.arange(n)
    # pool items already on the page organically cannot be drawn
    on_page = np.zeros(new_pool.shape, dtype=bool)
    flat = items.reshape(n, -1)
    for j in range(new_pool.shape[1]):
        on_page[:, j] = (flat == new_pool[:, j : j + 1]).any(axis=1)
    draw_weight = np.where((new_pool != PAD) & ~on_page, np.maximum(new_weight, 0.0), 0.0)
    draw_weight = np.where((new_pool != PAD) & ~on_page, np.maximum(draw_weight, _EPS), 0.0)
    # sampling without replacement ∝ weight == sorting by log weight + Gumbel noise
    gumbel = -np.log(-np.log(user_uniforms(user_keys, seed, 1, draw_weight.shape[1:])))
    keys = np.where(
        draw_weight > 0, np.log(np.where(draw_weight > 0, draw_weight, 1.0)) + gumbel, -np.inf
    )
    draw_order = np.argsort(-keys, axis=1, kind="stable")
    drawn = np.take_along_axis(new_pool, draw_order, axis=1)
    drawn_w = np.take_along_axis(draw_weight, draw_order, axis=1)
    available = (drawn_w > 0).sum(axis=1)
    remaining = draw_weight.sum(axis=1)[:, None] - np.concatenate(
        [np.zeros((n, 1)), np.cumsum(drawn_w, axis=1)[:, :-1]], axis=1
    )  # total weight left before the k-th draw
    taken = np.zeros(n, dtype=np.int64)
    coin = user_uniforms(user_keys, seed, 2, (z, m)) < epsilon
    for s in range(z):
        row_items = items[:, s]
        filled = row_items != PAD
        organic_next = np.zeros(n, dtype=np.int64)
        for pos in range(m):
            live = filled[:, pos] & movable[:, s]
            can = live & (pos + 1 >= start) & (taken < available)
            go = can & coin[:, s, pos]
            k = np.minimum(taken, drawn.shape[1] - 1)
            new_item = drawn[rows, k]
            p_new = epsilon * drawn_w[rows, k] / np.maximum(remaining[rows, k], _EPS)
            org = row_items[rows, np.minimum(organic_next, m - 1)]
            out[:, s, pos] = np.where(go, new_item, np.where(filled[:, pos], org, PAD))
            prop[:, s, pos] = np.where(go, p_new, np.where(can, 1.0 - epsilon, 1.0))
            explored[:, s, pos] = go
            taken += go
            organic_next += filled[:, pos] & ~go
    return out, prop, explored
