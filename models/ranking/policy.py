"""Page policy: which carousel goes in which slot, vectorised over a batch of users.

docs/methods.md §2 (eBay): a page's value is the probability of at least one engagement,

    J(π) = 1 − Π_s (1 − P(engage | π_s, s)),   P(engage | k, s) = e_s · q_k

with e_s the slot examination propensity (position-based click model, estimated by the feature
stage) and q_k the carousel's engagement probability when examined. Two modules of one family
never sit in consecutive slots. `beam_plan` searches slot assignments with a beam of width W
(W = 1 is greedy), optionally filling the slots above `start` greedily first ("starting the beam
search at a later slot did better online").

docs/methods.md §5 (MMR) for carousels: a carousel similar to one already placed higher adds less,
q̃_k = q_k · (1 − (1 − λ) · max_{i placed} sim(k, i)); λ = 1 switches diversity off. This is MMR's
trade-off applied multiplicatively, so the page objective stays a probability.

`assemble` then walks each user's preference order (the plan first, the rest by q) and fills the
slots under the page rules: no item twice on a page (a carousel takes its first M items not shown
higher up, deeper candidates fill the gaps), no carousel with fewer than `min_items` items left,
no two adjacent slots of one family. For a share of users, Thompson sampling replaces the plan:
each slot takes the feasible carousel with the highest φ under a fresh draw of λ ~ Beta(a, b)
(docs/methods.md §1 future work, §2 data collection), and the probability of that choice given the slots
above is estimated from `draws` Monte Carlo draws and logged as the placement's propensity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ranking.catalog import PAD

NO_FAMILY = -2  # the "family" above slot 1: differs from every real family code (>= 0)
# the beam keeps each state's set of used candidates as one uint64 bitmask: the most candidate
# carousels per user the plan takes (build_pages keeps each user's best PageParams.candidate_carousels)
MAX_PLAN_CANDIDATES = 63
_EPS = 1e-12


@dataclass(frozen=True)
class ThompsonInputs:
    """Per (user, candidate) pieces of φ = w·α + (1 − w)·γ with α = λ · relevance, so a draw of λ
    gives a draw of φ. Arrays are (B, C), aligned with the batch's candidate table."""

    users: np.ndarray  # bool (B,): users whose page is built by Thompson sampling
    a: np.ndarray  # Beta posterior a of λ_uk
    b: np.ndarray  # Beta posterior b of λ_uk
    slope: np.ndarray  # w · Σ_l r̂ / log(1 + l)   (φ = slope · λ + intercept)
    intercept: np.ndarray  # (1 − w) · γ
    draws: int = 256
    seed: int = 0
    keys: np.ndarray | None = None  # uint64 (B,) per-user random stream keys (None: row index)
    # with value-ordered slots: 1 / λ̄_uk, so a draw of the carousel's value (the expected
    # engagements of the items it would show) is value · λ / λ̄ (None: sample φ as above)
    value_scale: np.ndarray | None = None


def user_table(cu: np.ndarray, n_users: int) -> np.ndarray:
    """(B, C) table of candidate rows per batch user (rows sorted by user), -1 padded."""
    cu = np.asarray(cu, dtype=np.int64)
    if len(cu) and np.any(np.diff(cu) < 0):
        raise ValueError("candidate rows must be sorted by user")
    counts = np.bincount(cu, minlength=n_users)
    width = int(counts.max()) if len(cu) else 0
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(cu)) - start[cu]
    out = np.full((n_users, max(width, 1)), -1, dtype=np.int64)
    out[cu, col] = np.arange(len(cu))
    return out


def page_value(q_seq: np.ndarray, exam: np.ndarray) -> np.ndarray:
    """J = 1 − Π_s (1 − e_s · q_s) of pages given as (B, Z) q per slot (NaN = empty slot)."""
    q = np.nan_to_num(np.asarray(q_seq, dtype=np.float64), nan=0.0)
    e = slot_exam(exam, q.shape[1])
    return 1.0 - np.prod(1.0 - np.clip(e[None, :] * q, 0.0, 1.0), axis=1)


def slot_exam(exam: np.ndarray, slots: int) -> np.ndarray:
    """Examination propensity per slot 1..slots; the last estimate carries on past the curve."""
    e = np.asarray(exam, dtype=np.float64)
    if e.ndim != 1 or not len(e):
        raise ValueError("slot examination propensities must be a non-empty 1-d array")
    if np.any(~np.isfinite(e)) or np.any(e < 0) or np.any(e > 1 + 1e-9):
        raise ValueError(f"slot examination propensities must lie in [0, 1], got {e.tolist()}")
    if len(e) >= slots:
        return e[:slots]
    return np.concatenate([e, np.full(slots - len(e), e[-1])])


def beam_plan(
    q: np.ndarray,
    family: np.ndarray,
    exam: np.ndarray,
    *,
    slots: int,
    width: int = 3,
    start: int = 1,
    sim: np.ndarray | None = None,
    lam: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Beam search for the slot order maximising J under the family rule.

    q: (B, C) engagement probability of each candidate (NaN = no candidate); family: (B, C) int
    codes (>= 0); sim: optional (B, C, C) carousel similarity in [0, 1] used with MMR's λ.
    Slots above `start` are filled greedily (beam width 1), the rest with `width` beams.
    Returns (plan (B, slots) candidate columns, -1 past the end; J of the plan (B,)).
    """
    _check_beam(width, start, lam)
    q = np.asarray(q, dtype=np.float64)
    n, c = q.shape
    if c > MAX_PLAN_CANDIDATES:
        raise ValueError(
            f"the beam plan takes at most {MAX_PLAN_CANDIDATES} candidate carousels per user, "
            f"got {c}: keep each user's best ones first (PageParams.candidate_carousels)"
        )
    fam = np.asarray(family, dtype=np.int64)
    valid = np.isfinite(q) & (fam >= 0)
    q = np.where(valid, np.clip(q, 0.0, 1.0), 0.0)
    e = slot_exam(exam, slots)
    bits = np.left_shift(np.uint64(1), np.arange(c, dtype=np.uint64))
    rows = np.arange(n)

    # beam state, K beams per user
    score = np.zeros((n, 1))  # Σ log(1 − e_s q̃): lower is a better page
    alive = np.ones((n, 1), dtype=bool)  # the beam exists
    mask = np.zeros((n, 1), dtype=np.uint64)  # candidates used
    last = np.full((n, 1), -1, dtype=np.int64)  # candidate in the slot above
    seq = np.full((n, 1, slots), -1, dtype=np.int64)
    maxsim = np.zeros((n, 1, c))
    for s in range(slots):
        beams = 1 if s + 1 < start else width
        k = score.shape[1]
        qt = q[:, None, :] * (1.0 - (1.0 - lam) * maxsim) if sim is not None else q[:, None, :]
        gain = np.log1p(-np.clip(e[s] * qt, 0.0, 1.0 - _EPS))  # (n, k, c), <= 0
        used = (mask[:, :, None] & bits[None, None, :]) != 0
        last_fam = np.where(last >= 0, fam[rows[:, None], np.maximum(last, 0)], NO_FAMILY)
        feas = valid[:, None, :] & ~used & (fam[:, None, :] != last_fam[:, :, None])
        feas &= alive[:, :, None]
        ext = np.where(feas, score[:, :, None] + gain, np.inf).reshape(n, k * c)
        # a beam with no feasible extension stays in the race as it is
        stop = np.where(alive & ~feas.any(axis=2), score, np.inf)
        flat = np.concatenate([ext, stop], axis=1)
        parent = np.concatenate([np.repeat(np.arange(k), c), np.arange(k)])
        added = np.concatenate([np.tile(np.arange(c), k), np.full(k, -1)])
        new_mask = mask[:, parent] | np.where(added >= 0, bits[np.maximum(added, 0)], 0)[None, :]
        new_last = np.where(added[None, :] >= 0, added[None, :], last[:, parent])
        picks = _best_distinct(flat, new_mask, new_last, beams)
        got = picks >= 0
        pj = np.maximum(picks, 0)
        par = parent[pj]
        add = added[pj]
        score = np.where(got, np.concatenate([ext, stop], axis=1)[rows[:, None], pj], np.inf)
        mask = np.where(got, new_mask[rows[:, None], pj], 0).astype(np.uint64)
        last = np.where(got, new_last[rows[:, None], pj], -1)
        seq = seq[rows[:, None], par]
        seq[:, :, s] = np.where(got, add, -1)
        if sim is not None:
            grown = np.maximum(maxsim[rows[:, None], par], sim[rows[:, None], np.maximum(add, 0)])
            maxsim = np.where((got & (add >= 0))[:, :, None], grown, maxsim[rows[:, None], par])
        alive = got
    best = np.argmin(np.where(alive, score, np.inf), axis=1)
    plan = seq[rows, best]
    # a stopped beam leaves -1 in the middle of its sequence: close the gaps
    order = np.argsort(plan < 0, axis=1, kind="stable")
    plan = np.take_along_axis(plan, order, axis=1)
    value = 1.0 - np.exp(score[rows, best])
    return plan, np.where(plan[:, 0] >= 0, value, 0.0)


def _check_beam(width: int, start: int, lam: float) -> None:
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    if start < 1:
        raise ValueError(f"beam start slot must be >= 1, got {start}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"carousel MMR lambda must be in [0, 1], got {lam}")


def _best_distinct(
    flat: np.ndarray, new_mask: np.ndarray, new_last: np.ndarray, beams: int
) -> np.ndarray:
    """(n, beams) columns of `flat` (lowest first, -1 when none is left), one per state (set of
    carousels used, carousel in the last slot). Overwrites `flat`."""
    n = len(flat)
    rows = np.arange(n)
    picks = np.full((n, beams), -1, dtype=np.int64)
    for t in range(beams):
        j = np.argmin(flat, axis=1)
        ok = np.isfinite(flat[rows, j])
        picks[:, t] = np.where(ok, j, -1)
        # one beam per state (set of carousels used, carousel in the last slot)
        same = (new_mask == new_mask[rows, j][:, None]) & (new_last == new_last[rows, j][:, None])
        flat[same & ok[:, None]] = np.inf
    return picks


@dataclass
class AssembledPages:
    column: np.ndarray  # (B, Z) candidate column placed in each slot, -1 = empty
    items: np.ndarray  # (B, Z, M) item indices, PAD = -1
    slot_propensity: np.ndarray  # (B, Z) P(this carousel in this slot | slots above)
    exhausted: np.ndarray  # (B,) ran out of feasible carousels before Z slots

    @property
    def n_slots(self) -> np.ndarray:
        return (self.column >= 0).sum(axis=1)


def assemble(
    cand_items: np.ndarray,
    family: np.ndarray,
    priority: np.ndarray,
    *,
    slots: int,
    per_carousel: int,
    min_items: int,
    thompson: ThompsonInputs | None = None,
    values: np.ndarray | None = None,
) -> AssembledPages:
    """Fill Z slots per user under the page rules (see module docstring).

    cand_items: (B, C, W) each candidate's ordered item pool (PAD = -1); family: (B, C) codes,
    -1 = no candidate; priority: (B, C) lower is preferred (NaN = no candidate).
    Deterministic users take, slot by slot, the feasible candidate of lowest priority
    (propensity 1); Thompson users take the feasible candidate with the highest sampled φ.
    With `values` (B, C, W), each pool item's value (NaN = 0), deterministic users instead take
    the feasible candidate whose items that would show (its first M not yet on the page) have
    the largest total value, ties by priority: a greedy, de-duplication-aware fill. Thompson
    users then take the feasible candidate of the highest sampled value, value · λ / λ̄
    (`thompson.value_scale` = 1 / λ̄), so their pages explore around the same order rather than
    around φ's.
    """
    n, c, width = cand_items.shape
    if min_items < 1 or per_carousel < min_items:
        raise ValueError(f"need 1 <= min_items <= per_carousel, got {min_items} and {per_carousel}")
    rows = np.arange(n)
    fam = np.asarray(family, dtype=np.int64)
    valid = (fam >= 0) & np.isfinite(priority)
    prio = np.where(valid, priority, np.inf)
    item_ok = cand_items != PAD
    inv, n_distinct = _page_item_ids(cand_items, item_ok)
    shown = np.zeros(n_distinct, dtype=bool)
    vals = None if values is None else np.nan_to_num(np.asarray(values, dtype=np.float64))

    column = np.full((n, slots), -1, dtype=np.int64)
    items = np.full((n, slots, per_carousel), PAD, dtype=np.int64)
    prop = np.ones((n, slots))
    placed = np.zeros((n, c), dtype=bool)
    prev = np.full(n, NO_FAMILY, dtype=np.int64)
    ts_rows = np.flatnonzero(thompson.users) if thompson is not None else np.empty(0, np.int64)
    mc = None
    # value-ordered Thompson users sample value · λ / λ̄ rather than φ
    by_value = thompson is not None and values is not None and thompson.value_scale is not None
    if thompson is not None and len(ts_rows):
        mc, slot_draws = _thompson_draws(thompson, ts_rows, n, slots, c, by_value)
    for s in range(slots):
        fresh = item_ok & ~shown[inv]
        n_fresh = fresh.sum(axis=2)
        feas = valid & ~placed & (fam != prev[:, None]) & (n_fresh >= min_items)
        choice, gain = _greedy_choice(feas, prio, fresh, vals, per_carousel)
        if mc is not None:
            # (by value: values given, so gain is set)
            g = gain[ts_rows] if by_value else None
            pick, hits = _thompson_choice(feas[ts_rows], slot_draws[:, s], mc, g)
            choice[ts_rows] = pick
            # the draw actually used counts as one more Monte Carlo sample: never 0
            prop[ts_rows, s] = (hits + 1) / (thompson.draws + 1)
        ok = feas[rows, choice]
        if not ok.any():
            break
        keep = fresh[rows, choice] & (np.cumsum(fresh[rows, choice], axis=1) <= per_carousel)
        keep &= ok[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :per_carousel]
        pool = cand_items[rows, choice]
        got = np.take_along_axis(keep, order, axis=1)
        items[:, s, : order.shape[1]] = np.where(got, np.take_along_axis(pool, order, 1), PAD)
        shown[inv[rows, choice][keep]] = True
        column[:, s] = np.where(ok, choice, -1)
        placed[rows[ok], choice[ok]] = True
        prev = np.where(ok, fam[rows, choice], prev)
    prop = np.where(column >= 0, prop, np.nan)
    exhausted = (column < 0).any(axis=1)
    return AssembledPages(column, items, prop, exhausted)


def _page_item_ids(cand_items: np.ndarray, item_ok: np.ndarray) -> tuple[np.ndarray, int]:
    """One id per distinct (user, item), shaped like `cand_items`, and how many there are: what
    the "already on this page" flags are indexed by."""
    rows = np.arange(len(cand_items))
    n_items = int(cand_items.max()) + 1 if item_ok.any() else 1
    keys = rows[:, None, None].astype(np.int64) * n_items + np.where(item_ok, cand_items, 0)
    uniq, inv = np.unique(keys, return_inverse=True)
    return inv.reshape(keys.shape), len(uniq)


def _thompson_draws(
    thompson: ThompsonInputs, ts_rows: np.ndarray, n: int, slots: int, c: int, by_value: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled φ (or value scales) of the Thompson users' candidates: (T, draws, C) for the
    propensity estimate and (T, slots, C) for the choice in each slot."""
    # per user, from its own stream: `draws` λ draws for the propensity estimate, then one
    # fresh draw per slot for the choice itself
    ukeys = np.arange(n) if thompson.keys is None else np.asarray(thompson.keys)
    a_ts = np.maximum(thompson.a[ts_rows], _EPS)
    b_ts = np.maximum(thompson.b[ts_rows], _EPS)
    lam = np.empty((len(ts_rows), thompson.draws + slots, c))
    for j, r in enumerate(ts_rows):  # the Thompson share of a batch: a short loop
        gen = np.random.default_rng([int(thompson.seed) & 0xFFFFFFFF, int(ukeys[r])])
        lam[j] = gen.beta(a_ts[j], b_ts[j], size=(thompson.draws + slots, c))
    slope = thompson.slope[ts_rows][:, None, :]
    intercept = thompson.intercept[ts_rows][:, None, :]
    if by_value:
        # relative draws of the engagement rate; the value they scale changes slot by slot
        scale = np.maximum(thompson.value_scale[ts_rows], 0.0)[:, None, :]
        return scale * lam[:, : thompson.draws], scale * lam[:, thompson.draws :]
    mc = slope * lam[:, : thompson.draws] + intercept
    slot_draws = slope * lam[:, thompson.draws :] + intercept  # (T, slots, C)
    return mc, slot_draws


def _greedy_choice(
    feas: np.ndarray, prio: np.ndarray, fresh: np.ndarray, vals: np.ndarray | None, per: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each user's feasible candidate of lowest priority; with item values, the one whose items
    that would show have the largest total value (ties by priority). Returns (choice, gain)."""
    if vals is None:
        return np.argmin(np.where(feas, prio, np.inf), axis=1), None
    would = fresh & (np.cumsum(fresh, axis=2) <= per)
    gain = np.where(would, vals, 0.0).sum(axis=2)
    best = np.where(feas, gain, -np.inf).max(axis=1, keepdims=True)
    # among the best-valued candidates, the one of lowest priority
    return np.argmin(np.where(feas & (gain >= best), prio, np.inf), axis=1), gain


def _thompson_choice(
    f: np.ndarray, now: np.ndarray, mc: np.ndarray, g: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The Thompson users' pick among their feasible candidates `f` under this slot's draw
    `now`, and how many of the `mc` Monte Carlo draws pick the same (scaled by the gain `g`
    when sampling values)."""
    sims = mc
    if g is not None:
        now, sims = g * now, g[:, None, :] * mc
    pick = np.argmax(np.where(f, now, -np.inf), axis=1)
    winners = np.argmax(np.where(f[:, None, :], sims, -np.inf), axis=2)
    return pick, (winners == pick[:, None]).sum(axis=1)
