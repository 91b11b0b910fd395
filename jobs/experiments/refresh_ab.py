"""`homepage simulate-refresh`: does the intra-day refresh pay? A simulated A/B test.

On a generated lake with a published daily export (ds = B, the day after its events), day B is
simulated window by window (`every_hours`): the generator's ground-truth users visit (the same
visits as a whole-day simulation would draw, `jobs.experiments.simulate`), split 50/50 by user id:

    control    the daily export all day (daily-only)
    treatment  the daily export with the newest refresh delta on top

After each window its events (both arms: the log holds all traffic) land in `events/ds=B` and a
refresh runs at the window's end (`jobs.refresh.run.run`), so the treatment's next window sees pages
re-ranked with that day's engagement. The simulator reads page tables and the truth only.
Reported: add-to-carts per visitor, click-through rate and purchases per visitor per arm, with
the relative lift and a 95% bootstrap interval (visitors resampled within each arm).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.lake import EVENT_TYPES, Lake, local_path, parse_ds

if TYPE_CHECKING:
    from jobs.inputs.truth import GroundTruth


def refresh_ab(
    lake_root: str,
    *,
    every_hours: int = 3,
    seed: int = 1,
    visits_per_user: float | None = None,
    resamples: int = 1000,
    overrides: Any = None,
    config: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Simulate day B in windows with refreshes between them (see the module docstring)."""
    from jobs.experiments.simulate import arm_summary, split_arms
    from jobs.inputs.generate import load_truth

    if 24 % every_hours:
        raise ValueError(f"every_hours must divide 24, got {every_hours}")
    lake = Lake(lake_root)
    truth = load_truth(lake.root)
    base, day, part = _served_day(lake, truth)
    os.makedirs(part, exist_ok=True)
    daily = pd.read_parquet(os.path.join(local_path(lake.export(base)), "pages.parquet"))
    arm = split_arms(truth.user_ids, f"refresh-{seed}")
    counts = {k: np.zeros(truth.n_users, np.int64) for k in ("visits", *EVENT_TYPES)}
    day_start = (day - dt.date(1970, 1, 1)).days * 86400 * 1_000_000
    run = _WindowRun(lake, truth, base, day, part, daily, arm, visits_per_user, seed)
    windows = []
    for k in range(24 // every_hours):
        lo = day_start + k * every_hours * 3600 * 1_000_000
        hi = lo + every_hours * 3600 * 1_000_000
        windows.append(run.window(k, lo, hi, counts, overrides, config))
        wm = dt.datetime.fromtimestamp(hi / 1e6, tz=dt.UTC)
        say(f"window {k + 1}/{24 // every_hours} to {wm:%H:%M}: {windows[-1]}")
    per_arm, lift = arm_summary(counts, arm, resamples=resamples, seed=seed)
    return {
        "ds": base,
        "every_hours": every_hours,
        "seed": seed,
        "arms": {"daily_only": per_arm["control"], "refreshed": per_arm["treatment"]},
        "lift": lift,
        "windows": windows,
    }


def _served_day(lake: Lake, truth: GroundTruth) -> tuple[str, dt.date, str]:
    """The published export's ds B, its date and the (still empty) raw events partition of B;
    raises ValueError unless B is the day after the generated events and has no events yet."""
    from jobs.experiments.simulate import first_day
    from serving_export.publish import current_ds

    base = current_ds(lake)
    if base is None:
        raise ValueError(f"nothing is published in {lake.exports}: run the daily pipeline first")
    day = parse_ds(base)
    if day != first_day(truth) + dt.timedelta(days=truth.days):
        raise ValueError(
            f"the published export is of {base}; simulate-refresh serves the day after the "
            "generated events (run the daily pipeline without --ds)"
        )
    part = local_path(lake.raw_events_ds(base))
    if os.path.exists(part) and os.listdir(part):
        raise ValueError(f"events of {base} exist already ({part}): use a fresh lake")
    return base, day, part


@dataclass(frozen=True)
class _WindowRun:
    """What every window of the simulated day shares."""

    lake: Lake
    truth: GroundTruth
    base: str
    day: dt.date
    part: str
    daily: pd.DataFrame
    arm: np.ndarray
    visits_per_user: float | None
    seed: int

    def window(
        self,
        k: int,
        lo: int,
        hi: int,
        counts: dict[str, np.ndarray],
        overrides: Any,
        config: str | None,
    ) -> dict[str, Any]:
        """Simulate window k ([lo, hi) µs), add its visits and events to `counts`, write its
        events and refresh at its end; returns the window's report row."""
        from jobs.experiments.simulate import ServedPages, simulate_page_visits, to_table
        from jobs.inputs.eventlog import EVENT_CODE
        from jobs.refresh import run as refresh
        from jobs.refresh import windows

        t0 = time.perf_counter()
        truth = self.truth
        users = np.arange(truth.n_users, dtype=np.int64)
        treatment = windows.served_pages(self.lake, self.base)
        pages = ServedPages.build(truth, [self.daily, treatment], None, None)
        visits, cols = simulate_page_visits(
            truth,
            pages,
            users,
            self.arm,
            self.day,
            self.visits_per_user,
            self.seed,
            window=(k, lo, hi),
        )
        counts["visits"] += np.bincount(visits.user, minlength=truth.n_users)
        for name in EVENT_TYPES:
            sel = cols["etype"] == EVENT_CODE[name]
            counts[name] += np.bincount(cols["user"][sel], minlength=truth.n_users)
        table = _unique_ids(to_table(truth, pages, cols, ["daily_only", "refreshed"], self.day), k)
        pq.write_table(table, os.path.join(self.part, f"window-{k:02d}.parquet"))
        wm = dt.datetime.fromtimestamp(hi / 1e6, tz=dt.UTC)
        result = refresh.run(self.lake.root, wm, overrides, config)
        return {
            "watermark": wm.isoformat(),
            "visits": int(len(visits.user)),
            "events": table.num_rows,
            "rebuilt_users": result["pages"]["rebuilt_users"],
            "delta_users": result["pages"]["delta_users"],
            "seconds": round(time.perf_counter() - t0, 1),
        }


def _unique_ids(table: pa.Table, k: int) -> pa.Table:
    """Event and session ids of window k: unique across the day's windows."""
    for name in ("event_id", "session_id"):
        col = table[name]
        fresh = pc.binary_join_element_wise(pa.scalar(f"w{k:02d}-"), col, "")
        table = table.set_column(table.schema.get_field_index(name), name, fresh)
    return table


def format_report(res: dict[str, Any]) -> str:
    a, lift = res["arms"], res["lift"]
    lines = [
        f"Simulated A/B test on {res['ds']}: daily-only pages vs refreshed every "
        f"{res['every_hours']} h (seed {res['seed']})",
        "",
        "| arm | visitors | add-to-carts per visitor | click-through rate | purchases per visitor |",
        "|---|---|---|---|---|",
    ]
    for name in ("daily_only", "refreshed"):
        r = a[name]
        lines.append(
            f"| {name} | {r['visitors']:,} | {r['add_to_carts_per_visitor']:.4f} "
            f"| {r['ctr']:.4f} | {r['purchases_per_visitor']:.4f} |"
        )
    lines.append("")
    for m in ("add_to_carts_per_visitor", "ctr", "purchases_per_visitor"):
        x = lift[m]
        lines.append(
            f"{m}: {x['lift']:+.2%} [{x['ci_low']:+.2%}, {x['ci_high']:+.2%}] (95% bootstrap)"
        )
    return "\n".join(lines)
