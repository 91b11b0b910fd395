"""Scoring a batch of users and building their pages (docs/methods.md §1–5), vectorised over the batch.

`score_batch` (models.ranking.batch_scoring) does the work that does not depend on w:
  1. candidate carousels from every source (curated, buy it again, trending, category affinity,
     discover, your top brands, new in your categories; in "rerank" mode also "picked for you":
     the user's whole pool by calibrated engagement, `sources.picked_for_you`);
  2. each carousel's item order — the policy layer for items: relevance from the combined
     calibrated engagement score ("rerank") or the source's order ("fixed"); business rules
     (penalise items without an image, down-rank recent purchases in non-repeat categories);
     maximal marginal relevance; the same-brand run rule. Immutable carousels keep their order;
  3. λ (and the Beta a, b), α and γ per candidate, and what carousel similarity needs.

`build_pages` (here) then orders carousels for any w: φ = w·α + (1 − w)·γ, calibrated to the carousel's
engagement probability q; each user's best `candidate_carousels` candidates by φ go on (however
many curated carousels come in) to slot assignment by beam search (or Thompson sampling for a
share of users), page assembly with de-duplication, and epsilon-greedy exploration of new items
(never in the rows that promise the user's own history, "Buy it again": `HISTORY_FAMILIES`);
every placement carries its propensity. With `slot_order="value"` and calibrated item scores ("rerank"
mode) the deterministic users' slots are instead filled greedily, each with the feasible carousel
whose items not yet on the page have the largest total score (the most expected engagements), so
de-duplication is part of the choice; the beam plan only breaks ties. In "fixed" mode the item
scores are r̂, not probabilities, and the beam order is kept. A grid search over w scores each batch once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.ranking.catalog import PAD
from models.ranking.exploration import explore_new_items
from models.ranking.policy import (
    AssembledPages,
    ThompsonInputs,
    assemble,
    beam_plan,
    user_table,
)
from models.ranking.rank_inputs import PageParams
from models.ranking.scored_batch import ScoredBatch
from models.ranking.scoring import carousel_score

PAGE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "slot",
    "carousel_id",
    "carousel_title",
    "family",
    "carousel_score",
    "item_rank",
    "item_id",
    "item_score",
    "reason",
    "propensity",
)
DEFAULT_EXAM = 1.0 / np.log2(1.0 + np.arange(1, 21))  # slot examination when none is estimated
# carousel families that promise items the user bought: exploration leaves them alone (a new item
# the user never bought has no place in "Buy it again", and their cells are the page's most
# valuable: each holds about a fifth of a repeat purchase on Instacart)
HISTORY_FAMILIES = ("buy_again",)


@dataclass
class PageBatch:
    frame: pd.DataFrame  # PAGE_COLUMNS, one row per shown item
    stats: pd.DataFrame  # user_id, slots, exhausted


def _squash(x: np.ndarray) -> np.ndarray:
    """Uncalibrated fallback q = 1 / (1 + e^−φ): monotone in φ and independent of the batch."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def user_keys(users: np.ndarray) -> np.ndarray:
    """uint64 key of each user's random stream (with the day's seed: Thompson draws, exploration)."""
    return pd.util.hash_array(np.asarray(users, dtype=object), hash_key="homepage-streams")


def _hash_share(users: np.ndarray, share: float, seed: int) -> np.ndarray:
    if share <= 0:
        return np.zeros(len(users), dtype=bool)
    h = pd.util.hash_array(np.asarray(users, dtype=object), hash_key=f"thompson{seed:08d}"[:16])
    return (h % np.uint64(1_000_000)) < np.uint64(int(round(share * 1_000_000)))


def build_pages(
    scored: ScoredBatch,
    w: float,
    params: PageParams,
    item_ids: np.ndarray,
    *,
    exam: np.ndarray | None = None,
    calibration: Callable[[np.ndarray], np.ndarray] | None = None,
    randomise: bool = False,
    seed: int = 0,
    categorical: bool = False,
) -> PageBatch:
    """Each user's page in the export's row format, for this w.

    `categorical`: string columns as pandas categoricals over per-batch vocabularies (no per-row
    Python strings: what the rank job streams to Parquet); plain object columns otherwise.

    q = calibration(φ) is the carousel's engagement probability (without a calibration, the
    logistic function of φ: the same order, not a fitted probability). `randomise` switches
    on Thompson sampling for `thompson_share` of users and epsilon-greedy new items; `seed` (the
    day's) and each user's key (`user_keys`) pick the user's random stream, so a user's page is
    the same whichever batch it is built in (an intra-day refresh rebuilds pages one by one).
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"w must be in [0, 1], got {w}")
    n_users = len(scored.users)
    if not len(scored.cands.user):
        return _no_pages(scored.users)
    exam = DEFAULT_EXAM if exam is None else exam
    phi = carousel_score(scored.alpha, scored.gamma, w)
    tab, fam, q_t = _candidate_table(scored, phi, calibration, params.candidate_carousels)
    has = tab >= 0
    t = np.maximum(tab, 0)
    plan, _ = beam_plan(
        q_t,
        fam,
        exam,
        slots=params.slots,
        width=params.beam_width,
        start=params.beam_start,
        sim=_carousel_similarity(scored, t, params),
        lam=params.carousel_lambda,
    )
    prio = _slot_priority(plan, has, q_t, params.slots)
    pools = np.where(has[:, :, None], scored.items[t], PAD)
    values = _slot_values(scored, pools, t, params.slot_order)
    thompson = None
    personal = scored.reason_override is None
    ukeys = user_keys(scored.users) if randomise and personal else None
    if randomise and personal and params.thompson_share > 0:
        thompson = _thompson_inputs(scored, w, has, t, params, seed, ukeys, values is not None)
    out = assemble(
        pools,
        fam,
        prio,
        slots=params.slots,
        per_carousel=params.items_per_carousel,
        min_items=params.min_items,
        thompson=thompson,
        values=values,
    )
    rows = np.arange(n_users)
    placed = np.where(out.column >= 0, tab[rows[:, None], np.maximum(out.column, 0)], -1)
    items = out.items
    item_prop = np.ones(items.shape)
    explored = np.zeros(items.shape, dtype=bool)
    if randomise and personal and params.explore_epsilon > 0:
        items, item_prop, explored = _explore(scored, placed, items, params, ukeys, seed)
    frame = _page_rows(scored, placed, items, item_prop, explored, out, phi, item_ids)
    stats = pd.DataFrame(
        {"user_id": scored.users, "slots": out.n_slots.astype(np.int64), "exhausted": out.exhausted}
    )
    if not categorical:
        for c in ("user_id", "carousel_id", "carousel_title", "family", "item_id", "reason"):
            frame[c] = frame[c].astype(object)
    return PageBatch(frame, stats)


def _no_pages(users: np.ndarray) -> PageBatch:
    """The pages of a batch without candidates: no rows, every user exhausted at 0 slots."""
    return PageBatch(
        pd.DataFrame({k: [] for k in PAGE_COLUMNS}),
        pd.DataFrame({"user_id": users, "slots": np.zeros(len(users), int), "exhausted": True}),
    )


def _slot_values(
    scored: ScoredBatch, pools: np.ndarray, t: np.ndarray, slot_order: str
) -> np.ndarray | None:
    """Each pool item's value for value-ordered slots (calibrated scores only), else None."""
    if slot_order not in ("beam", "value"):
        raise ValueError(f"slot_order must be 'beam' or 'value', got {slot_order!r}")
    if slot_order == "value" and scored.calibrated:
        return np.where(pools != PAD, np.maximum(scored.item_scores[t], 0.0), 0.0)
    return None


def _candidate_table(
    scored: ScoredBatch,
    phi: np.ndarray,
    calibration: Callable[[np.ndarray], np.ndarray] | None,
    keep: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, C) each user's best `keep` candidate rows by φ, best first (-1 padded), their family
    codes (-1: none) and their engagement probability q = calibration(φ) (NaN: none). Only these
    reach the plan and the assembly, however many carousels (curated ones) each user has."""
    cands = scored.cands
    q = calibration(phi) if calibration is not None else _squash(phi)
    q = np.clip(np.nan_to_num(q, nan=0.0), 0.0, 1.0)
    tab = user_table(np.asarray(cands.user, dtype=np.int64), len(scored.users))
    # each user's candidates by φ, best first (ties in q then favour the higher φ)
    tab = np.take_along_axis(
        tab, np.argsort(np.where(tab >= 0, -phi[np.maximum(tab, 0)], np.inf), axis=1), axis=1
    )[:, :keep]
    has = tab >= 0
    t = np.maximum(tab, 0)
    _, fam_code = np.unique(cands.family.astype(str), return_inverse=True)
    return tab, np.where(has, fam_code[t], -1), np.where(has, q[t], np.nan)


def _carousel_similarity(
    scored: ScoredBatch, t: np.ndarray, params: PageParams
) -> np.ndarray | None:
    """(B, C, C) similarity of each user's candidates (MF factors, category, brand), or None
    when carousel MMR is off (λ = 1)."""
    if params.carousel_lambda >= 1.0:
        return None
    wc, wb, we = params.similarity_weights
    v = scored.cvec[t]
    cos = np.clip(np.einsum("bik,bjk->bij", v, v), 0.0, 1.0)
    cc, cb = scored.ccat[t], scored.cbrand[t]
    return (
        we * cos
        + wc * (cc[:, :, None] == cc[:, None, :])
        + wb * ((cb[:, :, None] == cb[:, None, :]) & (cb[:, :, None] >= 0))
    )


def _slot_priority(plan: np.ndarray, has: np.ndarray, q_t: np.ndarray, slots: int) -> np.ndarray:
    """(B, C) preference order for `assemble`: the plan's slots first, the rest by q."""
    q_rank = np.argsort(np.argsort(np.where(has, -q_t, np.inf), axis=1, kind="stable"), axis=1)
    prio = np.where(has, slots + q_rank, np.nan).astype(np.float64)
    rows = np.arange(len(plan))
    for s in range(slots):
        ok = plan[:, s] >= 0
        prio[rows[ok], plan[ok, s]] = s
    return prio


def _thompson_inputs(
    scored: ScoredBatch,
    w: float,
    has: np.ndarray,
    t: np.ndarray,
    params: PageParams,
    seed: int,
    ukeys: np.ndarray | None,
    by_value: bool,
) -> ThompsonInputs:
    """φ = slope · λ + intercept per (user, candidate), for Thompson users' draws of λ."""
    lam = np.maximum(scored.lam, 1e-12)
    return ThompsonInputs(
        users=_hash_share(scored.users, params.thompson_share, seed),
        a=np.where(has, scored.a[t], 1.0),
        b=np.where(has, scored.b[t], 1.0),
        slope=np.where(has, (w * scored.alpha / lam)[t], 0.0),
        intercept=np.where(has, ((1.0 - w) * scored.gamma)[t], 0.0),
        draws=params.thompson_draws,
        seed=seed,
        keys=ukeys,
        value_scale=np.where(has, 1.0 / lam[t], 0.0) if by_value else None,
    )


def _explore(
    scored: ScoredBatch,
    placed: np.ndarray,
    items: np.ndarray,
    params: PageParams,
    ukeys: np.ndarray | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epsilon-greedy new items in the placed carousels whose order may change (not fixed, not
    the user's own history): (items, per-position propensity, explored flags)."""
    cands = scored.cands
    kept = cands.fixed_order | np.isin(cands.family.astype(str), HISTORY_FAMILIES)
    movable = (placed >= 0) & ~kept[np.maximum(placed, 0)]
    return explore_new_items(
        items,
        movable,
        scored.new_pool,
        np.where(np.isfinite(scored.new_score), scored.new_score, 0.0),
        epsilon=params.explore_epsilon,
        start=params.explore_from,
        user_keys=ukeys,
        seed=seed,
    )


def _page_rows(
    scored: ScoredBatch,
    placed: np.ndarray,
    items: np.ndarray,
    item_prop: np.ndarray,
    explored: np.ndarray,
    out: AssembledPages,
    phi: np.ndarray,
    item_ids: np.ndarray,
) -> pd.DataFrame:
    """One row per shown item (PAGE_COLUMNS), string columns as categoricals."""
    cands = scored.cands
    b_i, s_i, l_i = np.nonzero(items != PAD)
    j = placed[b_i, s_i]
    item = items[b_i, s_i, l_i]
    # an item's score from its carousel's row (organic items may have moved right)
    pos = np.argmax(scored.items[j] == item[:, None], axis=1)
    shown_score = scored.item_scores[j, pos]
    ex = explored[b_i, s_i, l_i]
    if ex.any():
        hit = scored.new_pool[b_i[ex]] == item[ex][:, None]
        shown_score[ex] = scored.new_score[b_i[ex], np.argmax(hit, axis=1)]
    reasons = (
        np.full(len(cands.reason), scored.reason_override, dtype=object)
        if scored.reason_override
        else cands.reason
    )
    reason = _codes(np.append(reasons, "explore"), np.where(ex, len(reasons), j))
    # string columns are categoricals over per-batch vocabularies: no per-row Python objects
    # item ranks are 1..n within each placed carousel (slots are contiguous from 1)
    return pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(b_i, _unique(scored.users)),
            "slot": (s_i + 1).astype(np.int32),
            "carousel_id": _codes(cands.carousel_id, j),
            "carousel_title": _codes(cands.title, j),
            "family": _codes(cands.family, j),
            "carousel_score": phi[j],
            "item_rank": (l_i + 1).astype(np.int32),
            "item_id": pd.Categorical.from_codes(item, _unique(item_ids)),
            "item_score": shown_score.astype(np.float64),
            "reason": reason,
            "propensity": out.slot_propensity[b_i, s_i] * item_prop[b_i, s_i, l_i],
        }
    )


def _unique(values: np.ndarray) -> pd.Index:
    """`values` as categories; they must already be distinct (user ids, item ids)."""
    idx = pd.Index(np.asarray(values, dtype=object))
    if not idx.is_unique:
        raise ValueError("page keys must be distinct")
    return idx


def _codes(values: np.ndarray, rows: np.ndarray) -> pd.Categorical:
    """values[rows] as a categorical (one hash per distinct value, not per row)."""
    codes, uniq = pd.factorize(np.asarray(values, dtype=object))
    return pd.Categorical.from_codes(codes[rows], uniq)


def pages(
    scored: ScoredBatch,
    w: float,
    params: PageParams,
    item_ids: np.ndarray,
    **kwargs: Any,
) -> pd.DataFrame:
    """`build_pages(...).frame`: the page rows only."""
    return build_pages(scored, w, params, item_ids, **kwargs).frame
