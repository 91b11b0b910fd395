"""Off-policy evaluation: IPS, self-normalised IPS, Direct Method and Doubly Robust (METHODS §2).

Pure numpy, generic over *rounds*. A round r is one decision of the logging policy π_0 in a
context x_r whose outcome was logged: one impression (a single action) or one page (a slate of
placements). For a single action a_r with logged reward y_r:

    w_r = π_e(a_r | x_r) / π_0(a_r | x_r)      (0 when the target π_e would not take a_r)
    q̂_r = q̂(x_r, a_r)                          the reward model's prediction of the logged action
    v̂_r = Σ_a π_e(a | x_r) q̂(x_r, a)            the model's expected reward under the target

    IPS   = mean_r(w_r y_r)
    SNIPS = Σ_r w_r y_r / Σ_r w_r
    DM    = mean_r(v̂_r)
    DR    = mean_r(v̂_r + w_r (y_r − q̂_r))

IPS and DR are unbiased when the propensities are right and π_0 covers π_e (DR also when q̂ is
wrong; DM is exact when q̂ is). SNIPS trades a small bias for less variance.

**Slates / pages.** When a round is a page whose reward is the sum of its placements' rewards
(clicks per page) and each placement p has its own marginal weight w_p = π_e(a_p at p | x) /
π_0(a_p at p | x), the per-page value Σ_p w_p y_p is unbiased for the target page's expected
clicks under that additive assumption (the "independent" IPS of slate OPE). A round's terms are
then sums over its placements: Σ w y, Σ w, Σ w q̂ (logged placements) and v̂ = Σ q̂ over the
target's placements. `rounds_from_placements` builds these sums from placement-level arrays
and a round index. SNIPS for pages normalises by the *mean weight per placement*,
w̄ = Σ_rp w / Σ_r m_r (m_r = placements logged in round r; E[w̄] = 1 because E[w_p] = 1 for
every placement), i.e. SNIPS = IPS / w̄; with one placement per round this is the usual
Σwy / Σw. Per-placement rates ("per unit") divide a page estimate by the mean number of logged
placements per round; they describe the target's rate per impression when it shows as many
placements as the logged page (a re-arrangement of the same content).

**Uncertainty.** 95% percentile intervals from a Poisson bootstrap over rounds: every round gets
an independent Poisson(1) weight per replicate, and each estimator is recomputed from the
weighted sums (so ratio estimators such as SNIPS are bootstrapped as ratios). Poisson(1) draws
come from a 65,536-entry inverse-CDF table indexed by random 16-bit integers (CDF quantised to
2^-16; variance 0.99997 instead of 1) and the weighted sums are one float32 matrix product per
chunk of rounds: 1,000 replicates of 262,144 rounds take ~1.5 s on one core; beyond that,
rounds are summed into 2^18 random groups first (see `poisson_bootstrap_sums`), so 1,000,000
rounds take about as long. Standard errors are
the replicates' standard deviation. This round bootstrap keeps the reward model fixed; that is
the usual practice for cross-fitted DR (q̂'s error enters DR only at second order) but leaves
out DM's main source of noise, so `estimate` accepts DM replicates from a bootstrap that
refits the model (`dm_replicates`; the caller refits, e.g. `fit_position_based_ctr` with
`weights` from `poisson_weights`). The logging policy's observed rate is bootstrapped on the
same rounds and replicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ESTIMATORS",
    "PositionBasedCTR",
    "RoundSums",
    "estimate",
    "exam_item_factors",
    "fit_position_based_ctr",
    "importance_weights",
    "mean_with_ci",
    "poisson_bootstrap_sums",
    "poisson_weights",
    "rounds",
    "rounds_from_placements",
]

ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr")
_CHUNK_ELEMENTS = 1 << 23  # Poisson weights per bootstrap chunk (8M float32 = 32 MiB)
MAX_GROUPS = 1 << 18  # above this many rounds the bootstrap resamples random groups of rounds


def _poisson_table() -> np.ndarray:
    """Poisson(1) draw for each 16-bit integer: the inverse CDF quantised to 2^-16."""
    cdf, term, k = [], math.exp(-1.0), 0
    total = 0.0
    while total < 1.0 - 2.0**-20:
        total += term
        cdf.append(total)
        k += 1
        term /= k
    edges = np.round(np.asarray(cdf) * 65536.0).astype(np.int64)
    return np.searchsorted(edges, np.arange(65536), side="right").astype(np.float32)


_POISSON = _poisson_table()


# ---- inputs ---------------------------------------------------------------------------------


def _array(name: str, values: object, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"length mismatch: {name} has {arr.size} entries, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has NaN or infinite values")
    return arr


def importance_weights(target_probability: object, logging_propensity: object) -> np.ndarray:
    """w = π_e(a|x) / π_0(a|x) per logged action; validates both probabilities.

    Raises ValueError when the arrays differ in length or are empty, when a logging propensity
    is outside (0, 1] (negative, zero: no support, or above 1) or a target probability outside
    [0, 1].
    """
    p0 = _array("logging_propensity", logging_propensity)
    pe = _array("target_probability", target_probability, p0.size)
    if p0.size == 0:
        raise ValueError("no rounds: the arrays are empty")
    if np.any(p0 <= 0.0) or np.any(p0 > 1.0):
        bad = p0[(p0 <= 0.0) | (p0 > 1.0)][0]
        raise ValueError(f"logging propensities must be in (0, 1], got {bad!r}")
    if np.any(pe < 0.0) or np.any(pe > 1.0):
        bad = pe[(pe < 0.0) | (pe > 1.0)][0]
        raise ValueError(f"target probabilities must be in [0, 1], got {bad!r}")
    return pe / p0


@dataclass(frozen=True)
class RoundSums:
    """Per-round sums over the round's logged placements (one placement for a single action).

    reward      Σ y            the logging policy's observed reward
    w_reward    Σ w·y
    weight      Σ w
    weight_sq   Σ w²           for the effective sample size
    w_pred      Σ w·q̂          q̂ of the logged placements
    target_pred v̂              the reward model's expected reward of the target's round
    units       m              logged placements
    matched     placements with w > 0
    """

    reward: np.ndarray
    w_reward: np.ndarray
    weight: np.ndarray
    weight_sq: np.ndarray
    w_pred: np.ndarray
    target_pred: np.ndarray
    units: np.ndarray
    matched: np.ndarray

    def __len__(self) -> int:
        return int(self.reward.size)

    def columns(self) -> np.ndarray:
        """(n, 9) matrix: 1, reward, w_reward, weight, weight_sq, w_pred, target_pred, units,
        matched-round indicator, the order `_stats` reads."""
        return np.column_stack(
            [
                np.ones(len(self)),
                self.reward,
                self.w_reward,
                self.weight,
                self.weight_sq,
                self.w_pred,
                self.target_pred,
                self.units,
                (self.matched > 0).astype(np.float64),
            ]
        )

    def subset(self, mask: np.ndarray) -> RoundSums:
        mask = np.asarray(mask)
        return RoundSums(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


def _check_weights_rewards(y: np.ndarray, w: np.ndarray) -> None:
    if np.any(w < 0.0):
        raise ValueError(f"importance weights must be >= 0, got {w[w < 0.0][0]!r}")
    if np.any(y < 0.0):
        raise ValueError(f"rewards must be >= 0 (clicks), got {y[y < 0.0][0]!r}")


def rounds(y: object, w: object, q_logged: object, v_target: object) -> RoundSums:
    """Single-action rounds: logged reward y, weight w, q̂ of the logged action and v̂ (the
    model's expected reward under the target policy). Raises ValueError on empty input,
    length mismatch, NaN, negative weights or rewards."""
    y_ = _array("y", y)
    if y_.size == 0:
        raise ValueError("no rounds: the arrays are empty")
    w_ = _array("w", w, y_.size)
    q_ = _array("q_logged", q_logged, y_.size)
    v_ = _array("v_target", v_target, y_.size)
    _check_weights_rewards(y_, w_)
    return RoundSums(
        reward=y_,
        w_reward=w_ * y_,
        weight=w_,
        weight_sq=w_ * w_,
        w_pred=w_ * q_,
        target_pred=v_,
        units=np.ones(y_.size),
        matched=(w_ > 0).astype(np.float64),
    )


def rounds_from_placements(
    index: object,
    y: object,
    w: object,
    q_logged: object,
    *,
    v_target: object,
    v_index: object | None = None,
    n_rounds: int | None = None,
) -> RoundSums:
    """Per-round sums from placement-level arrays (slates / pages).

    `index[p]` is the round (0..n_rounds−1) of logged placement p, with its reward y, weight w
    and q̂. `v_target` holds q̂ of the *target's* placements, summed per round by `v_index`
    (default `index`: one target term per logged placement). `n_rounds` defaults to
    max(index) + 1; a round without logged placements is an error.
    """
    idx = np.asarray(index)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError("no placements: index is empty")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"index must hold integers, got dtype {idx.dtype}")
    y_ = _array("y", y, idx.size)
    w_ = _array("w", w, idx.size)
    q_ = _array("q_logged", q_logged, idx.size)
    _check_weights_rewards(y_, w_)
    if idx.min() < 0:
        raise ValueError("index must be >= 0")
    n = int(idx.max()) + 1 if n_rounds is None else int(n_rounds)
    if idx.max() >= n:
        raise ValueError(f"index has round {int(idx.max())} but n_rounds is {n}")
    v_idx = idx if v_index is None else np.asarray(v_index)
    v_ = _array("v_target", v_target, v_idx.size)
    if v_idx.size and (v_idx.min() < 0 or v_idx.max() >= n):
        raise ValueError(f"v_index must be in [0, {n})")

    def total(values: np.ndarray, at: np.ndarray = idx) -> np.ndarray:
        return np.bincount(at, weights=values, minlength=n).astype(np.float64)

    units = total(np.ones(idx.size))
    if np.any(units == 0):
        raise ValueError(f"{int((units == 0).sum())} round(s) have no logged placement")
    return RoundSums(
        reward=total(y_),
        w_reward=total(w_ * y_),
        weight=total(w_),
        weight_sq=total(w_ * w_),
        w_pred=total(w_ * q_),
        target_pred=total(v_, v_idx),
        units=units,
        matched=total((w_ > 0).astype(np.float64)),
    )


# ---- bootstrap ------------------------------------------------------------------------------


def poisson_bootstrap_sums(
    values: np.ndarray, resamples: int, seed: int, *, max_groups: int | None = MAX_GROUPS
) -> np.ndarray:
    """(resamples, k) column sums Σ_r P_br values[r] with independent Poisson(1) weights P_br.

    Deterministic for a seed. Chunked over rows, so memory stays at ~32 MiB of weights. With
    more than `max_groups` rows, rows are first summed into `max_groups` groups of (nearly)
    equal size by a seeded random assignment and the groups are resampled: group sums of
    randomly assigned i.i.d. rounds are i.i.d., so ratio estimators keep their bootstrap
    variance (≈ σ²/n) while the cost stops growing with n (1e6 rounds: ~4× fewer draws).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("values must be a 2-D (rounds, columns) array")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    rng = np.random.default_rng(seed)
    if max_groups is not None and x.shape[0] > max_groups:
        group = np.random.default_rng([seed, 1]).permutation(x.shape[0]) % max_groups
        x = np.column_stack(
            [np.bincount(group, weights=x[:, j], minlength=max_groups) for j in range(x.shape[1])]
        )
    n, k = x.shape
    # centre the columns, so float32 products only carry the deviations (precision); the
    # appended column of ones gives Σ_r P_br
    centre = x.mean(axis=0) if n else np.zeros(k)
    xc = np.column_stack([x - centre, np.ones(n)]).astype(np.float32)
    out = np.zeros((resamples, k + 1))
    chunk = max(1, _CHUNK_ELEMENTS // resamples)
    for lo in range(0, n, chunk):
        c = min(chunk, n - lo)
        draws = np.frombuffer(rng.bytes(2 * resamples * c), dtype=np.uint16).reshape(resamples, c)
        out += (_POISSON[draws] @ xc[lo : lo + c]).astype(np.float64)
    return out[:, :k] + out[:, k:] * centre[None, :]


def poisson_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """n independent Poisson(1) bootstrap weights (float64), from the same table."""
    return _POISSON[np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)].astype(np.float64)


def _stats(t: np.ndarray) -> dict[str, np.ndarray]:
    """Estimators from column totals (last axis in `RoundSums.columns` order)."""
    n, y, wy, w, _, wq, v, m = (t[..., j] for j in range(8))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_round = {
            "ips": wy / n,
            "snips": np.where(w > 0, wy / w * (m / n), np.nan),
            "dm": v / n,
            "dr": (v + wy - wq) / n,
            "logging": y / n,
        }
        mean_units = m / n
        per_unit = {k: val / mean_units for k, val in per_round.items()}
    return {**per_round, **{f"{k}@unit": val for k, val in per_unit.items()}}


def _summary(point: float, reps: np.ndarray, confidence: float) -> dict[str, float | None]:
    reps = reps[np.isfinite(reps)]
    alpha = (1.0 - confidence) / 2.0
    if reps.size < 2 or not np.isfinite(point):
        return {"estimate": _num(point), "se": None, "ci_low": None, "ci_high": None}
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return {
        "estimate": _num(point),
        "se": _num(np.std(reps, ddof=1)),
        "ci_low": _num(low),
        "ci_high": _num(high),
    }


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def estimate(
    sums: RoundSums,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    with_replicates: bool = False,
    dm_replicates: np.ndarray | None = None,
) -> dict:
    """IPS, SNIPS, DM and DR of the target policy and the logging policy's observed rate, each
    with a bootstrap standard error and percentile interval.

    Returns a JSON-ready dict:
      rounds, units (placements), mean_units (per round), match_share (rounds with a positive
      weight: the target's support in the log), placement_match_share, mean_weight (per
      placement; ≈ 1 when propensities are right and the target is fully covered), ess
      ((Σw)² / Σw² over placements) and ess_share (ess / placements),
      estimators: {ips, snips, dm, dr: {estimate, se, ci_low, ci_high}} per round,
      per_unit: the same five per logged placement (per impression),
      logging: {estimate, se, ci_low, ci_high} the observed reward per round,
      resamples, confidence, seed. With `with_replicates`, also `replicates`: name → the
      bootstrap replicates (numpy arrays, not JSON), e.g. to compare two estimates.
    `dm_replicates`: replicates of DM from a bootstrap that refits the reward model (the
    round bootstrap keeps q̂ fixed, which leaves out DM's main source of noise); they replace
    the round bootstrap's for DM (per unit: divided by the point mean of units per round), and
    `dm_interval` says which was used.
    Raises ValueError on empty rounds or a confidence outside (0, 1).
    """
    if len(sums) == 0:
        raise ValueError("no rounds to evaluate")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    cols = sums.columns()
    totals = cols.sum(axis=0)
    point = _stats(totals)
    reps = _stats(poisson_bootstrap_sums(cols, resamples, seed))
    dm_interval = "round bootstrap, reward model fixed"
    if dm_replicates is not None:
        dm_reps = np.asarray(dm_replicates, dtype=np.float64)
        reps["dm"] = dm_reps
        reps["dm@unit"] = dm_reps / (totals[7] / totals[0])
        dm_interval = f"bootstrap refitting the reward model ({dm_reps.size} replicates)"
    units = float(totals[7])
    w_sum, w_sq = float(totals[3]), float(totals[4])
    ess = w_sum * w_sum / w_sq if w_sq > 0 else 0.0

    def block(names: tuple[str, ...], suffix: str = "") -> dict:
        return {k: _summary(point[k + suffix], reps[k + suffix], confidence) for k in names}

    out = {
        "rounds": len(sums),
        "units": int(round(units)),
        "mean_units": units / len(sums),
        "match_share": float(totals[8] / totals[0]),
        "placement_match_share": float(sums.matched.sum() / units),
        "mean_weight": w_sum / units,
        "ess": ess,
        "ess_share": ess / units,
        "estimators": block(ESTIMATORS),
        "per_unit": block((*ESTIMATORS, "logging"), "@unit"),
        "logging": _summary(point["logging"], reps["logging"], confidence),
        "dm_interval": dm_interval,
        "resamples": int(resamples),
        "confidence": confidence,
        "seed": int(seed),
    }
    if with_replicates:
        out["replicates"] = reps
    return out


def mean_with_ci(
    values: object,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    with_replicates: bool = False,
) -> dict:
    """Mean of `values` (e.g. a policy's observed clicks per impression) with a Poisson-bootstrap
    standard error and percentile interval: {estimate, se, ci_low, ci_high, n} (+ replicates)."""
    y = _array("values", values)
    if y.size == 0:
        raise ValueError("no values: the array is empty")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sums = poisson_bootstrap_sums(np.column_stack([np.ones(y.size), y]), resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = sums[:, 1] / sums[:, 0]
    out: dict = {**_summary(float(y.mean()), reps, confidence), "n": int(y.size)}
    if with_replicates:
        out["replicates"] = reps
    return out


# ---- reward model ---------------------------------------------------------------------------


def exam_item_factors(
    clicks: np.ndarray, exposure: np.ndarray, *, prior_clicks: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Position-based CTR from per-item sums: q̂(i, cell) = a0 · e_cell · f_i.

    `clicks[..., i]` and `exposure[..., i]` = Σ e_cell over the item's impressions (relative
    examination); a0 = Σ clicks / Σ exposure and f_i = (c_i + κ) / (a0 · X_i + κ), κ =
    `prior_clicks` (an item never seen gets 1). Leading axes are independent fits (e.g.
    bootstrap replicates). Returns (a0 with the leading shape, f).
    """
    c = np.asarray(clicks, dtype=np.float64)
    x = np.asarray(exposure, dtype=np.float64)
    if c.shape != x.shape:
        raise ValueError(f"clicks {c.shape} and exposure {x.shape} differ in shape")
    total = x.sum(axis=-1, keepdims=True)
    a0 = np.divide(c.sum(axis=-1, keepdims=True), total, out=np.zeros_like(total), where=total > 0)
    factor = (c + prior_clicks) / (a0 * x + prior_clicks)
    return a0[..., 0], factor


@dataclass(frozen=True)
class PositionBasedCTR:
    """q̂ = rate[cell] · item_factor[item] (clipped to [0, 1])."""

    cell_rate: np.ndarray
    item_factor: np.ndarray

    def predict(self, cell: object, item: object) -> np.ndarray:
        q = self.cell_rate[np.asarray(cell)] * self.item_factor[np.asarray(item)]
        return np.clip(q, 0.0, 1.0)


def fit_position_based_ctr(
    cell: object,
    item: object,
    clicked: object,
    *,
    n_cells: int,
    n_items: int,
    cell_exam: object | None = None,
    prior_clicks: float = 2.0,
    cell_prior_impressions: float = 100.0,
    weights: object | None = None,
) -> PositionBasedCTR:
    """A smoothed position-based click model fitted on impressions (integer codes).

    Base rate per placement cell (a position, or a (slot, position) pair): with `cell_exam`
    (relative examination e_cell) rate = a0 · e_cell with a0 = Σ clicks / Σ e; without it, the
    cell's click rate shrunk towards the global rate with `cell_prior_impressions` pseudo
    impressions. Item factor (c_i + κ) / (E_i + κ), E_i = Σ base rates of the item's
    impressions, κ = `prior_clicks` pseudo clicks (an item never seen gets 1). One pass (no
    alternation): the factor is a multiplicative correction of a position-based CTR.
    `weights` (one per impression, e.g. bootstrap weights) multiply every count.
    """
    c_ = np.asarray(cell, dtype=np.int64)
    i_ = np.asarray(item, dtype=np.int64)
    y = _array("clicked", clicked, c_.size)
    if i_.size != c_.size:
        raise ValueError(f"length mismatch: item has {i_.size} entries, cell {c_.size}")
    if prior_clicks <= 0 or cell_prior_impressions <= 0:
        raise ValueError("prior_clicks and cell_prior_impressions must be > 0")
    wt = np.ones(c_.size) if weights is None else _array("weights", weights, c_.size)
    y = y * wt
    n_imp = np.bincount(c_, weights=wt, minlength=n_cells)
    c_cell = np.bincount(c_, weights=y, minlength=n_cells)
    total_imp = max(float(n_imp.sum()), 1.0)
    global_rate = float(y.sum()) / total_imp
    if cell_exam is not None:
        exam = np.asarray(cell_exam, dtype=np.float64)
        if exam.size != n_cells:
            raise ValueError(f"cell_exam has {exam.size} entries for {n_cells} cells")
        exposure = float(np.dot(exam, n_imp))
        a0 = float(y.sum()) / exposure if exposure > 0 else 0.0
        rate = a0 * exam
    else:
        m = cell_prior_impressions
        rate = (c_cell + m * global_rate) / (n_imp + m)
    base = rate[c_] * wt
    k = prior_clicks
    e_item = np.bincount(i_, weights=base, minlength=n_items)
    item_factor = (np.bincount(i_, weights=y, minlength=n_items) + k) / (e_item + k)
    return PositionBasedCTR(cell_rate=rate, item_factor=item_factor)
