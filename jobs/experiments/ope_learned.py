"""OPE of the pipeline's pages (the learned policy) on randomised traffic, `learned_policy_ope`.

`pages` is the pipeline's pages frame (one row per placement; `__default__` for users without a
page). Target policies: `jobs.experiments.ope_policies`; reward models:
`jobs.experiments.ope_rewards`.

OBD (`obd_learned`). Round = (user, campaign, position) impression of the random log (and,
separately, of the BTS log with its logged propensities). The target shows at position p the
p-th item of carousel "obd:<campaign>" of the user's page (the `__default__` page for users
without one); if that page has no such carousel, the campaign's items on that page by
descending item_score (p-th distinct); for a user's own page that still has nothing, the same
two rules on the `__default__` page; else the round is skipped (counted). Deterministic, so the
importance weight is 1[logged item = target item] / propensity. Reward model as in the OBD
check (cross-fitted on the random log for random rounds; fitted on the whole random log for BTS
rounds), v̂ = q̂(target item).

Generated lakes (`generated_learned`). Round = one random page view (user_id, session_id: the
generator shows one homepage per session). The target re-arranges the logged content of the
page (`arrange_random_pages`). Conditional on the page's content, the random policy's
arrangement is uniform: carousel k at slot s with probability 1/S (S = the layout's slot count,
the largest slot of any random page, at least the page's carousel count: an empty candidate
still takes a slot) and item i at position l with probability 1/P_k (P_k = items shown in the
carousel, which fill positions 1..P_k). The target only uses the content, so the weights are
those of a fixed policy. A logged placement matches when the target puts the same item of the
same carousel at the same (slot, position); importance weight = match · S · P_k (E = 1 per
placement). Value = clicks per page view (and per impression: the target shows as many
placements as the logged page).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from jobs.experiments.ope_policies import (
    OBD_TARGET_SOURCES,
    arrange_random_pages,
    attach_obd_targets,
    check_pages,
    lake_families,
    lake_popularity,
    obd_targets,
)
from jobs.experiments.ope_rewards import (
    DM_RESAMPLES,
    PageRewardModel,
    RandomLogCTR,
    dm_refits,
    exam_curve,
    examination,
)
from jobs.experiments.ope_rounds import (
    Codes,
    cell_key,
    cross_fit_folds,
    homepage_impressions,
    lake_kind,
    observed_by_policy,
    random_page_rounds,
)
from models.evaluation import ope


def learned_policy_ope(
    lake: Lake | None,
    pages: pd.DataFrame,
    events: pd.DataFrame,
    *,
    split_ds: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    folds: int = 5,
    kind: str | None = None,
    dm_resamples: int | None = None,
) -> dict[str, Any]:
    """OPE of the pipeline's pages (`pages`) on the randomised rounds of `events`.

    `lake` (optional) supplies the examination and item_stats feature tables as of `split_ds`
    and the curated carousels' families (generated lakes). `kind` defaults to `lake_kind`.
    Returns the `models.evaluation.ope.estimate` output(s) with the target's coverage; raises ValueError
    when the events have no randomised traffic.
    """
    t0 = time.perf_counter()
    pages = check_pages(pages)
    kind = kind or lake_kind(events)
    imp, counts = homepage_impressions(events)
    kw = {
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
        "folds": folds,
        "dm_resamples": dm_resamples or min(resamples, DM_RESAMPLES),
    }
    if kind == "obd":
        out = obd_learned(imp, pages, **kw)
    elif kind == "generated":
        out = generated_learned(imp, pages, lake, split_ds, **kw)
    else:
        raise ValueError(
            "no randomised traffic (logging_policy 'random' or 'bts') in the events: nothing to evaluate with"
        )
    out["counts"] = counts
    out["observed_by_policy"] = observed_by_policy(
        imp, resamples=resamples, seed=seed, confidence=confidence
    )
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


# ---- OBD lakes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ObdRounds:
    """What the evaluation of every OBD log (random, BTS) shares."""

    pages: pd.DataFrame
    targets: pd.DataFrame
    cells: Codes
    items: Codes
    log: RandomLogCTR  # the random log, the reward model's fitting data
    fold: np.ndarray  # cross-fitting fold of each random round
    folds: int
    resamples: int
    seed: int
    confidence: float
    dm_resamples: int


def obd_learned(
    imp: pd.DataFrame,
    pages: pd.DataFrame,
    *,
    resamples: int,
    seed: int,
    confidence: float,
    folds: int,
    dm_resamples: int,
) -> dict[str, Any]:
    """The pipeline's pages on the random (and BTS) impressions of an OBD lake."""
    targets = obd_targets(pages)
    rand = imp[imp["policy"] == "random"].reset_index(drop=True)
    if rand.empty:
        raise ValueError("no random-policy impressions in the window")
    cells = Codes(cell_key(imp["carousel_id"], imp["position"]))
    items = Codes(imp["item_id"], targets["item_id"])
    rand = rand.assign(_row=np.arange(len(rand)))
    log = RandomLogCTR.from_rounds(rand, cells, items)
    ctx = _ObdRounds(
        pages, targets, cells, items, log, cross_fit_folds(len(rand), folds, seed), folds,
        resamples, seed, confidence, dm_resamples,
    )  # fmt: skip
    out: dict[str, Any] = {
        "kind": "obd",
        "round": "impression (user, campaign, position)",
        "target": "p-th item of the page's carousel obd:<campaign> (fallbacks in target_source)",
        "reward_model": (
            "position-based CTR per (campaign, position) x item factor, fitted on the random "
            f"log ({folds}-fold cross-fitted for random rounds)"
        ),
        "random": _obd_evaluate(ctx, rand, cross_fitted=True),
    }
    bts = imp[imp["policy"] == "bts"].reset_index(drop=True)
    if not bts.empty:
        out["bts"] = _obd_evaluate(ctx, bts.assign(_row=-1), cross_fitted=False)
    return out


def _obd_evaluate(ctx: _ObdRounds, frame: pd.DataFrame, cross_fitted: bool) -> dict:
    """Estimates on one log's rounds (`_row`: the round's row in the random log, or -1)."""
    m = attach_obd_targets(frame, ctx.pages, ctx.targets)
    skipped = int(m["target_item"].isna().sum())
    m = m[m["target_item"].notna()].reset_index(drop=True)
    if m.empty:
        return {"rounds": 0, "skipped_rounds": skipped}
    match = (m["target_item"] == m["item_id"]).to_numpy(np.float64)
    iw = ope.importance_weights(match, m["propensity"].to_numpy(np.float64))
    y = m["clicked"].to_numpy(np.float64)
    cell = ctx.cells(cell_key(m["carousel_id"], m["position"]))
    logged, target = ctx.items(m["item_id"]), ctx.items(m["target_item"])
    row = m["_row"].to_numpy()
    predict = partial(_obd_predict, ctx, cell, logged, target, row, cross_fitted)

    q, v = predict(None)
    sums = ope.rounds(y, iw, q, v)
    masks = {"overall": np.ones(len(m), bool)}
    for c in sorted(m["carousel_id"].unique()):
        masks[c] = (m["carousel_id"] == c).to_numpy()

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        fit_weights = ope.poisson_weights(rng, len(ctx.fold))
        own = fit_weights[row] if cross_fitted else ope.poisson_weights(rng, len(m))
        return own, predict(fit_weights)[1]

    dm = dict(
        zip(masks, dm_refits(draw, list(masks.values()), ctx.dm_resamples, ctx.seed), strict=True)
    )
    return _obd_result(ctx, m, sums, masks, dm, skipped)


def _obd_predict(
    ctx: _ObdRounds,
    cell: np.ndarray,
    logged: np.ndarray,
    target: np.ndarray,
    row: np.ndarray,
    cross_fitted: bool,
    weights: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """q̂ of the logged and of the target's item per round (`weights`: bootstrap weights of
    the random log's rounds, or None)."""
    fold = ctx.fold
    if not cross_fitted:  # rounds of another log: one model on the whole random log
        model = ctx.log.fit(np.ones(len(fold), bool), weights)
        return model.predict(cell, logged), model.predict(cell, target)
    q, v = np.empty(len(cell)), np.empty(len(cell))
    for f in range(ctx.folds):
        model = ctx.log.fit(fold != f, weights)
        sel = fold[row] == f
        q[sel] = model.predict(cell[sel], logged[sel])
        v[sel] = model.predict(cell[sel], target[sel])
    return q, v


def _obd_result(
    ctx: _ObdRounds,
    m: pd.DataFrame,
    sums: ope.RoundSums,
    masks: dict[str, np.ndarray],
    dm: dict[str, np.ndarray],
    skipped: int,
) -> dict:
    """The estimates overall and per campaign, with the target's coverage."""
    kw = {"resamples": ctx.resamples, "seed": ctx.seed, "confidence": ctx.confidence}
    res = ope.estimate(sums, dm_replicates=dm["overall"], **kw)
    res["skipped_rounds"] = skipped
    res["target_source"] = {
        OBD_TARGET_SOURCES[int(k)]: int(n)
        for k, n in m["source"].value_counts().sort_index().items()
    }
    res["rounds_without_user_page"] = int((m["page_user"] == DEFAULT_PAGE_KEY).sum())
    res["campaigns"] = {}
    for c, mask in list(masks.items())[1:]:
        sub = ope.estimate(sums.subset(mask), dm_replicates=dm[c], **kw)
        res["campaigns"][c] = {
            k: sub[k] for k in ("rounds", "match_share", "ess", "estimators", "logging")
        }
    return res


# ---- generated lakes ----------------------------------------------------------------------


def generated_learned(
    imp: pd.DataFrame,
    pages: pd.DataFrame,
    lake: Lake | None,
    split_ds: str | None,
    *,
    resamples: int,
    seed: int,
    confidence: float,
    folds: int,
    dm_resamples: int,
) -> dict[str, Any]:
    """The pipeline's pages on the random page views of a generated lake."""
    rand = random_page_rounds(imp)
    n_rounds = int(rand["round"].max()) + 1
    families = lake_families(lake) if lake is not None else None
    popularity = None
    if lake is not None and split_ds is not None:
        popularity = lake_popularity(lake, split_ds)
    arranged, tiers = arrange_random_pages(rand, pages, families=families, popularity=popularity)
    iw, s_layout = _page_importance_weights(arranged, rand)

    exam, exam_source = examination(lake, split_ds, rand)
    max_slot = int(max(imp["slot"].max(), arranged["target_slot"].max()))
    max_pos = int(max(imp["position"].max(), arranged["target_position"].max()))
    e_slot, e_pos = (
        exam_curve(exam.get("slot", {}), max_slot),
        exam_curve(exam.get("position", {}), max_pos),
    )
    model = PageRewardModel(imp, arranged, e_slot, e_pos, n_rounds=n_rounds, folds=folds, seed=seed)
    q, v = model.predict(model.o_clicks, model.o_exposure, None)
    sums = ope.rounds_from_placements(
        model.round_index, model.clicked, iw, q, v_target=v, n_rounds=n_rounds
    )
    (dm,) = dm_refits(model.draw_refit, [np.ones(n_rounds, bool)], dm_resamples, seed)
    res = ope.estimate(
        sums, resamples=resamples, seed=seed, confidence=confidence, dm_replicates=dm
    )
    logged_prop = rand["propensity"]
    return {
        "kind": "generated",
        "round": "random page view (user_id, session_id); value = clicks per page view",
        "target": "the page's logged carousels and items re-arranged by the pipeline's scores (tiers below)",
        "target_tiers": tiers,
        "layout_slots": s_layout,
        "examination": {
            "source": exam_source,
            "slot": [float(x) for x in e_slot[1:]],
            "position": [float(x) for x in e_pos[1:]],
        },
        "reward_model": (
            "q = a0 * e_slot * e_position * item factor, fitted on the window's other-policy "
            f"impressions + random pages of the other folds ({folds}-fold cross-fitting)"
        ),
        "logged_propensity": {"min": float(logged_prop.min()), "max": float(logged_prop.max())},
        **res,
    }


def _page_importance_weights(arranged: pd.DataFrame, rand: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Importance weight of each logged random placement, match · S · P_k (conditional
    propensities: 1/S per carousel-slot, 1/P_k per item-position), and the layout's S."""
    unit = ["round", "carousel_id", "slot"]
    g = arranged.groupby(unit, sort=False)["position"]
    p_k = np.maximum(g.transform("size"), g.transform("max")).to_numpy(np.float64)
    s_layout = int(rand["slot"].max())
    per_round = arranged.drop_duplicates(unit).groupby("round").size()
    s_round = np.maximum(s_layout, per_round.reindex(arranged["round"]).to_numpy()).astype(
        np.float64
    )
    match = (arranged["target_slot"].to_numpy() == arranged["slot"].to_numpy()) & (
        arranged["target_position"].to_numpy() == arranged["position"].to_numpy()
    )
    return match * s_round * p_k, s_layout
