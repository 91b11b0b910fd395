"""Off-policy evaluation job: click rates of policies estimated from logs with propensities.

`run(lake_root, split_ds, ...)` reads the homepage impressions and clicks of the test window
`[split_ds, split_ds + test_days)` and the pipeline's pages for `split_ds`, and writes
`warehouse/reports/ds=<split_ds>/ope.json`. Estimators (IPS, SNIPS, DM, DR with 95% Poisson-
bootstrap intervals) are in `models.evaluation.ope`. The job's parts: the logged rounds
(`jobs.experiments.ope_rounds`), the target policies (`ope_policies`), the reward models and
DM's refitting bootstrap (`ope_rewards`), the learned policy's evaluation (`ope_learned`) and
the text report (`ope_report`). This module holds the entry point `run` and the OBD check.

(a) Open Bandit Dataset standard check, `obd_check`: estimate the Bernoulli Thompson sampling
policy's click rate from the uniform-random log and compare with its observed rate on its own
log (it runs on every day of the lake, not only the test window: the check does not involve the
pipeline, and the sample is small). Round = one random-policy impression (campaign c, position
p, item a), logged propensity 1/n_items(c).
  Target. BTS is context-free and its logged propensities change over the week (per-cell
  standard deviation up to 0.13 around a mean of 0.25). Its time-averaged action
  distribution is estimated by the empirical frequency of each item at each (campaign,
  position) in the BTS log, π̂(a|c,p) = n_bts(c,a,p) / n_bts(c,p) (`bts_distribution=
  "frequency"`, the default). The mean logged propensity per cell, normalised per (c, p)
  (`"mean_propensity"`), is available but is size-biased: a cell's propensity is seen only when
  the item was chosen, so it averages E[π²]/E[π] rather than E[π] and over-weights BTS's
  favourites. Items BTS never showed at (c, p) get 0; the report gives the number of items in
  the support and the Good–Turing estimate of the mass left out (share of the cell's BTS
  impressions whose item was shown exactly once there).
  Importance weight = π̂(a|c,p) / propensity. Reward model: `ope_rewards.RandomLogCTR`,
  cross-fitted in `folds` folds of rounds; q̂(c,a,p) for the logged item,
  v̂ = Σ_a π̂(a|c,p) q̂(c,a,p). Reported per campaign and overall (pooled rounds; the campaign mix of the two logs differs by about 1%). Comparison:
  whether BTS's observed rate lies in each estimator's interval, relative error (estimate −
  observed) / observed, and the interval of the difference (independent bootstraps of the two
  logs).

(b) The learned policy on randomised traffic: `jobs.experiments.ope_learned`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.lake import Lake, join, local_path, parse_ds, shift_ds
from jobs.experiments.ope_learned import learned_policy_ope
from jobs.experiments.ope_policies import bts_action_distribution
from jobs.experiments.ope_report import format_report
from jobs.experiments.ope_rewards import DM_RESAMPLES, RandomLogCTR, dm_refits
from jobs.experiments.ope_rounds import (
    Codes,
    cell_key,
    cross_fit_folds,
    event_days,
    homepage_impressions,
    lake_kind,
    read_events,
)
from models.evaluation import ope

__all__ = ["format_report", "obd_check", "run"]

log = logging.getLogger(__name__)


def run(
    lake_root: str,
    split_ds: str,
    *,
    pages_path: str | None = None,
    test_days: int | None = None,
    resamples: int = 1000,
    seed: int = 0,
    write: bool = True,
) -> dict[str, Any]:
    """OPE of the pages for `split_ds` on the test window, plus the OBD check on OBD lakes.

    Test window: split_ds inclusive to split_ds + test_days exclusive (default: to the last
    event day). Pages: `pages_path`, default `warehouse/pages/ds=<split_ds>/pages.parquet`.
    Writes `warehouse/reports/ds=<split_ds>/ope.json` (unless `write` is False) and returns
    the same dict. Raises FileNotFoundError for missing pages and ValueError for a window
    without events or without randomised traffic.
    """
    t0 = time.perf_counter()
    parse_ds(split_ds)
    if test_days is not None and test_days < 1:
        raise ValueError(f"test_days must be >= 1, got {test_days}")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    lake = Lake(lake_root)
    end = shift_ds(split_ds, test_days) if test_days else None
    events, source = read_events(lake, split_ds, end)
    if events.empty:
        raise ValueError(f"no homepage impressions or clicks in {lake.root} on or after {split_ds}")
    path = pages_path or join(lake.warehouse, "pages", f"ds={split_ds}", "pages.parquet")
    if not io.exists(path):
        raise FileNotFoundError(
            f"no pages at {path}: run the rank step for {split_ds} or pass pages_path"
        )
    pages = pd.read_parquet(local_path(path) if "://" not in path else path)
    kind = lake_kind(events)
    _, days = event_days(lake, split_ds, end)
    result: dict[str, Any] = {
        "lake": lake.root,
        "split_ds": split_ds,
        "window": {"start": split_ds, "end": end, "first_day": days[0], "last_day": days[-1]},
        "events_source": source,
        "pages_path": path,
        "kind": kind,
        "resamples": resamples,
        "seed": seed,
    }
    if kind == "obd":
        all_events, _ = read_events(lake)
        result["obd_check"] = obd_check(all_events, resamples=resamples, seed=seed)
        _, all_days = event_days(lake)
        result["obd_check"]["window"] = {"first_day": all_days[0], "last_day": all_days[-1]}
    result["learned_policy"] = learned_policy_ope(
        lake, pages, events, split_ds=split_ds, resamples=resamples, seed=seed, kind=kind
    )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if write:
        out = join(lake.reports(split_ds), "ope.json")
        io.write_json(out, result)
        result["report_path"] = out
    log.info("OPE for %s done in %s s", split_ds, result["seconds"])
    return result


# ---- (a) Open Bandit Dataset standard check ------------------------------------------------


def _compare(est: dict, obs: dict, confidence: float) -> dict[str, dict]:
    """Observed rate vs each estimator: in the estimate's interval, relative error, difference."""
    out = {}
    o, o_reps = obs["estimate"], obs["replicates"]
    alpha = (1.0 - confidence) / 2.0
    for name in ope.ESTIMATORS:
        e = est["estimators"][name]
        reps = est["replicates"][name]
        k = min(reps.size, o_reps.size)
        diff = reps[:k] - o_reps[:k]
        diff = diff[np.isfinite(diff)]
        lo, hi = np.quantile(diff, [alpha, 1 - alpha]) if diff.size > 1 else (np.nan, np.nan)
        inside = (
            e["ci_low"] is not None and e["ci_low"] <= o <= e["ci_high"]
            if e["estimate"] is not None
            else False
        )
        out[name] = {
            "observed_in_ci": bool(inside),
            "relative_error": (e["estimate"] - o) / o if o and e["estimate"] is not None else None,
            "difference": {
                "estimate": e["estimate"] - o if e["estimate"] is not None else None,
                "ci_low": float(lo) if np.isfinite(lo) else None,
                "ci_high": float(hi) if np.isfinite(hi) else None,
            },
            "difference_ci_covers_0": bool(np.isfinite(lo) and lo <= 0.0 <= hi),
        }
    return out


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "replicates"}


def obd_check(
    events: pd.DataFrame,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    folds: int = 5,
    bts_distribution: str = "frequency",
    dm_resamples: int | None = None,
) -> dict[str, Any]:
    """The OBD standard check: BTS's click rate estimated from the random log vs observed.

    `events`: impressions and clicks of an OBD lake (columns as in the lake: event_type,
    user_id, item_id, carousel_id, position, propensity, logging_policy, ts; session_id and slot
    optional). Returns {overall, campaigns: {campaign: section}, support, ...}; a section holds
    the `models.evaluation.ope.estimate` output for the random rounds, `observed` (BTS's rate on its log
    with its interval) and `comparison` per estimator. Raises ValueError when either log is
    missing.
    """
    t0 = time.perf_counter()
    dm_resamples = dm_resamples or min(resamples, DM_RESAMPLES)
    imp, counts = homepage_impressions(events)
    rand = imp[imp["policy"] == "random"].reset_index(drop=True)
    bts = imp[imp["policy"] == "bts"].reset_index(drop=True)
    if rand.empty or bts.empty:
        raise ValueError(
            f"the OBD check needs impressions of both logging policies 'random' and 'bts' "
            f"(got {len(rand)} random, {len(bts)} bts)"
        )
    dist, support = bts_action_distribution(bts, bts_distribution)
    # target probability of each random round's logged item (0 outside BTS's support)
    prob = (
        rand[["carousel_id", "position", "item_id"]]
        .merge(dist, on=["carousel_id", "position", "item_id"], how="left")["probability"]
        .fillna(0.0)
        .to_numpy()
    )
    iw = ope.importance_weights(prob, rand["propensity"].to_numpy(np.float64))
    y = rand["clicked"].to_numpy(np.float64)
    cross_fit = partial(_bts_cross_fit, _BtsRewards.build(rand, dist, folds, seed))
    q, v = cross_fit(None)
    sums = ope.rounds(y, iw, q, v)
    masks = _campaign_masks(rand, bts)

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        weights = ope.poisson_weights(rng, len(rand))
        return weights, cross_fit(weights)[1]

    dm_reps = dm_refits(draw, [m[0] for m in masks.values()], dm_resamples, seed)
    kw = {"resamples": resamples, "seed": seed, "confidence": confidence}
    sections = {
        name: _obd_section(sums.subset(mr), bts.loc[mb, "clicked"], dm, **kw)
        for (name, (mr, mb)), dm in zip(masks.items(), dm_reps, strict=True)
    }
    out: dict[str, Any] = {
        "target": "bts",
        "bts_distribution": bts_distribution,
        "rounds": "random-policy impressions (campaign, position, item)",
        "counts": {**counts, "random_impressions": len(rand), "bts_impressions": len(bts)},
        "overall": sections.pop("overall"),
        "campaigns": sections,
        "support": support.to_dict(orient="records"),
        "reward_model": (
            "position-based CTR per (campaign, position) x item factor, "
            f"{folds}-fold cross-fitted on the random log"
        ),
    }
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


@dataclass(frozen=True)
class _BtsRewards:
    """The random log's reward model and BTS's distribution as integer codes."""

    log: RandomLogCTR
    fold: np.ndarray  # cross-fitting fold of each random round
    folds: int
    dist_cell: np.ndarray
    dist_item: np.ndarray
    dist_prob: np.ndarray

    @classmethod
    def build(cls, rand: pd.DataFrame, dist: pd.DataFrame, folds: int, seed: int) -> _BtsRewards:
        cells = Codes(
            cell_key(rand["carousel_id"], rand["position"]),
            cell_key(dist["carousel_id"], dist["position"]),
        )
        items = Codes(rand["item_id"], dist["item_id"])
        log = RandomLogCTR.from_rounds(rand, cells, items)
        return cls(
            log=log,
            fold=cross_fit_folds(len(rand), folds, seed),
            folds=folds,
            dist_cell=cells(cell_key(dist["carousel_id"], dist["position"])),
            dist_item=items(dist["item_id"]),
            dist_prob=dist["probability"].to_numpy(np.float64),
        )


def _bts_cross_fit(
    rewards: _BtsRewards, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted q̂ of each random round's logged item and v̂ = Σ_a π̂(a|c,p) q̂(c,a,p)
    (`weights`: bootstrap weights of the random rounds, or None)."""
    log, fold = rewards.log, rewards.fold
    d_cell, d_item = rewards.dist_cell, rewards.dist_item
    q, v = np.empty(len(fold)), np.empty(len(fold))
    for f in range(rewards.folds):
        test = fold == f
        model = log.fit(~test, weights)
        q[test] = model.predict(log.cell[test], log.item[test])
        v_cell = np.bincount(
            d_cell, weights=rewards.dist_prob * model.predict(d_cell, d_item), minlength=log.n_cells
        )
        v[test] = v_cell[log.cell[test]]
    return q, v


def _campaign_masks(
    rand: pd.DataFrame, bts: pd.DataFrame
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(random rounds, BTS rounds) of "overall" and of each campaign both logs have."""
    campaigns = sorted(set(rand["carousel_id"]) | set(bts["carousel_id"]))
    masks = {"overall": (np.ones(len(rand), bool), np.ones(len(bts), bool))}
    for c in campaigns:
        mr, mb = (rand["carousel_id"] == c).to_numpy(), (bts["carousel_id"] == c).to_numpy()
        if mr.any() and mb.any():
            masks[c] = (mr, mb)
    return masks


def _obd_section(
    sums: ope.RoundSums,
    bts_clicked: pd.Series,
    dm: np.ndarray,
    *,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict:
    """Estimates on the random rounds, BTS's observed rate and their comparison."""
    est = ope.estimate(
        sums,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        with_replicates=True,
        dm_replicates=dm,
    )
    obs = ope.mean_with_ci(
        bts_clicked.to_numpy(np.float64),
        resamples=resamples,
        seed=seed + 1,
        confidence=confidence,
        with_replicates=True,
    )
    return {
        **_strip(est),
        "observed": _strip(obs),
        "random_observed": est["logging"],
        "comparison": _compare(est, obs, confidence),
    }
