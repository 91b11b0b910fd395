"""One simulated day of homepage visits on served pages: the visitors (the generator's rates or
a Poisson number per user), their impressions, clicks and funnel as the generator's integer-coded
event columns, and those columns as an Arrow table in `GENERATED_EVENT_SCHEMA`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.core.lake import DEFAULT_PAGE_KEY, parse_ds
from jobs.experiments.served_pages import ServedPages
from jobs.inputs.eventlog import (
    MICROS,
    EventColumns,
    events_table,
    fixed_width_strings,
    id_array,
    schedule_visits,
)
from jobs.inputs.site_model import SimParams
from jobs.inputs.truth import GroundTruth

MAX_VISITS_PER_DAY = 10  # visits of one user in one day (Poisson draws are clipped)
_SESSION_MIN = 55.0  # minutes a visit block needs after its last visit starts (visits < 50 min)


@dataclass
class Visits:
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
) -> tuple[Visits, dict[str, np.ndarray]]:
    """Visits and their event columns (the generator's integer codes; policy = arm).

    `window` (k, lo, hi): only the day's visits starting in [lo, hi) µs (the same day's visits
    whatever the window; clicks and the funnel draw from window k's own streams)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if visits_per_user is not None and not (0 <= visits_per_user <= MAX_VISITS_PER_DAY):
        raise ValueError(
            f"visits_per_user must be in [0, {MAX_VISITS_PER_DAY}] or None, got {visits_per_user}"
        )
    sim = sim_params(truth)
    d = (day - first_day(truth)).days
    streams = np.random.SeedSequence([int(seed), day.toordinal()]).spawn(3)
    seq_visits, seq_clicks, seq_funnel = streams  # the same visitors whatever the pages
    visits = _draw_visits(
        truth, sim, users, d, day, visits_per_user, np.random.default_rng(seq_visits)
    )
    if window is not None:
        k, lo, hi = window
        inside = (visits.start >= lo) & (visits.start < hi)
        visits = Visits(visits.user[inside], visits.start[inside], visits.device[inside])
        seq_clicks, seq_funnel = np.random.SeedSequence([int(seed), day.toordinal(), k]).spawn(2)

    page = pages.page_of[arm[visits.user], visits.user]
    if (page < 0).any():
        raise ValueError(
            f"{int((page < 0).sum())} visit(s) have no page and the page table has no "
            f"{DEFAULT_PAGE_KEY!r} page"
        )
    row, imp_visit, p_click = _click_probabilities(truth, pages, visits.user, page, d)
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


def _click_probabilities(
    truth: GroundTruth, pages: ServedPages, visit_user: np.ndarray, page: np.ndarray, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shown rows of each visit's page, each row's visit, and its click probability on day
    index d (0 for items unknown to the truth or not listed yet)."""
    # Click probabilities once per distinct (user, page): repeat visits share them.
    n_pages = max(pages.length.size, 1)
    pair, pair_of_visit = np.unique(visit_user * n_pages + page, return_inverse=True)
    pair_row, pair_idx = pages.rows(pair % n_pages)
    item_at = pages.truth_item[pair_row]
    safe = np.maximum(item_at, 0)
    pair_p = truth.click_probability(
        (pair // n_pages)[pair_idx], safe, pages.slot[pair_row], pages.position[pair_row]
    )
    pair_p[(item_at < 0) | (truth.first_seen_day[safe] > d)] = 0.0  # unknown / not listed yet

    row, imp_visit = pages.rows(page)
    offset = row - pages.start[page][imp_visit]
    pair_start = np.cumsum(pages.length[pair % n_pages]) - pages.length[pair % n_pages]
    p_click = pair_p[np.repeat(pair_start[pair_of_visit.ravel()], pages.length[page]) + offset]
    return row, imp_visit, p_click


def _funnel(
    truth: GroundTruth,
    sim: SimParams,
    d: int,
    visits: Visits,
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


def _draw_visits(
    truth: GroundTruth,
    sim: SimParams,
    users: np.ndarray,
    d: int,
    day: dt.date,
    visits_per_user: float | None,
    rng: np.random.Generator,
) -> Visits:
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
    return Visits(user=user.astype(np.int64), start=start, device=device)


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
    return events_table(
        c,
        event_ids=id_array(f"e{compact}", np.arange(n), max(9, len(str(n)))),
        users=fixed_width_strings(truth.user_ids).take(pa.array(c["user"])),
        sessions=id_array(f"s{compact}", np.arange(n_sessions), 8).take(pa.array(c["session"])),
        item_vocab=pages.item_vocab,
        carousel_vocab=pages.carousel_vocab,
        queries=pa.nulls(n, pa.string()),  # no searches are simulated
        policies=list(policy_names),
    )


def sim_params(truth: GroundTruth) -> SimParams:
    saved = truth.meta.get("simulation", {})
    names = {f.name for f in dataclasses.fields(SimParams)}
    return SimParams(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    )


def first_day(truth: GroundTruth) -> dt.date:
    return parse_ds(truth.meta.get("start", "2026-01-01"))
