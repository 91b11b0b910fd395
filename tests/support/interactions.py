"""Tiny known-answer interaction data shared by the trainer tests (single-node and Spark)."""

from __future__ import annotations

import numpy as np


def checkerboard_ids(n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Even users like even items, odd users like odd items, some liked cells held out: the
    (user id, item id) pairs as object arrays ("u00", "i00", ...)."""
    users, items = [], []
    for u in range(n_users):
        for i in range(n_items):
            if (u + i) % 2 == 0 and (u * 7 + i) % 5 != 0:
                users.append(f"u{u:02d}")
                items.append(f"i{i:02d}")
    return np.array(users, dtype=object), np.array(items, dtype=object)
