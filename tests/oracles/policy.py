"""The exact optimum of the page objective J by enumeration: the reference `beam_plan` is checked
against on small cases."""

from __future__ import annotations

from itertools import permutations

import numpy as np

from models.ranking.policy import slot_exam


def brute_force_plan(
    q: np.ndarray, family: np.ndarray, exam: np.ndarray, *, slots: int
) -> tuple[tuple[int, ...], float]:
    """The exact optimum of J for ONE user (q, family of shape (C,)) by enumeration; for tests
    and small checks only (C!/(C−Z)! orders)."""
    q = np.asarray(q, dtype=np.float64)
    valid = [j for j in range(len(q)) if np.isfinite(q[j])]
    e = slot_exam(exam, slots)
    best: tuple[tuple[int, ...], float] = ((), 0.0)
    for z in range(1, min(slots, len(valid)) + 1):
        for perm in permutations(valid, z):
            if any(family[perm[i]] == family[perm[i + 1]] for i in range(z - 1)):
                continue
            v = 1.0 - float(np.prod([1.0 - e[i] * q[j] for i, j in enumerate(perm)]))
            if v > best[1] + 1e-15:
                best = (perm, v)
    return best
