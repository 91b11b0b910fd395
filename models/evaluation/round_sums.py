"""Rounds of off-policy evaluation: a logged decision's weight, reward and reward-model terms.

A round r is one decision of the logging policy π_0 in a context x_r whose outcome was logged:
one impression (a single action) or one page (a slate of placements). For a single action a_r
with logged reward y_r, its importance weight is π_e(a_r | x_r) / π_0(a_r | x_r) (0 when the
target π_e would not take a_r), `importance_weights`. `rounds` and `rounds_from_placements` turn
logged arrays into `RoundSums`, the per-round sums the estimators of `models.evaluation.ope`
read (for pages: sums over the round's placements, see that module's docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def float_array(name: str, values: object, n: int | None = None) -> np.ndarray:
    """`values` as a 1-D float64 array of length `n` (when given), all finite, else ValueError
    naming `name`."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"length mismatch: {name} has {arr.size} entries, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has NaN or infinite values")
    return arr


def importance_weights(target_probability: object, logging_propensity: object) -> np.ndarray:
    """iw = π_e(a|x) / π_0(a|x) per logged action (importance weights); validates both probabilities.

    Raises ValueError when the arrays differ in length or are empty, when a logging propensity
    is outside (0, 1] (negative, zero: no support, or above 1) or a target probability outside
    [0, 1].
    """
    p0 = float_array("logging_propensity", logging_propensity)
    pe = float_array("target_probability", target_probability, p0.size)
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
        matched-round indicator, the order `models.evaluation.ope`'s estimators read."""
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


def _check_weights_rewards(y: np.ndarray, iw: np.ndarray) -> None:
    if np.any(iw < 0.0):
        raise ValueError(f"importance weights must be >= 0, got {iw[iw < 0.0][0]!r}")
    if np.any(y < 0.0):
        raise ValueError(f"rewards must be >= 0 (clicks), got {y[y < 0.0][0]!r}")


def rounds(y: object, iw: object, q_logged: object, v_target: object) -> RoundSums:
    """Single-action rounds: logged reward y, importance weight iw, q̂ of the logged action and v̂ (the
    model's expected reward under the target policy). Raises ValueError on empty input,
    length mismatch, NaN, negative weights or rewards."""
    y_ = float_array("y", y)
    if y_.size == 0:
        raise ValueError("no rounds: the arrays are empty")
    iw_ = float_array("iw", iw, y_.size)
    q_ = float_array("q_logged", q_logged, y_.size)
    v_ = float_array("v_target", v_target, y_.size)
    _check_weights_rewards(y_, iw_)
    return RoundSums(
        reward=y_,
        w_reward=iw_ * y_,
        weight=iw_,
        weight_sq=iw_ * iw_,
        w_pred=iw_ * q_,
        target_pred=v_,
        units=np.ones(y_.size),
        matched=(iw_ > 0).astype(np.float64),
    )


def rounds_from_placements(
    index: object,
    y: object,
    iw: object,
    q_logged: object,
    *,
    v_target: object,
    v_index: object | None = None,
    n_rounds: int | None = None,
) -> RoundSums:
    """Per-round sums from placement-level arrays (slates / pages).

    `index[p]` is the round (0..n_rounds−1) of logged placement p, with its reward y, importance weight iw
    and q̂. `v_target` holds q̂ of the *target's* placements, summed per round by `v_index`
    (default `index`: one target term per logged placement). `n_rounds` defaults to
    max(index) + 1; a round without logged placements is an error.
    """
    idx = np.asarray(index)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError("no placements: index is empty")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"index must hold integers, got dtype {idx.dtype}")
    y_ = float_array("y", y, idx.size)
    iw_ = float_array("iw", iw, idx.size)
    q_ = float_array("q_logged", q_logged, idx.size)
    _check_weights_rewards(y_, iw_)
    if idx.min() < 0:
        raise ValueError("index must be >= 0")
    n = int(idx.max()) + 1 if n_rounds is None else int(n_rounds)
    if idx.max() >= n:
        raise ValueError(f"index has round {int(idx.max())} but n_rounds is {n}")
    v_idx = idx if v_index is None else np.asarray(v_index)
    v_ = float_array("v_target", v_target, v_idx.size)
    if v_idx.size and (v_idx.min() < 0 or v_idx.max() >= n):
        raise ValueError(f"v_index must be in [0, {n})")

    def total(values: np.ndarray, at: np.ndarray = idx) -> np.ndarray:
        return np.bincount(at, weights=values, minlength=n).astype(np.float64)

    units = total(np.ones(idx.size))
    if np.any(units == 0):
        raise ValueError(f"{int((units == 0).sum())} round(s) have no logged placement")
    return RoundSums(
        reward=total(y_),
        w_reward=total(iw_ * y_),
        weight=total(iw_),
        weight_sq=total(iw_ * iw_),
        w_pred=total(iw_ * q_),
        target_pred=total(v_, v_idx),
        units=units,
        matched=total((iw_ > 0).astype(np.float64)),
    )
