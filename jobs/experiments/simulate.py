"""Simulated traffic on the pipeline's own pages (`homepage simulate`) and simulated A/B tests.

The generator (`jobs.inputs.generate`) logs a day of traffic under the site's *logging* policy. This
module serves instead the pages the PIPELINE exported (`exports/ds=<ds>/pages.parquet`) to
simulated visitors whose behaviour is the generator's ground truth (`<lake>/_truth/`), so that

  * the pipeline's placements and their propensities flow into tomorrow's event log (the data
    the next run trains and evaluates off-policy on): `simulate_day`;
  * two page tables can be compared on the same simulated population: `ab_test`.

It reads nothing of the pipeline's models: only a page table and the truth.

One day (`simulate_visits`):

    visits        all users (or the given ones). `visits_per_user=None`: the generator's rates:
                  a user browses with P = min(activity * weekend boost, 0.95) in 1 + Bin(2, p)
                  sessions, regulars also make their grocery trip on trip days, and a session
                  is a homepage visit with the generator's per-device home share. A number x:
                  Poisson(x) homepage visits per user (at most MAX_VISITS_PER_DAY). Visits of a
                  user lie around their habit hour, >= 94 minutes apart, on their profile device.
    page          the user's page from the table, or the `__default__` page; the first S slots
                  and P positions are shown (S, P = the generator's layout in truth.json unless
                  given): one `impression` per placement (page "home", carousel_id, slot,
                  position = item_rank, propensity = the page's, 1.0 where the table has none).
    clicks        position-based: exam_slot(slot) * exam_position(position) * attractiveness(u, i)
                  (`GroundTruth.click_probability`); items that do not exist yet that day (or
                  are unknown to the truth) are never clicked.
    funnel        as the generator's: a click is followed by a `view` (page "item"), an
                  `add_to_cart` with `GroundTruth.add_to_cart_probability` (0 when the item is
                  out of stock that day), and cart lines are bought at checkout with
                  `purchase_probability` (page "checkout"); all keep the placement's carousel,
                  slot, position and propensity. Timing comes from the generator's `schedule_visits`.

Events follow `GENERATED_EVENT_SCHEMA` (event ids `e<YYYYMMDD><n>`, session ids
`s<YYYYMMDD><n>`, like generated days), sorted by ts, with `logging_policy` = `policy_name`.
There are no search or staple-search journeys: only homepage traffic is simulated.
Randomness: `SeedSequence([seed, day ordinal])`, with separate streams for visits, clicks and
the funnel, so the same seed and day give the same visitors whatever pages are shown.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.lake import EVENT_TYPES, Lake, fmt_ds, is_local, local_path, parse_ds
from jobs.experiments.ab_stats import arm_summary, split_arms
from jobs.experiments.page_visits import first_day, simulate_page_visits, to_table
from jobs.experiments.served_pages import ServedPages
from jobs.inputs.eventlog import EVENT_CODE
from jobs.inputs.generate import load_truth
from jobs.inputs.truth import GroundTruth

__all__ = ["ab_test", "simulate_day", "simulate_visits", "split_arms"]


# ---- public API ----------------------------------------------------------------------------


def simulate_visits(
    truth: GroundTruth,
    pages: pd.DataFrame,
    *,
    users: np.ndarray | None,
    day: dt.date,
    visits_per_user: float | None,
    seed: int,
    policy_name: str = "pipeline",
    slots: int | None = None,
    positions: int | None = None,
) -> pa.Table:
    """One day of homepage visits showing `pages`, as events in `GENERATED_EVENT_SCHEMA`.

    `users`: user ids (all of the truth's users when None; unknown ids raise ValueError).
    `visits_per_user`: None for the generator's activity-proportional rates, else the Poisson
    mean of each user's visits. `slots`/`positions`: the shown layout (default: the generator's).
    """
    user_idx = _user_indices(truth, users)
    page_set = ServedPages.build(truth, [pages], slots, positions)
    arm = np.zeros(truth.n_users, np.int8)
    _, cols = simulate_page_visits(truth, page_set, user_idx, arm, day, visits_per_user, seed)
    return to_table(truth, page_set, cols, [policy_name], day)


def simulate_day(
    lake_root: str,
    ds: str,
    *,
    export_ds: str | None = None,
    seed: int,
    visits_per_user: float | None = None,
) -> dict[str, Any]:
    """Serve the published export (or `export_ds`'s) for day `ds` to the truth's users and write
    the events to `<lake>/events/ds=<ds>/part-0.parquet`; returns the day's stats.

    Raises ValueError when the lake has no `_truth/`, the partition already exists, there is no
    export to serve, or `ds` is before the export's day.
    """
    t0 = time.perf_counter()
    day = parse_ds(ds)
    if not lake_root or not is_local(lake_root):
        raise ValueError(f"simulate writes to a local lake directory, got {lake_root!r}")
    lake = Lake(lake_root)
    truth_dir = local_path(lake.truth)
    if not os.path.isfile(os.path.join(truth_dir, "truth.json")):
        raise ValueError(
            f"{lake.root} has no ground truth ({truth_dir}/truth.json): "
            "simulate needs a lake written by `homepage generate`"
        )
    part = local_path(lake.raw_events_ds(ds))
    if os.path.exists(part):
        raise ValueError(
            f"events partition ds={ds} already exists ({part}); simulate never overwrites logged "
            "events: pick another --ds or remove the partition"
        )
    if export_ds is None:
        export_ds = _current_ds(lake)
    if day < parse_ds(export_ds):
        raise ValueError(f"the export of {export_ds} cannot be served on an earlier day ({ds})")
    path = os.path.join(local_path(lake.export(export_ds)), "pages.parquet")
    if not os.path.isfile(path):
        raise ValueError(f"no export pages for ds={export_ds}: {path} not found")
    pages = pd.read_parquet(path)
    truth = load_truth(lake.root)
    table = simulate_visits(
        truth, pages, users=None, day=day, visits_per_user=visits_per_user, seed=seed
    )

    # write aside, then rename into place: a reader never sees a half-written partition
    events_dir = local_path(lake.raw_events)
    staging = os.path.join(events_dir, f".staging-ds={ds}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        pq.write_table(table, os.path.join(staging, "part-0.parquet"), compression="snappy")
        os.rename(staging, part)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    stats = _table_stats(table)
    versions = (
        sorted(pages["model_version"].dropna().astype(str).unique())
        if "model_version" in pages
        else []
    )
    return {
        "ds": ds,
        "export_ds": export_ds,
        "path": os.path.join(part, "part-0.parquet"),
        "events": table.num_rows,
        **stats,
        "model_versions": versions,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def ab_test(
    truth: GroundTruth,
    control_pages: pd.DataFrame,
    treatment_pages: pd.DataFrame,
    *,
    users: np.ndarray | None,
    days: int,
    seed: int,
    visits_per_user: float | None,
    start: dt.date | None = None,
    slots: int | None = None,
    positions: int | None = None,
    resamples: int = 1000,
    salt: str = "",
) -> dict[str, Any]:
    """A simulated A/B test: the same visitors, split 50/50 by `split_arms(user_id, salt)`;
    control users see `control_pages`, treatment users `treatment_pages`, for `days` days from
    `start` (default: the day after the truth's window).

    Returns per arm visitors (users with >= 1 visit), visits, impressions, clicks, add_to_carts,
    purchases, ctr, add_to_carts_per_visitor, purchases_per_visitor; and per metric the relative
    lift treatment / control - 1 with a 95% bootstrap interval (visitors resampled within each
    arm, `resamples` times, seeded by `seed`).
    """
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    user_idx = _user_indices(truth, users)
    page_set = ServedPages.build(truth, [control_pages, treatment_pages], slots, positions)
    arm = split_arms(truth.user_ids, salt)
    first = start if start is not None else first_day(truth) + dt.timedelta(days=truth.days)
    n = truth.n_users
    counts = {k: np.zeros(n, np.int64) for k in ("visits", *EVENT_TYPES)}
    for k in range(days):
        visits, cols = simulate_page_visits(
            truth, page_set, user_idx, arm, first + dt.timedelta(days=k), visits_per_user, seed
        )
        counts["visits"] += np.bincount(visits.user, minlength=n)
        for name in EVENT_TYPES:
            sel = cols["etype"] == EVENT_CODE[name]
            counts[name] += np.bincount(cols["user"][sel], minlength=n)

    per_arm, lift = arm_summary(counts, arm, resamples=resamples, seed=seed)
    return {
        "start": fmt_ds(first),
        "days": int(days),
        "seed": seed,
        "visits_per_user": visits_per_user,
        "resamples": resamples,
        "confidence": 0.95,
        "arms": per_arm,
        "lift": lift,
    }


def _table_stats(table: pa.Table) -> dict[str, Any]:
    counts = {
        row["values"]: row["counts"] for row in pc.value_counts(table["event_type"]).to_pylist()
    }
    n = {t: int(counts.get(t, 0)) for t in ("impression", "click", "add_to_cart", "purchase")}
    users = int(pc.count_distinct(table["user_id"]).as_py())
    return {
        "visits": int(pc.count_distinct(table["session_id"]).as_py()),
        "users": users,
        "impressions": n["impression"],
        "clicks": n["click"],
        "add_to_carts": n["add_to_cart"],
        "purchases": n["purchase"],
        "ctr": n["click"] / n["impression"] if n["impression"] else 0.0,
        "add_to_carts_per_visitor": n["add_to_cart"] / users if users else 0.0,
    }


def _user_indices(truth: GroundTruth, users: np.ndarray | None) -> np.ndarray:
    if users is None:
        return np.arange(truth.n_users, dtype=np.int64)
    ids = np.asarray(users).astype(str)
    idx = truth.user_index(ids)
    if (idx < 0).any():
        unknown = ids[idx < 0]
        raise ValueError(
            f"{unknown.size} user id(s) are not in the ground truth, e.g. {list(unknown[:3])}"
        )
    return np.unique(idx).astype(np.int64)


def _current_ds(lake: Lake) -> str:
    path = local_path(lake.current)
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except FileNotFoundError:
        raise ValueError(
            f"nothing is published in {lake.exports} (no CURRENT); pass export_ds"
        ) from None
    parse_ds(value)
    return value
