"""Synthetic lake generator (`homepage generate`): a grocery shop with a carousel homepage.

`generate_lake` samples a ground-truth user model (`jobs.inputs.truth.GroundTruth`), simulates `days`
days of traffic from it one day at a time (vectorised with numpy; the only Python loops are over
days, carousel roles and digit positions) and writes the input tables of `jobs.core.lake`:

    items/part-0.parquet        ITEM_SCHEMA; ~20 top categories with leaves ("c03_07"), brands
                                (a few big ones per category, long tail), lognormal prices,
                                ~5% without image, ~8% new items (first_seen inside the
                                window); a few titles hold `<b>` or `&`; every item in stock
                                (its status when listed, or on the first day)
    item_changes/part-0.parquet ITEM_CHANGE_SCHEMA; ~5% of items go out of stock on a day of
                                the window: one row (in_stock false, price null) dated that day
                                (written only when there is at least one row)
    users/part-0.parquet        user_id, region, device (preferred), signup_date
    carousels/part-0.parquet    CAROUSEL_SCHEMA; five operator-curated carousels
    events/ds=YYYY-MM-DD/part-0.parquet
                                EVENT_SCHEMA columns in order, plus `logging_policy`
    _truth/truth.npz, truth.json
                                the user model and every generator parameter

Behaviour. Users have Dirichlet tastes over top categories, favourite brands, latent factors,
a heavy-tailed activity level, a preferred device and an hour-of-day habit (evening peak).
Half the users are grocery regulars with 2-5 staple items: every 5-14 days (their own period)
they make a trip and buy each staple with its own probability, through search (carousel_id
null). A visit day has 1-3 sessions (weekends get more visits); sessions are >= 45 minutes
apart, events inside one are seconds to minutes apart and a session lasts < 50 minutes.
A session starts on the homepage (share depends on the device) or in search.

Homepage. A visit shows S slots (default 6, 1 = top) of P items (default 6, 1 = left): one
`impression` per placement. Each visit has K = 11 candidate carousels, each with up to
N = 10 candidate items (`candidate_items`):

    trending                 top items by decayed recent engagement
    curated:deals            promo, immutable operator order
    curated:seasonal         promo
    curated:new_arrivals     rule "new": newest items (first_seen in the last 30 days)
    curated:top_rated        editorial
    curated:weekly_essentials  editorial
    buy_again                the user's remembered purchases (the site also knows regulars'
                             staples from before the window); a third `category:` carousel
                             instead when it knows fewer than 3 distinct items
    category:<leaf> x2       the user's top leaf categories as the site knows them
    discover                 a leaf from a top category the user rarely likes
    brand:<brand>            the user's favourite brand

Logging policy. With probability 1 - random_share (default 0.95) a page is built by the
"default" policy: a fixed carousel order (one of three orders, by user segment) filled with the
user's personal carousels, items ordered by popularity (deals keep the operator's order). With
probability random_share the page is "random": a uniformly random permutation of the K
candidates fills the S slots and, in each carousel, a uniformly random permutation of its n
candidate items fills the positions (n < P leaves positions empty).

`propensity` (on impressions and on every event attributed to a homepage placement):
    random pages:  1 / (K * n)                   -- P(placement | the random component):
                                                    P(carousel at slot s) = 1/K and
                                                    P(item at position l) = 1/n
    default pages: (1 - random_share) + random_share / (K * n)
                                                 -- exact P(placement) under the mixture
where n is the carousel's number of candidate items that day (N unless fewer exist). (The
marginal probability of a random page's placement under the mixture is random_share / (K * n),
plus 1 - random_share when the default page would have made the same placement.)
`logging_policy` is "default"/"random" on those events and null on the others. The logging
policy does not de-duplicate: an item may appear in two carousels of one logged page.

Funnel. Clicks follow the truth's position-based model; a click (page "home", same carousel,
slot, position, propensity) is followed by a `view` (page "item") and maybe an `add_to_cart`
(page "item"); cart lines are bought at checkout at the end of the session (page "checkout").
Views, carts and purchases after a homepage click keep the carousel, slot, position,
propensity and policy of the placement. Search journeys log a `search` (page "search", item
null, query = a leaf or brand word), then a `view`, `add_to_cart` and `purchase` with
carousel_id null. Items out of stock can be viewed but not bought; items appear only from their
first_seen day; the logging policy shows only items available that day.

Dated facts (a fact dated d is known at the end of day d; see `jobs.core.lake`): `first_seen`
is the listing day, the first day the item can appear in events (items listed before the
window get a day up to two years before it), so no event precedes it; going out of stock on
day k (the first day it cannot be bought) is an `item_changes` row dated k, so the run for
`ds` sees it from ds = k + 1; prices never change. The curated carousels are undated
(valid_from and valid_to null): their item lists hold only items listed before the window.

Where the parts live (all in `jobs.inputs`): `population` samples the truth; `site_model` holds
`SimParams`, the carousel roles and the curated carousels; `catalogue` the names and curated
lists; `world` the vocabularies and the items, users and carousels tables; `logging_policy` the
site's recommender; `sessions`, `homepage` and `traffic` one day of events; `eventlog` the
event codes, the generated-event schema and the Arrow column builders.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.lake import EVENT_TYPES, Lake, fmt_ds, is_local, parse_ds
from jobs.inputs.population import sample_truth
from jobs.inputs.site_model import ROLES, SimParams
from jobs.inputs.traffic import simulate_day
from jobs.inputs.truth import GroundTruth
from jobs.inputs.world import World

__all__ = ["generate_lake", "load_truth"]


def load_truth(lake_root: str) -> GroundTruth:
    """The ground-truth user model of a generated lake."""
    return GroundTruth.load(Lake(lake_root).truth)


def generate_lake(
    lake_root: str,
    *,
    users: int,
    items: int,
    days: int,
    seed: int,
    start: str = "2026-01-01",
    progress: Callable[[str], None] | None = None,
    slots: int = 6,
    positions: int = 6,
    random_share: float = 0.05,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic lake under `lake_root` and return generation stats.

    Stats: lake, events, seconds, events_per_s, users, items, days, seed, start, end and one
    count per event type (keys "impression", "view", ...). Deterministic: the same arguments
    give byte-identical files. Raises ValueError on bad arguments, or when the lake already
    holds input tables and `overwrite` is false (then the generator's own tables are replaced).
    """
    sim = SimParams(slots=slots, positions=positions, random_share=random_share)
    first_day = _validate(lake_root, users, items, days, seed, start, sim)
    lake = Lake(lake_root)
    _prepare_dirs(lake, overwrite)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()

    # One seed sequence: independent streams for the world and for each day.
    world_seq, *day_seqs = np.random.SeedSequence(seed).spawn(days + 1)
    rng = np.random.default_rng(world_seq)
    say(f"sampling {users:,} users and {items:,} items")
    meta = {"seed": seed, "users": users, "items": items, "days": days, "start": start}
    truth = sample_truth(rng, users=users, items=items, days=days, meta=meta)
    world = World.build(truth, sim, first_day, rng)
    truth.meta.update(world.describe())
    truth.save(lake.truth)
    _write(world.items_table(), os.path.join(lake.items, "part-0.parquet"))
    _write(world.users_table(rng), os.path.join(lake.users, "part-0.parquet"))
    _write(world.carousels_table(), os.path.join(lake.carousels, "part-0.parquet"))
    changes = world.item_changes_table()
    if changes.num_rows:  # an optional table is absent rather than empty (as in the importers)
        _write(changes, os.path.join(lake.item_changes, "part-0.parquet"))

    counts = dict.fromkeys(EVENT_TYPES, 0)
    # Parquet encoding releases the GIL: write day d in a thread while day d + 1 is simulated
    # (at most one write in flight, so at most two days are in memory).
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future[None] | None = None
        for d in range(days):
            table, day_counts = simulate_day(world, d, np.random.default_rng(day_seqs[d]))
            ds = fmt_ds(first_day + dt.timedelta(days=d))
            if pending is not None:
                pending.result()
            pending = writer.submit(
                _write, table, os.path.join(lake.raw_events_ds(ds), "part-0.parquet")
            )
            for name, c in zip(EVENT_TYPES, day_counts, strict=True):
                counts[name] += int(c)
            say(f"day {d + 1}/{days} {ds}: {table.num_rows:,} events")
        if pending is not None:
            pending.result()

    seconds = time.perf_counter() - t0
    total = sum(counts.values())
    return {
        "lake": lake.root,
        "events": total,
        "seconds": round(seconds, 3),
        "events_per_s": round(total / seconds, 1) if seconds > 0 else float("inf"),
        "users": users,
        "items": items,
        "days": days,
        "seed": seed,
        "start": start,
        "end": fmt_ds(first_day + dt.timedelta(days=days - 1)),
        **counts,
    }


# ---- arguments and files -------------------------------------------------------------------


def _validate(
    lake_root: str, users: int, items: int, days: int, seed: int, start: str, sim: SimParams
) -> dt.date:
    for name, value in (("users", users), ("items", items), ("days", days)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if days > 3650:
        raise ValueError(f"days must be at most 3650, got {days}")
    if sim.slots < 1 or sim.positions < 1:
        raise ValueError("slots and positions must be >= 1")
    if sim.slots > len(ROLES) or sim.positions > sim.candidate_items:
        raise ValueError(
            f"a page has at most {len(ROLES)} slots and {sim.candidate_items} positions, "
            f"got slots={sim.slots}, positions={sim.positions}"
        )
    if not 0.0 <= sim.random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {sim.random_share}")
    if not lake_root or not is_local(lake_root):
        raise ValueError(f"the generator writes to a local directory, got {lake_root!r}")
    try:
        return parse_ds(start)
    except ValueError as exc:
        raise ValueError(f"start: {exc}") from exc


def _prepare_dirs(lake: Lake, overwrite: bool) -> None:
    owned = [lake.raw_events, lake.items, lake.item_changes, lake.users, lake.carousels, lake.truth]
    existing = [p for p in owned if os.path.isdir(p) and os.listdir(p)]
    if existing and not overwrite:
        raise ValueError(
            f"{lake.root} already holds input tables ({', '.join(os.path.basename(p) for p in existing)}); "
            "pass overwrite=True (--overwrite) to replace them"
        )
    for path in existing:
        shutil.rmtree(path)


def _write(table: pa.Table, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, compression="snappy")
