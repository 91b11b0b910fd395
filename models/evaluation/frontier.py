"""The recall frontier of the two grocery baselines mixed, and where a page set sits against it.

Personal top frequency spends every cell on the user's history and popularity spends every
cell on best sellers: one maximises page recall (most of what a grocery shopper buys is a
repeat), the other explore recall. Mixing them traces what a page of the same size gets
without any model: with k history cells, a user's page holds their k most-bought items, then
the most popular items they never bought, as many cells as the pipeline shows that user
(`models.evaluation.baselines.top_frequency_pages(history_cells=k)`).

    frontier        one row per k: history_cells, page_recall, explore_recall, repeat_recall
                    (means over users, `models.evaluation.page_eval`)
    explore_at      the frontier's explore recall at a given page recall, linear between
                    neighbouring points of the frontier sorted by page recall (NaN outside it)
    dominance       whether one policy beats others on every listed metric, and where not

A page set above the curve (more explore recall at the same page recall) does better than a
fixed mix of the baselines; a page set that beats both baselines on both recalls must lie
above the curve at least as far as the baselines' own points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

COLUMNS = ("history_cells", "page_recall", "explore_recall", "repeat_recall")


def history_steps(max_cells: int, step: int) -> list[int]:
    """0, step, 2·step, ... up to and including `max_cells`."""
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    ks = list(range(0, max(0, max_cells) + 1, step))
    if ks[-1] != max_cells and max_cells > 0:
        ks.append(max_cells)
    return ks


def frontier(
    build: Callable[[int], pd.DataFrame],
    score: Callable[[pd.DataFrame], Mapping[str, float]],
    steps: Iterable[int],
) -> pd.DataFrame:
    """Score the mixed pages `build(k)` for each k in `steps` (`score` returns mean metrics)."""
    rows = []
    for k in steps:
        s = score(build(k))
        rows.append({"history_cells": int(k), **{c: float(s[c]) for c in COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def explore_at(front: pd.DataFrame, page_recall: float) -> float:
    """The frontier's explore recall at `page_recall` (linear interpolation; NaN outside)."""
    f = front.dropna(subset=["page_recall", "explore_recall"]).sort_values("page_recall")
    x = f["page_recall"].to_numpy(np.float64)
    y = f["explore_recall"].to_numpy(np.float64)
    if len(x) == 0 or not np.isfinite(page_recall) or page_recall < x[0] or page_recall > x[-1]:
        return float("nan")
    return float(np.interp(page_recall, x, y))


def dominance(
    summary: Mapping[str, Mapping[str, float]],
    policy: str,
    others: Sequence[str],
    metrics: Sequence[str],
) -> dict[str, object]:
    """Does `policy` beat every one of `others` on every metric (strictly, means)?

    `summary[name][metric]` holds the means. Returns {"met": bool, "short": [...]} with one
    entry per (other, metric) where it does not, naming both values."""
    short = []
    for other in others:
        for m in metrics:
            a, b = float(summary[policy][m]), float(summary[other][m])
            if not (np.isfinite(a) and np.isfinite(b) and a > b):
                short.append({"baseline": other, "metric": m, "policy": a, "value": b})
    return {"met": not short, "short": short}
