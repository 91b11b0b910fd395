"""Item-level policy on a batch of candidate carousels: relevance, business penalties, MMR
diversification and Zalando's brand-run rule.

A batch is an (n, W) int64 matrix of item indices, padded with PAD = -1 at the end of each row;
scores and relevances are (n, W) floats with NaN on PAD. Everything is numpy: the per-row state
lives in (n,) or (n, W) arrays and the only Python loops run over positions (or MMR steps),
never over rows. The reordering functions return a column permutation `order` to be applied
with `np.take_along_axis(items, order, axis=1)`.
"""

from __future__ import annotations

import numpy as np

from models.ranking.catalog import PAD


def _identity(n: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.arange(width, dtype=np.int64), (n, width)).copy()


def _movable_rows(movable: np.ndarray, n: int) -> np.ndarray:
    mov = np.asarray(movable, dtype=bool)
    if mov.shape != (n,):
        raise ValueError(f"movable must have shape ({n},), got {mov.shape}")
    return np.flatnonzero(mov)


def _gather(item_values: np.ndarray, items: np.ndarray) -> np.ndarray:
    """item_values[items] with PAD reading item 0 (callers mask PAD); other indices must exist."""
    if items.size and not (int(items.min()) >= PAD and int(items.max()) < len(item_values)):
        raise IndexError(
            f"item indices must be in [0, {len(item_values)}) or PAD, "
            f"got [{items.min()}, {items.max()}]"
        )
    if len(item_values) == 0:  # then every entry is PAD
        return np.zeros(items.shape, dtype=item_values.dtype)
    return item_values.take(items, mode="clip")


def _keys(item_values: np.ndarray, items: np.ndarray, unknown_never_equal: bool) -> np.ndarray:
    """Comparison keys item_values[items] in the smallest int dtype that holds them (PAD gets
    item 0's value: callers mask PAD). With `unknown_never_equal`, negative values
    (unknown) become -2 - column: equal to no other column."""
    v = np.asarray(item_values)
    width = items.shape[1]
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    lo = min(lo, -1 - width) if unknown_never_equal else lo
    dt = next(
        (
            t
            for t in (np.int8, np.int16, np.int32)
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max
        ),
        np.int64,
    )
    keys = _gather(v.astype(dt, copy=False), items)
    if unknown_never_equal:
        cols = np.broadcast_to(-2 - np.arange(width, dtype=dt), keys.shape)
        np.copyto(keys, cols, where=keys < 0)
    return keys


def item_clusters(
    factors: np.ndarray, n_clusters: int = 64, *, seed: int = 0, iters: int = 10
) -> np.ndarray:
    """Spherical k-means on L2-normalised item factor rows -> int32 cluster id per item.

    Rows with zero (or non-finite) norm, i.e. items the MF never saw, get -1: never similar by
    embedding. k-means++ seeding on cosine distance, then Lloyd steps on cosine similarity
    (ties to the lower cluster id); a cluster left empty keeps its previous centroid.
    `n_clusters` is capped at the number of non-zero rows; deterministic for a seed.
    """
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    f = np.asarray(factors, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"factors must be 2-d (n_items, k), got shape {f.shape}")
    out = np.full(f.shape[0], -1, dtype=np.int32)
    norms = np.linalg.norm(f, axis=1)
    ok = np.isfinite(norms) & (norms > 0)
    n_ok = int(ok.sum())
    if n_ok == 0:
        return out
    x = f[ok] / norms[ok, None]
    x32 = x.astype(np.float32)  # similarities in float32 (BLAS), centroid sums in float64
    dim = x.shape[1]
    c = min(int(n_clusters), n_ok)
    rng = np.random.default_rng(seed)

    # k-means++: each next centre drawn with probability proportional to its cosine distance
    # (half the squared Euclidean distance on the unit sphere) to the nearest centre so far
    picks = np.empty(c, dtype=np.int64)
    picks[0] = rng.integers(n_ok)
    dist = np.maximum(1.0 - x32 @ x32[picks[0]], 0.0).astype(np.float64)
    for i in range(1, c):
        cum = np.cumsum(dist)
        if cum[-1] > 0:
            picks[i] = min(
                int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n_ok - 1
            )
        else:  # every point sits on a centre already
            picks[i] = rng.integers(n_ok)
        np.minimum(dist, np.maximum(1.0 - x32 @ x32[picks[i]], 0.0), out=dist)
    centres = x[picks].copy()

    labels = np.argmax(x32 @ centres.T.astype(np.float32), axis=1)
    flat_dims = np.arange(dim)[None, :]
    for _ in range(iters):
        # per-cluster sums of the member rows in one bincount over (cluster, dim) cells
        cells = (labels[:, None] * dim + flat_dims).ravel()
        sums = np.bincount(cells, weights=x.ravel(), minlength=c * dim).reshape(c, dim)
        size = np.linalg.norm(sums, axis=1)
        keep = size > 0  # an empty cluster keeps its centre
        centres[keep] = sums[keep] / size[keep, None]
        new = np.argmax(x32 @ centres.T.astype(np.float32), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    out[ok] = labels.astype(np.int32)
    return out


def relevance(scores: np.ndarray) -> np.ndarray:
    """Per-row min-max scaling of the finite scores to [0, 1].

    A row whose finite scores are all equal gets 1.0 on them; NaN (PAD) stays NaN, and so does
    any other non-finite score (±inf): it carries no usable relevance.
    """
    s = np.asarray(scores, dtype=np.float64)
    fin = np.isfinite(s)
    lo = np.where(fin, s, np.inf).min(axis=1, initial=np.inf, keepdims=True)
    hi = np.where(fin, s, -np.inf).max(axis=1, initial=-np.inf, keepdims=True)
    span = hi - lo
    flat = ~(span > 0)  # all-equal rows; all-NaN rows give span = -inf and are masked by `fin`
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (s - lo) / np.where(flat, 1.0, span)
    return np.where(fin, np.where(flat, 1.0, scaled), np.nan)


def _check_unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def apply_penalties(
    rel: np.ndarray,
    items: np.ndarray,
    *,
    has_image: np.ndarray,  # bool (n_items,)
    no_image_penalty: float,
    recent: np.ndarray,  # bool, same shape as items: shown to the user recently
    repeat_penalty: float,
) -> np.ndarray:
    """rel · (1 − no_image_penalty) where the item has no image, · (1 − repeat_penalty) where
    `recent`; both apply when both hold. Penalties must be in [0, 1]; PAD stays NaN."""
    p_img = _check_unit("no_image_penalty", no_image_penalty)
    p_rep = _check_unit("repeat_penalty", repeat_penalty)
    if rel.shape != items.shape or recent.shape != items.shape:
        raise ValueError(
            f"rel {rel.shape}, items {items.shape} and recent {recent.shape} must have one shape"
        )
    valid = items != PAD
    img = _gather(np.asarray(has_image, dtype=bool), items)
    factor = np.where(img, 1.0, 1.0 - p_img) * np.where(recent, 1.0 - p_rep, 1.0)
    return np.where(valid, rel * factor, np.nan)


def _check_weights(weights: tuple[float, float, float]) -> tuple[float, float, float]:
    sim_weights = tuple(float(v) for v in weights)
    if len(sim_weights) != 3:
        raise ValueError(f"weights must be (w_cat, w_brand, w_emb), got {weights}")
    if not all(v >= 0.0 for v in sim_weights) or not abs(sum(sim_weights) - 1.0) <= 1e-9:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {weights}")
    return sim_weights  # type: ignore[return-value]


def mmr_order(
    items: np.ndarray,
    rel: np.ndarray,
    *,
    lam: float,
    m: int,
    movable: np.ndarray,  # bool (n,)
    item_cat: np.ndarray,  # int (n_items,)
    item_brand: np.ndarray,  # int (n_items,), -1 = unknown
    item_cluster: np.ndarray,  # int (n_items,), -1 = no embedding
    weights: tuple[float, float, float] = (0.25, 0.25, 0.5),
) -> np.ndarray:
    """Maximal marginal relevance (Carbonell & Goldstein) over the first m positions.

    Pick 1 is argmax rel; pick t > 1 is argmax_j [lam · rel_j − (1 − lam) · max_{i chosen}
    sim(i, j)] over the valid items not chosen yet, ties to the lower column (incoming order).
    sim = w_cat·[same cat] + w_brand·[same known brand] + w_emb·[same cluster >= 0]. After m
    picks the other valid items follow by descending rel (stable), PAD last. Valid items with a
    non-finite rel are never picked: they follow the finite ones in incoming order. Rows with
    movable False keep the identity. Returns the (n, W) int64 column permutation.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    w_cat, w_brand, w_emb = _check_weights(weights)
    if rel.shape != items.shape:
        raise ValueError(f"rel {rel.shape} and items {items.shape} must have one shape")
    n, width = items.shape
    rows = _movable_rows(movable, n)
    if len(rows) == 0 or width == 0:
        return _identity(n, width)
    every = len(rows) == n
    it = items if every else items[rows]
    r = np.asarray(rel if every else rel[rows], dtype=np.float64)
    nr = len(rows)
    valid = it != PAD
    ok = valid & np.isfinite(r)
    steps = min(m, width)
    n_pick = np.minimum(ok.sum(axis=1), steps)
    picks = np.zeros((nr, steps), dtype=np.int64)
    base = np.arange(nr, dtype=np.int64) * width
    scored = np.where(ok, r, -np.inf)
    if steps:
        picks[:, 0] = np.argmax(scored, axis=1)
    # only the similarity terms with a weight matter; lam = 1 needs none
    terms = [
        (_keys(arr, it, unknown), term_weight)
        for arr, unknown, term_weight in (
            (item_cat, False, w_cat),
            (item_brand, True, w_brand),
            (item_cluster, True, w_emb),
        )
        if term_weight > 0 and lam < 1 and steps > 1
    ]
    if terms:
        _mmr_picks(picks, r, ok, terms, lam, steps)
    elif steps > 1:  # no similarity term: MMR is the plain sort, done below
        n_pick = np.zeros_like(n_pick)

    # chosen columns sort first (key -inf), then finite rel descending, non-finite, PAD (NaN)
    key = np.negative(scored, out=scored)
    key[~valid] = np.nan
    picked = np.arange(steps)[None, :] < n_pick[:, None]
    key.reshape(-1)[(base[:, None] + picks)[picked]] = -np.inf
    rest = np.argsort(key, axis=1, kind="stable")
    rest[:, :steps] = np.where(picked, picks, rest[:, :steps])
    if every:
        return rest
    order = _identity(n, width)
    order[rows] = rest
    return order


def _mmr_picks(
    picks: np.ndarray,
    r: np.ndarray,
    ok: np.ndarray,
    terms: list[tuple[np.ndarray, float]],
    lam: float,
    steps: int,
) -> None:
    """MMR picks 2..steps into `picks` (pick 1 is set): each step the eligible item of highest
    lam · rel − (1 − lam) · max similarity to the chosen ones (`terms`: key matrix, weight)."""
    nr, width = r.shape
    base = np.arange(nr, dtype=np.int64) * width
    # (1 - lam) * sim for each pattern of matches (bit t = term t matches): the max over
    # chosen items of (1 - lam) * sim equals (1 - lam) * max sim exactly (rounding is monotone)
    table = np.zeros(1 << len(terms))
    for code in range(len(table)):
        sim = 0.0
        for t, (_, term_weight) in enumerate(terms):
            sim = sim + term_weight * float(code >> t & 1)
        table[code] = (1.0 - lam) * sim
    gain = np.full((nr, width), -np.inf)  # lam * rel, -inf once chosen or never eligible
    np.multiply(r, lam, out=gain, where=ok)
    flat = gain.reshape(-1)
    penalty = np.zeros((nr, width))
    step_pen = np.empty((nr, width))
    code = np.empty((nr, width), dtype=np.uint8)
    bit = np.empty((nr, width), dtype=np.uint8)
    for s in range(1, steps):
        at = base + picks[:, s - 1]  # flat index of the item chosen last
        flat[at] = -np.inf
        for t, (key, _) in enumerate(terms):
            chosen = key.reshape(-1)[at][:, None]
            if t == 0:
                np.equal(key, chosen, out=code.view(bool))
            else:
                np.equal(key, chosen, out=bit.view(bool))
                np.multiply(bit, np.uint8(1 << t), out=bit)  # faster than a shift
                np.bitwise_or(code, bit, out=code)
        np.take(table, code, out=step_pen, mode="clip")
        np.maximum(penalty, step_pen, out=penalty)
        np.subtract(gain, penalty, out=step_pen)
        picks[:, s] = np.argmax(step_pen, axis=1)


def brand_run_rule(
    items: np.ndarray,
    *,
    item_brand: np.ndarray,  # int (n_items,), -1 = unknown
    k: int,
    movable: np.ndarray,  # bool (n,)
) -> np.ndarray:
    """Zalando's brand-diversity rule: scanning left to right, after k consecutive items of one
    known brand, the first item further right of another brand (unknown counts as another) is
    pulled forward to the next position, the items in between shift one right. When no such
    item remains the row is left as is from there. k = 0 disables the rule. Rows with movable
    False keep the identity. Returns the (n, W) int64 column permutation of the given order.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n, width = items.shape
    order = _identity(n, width)
    rows = _movable_rows(movable, n)
    if k == 0 or width <= k or len(rows) == 0:
        return order
    # state is kept position-major, (W, rows): a position's column is then a contiguous row
    it = np.ascontiguousarray(items[rows].T)
    valid = it != PAD
    # brand in the current order: >= 0 known, -1 unknown, -2 PAD (never pulled forward)
    brand = _keys(item_brand, it, False)
    brand = np.where(valid, np.maximum(brand, -1), -2).astype(brand.dtype, copy=False)
    nr = len(rows)
    perm = np.repeat(np.arange(width, dtype=np.int64)[:, None], nr, axis=1)
    run_brand = np.full(nr, -1, dtype=brand.dtype)
    run_len = np.zeros(nr, dtype=np.int64)
    active = np.ones(nr, dtype=bool)
    pos = np.arange(width, dtype=np.int64)[:, None]
    for p in range(width):
        cur = brand[p]
        need = (run_len >= k) & (cur == run_brand) & active
        if need.any():
            idx = np.flatnonzero(need)
            seg = brand[p + 1 :, idx]
            other = (seg != run_brand[idx]) & (seg != -2)
            found = other.any(axis=0)
            active[idx[~found]] = False  # nothing left to pull: the row stays as it is
            idx = idx[found]
            if len(idx):
                q = p + 1 + np.argmax(other[:, found], axis=0)
                # rotate positions p..q right by one: q comes to p, p..q-1 shift to p+1..q
                src = pos - ((pos > p) & (pos <= q))
                src[p] = q
                perm[:, idx] = np.take_along_axis(perm[:, idx], src, axis=0)
                brand[:, idx] = np.take_along_axis(brand[:, idx], src, axis=0)
                cur = brand[p]
        same = (cur == run_brand) & (cur >= 0)
        run_len = np.where(same, run_len + 1, cur >= 0)
        run_brand = cur.copy()
    order[rows] = perm.T
    return order
