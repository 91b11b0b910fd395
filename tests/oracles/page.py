"""Page assembly: order carousels into slots and fill them with items.

Rules that always hold on a built page: no item appears twice; two adjacent slots never share a
family; a carousel left with fewer than `min_items` unused items is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ranking.candidates import PAD


@dataclass(frozen=True)
class PlacedCarousel:
    candidate: int  # row in the batch's candidate table
    slot: int  # 1 = top
    items: np.ndarray  # item indices, left to right


def assemble_page(
    *,
    order: np.ndarray,  # candidate rows of one user, best first
    families: list[str],
    items: np.ndarray,  # (n_c, W) candidate item matrix
    slots: int,
    per_carousel: int,
    min_items: int,
) -> list[PlacedCarousel]:
    """Greedy slot filling under the family-adjacency and no-duplicate rules.

    Each slot takes the best remaining carousel whose family differs from the slot above and
    that still has at least `min_items` items not used higher up the page.
    """
    used: set[int] = set()
    remaining = list(order)
    page: list[PlacedCarousel] = []
    prev_family: str | None = None
    while len(page) < slots and remaining:
        chosen = None
        for pos, j in enumerate(remaining):
            if families[j] == prev_family:
                continue
            row = items[j]
            fresh = [int(i) for i in row if i != PAD and int(i) not in used]
            if len(fresh) >= min_items:
                chosen = (pos, j, fresh[:per_carousel])
                break
        if chosen is None:
            break
        pos, j, fresh = chosen
        remaining.pop(pos)
        used.update(fresh)
        page.append(
            PlacedCarousel(candidate=j, slot=len(page) + 1, items=np.asarray(fresh, dtype=np.int64))
        )
        prev_family = families[j]
    return page
