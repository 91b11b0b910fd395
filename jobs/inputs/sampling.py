"""Vectorised sampling helpers of the generator: categorical draws per row, draws of a group's
member by weight, and de-duplication within rows."""

from __future__ import annotations

import numpy as np


def categorical_rows(rng: np.random.Generator, probs: np.ndarray, k: int) -> np.ndarray:
    """k independent draws from each row's categorical distribution; shape (rows, k)."""
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    r = rng.random((probs.shape[0], k))
    return (r[:, :, None] > cum[:, None, :]).sum(-1).astype(np.int32)


class GroupSampler:
    """Draw one member of a given group with probability proportional to its weight.

    Vectorised over draws: members are sorted by group, and one `searchsorted` on the global
    cumulative weight finds the member for every draw at once.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        order = np.argsort(groups, kind="stable")
        sorted_groups = groups[order]
        self._members = order
        self._cum = np.cumsum(weights[order].astype(np.float64))
        self._start = np.searchsorted(sorted_groups, np.arange(n_groups), side="left")
        self._end = np.searchsorted(sorted_groups, np.arange(n_groups), side="right")
        self._base = np.concatenate([[0.0], self._cum])[self._start]
        self._total = np.bincount(groups, weights=weights, minlength=n_groups)

    def sample(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """One member per entry of `groups` (-1 where the group has no weight)."""
        groups = np.asarray(groups)
        if self._members.size == 0:
            return np.full(groups.shape, -1, np.int64)
        target = self._base[groups] + rng.random(groups.shape) * self._total[groups]
        pos = np.searchsorted(self._cum, target, side="right")
        pos = np.clip(pos, self._start[groups], np.maximum(self._end[groups] - 1, 0))
        return np.where(self._total[groups] > 0, self._members[pos], -1)


def dedupe_rows(rows: np.ndarray) -> np.ndarray:
    """Replace repeated values within each row by -1 (keeps the first occurrence's slot)."""
    order = np.argsort(rows, axis=1, kind="stable")
    sorted_rows = np.take_along_axis(rows, order, 1)
    dup_sorted = np.zeros_like(sorted_rows, dtype=bool)
    dup_sorted[:, 1:] = (sorted_rows[:, 1:] == sorted_rows[:, :-1]) & (sorted_rows[:, 1:] >= 0)
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, 1)
    return np.where(dup, -1, rows)
