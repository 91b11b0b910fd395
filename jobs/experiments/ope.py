"""Off-policy evaluation job: click rates of policies estimated from logs with propensities.

`run(lake_root, split_ds, ...)` reads the homepage impressions and clicks of the test window
`[split_ds, split_ds + test_days)` and the pipeline's pages for `split_ds`, and writes
`warehouse/reports/ds=<split_ds>/ope.json`. Estimators (IPS, SNIPS, DM, DR with 95% Poisson-
bootstrap intervals) are in `models.evaluation.ope`; this module defines the rounds, the target policies,
the weights and the reward models.

Events. Accepted events (`warehouse/events`, after ingest) when the lake has any, else the raw
`events/` partitions (a lake that was only generated or imported); `events_source` in the
report says which. Only events with a placement are used: impressions and clicks with a
carousel, a position and an item (a missing slot counts as slot 1). A click is matched to its
impression by (logging_policy, user, page view, carousel, slot, position, item), where the page
view is `session_id` when the event has one and the timestamp otherwise (OBD logs a click with
its impression's ts). A round's reward is 1 if its impression was clicked (click-through);
clicks without an impression are counted in `clicks_unmatched` and left out.

Lake kind: "obd" when carousel ids start with "obd:" or `logging_policy` has "bts" (an Open
Bandit Dataset import, `jobs.inputs.importers`); "generated" when `logging_policy` has "random"
(`jobs.inputs.generate`'s randomised share, or any lake that logs such pages the same way).

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
  w = π̂(a|c,p) / propensity. Reward model: `models.evaluation.ope.fit_position_based_ctr` on the random
  log with cell = (campaign, position), item factors shrunk with 2 pseudo clicks, cross-fitted
  in `folds` folds of rounds (a round's q̂ comes from a model that never saw it);
  q̂(c,a,p) for the logged item, v̂ = Σ_a π̂(a|c,p) q̂(c,a,p). Reported per campaign and
  overall (pooled rounds; the campaign mix of the two logs differs by about 1%). Comparison:
  whether BTS's observed rate lies in each estimator's interval, relative error (estimate −
  observed) / observed, and the interval of the difference (independent bootstraps of the two
  logs).

(b) The learned policy on randomised traffic, `learned_policy_ope`. `pages` is the pipeline's
pages frame (one row per placement; `__default__` for users without a page).
  OBD. Round = (user, campaign, position) impression of the random log (and, separately, of
  the BTS log with its logged propensities). The target shows at position p the p-th item of
  carousel "obd:<campaign>" of the user's page (the `__default__` page for users without one);
  if that page has no such carousel, the campaign's items on that page by descending
  item_score (p-th distinct); for a user's own page that still has nothing, the same two rules
  on the `__default__` page; else the round is skipped (counted). Deterministic, so w =
  1[logged item = target item] / propensity. Reward model as in (a) (cross-fitted on the random
  log for random rounds; fitted on the whole random log for BTS rounds), v̂ = q̂(target item).
  Generated lakes. Round = one random page view (user_id, session_id: the generator shows one
  homepage per session). The target re-arranges the logged content of the page:
    carousels ordered by (tier, −score, tie), tiers: 0 the user's page has the carousel
    (score = its carousel_score φ); 1 the user's page has a carousel of the same family (the
    family's best φ; a carousel the pipeline did not put on the page is assumed to score below
    those it did); 2/3 the same two rules on the `__default__` page; 4 unscored;
    items in each carousel ordered by (tier, −score, tie), tiers: 0 the item's item_score on
    the user's page (in that carousel, else its best on the page); 1 its item_score on the
    `__default__` page (popularity); 2 popularity `pop_total` from the `item_stats` feature
    table as of split_ds (when the lake has it); 3 unscored.
    Ties and unscored carousels/items follow a fixed pseudo-random order, a hash of (user,
    carousel[, item]), NOT the logged order: a target that keeps the logged order where it
    knows nothing depends on the logged action and is not a policy (IPS then counts every
    such placement as a match with weight S·P_k, an estimate ~30 times too high).
  (A user without a page uses `__default__` as their page.) Carousels go to slots 1..C, items
  to positions 1..P_k. Conditional on the page's content, the random policy's arrangement is
  uniform: carousel k at slot s with probability 1/S (S = the layout's slot count, the largest
  slot of any random page, at least the page's carousel count: an empty candidate still takes
  a slot) and item i at position l with probability 1/P_k (P_k = items shown in the carousel,
  which fill positions 1..P_k). The target only uses the content, so the weights are those of
  a fixed policy. A logged placement matches when the target puts the same item of the same
  carousel at the same (slot, position); w = match · S · P_k (E[w] = 1 per placement).
  Value = clicks per page view (and per impression: the target shows as many placements as the
  logged page). Reward model: q̂(u,i,s,l) = ê_s · ê_l · â(u,i) with ê the slot/position
  examination table of the lake's feature store as of split_ds (`warehouse/features/
  examination`, the stratified Poisson fit of features.propensity), else CTR ratios on the
  window's random pages (slot s vs slot 1; position l vs position 1 among carousels showing at
  least l items), else 1/log2(1+s); â(i) = a0 × f_i (`models.evaluation.ope.exam_item_factors`: f_i =
  (c_i + 2) / (a0·X_i + 2), X_i = the item's Σ ê over impressions), fitted on the window's
  homepage impressions of the other policies plus the random pages of the other folds
  (cross-fitting over random page views). v̂ = Σ q̂ over the target's placements. (A user
  factor on top was tried: it lowered DM's error on generated lakes by ~10% and made the
  refitting bootstrap much slower, so the model has none.)

DM intervals come from a bootstrap that refits the reward model (Poisson weights on the fitting
data's page views / impressions, every fold refitted; at most `DM_RESAMPLES` replicates): with q̂ held fixed, as in
the IPS/SNIPS/DR round bootstrap, DM's interval would only reflect the spread of v̂ over rounds
and come out ~100 times too narrow on OBD.

Everything is vectorised with pandas/numpy (no loop over rounds).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path, parse_ds, shift_ds
from models.evaluation import ope

log = logging.getLogger(__name__)

EVENT_COLUMNS: tuple[str, ...] = (
    "ts",
    "user_id",
    "session_id",
    "event_type",
    "item_id",
    "carousel_id",
    "slot",
    "position",
    "propensity",
    "logging_policy",
)
PAGE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "slot",
    "item_rank",
    "item_id",
    "carousel_id",
    "item_score",
    "carousel_score",
)
_KEY = ["policy", "user_id", "page_key", "carousel_id", "slot", "position", "item_id"]
_ROWS = ("ips", "snips", "dm", "dr")
# DM's refitting bootstrap: at most this many replicates (each refits every fold's model)
DM_RESAMPLES = 200


# ---- events -------------------------------------------------------------------------------


def event_days(
    lake: Lake, start: str | None = None, end: str | None = None
) -> tuple[str, list[str]]:
    """The events table OPE reads ("warehouse/events" when the lake has accepted events, else
    the raw "events") and its `ds` partitions with `start <= ds < end` (None: unbounded)."""
    source, root = "warehouse/events", lake.events
    days = io.partitions(root)
    if not days:
        source, days = "events", io.partitions(lake.raw_events)
    days = [d for d in days if (start is None or d >= start) and (end is None or d < end)]
    return source, days


def read_events(
    lake: Lake, start: str | None = None, end: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Homepage impressions and clicks with `start <= ds < end` (None: unbounded), and the
    table they came from (see `event_days`)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    source, days = event_days(lake, start, end)
    root = lake.events if source == "warehouse/events" else lake.raw_events
    parts = []
    for d in days:
        ds = pads.dataset(local_path(join(root, f"ds={d}")), format="parquet")
        cols = [c for c in EVENT_COLUMNS if c in ds.schema.names]
        flt = pads.field("event_type").isin(["impression", "click"])
        parts.append(ds.to_table(columns=cols, filter=flt))
    if not parts:
        return pd.DataFrame(columns=list(EVENT_COLUMNS)), source
    table = pa.concat_tables(parts, promote_options="permissive")
    return table.to_pandas(), source


def homepage_impressions(events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per logged impression with its click outcome.

    Columns: policy, user_id, page_key, carousel_id, slot, position, item_id, propensity,
    clicked (0/1). Returns also counts: impressions, clicks, clicks_unmatched,
    impressions_duplicated (same key logged twice; the first is kept).
    """
    need = ["event_type", "user_id", "item_id", "carousel_id", "position"]
    missing = [c for c in need if c not in events.columns]
    if missing:
        raise ValueError(f"events lack column(s): {', '.join(missing)}")
    ev = events[
        events["event_type"].isin(["impression", "click"])
        & events["carousel_id"].notna()
        & events["position"].notna()
        & events["item_id"].notna()
    ]

    def col(name: str, default: object) -> pd.Series:
        if name in ev.columns:
            return ev[name]
        return pd.Series(default, index=ev.index)

    # page view: the session where the event has one, else its timestamp (µs)
    page_key = col("session_id", None).astype(object).to_numpy(copy=True)
    no_session = pd.isna(page_key)
    if no_session.any():
        if "ts" not in ev.columns:
            raise ValueError("events without session_id need a ts column to match clicks")
        ts = pd.DatetimeIndex(pd.to_datetime(ev["ts"].to_numpy()[no_session], utc=True))
        page_key[no_session] = np.char.add("t", ts.asi8.astype(str)).astype(object)
    frame = pd.DataFrame(
        {
            "event_type": ev["event_type"].to_numpy(),
            "policy": col("logging_policy", None).fillna("unknown").astype(str).to_numpy(),
            "user_id": ev["user_id"].astype(str).to_numpy(),
            "page_key": page_key.astype(str),
            "carousel_id": ev["carousel_id"].astype(str).to_numpy(),
            "slot": col("slot", 1).fillna(1).astype(np.int64).to_numpy(),
            "position": ev["position"].astype(np.int64).to_numpy(),
            "item_id": ev["item_id"].astype(str).to_numpy(),
            "propensity": col("propensity", np.nan).astype(np.float64).to_numpy(),
        }
    )
    is_imp = frame["event_type"].to_numpy() == "impression"
    imp = frame[is_imp].drop(columns="event_type")
    dup = imp.duplicated(_KEY)
    imp = imp[~dup].reset_index(drop=True)
    clicks = frame[~is_imp].groupby(_KEY, sort=False).size().rename("n_clicks").reset_index()
    imp = imp.merge(clicks, on=_KEY, how="left")
    imp["clicked"] = (imp["n_clicks"].fillna(0) > 0).astype(np.int8)
    matched = int(imp["n_clicks"].fillna(0).sum())
    imp = imp.drop(columns="n_clicks")
    counts = {
        "impressions": len(imp),
        "clicks": int((~is_imp).sum()),
        "clicks_unmatched": int((~is_imp).sum()) - matched,
        "impressions_duplicated": int(dup.sum()),
    }
    return imp, counts


def lake_kind(events: pd.DataFrame) -> str:
    """'obd', 'generated', or 'none' (no randomised traffic to evaluate with)."""
    cars = (
        pd.Series(pd.unique(events["carousel_id"].dropna())).astype(str)
        if "carousel_id" in events
        else pd.Series([], dtype=str)
    )
    policies = (
        set(events["logging_policy"].dropna().astype(str).unique())
        if "logging_policy" in events
        else set()
    )
    if "bts" in policies or cars.str.startswith("obd:").any():
        return "obd"
    if "random" in policies:
        return "generated"
    return "none"


# ---- (a) Open Bandit Dataset standard check ------------------------------------------------


def bts_action_distribution(
    bts: pd.DataFrame, method: str = "frequency"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BTS's action distribution per (carousel_id, position) from its own log.

    Returns (distribution: carousel_id, position, item_id, probability; support: per
    (carousel_id, position) impressions, items in the support, singletons and the Good–Turing
    missing mass = singletons / impressions, and for "mean_propensity" the sum of the mean
    propensities before normalising).
    """
    if method not in ("frequency", "mean_propensity"):
        raise ValueError(
            f"bts_distribution must be 'frequency' or 'mean_propensity', got {method!r}"
        )
    cell = ["carousel_id", "position"]
    g = bts.groupby([*cell, "item_id"], sort=True)
    dist = g.agg(n=("clicked", "size"), mean_prop=("propensity", "mean")).reset_index()
    if method == "frequency":
        raw = dist["n"].astype(np.float64)
    else:
        raw = dist["mean_prop"].astype(np.float64)
    total = raw.groupby([dist["carousel_id"], dist["position"]]).transform("sum")
    dist["probability"] = raw / total
    sup = dist.groupby(cell, sort=True).agg(
        impressions=("n", "sum"),
        items=("n", "size"),
        singletons=("n", lambda s: int((s == 1).sum())),
        mean_propensity_mass=("mean_prop", "sum"),
    )
    sup["missing_mass_good_turing"] = sup["singletons"] / sup["impressions"]
    return dist[[*cell, "item_id", "probability"]], sup.reset_index()


class _Codes:
    """Integer codes of string keys (one vocabulary per kind)."""

    def __init__(self, *values: pd.Series | np.ndarray) -> None:
        self.vocab = pd.Index(
            pd.unique(np.concatenate([np.asarray(v, dtype=object) for v in values]))
        )

    def __call__(self, values: pd.Series | np.ndarray) -> np.ndarray:
        codes = self.vocab.get_indexer(np.asarray(values, dtype=object))
        if (codes < 0).any():
            raise KeyError("value outside the vocabulary")
        return codes

    def __len__(self) -> int:
        return len(self.vocab)


def _cell_key(carousel: pd.Series | np.ndarray, position: pd.Series | np.ndarray) -> np.ndarray:
    return (
        pd.Series(np.asarray(carousel, dtype=object)).astype(str)
        + "|"
        + pd.Series(np.asarray(position)).astype(str)
    ).to_numpy(object)


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    if folds < 2:
        raise ValueError(f"folds must be >= 2 for cross-fitting, got {folds}")
    return np.random.default_rng(seed).permutation(n) % folds


def _compare(est: dict, obs: dict, confidence: float) -> dict[str, dict]:
    """Observed rate vs each estimator: in the estimate's interval, relative error, difference."""
    out = {}
    o, o_reps = obs["estimate"], obs["replicates"]
    alpha = (1.0 - confidence) / 2.0
    for name in _ROWS:
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


def _dm_refits(
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

    cells = _Codes(
        _cell_key(rand["carousel_id"], rand["position"]),
        _cell_key(dist["carousel_id"], dist["position"]),
    )
    items = _Codes(rand["item_id"], dist["item_id"])
    r_cell = cells(_cell_key(rand["carousel_id"], rand["position"]))
    r_item = items(rand["item_id"])
    d_cell = cells(_cell_key(dist["carousel_id"], dist["position"]))
    d_item = items(dist["item_id"])
    d_prob = dist["probability"].to_numpy(np.float64)

    # target probability of each random round's logged item (0 outside BTS's support)
    prob = (
        rand[["carousel_id", "position", "item_id"]]
        .merge(dist, on=["carousel_id", "position", "item_id"], how="left")["probability"]
        .fillna(0.0)
        .to_numpy()
    )
    w = ope.importance_weights(prob, rand["propensity"].to_numpy(np.float64))
    y = rand["clicked"].to_numpy(np.float64)

    fold = _folds(len(rand), folds, seed)

    def cross_fit(weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        q, v = np.empty(len(rand)), np.empty(len(rand))
        for f in range(folds):
            test = fold == f
            model = ope.fit_position_based_ctr(
                r_cell[~test],
                r_item[~test],
                y[~test],
                n_cells=len(cells),
                n_items=len(items),
                weights=None if weights is None else weights[~test],
            )
            q[test] = model.predict(r_cell[test], r_item[test])
            v_cell = np.bincount(
                d_cell, weights=d_prob * model.predict(d_cell, d_item), minlength=len(cells)
            )
            v[test] = v_cell[r_cell[test]]
        return q, v

    q, v = cross_fit(None)
    sums = ope.rounds(y, w, q, v)

    campaigns = sorted(set(rand["carousel_id"]) | set(bts["carousel_id"]))
    masks = {"overall": (np.ones(len(rand), bool), np.ones(len(bts), bool))}
    for c in campaigns:
        mr, mb = (rand["carousel_id"] == c).to_numpy(), (bts["carousel_id"] == c).to_numpy()
        if mr.any() and mb.any():
            masks[c] = (mr, mb)

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        weights = ope.poisson_weights(rng, len(rand))
        return weights, cross_fit(weights)[1]

    dm_reps = _dm_refits(draw, [m[0] for m in masks.values()], dm_resamples, seed)

    def section(mask_r: np.ndarray, mask_b: np.ndarray, dm: np.ndarray) -> dict:
        est = ope.estimate(
            sums.subset(mask_r),
            resamples=resamples,
            seed=seed,
            confidence=confidence,
            with_replicates=True,
            dm_replicates=dm,
        )
        obs = ope.mean_with_ci(
            bts.loc[mask_b, "clicked"].to_numpy(np.float64),
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

    sections = {
        name: section(mr, mb, dm)
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


# ---- (b) the learned policy ---------------------------------------------------------------


def _check_pages(pages: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PAGE_COLUMNS if c not in pages.columns]
    if missing:
        raise ValueError(f"pages lack column(s): {', '.join(missing)}")
    if pages.empty:
        raise ValueError("pages are empty")
    out = pages.copy()
    out["user_id"] = out["user_id"].astype(str)
    out["carousel_id"] = out["carousel_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    if "family" not in out.columns:
        ids = pd.Series(pd.unique(out["carousel_id"]))
        out["family"] = out["carousel_id"].map(
            dict(zip(ids, ids.map(_family_from_id), strict=True))
        )
    return out


def _family_from_id(carousel_id: str) -> str:
    head = str(carousel_id).split(":", 1)[0]
    return head if head in ("category", "brand", "obd") else str(carousel_id)


def _page_user(users: pd.Series, pages: pd.DataFrame) -> tuple[np.ndarray, int]:
    known = pd.Index(pages["user_id"].unique())
    has = users.isin(known).to_numpy()
    return np.where(has, users.to_numpy(object), DEFAULT_PAGE_KEY), int((~has).sum())


def _obd_targets(pages: pd.DataFrame) -> pd.DataFrame:
    """Per (page user, carousel 'obd:<c>', position p): the target item and its source rule
    (0: the page's carousel, by item_rank; 1: the page has no such carousel, the campaign's
    items ("<campaign>:<id>") anywhere on the page by descending item_score)."""
    obd = pages[pages["carousel_id"].str.startswith("obd:")]
    car = obd.sort_values(["user_id", "carousel_id", "item_rank"], kind="stable")
    car = car.drop_duplicates(["user_id", "carousel_id", "item_id"])
    car = car.assign(position=car.groupby(["user_id", "carousel_id"]).cumcount() + 1, source=0)
    # fallback: the campaign's items anywhere on the page by descending item_score
    camp = pages["item_id"].str.split(":", n=1).str[0]
    anyw = pages.assign(carousel_id="obd:" + camp)[pages["item_id"].str.contains(":", regex=False)]
    anyw = (
        anyw.groupby(["user_id", "carousel_id", "item_id"], sort=False)["item_score"]
        .max()
        .reset_index()
    )
    anyw = anyw.sort_values(
        ["user_id", "carousel_id", "item_score", "item_id"],
        ascending=[True, True, False, True],
        kind="stable",
    )
    anyw = anyw.assign(position=anyw.groupby(["user_id", "carousel_id"]).cumcount() + 1, source=1)
    # only for pages without the campaign's carousel
    has = pd.MultiIndex.from_frame(car[["user_id", "carousel_id"]].drop_duplicates())
    anyw = anyw[~pd.MultiIndex.from_frame(anyw[["user_id", "carousel_id"]]).isin(has)]
    cols = ["user_id", "carousel_id", "position", "item_id", "source"]
    both = pd.concat([car[cols], anyw[cols]], ignore_index=True)
    both = both.sort_values(["user_id", "carousel_id", "position", "source"], kind="stable")
    return both.drop_duplicates(["user_id", "carousel_id", "position"])


def _obd_learned(
    imp: pd.DataFrame,
    pages: pd.DataFrame,
    *,
    resamples: int,
    seed: int,
    confidence: float,
    folds: int,
    dm_resamples: int,
) -> dict[str, Any]:
    targets = _obd_targets(pages)
    rand = imp[imp["policy"] == "random"].reset_index(drop=True)
    if rand.empty:
        raise ValueError("no random-policy impressions in the window")
    cells = _Codes(_cell_key(imp["carousel_id"], imp["position"]))
    items = _Codes(imp["item_id"], targets["item_id"])
    labels = {
        0: "user page carousel",
        1: "user page items by item_score",
        2: "default page carousel",
        3: "default page items by item_score",
    }

    def attach(frame: pd.DataFrame) -> pd.DataFrame:
        pu, _ = _page_user(frame["user_id"], pages)
        f = frame.assign(page_user=pu)
        t = targets.rename(columns={"user_id": "page_user", "item_id": "target_item"})
        m = f.merge(t, on=["page_user", "carousel_id", "position"], how="left")
        d = (
            targets[targets["user_id"] == DEFAULT_PAGE_KEY]
            .drop(columns="user_id")
            .rename(columns={"item_id": "default_item", "source": "default_source"})
        )
        m = m.merge(d, on=["carousel_id", "position"], how="left")
        use_default = (
            m["target_item"].isna()
            & m["default_item"].notna()
            & (m["page_user"] != DEFAULT_PAGE_KEY)
        )
        m.loc[use_default, "target_item"] = m.loc[use_default, "default_item"]
        m.loc[use_default, "source"] = m.loc[use_default, "default_source"] + 2
        m.loc[(m["page_user"] == DEFAULT_PAGE_KEY) & m["target_item"].notna(), "source"] += 2
        return m.drop(columns=["default_item", "default_source"])

    rand = rand.assign(_row=np.arange(len(rand)))
    r_cell = cells(_cell_key(rand["carousel_id"], rand["position"]))
    r_item = items(rand["item_id"])
    r_y = rand["clicked"].to_numpy(np.float64)
    fold = _folds(len(rand), folds, seed)

    def fit(train: np.ndarray, weights: np.ndarray | None) -> ope.PositionBasedCTR:
        return ope.fit_position_based_ctr(
            r_cell[train],
            r_item[train],
            r_y[train],
            n_cells=len(cells),
            n_items=len(items),
            weights=None if weights is None else weights[train],
        )

    def evaluate(frame: pd.DataFrame, cross_fitted: bool) -> dict:
        m = attach(frame)
        skipped = int(m["target_item"].isna().sum())
        m = m[m["target_item"].notna()].reset_index(drop=True)
        if m.empty:
            return {"rounds": 0, "skipped_rounds": skipped}
        match = (m["target_item"] == m["item_id"]).to_numpy(np.float64)
        w = ope.importance_weights(match, m["propensity"].to_numpy(np.float64))
        y = m["clicked"].to_numpy(np.float64)
        cell = cells(_cell_key(m["carousel_id"], m["position"]))
        logged, target = items(m["item_id"]), items(m["target_item"])
        row = m["_row"].to_numpy()

        def predict(weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            if not cross_fitted:  # rounds of another log: one model on the whole random log
                model = fit(np.ones(len(rand), bool), weights)
                return model.predict(cell, logged), model.predict(cell, target)
            q, v = np.empty(len(m)), np.empty(len(m))
            for f in range(folds):
                model = fit(fold != f, weights)
                sel = fold[row] == f
                q[sel] = model.predict(cell[sel], logged[sel])
                v[sel] = model.predict(cell[sel], target[sel])
            return q, v

        q, v = predict(None)
        sums = ope.rounds(y, w, q, v)
        masks = {"overall": np.ones(len(m), bool)}
        for c in sorted(m["carousel_id"].unique()):
            masks[c] = (m["carousel_id"] == c).to_numpy()

        def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            fit_weights = ope.poisson_weights(rng, len(rand))
            own = fit_weights[row] if cross_fitted else ope.poisson_weights(rng, len(m))
            return own, predict(fit_weights)[1]

        dm = dict(
            zip(masks, _dm_refits(draw, list(masks.values()), dm_resamples, seed), strict=True)
        )
        kw = {"resamples": resamples, "seed": seed, "confidence": confidence}
        res = ope.estimate(sums, dm_replicates=dm["overall"], **kw)
        res["skipped_rounds"] = skipped
        res["target_source"] = {
            labels[int(k)]: int(n) for k, n in m["source"].value_counts().sort_index().items()
        }
        res["rounds_without_user_page"] = int((m["page_user"] == DEFAULT_PAGE_KEY).sum())
        res["campaigns"] = {}
        for c, mask in list(masks.items())[1:]:
            sub = ope.estimate(sums.subset(mask), dm_replicates=dm[c], **kw)
            res["campaigns"][c] = {
                k: sub[k] for k in ("rounds", "match_share", "ess", "estimators", "logging")
            }
        return res

    out: dict[str, Any] = {
        "kind": "obd",
        "round": "impression (user, campaign, position)",
        "target": "p-th item of the page's carousel obd:<campaign> (fallbacks in target_source)",
        "reward_model": (
            "position-based CTR per (campaign, position) x item factor, fitted on the random "
            f"log ({folds}-fold cross-fitted for random rounds)"
        ),
        "random": evaluate(rand, cross_fitted=True),
    }
    bts = imp[imp["policy"] == "bts"].reset_index(drop=True)
    if not bts.empty:
        out["bts"] = evaluate(bts.assign(_row=-1), cross_fitted=False)
    return out


def _examination(
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


def _curve(exam: dict[int, float], n: int) -> np.ndarray:
    """e[1..n] (index 0 unused), holding the last known value beyond the table, never 0."""
    out = np.ones(n + 1)
    last = 1.0
    for i in range(1, n + 1):
        val = exam.get(i)
        if val is not None and np.isfinite(val) and val > 0:
            last = float(val)
        out[i] = last
    return out


def arrange_random_pages(
    placements: pd.DataFrame,
    pages: pd.DataFrame,
    *,
    families: dict[str, str] | None = None,
    popularity: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """The target's arrangement of each logged random page (generated lakes).

    `placements`: one row per logged placement with round, user_id, carousel_id, slot,
    position, item_id. Adds target_slot and target_position (see the module docstring for the
    ordering rules), and returns counts of carousels and items per ordering tier.
    """
    pages = _check_pages(pages)
    fam = dict(pages.groupby("carousel_id")["family"].first())
    fam.update({k: v for k, v in (families or {}).items() if k not in fam})
    p = placements.copy()
    p["page_user"], _ = _page_user(p["user_id"], pages)
    p["page_user"] = p["page_user"].astype(object)

    # carousels
    unit = ["round", "carousel_id", "slot"]
    car = p.groupby(unit, sort=False).agg(page_user=("page_user", "first")).reset_index()
    ids = pd.unique(car["carousel_id"])
    car["family"] = car["carousel_id"].map({c: fam.get(c, _family_from_id(c)) for c in ids})
    by_car = pages.groupby(["user_id", "carousel_id"])["carousel_score"].max()
    by_fam = pages.groupby(["user_id", "family"])["carousel_score"].max()
    default = np.full(len(car), DEFAULT_PAGE_KEY, dtype=object)
    lookups = [
        (by_car, car["page_user"], car["carousel_id"]),
        (by_fam, car["page_user"], car["family"]),
        (by_car, default, car["carousel_id"]),
        (by_fam, default, car["family"]),
    ]
    car["tier"], car["score"] = _tiers(lookups, len(car))
    # ties and unscored carousels: a fixed pseudo-random order per (user, carousel), never the
    # logged order (a target that copies the logged arrangement would not be a policy)
    car["tie"] = _hash(car["page_user"], car["carousel_id"])
    car = car.sort_values(
        ["round", "tier", "score", "tie"], ascending=[True, True, False, True], kind="stable"
    )
    car["target_slot"] = car.groupby("round").cumcount() + 1

    # items
    by_item_car = pages.groupby(["user_id", "carousel_id", "item_id"])["item_score"].max()
    by_item = pages.groupby(["user_id", "item_id"])["item_score"].max()
    default = np.full(len(p), DEFAULT_PAGE_KEY, dtype=object)
    own = _lookup(by_item_car, p["page_user"], p["carousel_id"], p["item_id"])
    own = np.where(np.isnan(own), _lookup(by_item, p["page_user"], p["item_id"]), own)
    tiers = [own, _lookup(by_item, default, p["item_id"])]
    if popularity is not None:
        tiers.append(popularity.reindex(p["item_id"].to_numpy()).to_numpy(np.float64))
    p["item_tier"], p["item_score_used"] = _first_present(tiers, len(p))
    p["tie"] = _hash(p["page_user"], p["carousel_id"], p["item_id"])
    p = p.merge(
        car[[*unit, "target_slot", "tier"]].rename(columns={"tier": "carousel_tier"}),
        on=unit,
        how="left",
    )
    p = p.sort_values(
        [*unit, "item_tier", "item_score_used", "tie"],
        ascending=[True, True, True, True, False, True],
        kind="stable",
    )
    p["target_position"] = p.groupby(unit, sort=False).cumcount() + 1
    p = p.sort_index()
    car_names = [
        "user page",
        "user page family",
        "default page",
        "default page family",
        "unscored (hash order)",
    ]
    item_names = [
        "user page",
        "default page",
        *(["popularity"] if popularity is not None else []),
        "unscored (hash order)",
    ]
    stats = {
        "carousels": {
            car_names[int(k)]: int(n) for k, n in car["tier"].value_counts().sort_index().items()
        },
        "items": {
            item_names[int(k)]: int(n)
            for k, n in p["item_tier"].value_counts().sort_index().items()
        },
    }
    return p.drop(columns=["item_score_used", "page_user", "tie"]), stats


def _hash(*keys: pd.Series) -> np.ndarray:
    """A deterministic 64-bit hash of string keys (pseudo-random, stable across runs)."""
    text = keys[0].astype(str)
    for k in keys[1:]:
        text = text + "\x1f" + k.astype(str).to_numpy()
    return pd.util.hash_array(text.to_numpy(object))


def _lookup(series: pd.Series, *keys: object) -> np.ndarray:
    idx = (
        pd.MultiIndex.from_arrays([np.asarray(k, dtype=object) for k in keys])
        if len(keys) > 1
        else pd.Index(np.asarray(keys[0], dtype=object))
    )
    return series.reindex(idx).to_numpy(np.float64)


def _tiers(lookups: list[tuple], n: int) -> tuple[np.ndarray, np.ndarray]:
    return _first_present([_lookup(s, *k) for s, *k in lookups], n)


def _first_present(values: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    tier = np.full(n, len(values), np.int64)
    score = np.zeros(n)
    for t in range(len(values) - 1, -1, -1):
        ok = ~np.isnan(values[t])
        tier[ok] = t
        score[ok] = values[t][ok]
    return tier, score


def random_page_rounds(imp: pd.DataFrame) -> pd.DataFrame:
    """The random-policy impressions of `homepage_impressions` with `round`: 0.. per page view
    (user_id, page_key), in sorted order."""
    rand = imp[imp["policy"] == "random"].reset_index(drop=True)
    if rand.empty:
        raise ValueError("no random-policy impressions in the window")
    return rand.assign(round=rand.groupby(["user_id", "page_key"], sort=True).ngroup())


def _generated_learned(
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
    rand = random_page_rounds(imp)
    n_rounds = int(rand["round"].max()) + 1
    families = None
    popularity = None
    if lake is not None:
        if os.path.isdir(local_path(lake.carousels)):
            try:
                cars = pd.read_parquet(
                    local_path(lake.carousels), columns=["carousel_id", "family"]
                )
                families = dict(
                    zip(cars["carousel_id"].astype(str), cars["family"].astype(str), strict=True)
                )
            except (FileNotFoundError, OSError, ValueError):
                families = None
        if split_ds is not None:
            days = [
                d
                for d in io.partitions(join(lake.warehouse, "features", "item_stats"))
                if d <= split_ds
            ]
            if days:
                stats = pd.read_parquet(
                    local_path(lake.feature("item_stats", days[-1])),
                    columns=["item_id", "pop_total"],
                )
                popularity = stats.set_index(stats["item_id"].astype(str))["pop_total"].astype(
                    float
                )
    arranged, tiers = arrange_random_pages(rand, pages, families=families, popularity=popularity)

    # conditional propensities: 1/S per carousel-slot, 1/P_k per item-position
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
    w = match * s_round * p_k

    # reward model: q̂(i, s, l) = a0 · ê_s ê_l · f_i, from per-item sums (clicks, exposure Σ ê)
    exam, exam_source = _examination(lake, split_ds, rand)
    max_slot = int(max(imp["slot"].max(), arranged["target_slot"].max()))
    max_pos = int(max(imp["position"].max(), arranged["target_position"].max()))
    e_slot, e_pos = (
        _curve(exam.get("slot", {}), max_slot),
        _curve(exam.get("position", {}), max_pos),
    )

    other = imp[imp["policy"] != "random"]
    items = _Codes(imp["item_id"])
    n_items = len(items)
    o_item = items(other["item_id"])
    o_exam = e_slot[other["slot"].to_numpy()] * e_pos[other["position"].to_numpy()]
    o_y = other["clicked"].to_numpy(np.float64)
    a_item = items(arranged["item_id"])
    a_exam = e_slot[arranged["slot"].to_numpy()] * e_pos[arranged["position"].to_numpy()]
    t_exam = (
        e_slot[arranged["target_slot"].to_numpy()] * e_pos[arranged["target_position"].to_numpy()]
    )
    y = arranged["clicked"].to_numpy(np.float64)
    rnd = arranged["round"].to_numpy()
    fold = _folds(n_rounds, folds, seed)[rnd]

    def predict(
        o_clicks: np.ndarray, o_exposure: np.ndarray, r_weights: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cross-fitted q̂ of the logged placements and q̂ at the target's placements, from the
        other policies' per-item sums and the random placements of the other folds."""
        wr = np.ones(n_rounds) if r_weights is None else r_weights
        pw = wr[rnd]
        q, v = np.empty(len(arranged)), np.empty(len(arranged))
        for f in range(folds):
            test = fold == f
            train = ~test
            clicks = o_clicks + np.bincount(
                a_item[train], weights=(y * pw)[train], minlength=n_items
            )
            exposure = o_exposure + np.bincount(
                a_item[train], weights=(a_exam * pw)[train], minlength=n_items
            )
            a0, factor = ope.exam_item_factors(clicks, exposure)
            q[test] = np.clip(a0 * a_exam[test] * factor[a_item[test]], 0.0, 1.0)
            v[test] = np.clip(a0 * t_exam[test] * factor[a_item[test]], 0.0, 1.0)
        return q, v

    o_clicks = np.bincount(o_item, weights=o_y, minlength=n_items)
    o_exposure = np.bincount(o_item, weights=o_exam, minlength=n_items)
    q, v = predict(o_clicks, o_exposure, None)
    sums = ope.rounds_from_placements(rnd, y, w, q, v_target=v, n_rounds=n_rounds)

    # DM replicates: Poisson weights on the other policies' page views (per-item sums for a
    # chunk of replicates at once, as sparse products) and on the random page views
    from scipy import sparse

    o_view = other.groupby(["policy", "user_id", "page_key"], sort=False).ngroup().to_numpy()
    n_views = int(o_view.max()) + 1 if o_view.size else 0
    by_view = [
        sparse.csr_matrix((vals, (o_view, o_item)), shape=(n_views, n_items))
        for vals in (o_y, o_exam)
    ]
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    chunk = max(1, min(32, (1 << 24) // max(n_views, 1)))

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if not pending:
            weights = ope.poisson_weights(rng, chunk * n_views).reshape(chunk, n_views)
            c_b, x_b = ((m.T @ weights.T).T for m in by_view)
            pending.extend(zip(np.asarray(c_b), np.asarray(x_b), strict=True))
        c, x = pending.pop(0)
        r_weights = ope.poisson_weights(rng, n_rounds)
        v_round = np.bincount(rnd, weights=predict(c, x, r_weights)[1], minlength=n_rounds)
        return r_weights, v_round

    (dm,) = _dm_refits(draw, [np.ones(n_rounds, bool)], dm_resamples, seed)
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


def observed_by_policy(
    imp: pd.DataFrame, *, resamples: int, seed: int, confidence: float
) -> dict[str, dict]:
    """Each logging policy's observed clicks per impression in the window, with intervals."""
    out = {}
    for policy, g in imp.groupby("policy", sort=True):
        res = ope.mean_with_ci(
            g["clicked"].to_numpy(np.float64), resamples=resamples, seed=seed, confidence=confidence
        )
        res["page_views"] = int(g[["user_id", "page_key"]].drop_duplicates().shape[0])
        out[str(policy)] = res
    return out


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
    pages = _check_pages(pages)
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
        out = _obd_learned(imp, pages, **kw)
    elif kind == "generated":
        out = _generated_learned(imp, pages, lake, split_ds, **kw)
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


# ---- entry point --------------------------------------------------------------------------


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


# ---- text report --------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 5) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def _estimator_rows(
    sec: dict, observed: dict | None = None, comparison: dict | None = None
) -> list[str]:
    head = ["estimator", "estimate", "95% CI", "se"]
    if comparison:
        head += ["obs in CI", "rel. error"]
    rows = [head]
    for name in _ROWS:
        e = sec["estimators"][name]
        row = [
            name.upper() if name != "snips" else "SNIPS",
            _fmt(e["estimate"]),
            f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]",
            _fmt(e["se"]),
        ]
        if comparison:
            c = comparison[name]
            rel = c["relative_error"]
            row += ["yes" if c["observed_in_ci"] else "no", "-" if rel is None else f"{rel:+.1%}"]
        rows.append(row)
    lg = sec["logging"]
    rows.append(
        [
            "logging (observed)",
            _fmt(lg["estimate"]),
            f"[{_fmt(lg['ci_low'])}, {_fmt(lg['ci_high'])}]",
            _fmt(lg["se"]),
            *([""] * (len(head) - 4)),
        ]
    )
    if observed:
        rows.append(
            [
                "target observed",
                _fmt(observed["estimate"]),
                f"[{_fmt(observed['ci_low'])}, {_fmt(observed['ci_high'])}]",
                _fmt(observed["se"]),
                *([""] * (len(head) - 4)),
            ]
        )
    info = f"rounds {sec['rounds']:,}  match share {sec['match_share']:.3f}  ESS {sec['ess']:,.0f}  mean weight {sec['mean_weight']:.3f}"
    return [info, *_table(rows)]


def format_report(result: dict[str, Any]) -> str:
    """Aligned text tables of a `run` result."""
    lines = [
        f"OPE {result.get('lake', '')} split {result.get('split_ds', '')} ({result.get('kind', '')}, events from {result.get('events_source', '')})"
    ]
    chk = result.get("obd_check")
    if chk:
        lines += [
            "",
            f"OBD check: BTS click rate estimated from the random log ({chk['bts_distribution']} distribution)",
        ]
        for name, sec in [("overall", chk["overall"]), *chk["campaigns"].items()]:
            lines += ["", f"[{name}]", *_estimator_rows(sec, sec["observed"], sec["comparison"])]
    lp = result.get("learned_policy")
    if lp:
        lines += ["", f"Learned policy ({lp['kind']}): round = {lp['round']}"]
        if lp["kind"] == "obd":
            for part in ("random", "bts"):
                sec = lp.get(part)
                if sec and sec.get("rounds"):
                    lines += [
                        "",
                        f"[{part} rounds] skipped {sec['skipped_rounds']}, target source {sec['target_source']}",
                        *_estimator_rows(sec),
                    ]
        else:
            lines += [
                f"target tiers {lp['target_tiers']}",
                f"examination: {lp['examination']['source']}",
                "",
                *_estimator_rows(lp),
            ]
            pu = lp["per_unit"]
            rows = [["per impression", "estimate", "95% CI"]]
            for name in (*_ROWS, "logging"):
                e = pu[name]
                rows.append(
                    [name, _fmt(e["estimate"]), f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"]
                )
            lines += ["", *_table(rows)]
        rows = [["policy (window)", "clicks/impression", "95% CI", "impressions"]]
        for pol, o in lp["observed_by_policy"].items():
            rows.append(
                [
                    pol,
                    _fmt(o["estimate"]),
                    f"[{_fmt(o['ci_low'])}, {_fmt(o['ci_high'])}]",
                    f"{o['n']:,}",
                ]
            )
        lines += ["", *_table(rows)]
    return "\n".join(lines)
