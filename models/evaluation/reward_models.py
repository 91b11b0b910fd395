"""Reward models of off-policy evaluation: position-based click models on integer codes.

`fit_position_based_ctr` fits q̂ = rate[cell] · item_factor[item] on impressions (a cell is a
position or a (slot, position) pair); `exam_item_factors` gives the same model's a0 and item
factors from per-item sums of clicks and examination, for fits repeated over many replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.evaluation.round_sums import float_array


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
    y = float_array("clicked", clicked, c_.size)
    if i_.size != c_.size:
        raise ValueError(f"length mismatch: item has {i_.size} entries, cell {c_.size}")
    if prior_clicks <= 0 or cell_prior_impressions <= 0:
        raise ValueError("prior_clicks and cell_prior_impressions must be > 0")
    wt = np.ones(c_.size) if weights is None else float_array("weights", weights, c_.size)
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
