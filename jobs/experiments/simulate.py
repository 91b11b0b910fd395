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

import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.lake import (
    DEFAULT_PAGE_KEY,
    EVENT_TYPES,
    Lake,
    fmt_ds,
    is_local,
    local_path,
    parse_ds,
)
from jobs.inputs.generate import (
    EVENT_CODE,
    GENERATED_EVENT_SCHEMA,
    MICROS,
    PAGES,
    EventColumns,
    SimParams,
    fixed_width_strings,
    id_array,
    load_truth,
    nullable,
    schedule_visits,
    string_array,
    take,
)
from jobs.inputs.truth import DEVICES, GroundTruth

__all__ = ["MAX_VISITS_PER_DAY", "ab_test", "simulate_day", "simulate_visits", "split_arms"]

MAX_VISITS_PER_DAY = 10  # visits of one user in one day (Poisson draws are clipped)
ARMS = ("control", "treatment")
_PAGE_COLUMNS = ("user_id", "slot", "carousel_id", "item_rank", "item_id")
_SESSION_MIN = 55.0  # minutes a visit block needs after its last visit starts (visits < 50 min)


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


def arm_summary(
    counts: dict[str, np.ndarray], arm: np.ndarray, *, resamples: int, seed: int
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Per arm totals and metrics of the users with >= 1 visit (`counts`: per truth user,
    visits and each event type), and the treatment / control - 1 lift of each metric with a
    95% bootstrap interval (visitors resampled within each arm, `resamples` times)."""
    cols_used = ("impression", "click", "add_to_cart", "purchase")
    per_arm: dict[str, Any] = {}
    values: list[np.ndarray] = []
    for a, name in enumerate(ARMS):
        who = np.flatnonzero((counts["visits"] > 0) & (arm == a))
        if who.size == 0:
            raise ValueError(f"the {name} arm has no visitors; simulate more users or days")
        x = np.stack([counts[c][who] for c in cols_used], axis=1).astype(np.float64)
        values.append(x)
        metrics = _metrics(x.sum(0, keepdims=True), who.size)
        per_arm[name] = {
            "visitors": int(who.size),
            "visits": int(counts["visits"][who].sum()),
            "impressions": int(x[:, 0].sum()),
            "clicks": int(x[:, 1].sum()),
            "add_to_carts": int(x[:, 2].sum()),
            "purchases": int(x[:, 3].sum()),
            **{m: float(v[0]) for m, v in metrics.items()},
        }

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xAB]))
    boot = [_bootstrap_sums(x, resamples, rng) for x in values]
    c_boot = _metrics(boot[0], values[0].shape[0])
    t_boot = _metrics(boot[1], values[1].shape[0])
    lift: dict[str, dict[str, float]] = {}
    for m in c_boot:
        c, t = per_arm["control"][m], per_arm["treatment"][m]
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = t_boot[m] / c_boot[m] - 1.0
        dist = dist[np.isfinite(dist)]
        lo, hi = np.percentile(dist, [2.5, 97.5]) if dist.size else (np.nan, np.nan)
        lift[m] = {
            "lift": float(t / c - 1.0) if c > 0 else float("nan"),
            "ci_low": float(lo),
            "ci_high": float(hi),
        }
    return per_arm, lift


def split_arms(user_ids: Any, salt: str = "") -> np.ndarray:
    """Stable 50/50 arm of each user id (0 = control, 1 = treatment): a keyed SipHash of the id,
    the key derived from `salt`. Independent of PYTHONHASHSEED, order and the other ids."""
    key = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()  # 16 characters
    ids = np.asarray(user_ids).astype(str).astype(object)
    return (pd.util.hash_array(ids, hash_key=key, categorize=False) & 1).astype(np.int8)


# ---- pages ---------------------------------------------------------------------------------


@dataclass
class ServedPages:
    """The shown placements of one page table per arm, one row per placement, grouped by page
    (arm, user) in slot, position order. Rows of users unknown to the truth are dropped."""

    item: np.ndarray  # index into item_vocab
    truth_item: np.ndarray  # truth item index, -1 when unknown to the truth
    carousel: np.ndarray  # index into carousel_vocab (-1: null)
    slot: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    start: np.ndarray  # per page: first row
    length: np.ndarray  # per page: number of shown placements
    page_of: np.ndarray  # (arms, truth users): page index, the arm's default page or -1
    item_vocab: pa.Array
    carousel_vocab: pa.Array

    @classmethod
    def build(
        cls,
        truth: GroundTruth,
        frames: Sequence[pd.DataFrame],
        slots: int | None,
        positions: int | None,
    ) -> ServedPages:
        s_max = int(truth.meta.get("slots", 6) if slots is None else slots)
        p_max = int(truth.meta.get("positions", 6) if positions is None else positions)
        if s_max < 1 or p_max < 1:
            raise ValueError(f"slots and positions must be >= 1, got {s_max}, {p_max}")
        n_users = truth.n_users
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("key", "slot", "position", "propensity", "item", "carousel")
        }
        vocabs: dict[str, list[np.ndarray]] = {"item": [], "carousel": []}
        for a, df in enumerate(frames):  # over arms
            missing = [c for c in _PAGE_COLUMNS if c not in df.columns]
            if missing:
                raise ValueError(f"the page table lacks column(s) {missing}")
            slot = df["slot"].to_numpy(np.int64)
            rank = df["item_rank"].to_numpy(np.int64)
            user = truth.user_index(df["user_id"].to_numpy(object))
            other = np.flatnonzero(user < 0)
            default = df["user_id"].to_numpy(object)[other] == DEFAULT_PAGE_KEY
            user[other[default]] = n_users  # the default page sorts last
            item_code, item_vocab = pd.factorize(df["item_id"].to_numpy(object))
            keep = (user >= 0) & (slot >= 1) & (slot <= s_max) & (rank >= 1) & (rank <= p_max)
            keep &= item_code >= 0  # a placement without an item shows nothing
            if "propensity" in df.columns:
                prop = df["propensity"].to_numpy(np.float64, na_value=np.nan)[keep]
                prop[np.isnan(prop)] = 1.0  # older exports: a deterministic placement
                if ((prop <= 0) | (prop > 1)).any():
                    raise ValueError("page propensities must lie in (0, 1]")
            else:
                prop = np.ones(int(keep.sum()))
            cols["key"].append(a * (n_users + 1) + user[keep])
            cols["slot"].append(slot[keep])
            cols["position"].append(rank[keep])
            cols["propensity"].append(prop)
            carousel = pd.factorize(df["carousel_id"].to_numpy(object))
            for name, (code, vocab) in (("item", (item_code, item_vocab)), ("carousel", carousel)):
                # codes over the arms' concatenated vocabularies (unified below)
                base = sum(v.size for v in vocabs[name])
                cols[name].append(np.where(code >= 0, code + base, -1)[keep])
                vocabs[name].append(np.asarray(vocab, dtype=object))
        c = {k: np.concatenate(v) for k, v in cols.items()}
        vocab_of: dict[str, np.ndarray] = {}
        for name, parts in vocabs.items():
            code, vocab = pd.factorize(np.concatenate(parts))
            c[name] = np.r_[code, -1][c[name]]  # -1 (null) stays -1
            vocab_of[name] = np.asarray(vocab, dtype=object)
        # one row per placement in (arm, user, slot, position) order; exports are sorted already
        order_key = (c["key"] * (s_max + 1) + c["slot"]) * (p_max + 1) + c["position"]
        if (np.diff(order_key) < 0).any():
            order = np.argsort(order_key, kind="stable")
            c = {k: v[order] for k, v in c.items()}
        key = c["key"]
        start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key[:0]
        length = np.diff(np.r_[start, key.size])
        page_arm, page_user = np.divmod(key[start], n_users + 1)
        page_of = np.full((len(frames), n_users), -1, np.int64)
        for a in range(len(frames)):  # over arms
            default = np.flatnonzero((page_arm == a) & (page_user == n_users))
            if default.size:
                page_of[a] = default[0]
            mine = np.flatnonzero((page_arm == a) & (page_user < n_users))
            page_of[a, page_user[mine]] = mine

        ivocab = vocab_of["item"]
        truth_item = np.r_[truth.item_index(ivocab.astype(str)), -1].astype(np.int64)
        return cls(
            item=c["item"],
            truth_item=truth_item[c["item"]],
            carousel=c["carousel"],
            slot=c["slot"],
            position=c["position"],
            propensity=c["propensity"],
            start=start.astype(np.int64),
            length=length.astype(np.int64),
            page_of=page_of,
            item_vocab=pa.array(ivocab, pa.string()),
            carousel_vocab=pa.array(vocab_of["carousel"], pa.string()),
        )


# ---- one simulated day ---------------------------------------------------------------------


@dataclass
class _Visits:
    """Homepage visits of one day (the `sess` of the generator's helpers), grouped by user."""

    user: np.ndarray  # truth user index
    start: np.ndarray  # µs since epoch
    device: np.ndarray  # index into DEVICES


def simulate_page_visits(
    truth: GroundTruth,
    pages: ServedPages,
    users: np.ndarray,
    arm: np.ndarray,
    day: dt.date,
    visits_per_user: float | None,
    seed: int,
    window: tuple[int, int, int] | None = None,
) -> tuple[_Visits, dict[str, np.ndarray]]:
    """Visits and their event columns (the generator's integer codes; policy = arm).

    `window` (k, lo, hi): only the day's visits starting in [lo, hi) µs (the same day's visits
    whatever the window; clicks and the funnel draw from window k's own streams)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if visits_per_user is not None and not (0 <= visits_per_user <= MAX_VISITS_PER_DAY):
        raise ValueError(
            f"visits_per_user must be in [0, {MAX_VISITS_PER_DAY}] or None, got {visits_per_user}"
        )
    sim = _sim_params(truth)
    d = (day - first_day(truth)).days
    streams = np.random.SeedSequence([int(seed), day.toordinal()]).spawn(3)
    seq_visits, seq_clicks, seq_funnel = streams  # the same visitors whatever the pages
    visits = _draw_visits(
        truth, sim, users, d, day, visits_per_user, np.random.default_rng(seq_visits)
    )
    if window is not None:
        k, lo, hi = window
        inside = (visits.start >= lo) & (visits.start < hi)
        visits = _Visits(visits.user[inside], visits.start[inside], visits.device[inside])
        seq_clicks, seq_funnel = np.random.SeedSequence([int(seed), day.toordinal(), k]).spawn(2)

    page = pages.page_of[arm[visits.user], visits.user]
    if (page < 0).any():
        raise ValueError(
            f"{int((page < 0).sum())} visit(s) have no page and the page table has no "
            f"{DEFAULT_PAGE_KEY!r} page"
        )
    # Click probabilities once per distinct (user, page): repeat visits share them.
    n_pages = max(pages.length.size, 1)
    pair, pair_of_visit = np.unique(visits.user * n_pages + page, return_inverse=True)
    pair_row, pair_idx = _expand(pages, pair % n_pages)
    item_at = pages.truth_item[pair_row]
    safe = np.maximum(item_at, 0)
    pair_p = truth.click_probability(
        (pair // n_pages)[pair_idx], safe, pages.slot[pair_row], pages.position[pair_row]
    )
    pair_p[(item_at < 0) | (truth.first_seen_day[safe] > d)] = 0.0  # unknown / not listed yet

    row, imp_visit = _expand(pages, page)
    offset = row - pages.start[page][imp_visit]
    pair_start = np.cumsum(pages.length[pair % n_pages]) - pages.length[pair % n_pages]
    p_click = pair_p[np.repeat(pair_start[pair_of_visit.ravel()], pages.length[page]) + offset]
    user = visits.user[imp_visit]
    slot, position = pages.slot[row], pages.position[row]

    rng = np.random.default_rng(seq_clicks)
    clicked = np.flatnonzero(rng.random(p_click.size) < p_click)
    clicked = clicked[np.lexsort((rng.random(clicked.size), imp_visit[clicked]))]

    placement = {
        "item": pages.item[row],
        "carousel": pages.carousel[row],
        "slot": slot,
        "position": position,
        "propensity": pages.propensity[row],
        "policy": arm[user].astype(np.int8),
    }
    ev = EventColumns(visits)
    # the page renders top to bottom, left to right, within the first seconds (as generated)
    imp_ts = visits.start[imp_visit] + (slot - 1) * 2 * MICROS + (position - 1) * MICROS // 4
    ev.add("impression", "home", imp_ts, imp_visit, **placement)
    _funnel(
        truth,
        sim,
        d,
        visits,
        imp_visit[clicked],
        pages.truth_item[row[clicked]],
        ev,
        placement,
        clicked,
        np.random.default_rng(seq_funnel),
    )
    return visits, ev.columns()


def _funnel(
    truth: GroundTruth,
    sim: SimParams,
    d: int,
    visits: _Visits,
    session: np.ndarray,
    item: np.ndarray,
    ev: EventColumns,
    placement: dict[str, np.ndarray],
    clicked: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Click, view, add to cart and purchase at checkout: the generator's homepage journey."""
    start, checkout = schedule_visits(visits, session, rng)  # session is sorted by visit
    view_ts = start + (rng.uniform(3.0, 20.0, start.size) * MICROS).astype(np.int64)
    atc_ts = start + (rng.uniform(25.0, 40.0, start.size) * MICROS).astype(np.int64)
    user, dev = visits.user[session], visits.device[session]
    atc = rng.random(user.size) < truth.add_to_cart_probability(user, item, dev, d, False)
    bought = atc & (rng.random(user.size) < truth.purchase_probability(user, item, dev, d))
    cart = {
        "quantity": (1 + rng.poisson(sim.quantity_extra, user.size)).astype(np.int32),
        "price": truth.price[item].astype(np.float64),
    }

    def cols(idx: np.ndarray, **more: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: v[clicked[idx]] for k, v in placement.items()}
        return {**out, **{k: v[idx] for k, v in more.items()}}

    everything = np.arange(session.size)
    a, b = np.flatnonzero(atc), np.flatnonzero(bought)
    ev.add("click", "home", start, session, **cols(everything))
    ev.add("view", "item", view_ts, session, **cols(everything))
    ev.add("add_to_cart", "item", atc_ts[a], session[a], **cols(a, **cart))
    ev.add("purchase", "checkout", checkout[session[b]], session[b], **cols(b, **cart))


def _expand(pages: ServedPages, page: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of each page in `page` (in order) and, per row, its index into `page`."""
    n = pages.length[page]
    owner = np.repeat(np.arange(page.size), n)
    first = np.cumsum(n) - n
    return np.arange(owner.size) + np.repeat(pages.start[page] - first, n), owner


def _draw_visits(
    truth: GroundTruth,
    sim: SimParams,
    users: np.ndarray,
    d: int,
    day: dt.date,
    visits_per_user: float | None,
    rng: np.random.Generator,
) -> _Visits:
    """Homepage visits of `users` (sorted truth indices) on day index d."""
    if visits_per_user is None:  # the generator's browsing and trip sessions
        weekend = day.weekday() >= 5
        p_visit = np.minimum(truth.activity[users] * (sim.weekend_boost if weekend else 1.0), 0.95)
        active = rng.random(users.size) < p_visit
        period = truth.trip_period[users].astype(np.int64)
        due = (truth.staples[users, 0] >= 0) & (
            (d + truth.trip_phase[users].astype(np.int64)) % period == 0
        )
        trip = due & (rng.random(users.size) < sim.trip_show)
        n = np.where(active, 1 + rng.binomial(2, sim.extra_session_p, users.size), 0)
        n = n + (trip & ~active)
    else:
        n = np.minimum(rng.poisson(visits_per_user, users.size), MAX_VISITS_PER_DAY)
        trip = np.zeros(users.size, bool)
    keep = n > 0
    users, n = users[keep], n[keep].astype(np.int64)
    day_start = (day - dt.date(1970, 1, 1)).days * 86400 * MICROS
    start = _visit_starts(truth, sim, users, n, day_start, rng)
    user = np.repeat(users, n)
    device = truth.device[user].astype(np.int64)
    if visits_per_user is None:  # a session starts on the homepage with the device's share
        first = np.r_[True, user[1:] != user[:-1]]
        is_trip = first & np.repeat(trip[keep], n)
        p_home = np.where(is_trip, sim.home_share_trip, np.asarray(sim.home_share)[device])
        home = rng.random(user.size) < p_home
        user, start, device = user[home], start[home], device[home]
    return _Visits(user=user.astype(np.int64), start=start, device=device)


def _visit_starts(
    truth: GroundTruth,
    sim: SimParams,
    users: np.ndarray,
    n: np.ndarray,
    day_start: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Start (µs) of each user's n visits: a block around the habit hour, visits >= 94 min
    apart (a visit lasts < 50 min, so a 30-minute gap sessionises them exactly), inside the day."""
    first = np.cumsum(n) - n
    j = np.arange(int(n.sum())) - np.repeat(first, n)
    spacing = np.where(
        j > 0, sim.session_spacing_min + sim.session_spacing_jitter_min * rng.random(j.size), 0.0
    )
    offset = np.cumsum(spacing)
    offset -= np.repeat(offset[first], n)
    last = offset[first + n - 1]
    squeeze = np.minimum(1.0, (1440.0 - _SESSION_MIN - 1.0) / np.maximum(last, 1.0))
    offset *= np.repeat(squeeze, n)
    block = last * squeeze + _SESSION_MIN
    center = truth.habit_hour[users] * 60.0 + rng.normal(0.0, sim.hour_jitter_min, users.size)
    block_start = np.clip(center - block / 2, 0.0, 1440.0 - block - 1.0)
    return day_start + ((np.repeat(block_start, n) + offset) * 60 * MICROS).astype(np.int64)


# ---- helpers -------------------------------------------------------------------------------


def to_table(
    truth: GroundTruth,
    pages: ServedPages,
    c: dict[str, np.ndarray],
    policy_names: Sequence[str],
    day: dt.date,
) -> pa.Table:
    order = np.argsort(c["ts"], kind="stable")
    c = {k: v[order] for k, v in c.items()}
    n = order.size
    compact = day.strftime("%Y%m%d")
    n_sessions = int(c["session"].max()) + 1 if n else 0
    arrays = [
        id_array(f"e{compact}", np.arange(n), max(9, len(str(n)))),
        pa.array(c["ts"], pa.timestamp("us", tz="UTC")),
        fixed_width_strings(truth.user_ids).take(pa.array(c["user"])),
        id_array(f"s{compact}", np.arange(n_sessions), 8).take(pa.array(c["session"])),
        string_array(EVENT_TYPES).take(pa.array(c["etype"])),
        take(pages.item_vocab, c["item"]),
        take(pages.carousel_vocab, c["carousel"]),
        nullable(c["slot"].astype(np.int32), c["slot"] == 0, pa.int32()),
        nullable(c["position"].astype(np.int32), c["position"] == 0, pa.int32()),
        nullable(c["propensity"], np.isnan(c["propensity"]), pa.float64()),
        string_array(PAGES).take(pa.array(c["page"])),
        string_array(DEVICES).take(pa.array(c["device"])),
        pa.nulls(n, pa.string()),  # query: no searches are simulated
        nullable(c["quantity"].astype(np.int32), c["quantity"] == 0, pa.int32()),
        nullable(c["price"], np.isnan(c["price"]), pa.float64()),
        take(string_array(list(policy_names)), c["policy"]),
    ]
    return pa.Table.from_arrays(arrays, schema=GENERATED_EVENT_SCHEMA)


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


def _metrics(sums: np.ndarray, visitors: int) -> dict[str, np.ndarray]:
    """Arm metrics from summed [impressions, clicks, add_to_carts, purchases] rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ctr = sums[:, 1] / sums[:, 0]
    return {
        "ctr": ctr,
        "add_to_carts_per_visitor": sums[:, 2] / visitors,
        "purchases_per_visitor": sums[:, 3] / visitors,
    }


def _bootstrap_sums(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums of `resamples` bootstrap resamples of the rows of x: (resamples, columns)."""
    n = x.shape[0]
    out = np.empty((resamples, x.shape[1]))
    chunk = max(1, 4_000_000 // n)
    for lo in range(0, resamples, chunk):  # chunks bound memory to ~chunk * n counts
        b = min(chunk, resamples - lo)
        idx = rng.integers(0, n, (b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        out[lo : lo + b] = counts @ x
    return out


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


def _sim_params(truth: GroundTruth) -> SimParams:
    saved = truth.meta.get("simulation", {})
    names = {f.name for f in dataclasses.fields(SimParams)}
    return SimParams(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    )


def first_day(truth: GroundTruth) -> dt.date:
    return parse_ds(truth.meta.get("start", "2026-01-01"))


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
