"""Ranked item lists over score columns, vectorised over rows: each row's k best columns
(`top_k_rows`, and the exact, faster `best_first`/`top_k_fast` that candidate generation uses),
one shared list ranked by every user's scores, and per-user lists packed into a matrix."""

from __future__ import annotations

import numpy as np

from models.ranking.catalog import PAD


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first (-inf entries are never chosen)."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, idx, axis=1)), idx, PAD)


def item_columns(items: np.ndarray, col_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score column of each item index (0 where unusable) and whether it is usable (not PAD,
    has a column)."""
    col = col_of[np.where(items >= 0, items, 0)]
    ok = (items >= 0) & (col >= 0)
    return np.where(ok, col, 0), ok


_INF_KEY = np.array([np.inf]).view(np.int64)[0]  # the sort key of -(-inf), see best_first


def best_first(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of s (M, L) (-inf = left out; no NaN): the positions of its n best entries by
    descending score, equal scores in position order (exactly what a stable argsort of -s
    gives), PAD-padded to (M, n); and how many there are (M,)."""
    m, length = s.shape
    if n <= 0:
        return np.empty((m, 0), dtype=np.int64), np.zeros(m, dtype=np.int64)
    if length == 0:
        return np.full((m, n), PAD, dtype=np.int64), np.zeros(m, dtype=np.int64)
    # Sort one int64 key per entry, much faster than an argsort: the bits of -s (best first;
    # 0.0 - (-0.0) = 0.0) made order-preserving, with the low `bits` replaced by the position.
    # Only entries whose truncated scores collide can come out in the wrong order; rows where
    # that happens within the first n + 1 are sorted again, stably: the result is exact.
    key = np.subtract(0.0, s, dtype=np.float64).view(np.int64)
    sign = key >> 63  # -1 where negative: flip the magnitude bits there
    sign &= np.int64(0x7FFFFFFFFFFFFFFF)
    key ^= sign
    bits = max(int(length - 1).bit_length(), 1)
    low = np.int64((1 << bits) - 1)
    key &= ~low
    key |= np.arange(length, dtype=np.int64)
    key.sort(axis=1)
    head = key[:, : n + 1]
    top = head & low
    high = head >> bits
    inf_high = _INF_KEY >> bits  # a left-out entry (the largest finite key is below it)
    clash = (high[:, 1:] == high[:, :-1]) & (high[:, 1:] < inf_high)
    redo = np.flatnonzero(clash.any(axis=1))
    if len(redo):
        top[redo] = np.argsort(-s[redo], axis=1, kind="stable")[:, : n + 1]
        high[redo] = np.where(s[redo] > -np.inf, 0, inf_high)[
            np.arange(len(redo))[:, None], top[redo]
        ]
    keep = high[:, :n] < inf_high  # the left-out ones sort last
    best = np.where(keep, top[:, :n], PAD)
    if best.shape[1] < n:
        best = np.concatenate([best, np.full((m, n - best.shape[1]), PAD, np.int64)], axis=1)
    return best, keep.sum(axis=1)


def top_k_fast(scores: np.ndarray, k: int) -> np.ndarray:
    """`top_k_rows(scores, k)`, the same output, faster: rows whose k + 1 best are distinct and
    whose scores are finite or -inf have one answer, taken from `best_first`; the others (equal
    scores, where `top_k_rows`'s argpartition picks, or +inf/NaN) go through `top_k_rows`."""
    m, width = scores.shape
    k = min(k, width)
    if k <= 0 or m == 0:
        return np.empty((m, max(k, 0)), dtype=np.int64)
    s = scores.astype(np.float64, copy=False)
    odd = (np.isnan(s) | (s == np.inf)).any(axis=1)
    s = np.where(odd[:, None], -np.inf, s)  # those rows are redone below
    best, _ = best_first(s, k + 1)
    vals = np.where(best >= 0, np.take_along_axis(s, np.maximum(best, 0), axis=1), -np.inf)
    tied = ((vals[:, 1:] == vals[:, :-1]) & (vals[:, 1:] > -np.inf)).any(axis=1)
    out = best[:, :k].copy()
    redo = np.flatnonzero(tied | odd)
    if len(redo):
        out[redo] = top_k_rows(scores[redo], k)
    return out


def shared_list(
    scores: np.ndarray, items: np.ndarray, col_of: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One item list ranked by every user's scores: (B, n) items and (B,) counts."""
    items = np.asarray(items, dtype=np.int64)
    col, ok = item_columns(items, col_of)
    s = np.fmax(np.take(scores, col, axis=1), -np.inf)  # NaN -> -inf
    s[:, ~ok] = -np.inf
    best, count = best_first(s, n)
    return np.where(best >= 0, items[np.maximum(best, 0)] if len(items) else PAD, PAD), count


def usable_counts(
    scores: np.ndarray, pools: np.ndarray, pcol: np.ndarray, pok: np.ndarray
) -> np.ndarray:
    """Per user and category: the pool items with a column and a score > -inf, (B or 1, n_cats).
    Only the pool entries whose column is -inf/NaN for some user are looked at per user."""
    col_ok = scores.min(axis=0) > -np.inf  # False also where a NaN is
    sure = pok & col_ok[pcol]
    counts = sure.sum(axis=1)[None, :]
    unsure = pok & ~col_ok[pcol]
    if not unsure.any():
        return counts
    uc, up = np.nonzero(unsure)  # row-major: uc is sorted
    fin = (scores[:, pcol[uc, up]] > -np.inf).astype(np.int64)
    cats, starts = np.unique(uc, return_index=True)
    counts = np.repeat(counts, scores.shape[0], axis=0)
    counts[:, cats] += np.add.reduceat(fin, starts, axis=1)
    return counts


def pack_lists(lists: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user item lists (e.g. buy again, most bought first) packed into (B, n), their first
    n items PAD-padded, and their full lengths (B,)."""
    b = len(lists)
    lens = np.fromiter((len(a) for a in lists), dtype=np.int64, count=b)
    out = np.full((b, n), PAD, dtype=np.int64)
    if not b or not lens.sum() or not n:
        return out, lens
    flat = np.concatenate([np.asarray(a).reshape(-1) for a in lists]).astype(np.int64)
    starts = np.cumsum(lens) - lens
    pos = np.arange(n)[None, :]
    take = pos < lens[:, None]
    out[take] = flat[(starts[:, None] + pos)[take]]
    return out, lens
