"""Position bias: relative examination propensities from randomised traffic (docs/methods.md §2).

Click model (position-based): CTR(m, s) = P_exam(s) · P(click | m). On randomised pages the
carousel in a slot and the item at a position are drawn uniformly, so who sees what does not
depend on where it is shown, and the relative propensity e_s = P_exam(s) / P_exam(1) is
identified from CTR ratios. Pooled ratios are still biased when the carousel mix differs
between indices (a carousel with 3 items only fills positions 1-3; if it is more attractive,
pooled CTR falls faster from left to right than examination does). So each index is compared
only with other indices of the same stratum, through a multiplicative Poisson model:

    slots:      clicks[m, s]    ~ Poisson(impressions[m, s] · θ_m · e_s)
    positions:  clicks[m, s, l] ~ Poisson(impressions[m, s, l] · θ_(m,s) · e_l)

fitted by maximum likelihood with alternating closed-form updates (iterative proportional
fitting: θ_g = C_g / Σ_j N_gj e_j, then e_j = C_j / Σ_g N_gj θ_g), normalised e_1 = 1. This
is the Poisson GLM log(E clicks) = log(impressions) + log θ_stratum + log e_index; clicks are
rare, so Binomial(N, p) ≈ Poisson(N p). A stratum without clicks, or seen at one index only,
carries no information about e and drops out of the fit on its own.

Confidence intervals: percentile intervals of a Poisson bootstrap of impressions. Each
randomised impression (with its click outcome) gets an independent Poisson(1) weight, which in
a cell with N impressions and C clicks gives clicks* ~ Poisson(C) and impressions* = clicks* +
Poisson(N − C). The model is refitted on every replicate. This resamples the data, not the
fitted model, so the intervals do not assume that the multiplicative model is exact. It treats
impressions as independent although impressions of one page share a user; on generated lakes a
bootstrap clustered by user gave the same widths. Coverage of 95% intervals on generated lakes:
95% with ~4k randomised clicks, ~92% with ~10k (small lake-specific biases start to show).

The Spark part (`placement_counts`) reduces any number of events to one row per
(carousel_id, slot, position) with one groupBy; the estimation runs on that small table in
pandas/numpy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.events import require_columns
from jobs.core.errors import FeatureError

KINDS: tuple[str, ...] = ("slot", "position")
COUNT_COLUMNS: tuple[str, ...] = ("carousel_id", "slot", "position", "impressions", "clicks")
RESULT_COLUMNS: tuple[str, ...] = (
    "kind",
    "index",
    "propensity",
    "ci_low",
    "ci_high",
    "impressions",
    "clicks",
)
_STRATA: dict[str, list[str]] = {"slot": ["carousel_id"], "position": ["carousel_id", "slot"]}


class ExaminationFitError(FeatureError):
    """The multiplicative model did not converge."""


def _start(day: dt.date) -> Column:
    return F.lit(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)).cast("timestamp")


def placement_counts(
    events: DataFrame,
    *,
    as_of: dt.date,
    days: int | None = None,
    policy_column: str = "logging_policy",
    random_value: str = "random",
) -> DataFrame:
    """Impressions and clicks of randomised traffic per (carousel_id, slot, position).

    Uses events strictly before `as_of` (only the last `days` days when given) whose
    `policy_column` equals `random_value`. A click is counted in the cell of the placement it
    carries, so cell CTR = clicks / impressions pairs each click with its impression's cell.
    Columns: carousel_id, slot, position, impressions, clicks (both long).
    """
    require_columns(events, ["event_type", "ts", "carousel_id", "slot", "position"], "events")
    if policy_column not in events.columns:
        raise ValueError(
            f"events have no {policy_column!r} column: examination propensities need randomised "
            f"traffic, marked by {policy_column} == {random_value!r}"
        )
    if days is not None and days < 1:
        raise ValueError(f"days must be >= 1 (or None for all history), got {days}")
    cond = (
        (F.col("ts") < _start(as_of))
        & F.col("event_type").isin("impression", "click")
        & (F.col(policy_column) == F.lit(random_value))
        & F.col("carousel_id").isNotNull()
        & (F.col("slot") >= 1)
        & (F.col("position") >= 1)
    )
    if days is not None:
        cond = cond & (F.col("ts") >= _start(as_of - dt.timedelta(days=days)))
    is_impression = (F.col("event_type") == "impression").cast("long")
    return (
        events.filter(cond)
        .groupBy(
            "carousel_id",
            F.col("slot").cast("int").alias("slot"),
            F.col("position").cast("int").alias("position"),
        )
        .agg(
            F.sum(is_impression).alias("impressions"),
            F.sum(1 - is_impression).alias("clicks"),
        )
    )


def _fit(
    g: np.ndarray,
    j: np.ndarray,
    n: np.ndarray,
    c: np.ndarray,
    n_groups: int,
    n_index: int,
    *,
    tol: float,
    max_iter: int,
) -> np.ndarray:
    """MLE of e (e[0] = 1) in c ~ Poisson(n · θ[g] · e[j]) by alternating closed-form updates."""
    c_g = np.bincount(g, weights=c, minlength=n_groups)
    c_j = np.bincount(j, weights=c, minlength=n_index)
    # pooled CTR ratios: the exact answer when strata are balanced, a good start otherwise
    n_j = np.bincount(j, weights=n, minlength=n_index)
    e = np.divide(c_j, n_j, out=np.zeros(n_index), where=n_j > 0)
    e = e / e[0]
    for _ in range(max_iter):
        d_g = np.bincount(g, weights=n * e[j], minlength=n_groups)
        theta = np.divide(c_g, d_g, out=np.zeros(n_groups), where=d_g > 0)
        d_j = np.bincount(j, weights=n * theta[g], minlength=n_index)
        new = np.divide(c_j, d_j, out=np.zeros(n_index), where=d_j > 0)
        new = new / new[0]
        if np.max(np.abs(new - e)) <= tol:
            return new
        e = new
    raise ExaminationFitError(
        f"examination model did not converge in {max_iter} iterations (tolerance {tol})"
    )


def estimate_examination(
    counts: pd.DataFrame,
    *,
    kind: str,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    tol: float = 1e-10,
    max_iter: int = 10_000,
) -> pd.DataFrame:
    """Relative examination propensity per slot or per position, with bootstrap intervals.

    `counts` has COUNT_COLUMNS (e.g. `placement_counts(...).toPandas()`). Returns one row per
    index present (1 = top slot / left position) with RESULT_COLUMNS: propensity = e_index /
    e_1 (exactly 1 at index 1), the `confidence` percentile interval of `n_boot` Poisson
    bootstrap replicates (deterministic for a `seed`), and the index's total impressions and
    clicks. An index without clicks gets 0. Raises ValueError on an empty table or one without
    clicks at index 1, and ExaminationFitError if the fit does not converge.
    """
    df = _checked_counts(counts, kind=kind, n_boot=n_boot, confidence=confidence)

    index = df[kind].astype(np.int64).to_numpy()
    levels = np.unique(index)
    if levels[0] != 1:
        raise ValueError(f"no randomised impressions at {kind} 1, the reference {kind}")
    j = np.searchsorted(levels, index)
    g = df.groupby(_STRATA[kind], sort=False, dropna=False).ngroup().to_numpy()
    n = df["impressions"].to_numpy(np.float64)
    c = df["clicks"].to_numpy(np.float64)
    if c[j == 0].sum() <= 0:
        raise ValueError(f"no clicks at {kind} 1 in randomised traffic: cannot normalise e_1 = 1")

    n_groups, n_index = int(g.max()) + 1, levels.size
    fit = dict(n_groups=n_groups, n_index=n_index, tol=tol, max_iter=max_iter)
    estimate = _fit(g, j, n, c, **fit)

    boot = _bootstrap(g, j, n, c, fit, n_boot=n_boot, seed=seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(boot, [alpha, 1.0 - alpha], axis=0)
    low[0] = high[0] = 1.0

    return pd.DataFrame(
        {
            "kind": kind,
            "index": levels,
            "propensity": estimate,
            "ci_low": low,
            "ci_high": high,
            "impressions": np.bincount(j, weights=n, minlength=n_index).astype(np.int64),
            "clicks": np.bincount(j, weights=c, minlength=n_index).astype(np.int64),
        },
        columns=list(RESULT_COLUMNS),
    )


def _checked_counts(
    counts: pd.DataFrame, *, kind: str, n_boot: int, confidence: float
) -> pd.DataFrame:
    """The counts with impressions, in a fixed row order, after checking the arguments."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 for a bootstrap interval, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    missing = [col for col in COUNT_COLUMNS if col not in counts.columns]
    if missing:
        raise ValueError(f"counts is missing required column(s): {', '.join(missing)}")
    # in a fixed order: a Spark groupBy returns its rows in any order, and the bootstrap draws
    # per row (the same counts in another order gave other replicates, hence other intervals)
    df = counts.loc[counts["impressions"] > 0, list(COUNT_COLUMNS)].sort_values(
        list(COUNT_COLUMNS), kind="stable"
    )
    if df.empty:
        raise ValueError(
            "no randomised impressions: examination propensities need randomised traffic"
        )
    if (df["clicks"] < 0).any():
        raise ValueError("counts has negative clicks")
    return df


def _bootstrap(
    g: np.ndarray,
    j: np.ndarray,
    n: np.ndarray,
    c: np.ndarray,
    fit: dict[str, Any],
    *,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """(n_boot, n_index) fits on Poisson bootstrap replicates of the counts (NaN rows where a
    replicate has no clicks at index 1); raises when over a tenth of them do not converge."""
    rng = np.random.default_rng(seed)
    boot = np.full((n_boot, fit["n_index"]), np.nan)
    stalled = 0
    for b in range(n_boot):
        c_b = rng.poisson(c).astype(np.float64)
        n_b = c_b + rng.poisson(np.maximum(n - c, 0.0))
        if c_b[j == 0].sum() > 0:  # else e_1 is undefined in this replicate: leave it out
            try:
                boot[b] = _fit(g, j, n_b, c_b, **fit)
            except ExaminationFitError:
                # sparse replicates can put the MLE on the boundary, where the updates crawl
                stalled += 1
    if stalled > 0.1 * n_boot:
        raise ExaminationFitError(
            f"{stalled} of {n_boot} bootstrap replicates did not converge: too little randomised traffic"
        )
    return boot


def examination_table(
    events: DataFrame,
    *,
    as_of: dt.date,
    days: int | None = None,
    policy_column: str = "logging_policy",
    random_value: str = "random",
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Slot rows then position rows of `estimate_examination` on `placement_counts(events)`."""
    counts = placement_counts(
        events, as_of=as_of, days=days, policy_column=policy_column, random_value=random_value
    ).toPandas()
    parts = [
        estimate_examination(counts, kind=k, n_boot=n_boot, seed=seed, confidence=confidence)
        for k in KINDS
    ]
    return pd.concat(parts, ignore_index=True)
