"""Off-policy evaluation: IPS, self-normalised IPS, Direct Method and Doubly Robust (docs/methods.md §2).

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

Layout: the rounds are built in `models.evaluation.round_sums`, the bootstrap draws come from
`models.evaluation.poisson_bootstrap` and the reward models from `models.evaluation.reward_models`;
this module holds the estimators and is the one import for all of it (`__all__`).
"""

from __future__ import annotations

import math

import numpy as np

from models.evaluation.poisson_bootstrap import (
    MAX_GROUPS,
    poisson_bootstrap_sums,
    poisson_weights,
)
from models.evaluation.reward_models import (
    PositionBasedCTR,
    exam_item_factors,
    fit_position_based_ctr,
)
from models.evaluation.round_sums import (
    RoundSums,
    float_array,
    importance_weights,
    rounds,
    rounds_from_placements,
)

__all__ = [
    "ESTIMATORS",
    "MAX_GROUPS",
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


def _stats(t: np.ndarray) -> dict[str, np.ndarray]:
    """Estimators from column totals (last axis in `RoundSums.columns` order)."""
    n, y, iw_y, iw, _, iw_q, v, m = (t[..., j] for j in range(8))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_round = {
            "ips": iw_y / n,
            "snips": np.where(iw > 0, iw_y / iw * (m / n), np.nan),
            "dm": v / n,
            "dr": (v + iw_y - iw_q) / n,
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
    iw_sum, iw_sq = float(totals[3]), float(totals[4])
    ess = iw_sum * iw_sum / iw_sq if iw_sq > 0 else 0.0

    def block(names: tuple[str, ...], suffix: str = "") -> dict:
        return {k: _summary(point[k + suffix], reps[k + suffix], confidence) for k in names}

    out = {
        "rounds": len(sums),
        "units": int(round(units)),
        "mean_units": units / len(sums),
        "match_share": float(totals[8] / totals[0]),
        "placement_match_share": float(sums.matched.sum() / units),
        "mean_weight": iw_sum / units,
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
    y = float_array("values", values)
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
