"""Metrics on held-out data: what the promotion gate and the w grid search compare.

- `holdout_metrics`: per objective AUC, PR-AUC, log loss and expected calibration error of the
  calibrated heads, and the NDCG@k of each user's held-out items ranked by the combined score
  (graded relevance: click 1, + add-to-cart 1, + purchase 1). Any engagement model scores the
  same frame, so a challenger and a champion are compared on identical rows.
- `paired_holdout_metrics`: a challenger's and a champion's metrics on the same rows, with the
  paired-bootstrap interval (resampling users) of each gated difference.
- `page_ndcg`: NDCG_2D of built pages against what users engaged with afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.evaluation import metrics as m
from models.evaluation import paired_bootstrap as pb


def graded_relevance(frame: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    return frame[list(objectives)].to_numpy(np.float64).sum(axis=1)


def ndcg_by_user(
    users: np.ndarray, score: np.ndarray, relevance: np.ndarray, k: int = 10
) -> pd.Series:
    """NDCG@k of each user's rows sorted by score, for the users with at least one relevant row
    (indexed by user)."""
    df = pd.DataFrame({"u": users, "s": score, "r": relevance})
    df = df[df.groupby("u")["r"].transform("max") > 0]
    if df.empty:
        return pd.Series(dtype=float)
    df = df.sort_values(["u", "s"], ascending=[True, False], kind="stable")
    return df.groupby("u", sort=False)["r"].apply(lambda r: m.ndcg_at_k(r.to_numpy(), k))


def ranking_ndcg(users: np.ndarray, score: np.ndarray, relevance: np.ndarray, k: int = 10) -> float:
    """Mean over users with at least one relevant row of NDCG@k of their rows sorted by score."""
    per_user = ndcg_by_user(users, score, relevance, k)
    return float(per_user.mean()) if len(per_user) else float("nan")


@dataclass(frozen=True)
class HoldoutScores:
    """One model's calibrated predictions on held-out rows: per objective, and combined."""

    preds: dict[str, np.ndarray]
    score: np.ndarray
    objectives: tuple[str, ...]  # label columns with a head and both classes


def holdout_scores(
    model: object,
    holdout: pd.DataFrame,
    *,
    objectives: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> HoldoutScores:
    """`model`'s predictions on `holdout` (placements as logged)."""
    objectives = list(objectives or [o for o in model.objectives if o in holdout])
    preds = model.predict(holdout, position_override=None)
    gated = tuple(o for o in objectives if o in preds and holdout[o].min() != holdout[o].max())
    objective_weights = {o: v for o, v in (weights or model.params.weights).items() if o in preds}
    return HoldoutScores(preds, model.combined_score(preds, objective_weights), gated)


def holdout_metrics(
    model: object,
    holdout: pd.DataFrame,
    *,
    objectives: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    k: int = 10,
) -> dict[str, float]:
    """Gate metrics of an `EngagementModel` on held-out examples (placements as logged).

    `objectives` are the label columns present in `holdout`; heads the model lacks are skipped,
    labels without a head are skipped too (reported by the gate as missing)."""
    objectives = list(objectives or [o for o in model.objectives if o in holdout])
    scores = holdout_scores(model, holdout, objectives=objectives, weights=weights)
    return _metrics(scores, holdout, objectives, k)


def _metrics(
    scores: HoldoutScores, holdout: pd.DataFrame, objectives: Sequence[str], k: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    for o in scores.objectives:
        y = holdout[o].to_numpy().astype(np.int8)
        p = scores.preds[o]
        out[f"{o}.auc"] = m.auc(y, p)
        out[f"{o}.pr_auc"] = m.pr_auc(y, p)
        out[f"{o}.log_loss"] = m.log_loss(y, p)
        out[f"{o}.ece"] = m.expected_calibration_error(y, p)
    out["ndcg"] = ranking_ndcg(
        holdout["user_id"].to_numpy(object), scores.score, graded_relevance(holdout, objectives), k
    )
    return out


def paired_holdout_metrics(
    challenger: object,
    champion: object,
    holdout: pd.DataFrame,
    *,
    objectives: Sequence[str],
    resamples: int,
    seed: int,
    level: float = 0.95,
    k: int = 10,
) -> tuple[dict[str, float], dict[str, float], dict[str, tuple[float, float]]]:
    """Both models' gate metrics on the same held-out rows, and for every gated metric both
    have (`<o>.auc`, `<o>.ece`, `ndcg`) the `level` paired-bootstrap interval of
    challenger − champion, resampling users (`models.evaluation.paired_bootstrap`)."""
    objectives = list(objectives)
    mine = holdout_scores(challenger, holdout, objectives=objectives)
    theirs = holdout_scores(champion, holdout, objectives=objectives)
    users, codes = _user_codes(holdout)
    relevance = graded_relevance(holdout, objectives)
    ndcg = [ndcg_by_user(users[codes], s.score, relevance, k) for s in (mine, theirs)]
    ranked = ndcg[0].index.to_numpy(object)  # the same users for both: relevance is shared
    ranked_idx = pd.Index(users).get_indexer(ranked)
    shared = [o for o in mine.objectives if o in theirs.objectives]
    diffs: dict[str, list[np.ndarray]] = {}
    chunks = pb.user_weight_chunks(len(users), resamples, seed, n_rows=len(holdout))
    for wu in chunks:
        w = wu[:, codes]
        for o in shared:
            y = holdout[o].to_numpy(np.float64)
            a, b = mine.preds[o], theirs.preds[o]
            diffs.setdefault(f"{o}.auc", []).append(pb.auc_batch(y, a, w) - pb.auc_batch(y, b, w))
            diffs.setdefault(f"{o}.ece", []).append(pb.ece_batch(y, a, w) - pb.ece_batch(y, b, w))
        if len(ranked):
            wr = wu[:, ranked_idx]
            diffs.setdefault("ndcg", []).append(
                pb.mean_batch(ndcg[0].to_numpy(), wr)
                - pb.mean_batch(ndcg[1].reindex(ranked).to_numpy(), wr)
            )
    intervals = {
        key: pb.percentile_interval(np.concatenate(parts), level) for key, parts in diffs.items()
    }
    return (
        _metrics(mine, holdout, objectives, k),
        _metrics(theirs, holdout, objectives, k),
        intervals,
    )


def _user_codes(holdout: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    codes, users = pd.factorize(holdout["user_id"], sort=True)
    return np.asarray(users, dtype=object), codes


def page_ndcg(pages: pd.DataFrame, relevance: pd.DataFrame, slots: int, per_carousel: int) -> float:
    """Mean NDCG_2D of each user's page grid; `relevance` has user_id, item_id, rel (> 0).
    Only users with at least one relevant item count (the others' NDCG is 0 for any page)."""
    scores = page_ndcg_by_user(pages, relevance, slots, per_carousel)
    return float(np.mean(scores.to_numpy())) if len(scores) else float("nan")


def page_ndcg_by_user(
    pages: pd.DataFrame, relevance: pd.DataFrame, slots: int, per_carousel: int
) -> pd.Series:
    """Each user's page NDCG_2D (indexed by user_id), for the users with a page and at least one
    relevant item."""
    rel = relevance[relevance["rel"] > 0]
    users = np.intersect1d(pages["user_id"].unique(), rel["user_id"].unique())
    if len(users) == 0:
        return pd.Series(dtype=float)
    p = pages[pages["user_id"].isin(users)].merge(
        rel[["user_id", "item_id", "rel"]], on=["user_id", "item_id"], how="left"
    )
    p["rel"] = p["rel"].fillna(0.0)
    # relevant items that never made the page still count in the ideal DCG
    missing = rel[rel["user_id"].isin(users)].merge(
        p[["user_id", "item_id"]], on=["user_id", "item_id"], how="left", indicator=True
    )
    missing = missing[missing["_merge"] == "left_only"]
    scores = {}
    by_user = dict(tuple(missing.groupby("user_id")["rel"]))
    for u, g in p.groupby("user_id", sort=False):
        grid = np.full((slots, per_carousel), np.nan)
        grid[g["slot"].to_numpy() - 1, g["item_rank"].to_numpy() - 1] = g["rel"].to_numpy()
        scores[u] = _ndcg_2d_with_unshown(grid, by_user.get(u, pd.Series(dtype=float)).to_numpy())
    return pd.Series(scores, dtype=float)


def _ndcg_2d_with_unshown(grid: np.ndarray, unshown: np.ndarray) -> float:
    """NDCG_2D whose ideal page also places the relevant items the page did not show."""
    cell = ~np.isnan(grid)
    slot, position = np.indices(grid.shape) + 1
    disc = np.log2(slot + position)
    dcg = float((grid[cell] / disc[cell]).sum())
    gains = np.sort(np.concatenate([grid[cell], unshown]))[::-1]
    ideal_disc = np.sort(disc.ravel())[: len(gains)]
    idcg = float((gains[: len(ideal_disc)] / ideal_disc).sum())
    return dcg / idcg if idcg > 0 else 0.0
