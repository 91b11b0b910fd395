"""Reward models of the OPE job and the bootstrap that refits them for DM's intervals.

OBD lakes: `models.evaluation.ope.fit_position_based_ctr` on the random log (`RandomLogCTR`)
with cell = (campaign, position), item factors shrunk with 2 pseudo clicks, cross-fitted in
`folds` folds of rounds (a round's q̂ comes from a model that never saw it).

Generated lakes (`PageRewardModel`): q̂(u,i,s,l) = ê_s · ê_l · â(u,i) with ê the slot/position
examination table of the lake's feature store as of split_ds (`warehouse/features/examination`,
the stratified Poisson fit of features.propensity), else CTR ratios on the window's random
pages (slot s vs slot 1; position l vs position 1 among carousels showing at least l items),
else 1/log2(1+s) (`examination`); â(i) = a0 × f_i (`models.evaluation.ope.exam_item_factors`:
f_i = (c_i + 2) / (a0·X_i + 2), X_i = the item's Σ ê over impressions), fitted on the window's
homepage impressions of the other policies plus the random pages of the other folds
(cross-fitting over random page views). v̂ = Σ q̂ over the target's placements. (A user factor
on top was tried: it lowered DM's error on generated lakes by ~10% and made the refitting
bootstrap much slower, so the model has none.)

DM intervals come from a bootstrap that refits the reward model (`dm_refits`: Poisson weights on
the fitting data's page views / impressions, every fold refitted; at most `DM_RESAMPLES`
replicates): with q̂ held fixed, as in the IPS/SNIPS/DR round bootstrap, DM's interval would
only reflect the spread of v̂ over rounds and come out ~100 times too narrow on OBD.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.lake import Lake, join, local_path
from jobs.experiments.ope_rounds import Codes, cell_key, cross_fit_folds
from models.evaluation import ope

# DM's refitting bootstrap: at most this many replicates (each refits every fold's model)
DM_RESAMPLES = 200


def dm_refits(
    draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    sections: list[np.ndarray],
    resamples: int,
    seed: int,
) -> list[np.ndarray]:
    """DM replicates that refit the reward model: `draw(rng)` draws Poisson weights for the
    fitting data, refits, and returns (weights of the evaluated rounds, their v̂); DM of a
    section is the weighted mean of v̂ over its rounds."""
    rng = np.random.default_rng([seed, 17])
    out = np.full((len(sections), resamples), np.nan)
    for b in range(resamples):
        weights, v = draw(rng)
        for k, m in enumerate(sections):
            den = weights[m].sum()
            if den > 0:
                out[k, b] = float(np.dot(weights[m], v[m]) / den)
    return list(out)


@dataclass(frozen=True)
class RandomLogCTR:
    """The random log's rounds as integer codes, for the position-based CTR reward model."""

    cell: np.ndarray
    item: np.ndarray
    clicked: np.ndarray
    n_cells: int
    n_items: int

    @classmethod
    def from_rounds(cls, rand: pd.DataFrame, cells: Codes, items: Codes) -> RandomLogCTR:
        """The random rounds `rand` (carousel_id, position, item_id, clicked) coded with the
        (campaign, position) cell codes `cells` and the item codes `items`."""
        return cls(
            cell=cells(cell_key(rand["carousel_id"], rand["position"])),
            item=items(rand["item_id"]),
            clicked=rand["clicked"].to_numpy(np.float64),
            n_cells=len(cells),
            n_items=len(items),
        )

    def fit(self, train: np.ndarray, weights: np.ndarray | None) -> ope.PositionBasedCTR:
        """The model fitted on the rounds `train` (bootstrap `weights` per round, or None)."""
        return ope.fit_position_based_ctr(
            self.cell[train],
            self.item[train],
            self.clicked[train],
            n_cells=self.n_cells,
            n_items=self.n_items,
            weights=None if weights is None else weights[train],
        )


def examination(
    lake: Lake | None, split_ds: str | None, rand: pd.DataFrame
) -> tuple[dict[str, dict[int, float]], str]:
    """Relative examination per slot and per position: {kind: {index: e}} and its source."""
    if lake is not None and split_ds is not None:
        days = [
            d
            for d in io.partitions(join(lake.warehouse, "features", "examination"))
            if d <= split_ds
        ]
        if days:
            path = lake.feature("examination", days[-1])
            table = pd.read_parquet(local_path(path))
            exam = {
                k: dict(zip(g["index"].astype(int), g["propensity"].astype(float), strict=True))
                for k, g in table.groupby("kind")
            }
            if {"slot", "position"} <= exam.keys():
                return exam, f"feature store examination ds={days[-1]}"
    exam = _pooled_examination(rand)
    if exam is not None:
        return (
            exam,
            "CTR ratios on the window's random pages (positions within carousels that fill them)",
        )
    n = int(max(rand["slot"].max(), rand["position"].max()))
    curve = {i: 1.0 / math.log2(1 + i) for i in range(1, n + 1)}
    return {"slot": curve, "position": dict(curve)}, "1/log2(1+index): no clicks at index 1"


def _pooled_examination(rand: pd.DataFrame) -> dict[str, dict[int, float]] | None:
    """Relative examination from randomised pages without the feature store's stratified fit:
    a slot's CTR over slot 1's (carousels are placed uniformly, so every slot sees the same
    carousel mix) and a position's CTR over position 1's among carousels showing at least that
    many items (a short carousel only fills the first positions). None without clicks at 1."""
    unit = ["user_id", "page_key", "carousel_id", "slot"]
    size = rand.groupby(unit, sort=False)["position"].transform("max").to_numpy()
    slot, pos = rand["slot"].to_numpy(), rand["position"].to_numpy()
    y = rand["clicked"].to_numpy(np.float64)

    def ctr(mask: np.ndarray) -> float:
        return float(y[mask].mean()) if mask.any() else float("nan")

    base = ctr(slot == 1)
    if not base > 0:
        return None
    slots = {int(s): ctr(slot == s) / base for s in np.unique(slot)}
    positions = {1: 1.0}
    for idx in np.unique(pos[pos > 1]):
        fill = size >= idx
        first = ctr(fill & (pos == 1))
        if first > 0:
            positions[int(idx)] = ctr(fill & (pos == idx)) / first
    return {"slot": slots, "position": positions}


def exam_curve(exam: dict[int, float], n: int) -> np.ndarray:
    """e[1..n] (index 0 unused), holding the last known value beyond the table, never 0."""
    out = np.ones(n + 1)
    last = 1.0
    for i in range(1, n + 1):
        val = exam.get(i)
        if val is not None and np.isfinite(val) and val > 0:
            last = float(val)
        out[i] = last
    return out


class PageRewardModel:
    """q̂(i, s, l) = a0 · ê_s ê_l · f_i of a generated lake's random placements, from per-item
    sums (clicks, exposure Σ ê) of the other policies' impressions and of the random placements
    of the other folds (cross-fitted over random page views), and its refitting bootstrap."""

    def __init__(
        self,
        imp: pd.DataFrame,
        arranged: pd.DataFrame,
        e_slot: np.ndarray,
        e_pos: np.ndarray,
        *,
        n_rounds: int,
        folds: int,
        seed: int,
    ) -> None:
        other = imp[imp["policy"] != "random"]
        items = Codes(imp["item_id"])
        self.n_items = n_items = len(items)
        o_item = items(other["item_id"])
        o_exam = e_slot[other["slot"].to_numpy()] * e_pos[other["position"].to_numpy()]
        o_y = other["clicked"].to_numpy(np.float64)
        self.a_item = items(arranged["item_id"])
        self.a_exam = e_slot[arranged["slot"].to_numpy()] * e_pos[arranged["position"].to_numpy()]
        self.t_exam = (
            e_slot[arranged["target_slot"].to_numpy()]
            * e_pos[arranged["target_position"].to_numpy()]
        )
        self.clicked = arranged["clicked"].to_numpy(np.float64)
        self.round_index = arranged["round"].to_numpy()
        self.n_rounds, self.folds = n_rounds, folds
        self.fold = cross_fit_folds(n_rounds, folds, seed)[self.round_index]
        self.o_clicks = np.bincount(o_item, weights=o_y, minlength=n_items)
        self.o_exposure = np.bincount(o_item, weights=o_exam, minlength=n_items)
        self._init_refits(other, o_item, o_y, o_exam)

    def predict(
        self, o_clicks: np.ndarray, o_exposure: np.ndarray, r_weights: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cross-fitted q̂ of the logged placements and q̂ at the target's placements, from the
        other policies' per-item sums and the random placements of the other folds."""
        n_items, a_item, a_exam, y = self.n_items, self.a_item, self.a_exam, self.clicked
        wr = np.ones(self.n_rounds) if r_weights is None else r_weights
        pw = wr[self.round_index]
        q, v = np.empty(len(a_item)), np.empty(len(a_item))
        for f in range(self.folds):
            test = self.fold == f
            train = ~test
            clicks = o_clicks + np.bincount(
                a_item[train], weights=(y * pw)[train], minlength=n_items
            )
            exposure = o_exposure + np.bincount(
                a_item[train], weights=(a_exam * pw)[train], minlength=n_items
            )
            a0, factor = ope.exam_item_factors(clicks, exposure)
            q[test] = np.clip(a0 * a_exam[test] * factor[a_item[test]], 0.0, 1.0)
            v[test] = np.clip(a0 * self.t_exam[test] * factor[a_item[test]], 0.0, 1.0)
        return q, v

    def _init_refits(
        self, other: pd.DataFrame, o_item: np.ndarray, o_y: np.ndarray, o_exam: np.ndarray
    ) -> None:
        # DM replicates: Poisson weights on the other policies' page views (per-item sums for a
        # chunk of replicates at once, as sparse products) and on the random page views
        from scipy import sparse

        o_view = other.groupby(["policy", "user_id", "page_key"], sort=False).ngroup().to_numpy()
        self.n_views = n_views = int(o_view.max()) + 1 if o_view.size else 0
        self.by_view = [
            sparse.csr_matrix((vals, (o_view, o_item)), shape=(n_views, self.n_items))
            for vals in (o_y, o_exam)
        ]
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.chunk = max(1, min(32, (1 << 24) // max(n_views, 1)))

    def draw_refit(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One DM replicate for `dm_refits`: (Poisson weights of the random page views, v̂ per
        page view of the model refitted with them and with weighted other-policy views)."""
        n_views, chunk = self.n_views, self.chunk
        if not self.pending:
            weights = ope.poisson_weights(rng, chunk * n_views).reshape(chunk, n_views)
            c_b, x_b = ((m.T @ weights.T).T for m in self.by_view)
            self.pending.extend(zip(np.asarray(c_b), np.asarray(x_b), strict=True))
        c, x = self.pending.pop(0)
        r_weights = ope.poisson_weights(rng, self.n_rounds)
        v_round = np.bincount(
            self.round_index,
            weights=self.predict(c, x, r_weights)[1],
            minlength=self.n_rounds,
        )
        return r_weights, v_round
