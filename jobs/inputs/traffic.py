"""One generated day of traffic: sessions, homepage pages, journeys (homepage clicks, searches,
staple searches), their funnel (view, add to cart, purchase at checkout) and the day's events
as an Arrow table in `GENERATED_EVENT_SCHEMA`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.core.lake import EVENT_TYPES
from jobs.inputs.eventlog import (
    MICROS,
    POLICIES,
    EventColumns,
    events_table,
    id_array,
    schedule_visits,
    take,
)
from jobs.inputs.homepage import PLACEMENT_FIELDS, Placements, home_pages
from jobs.inputs.sampling import GroupSampler, categorical_rows
from jobs.inputs.sessions import Sessions, draw_sessions
from jobs.inputs.world import World

_HOME, _SEARCH, _STAPLE = 0, 1, 2  # journey kinds


@dataclass
class Journeys:
    """One item each: a homepage click, or a search (or staple search) and the viewed item."""

    session: np.ndarray
    item: np.ndarray
    kind: np.ndarray  # _HOME, _SEARCH, _STAPLE
    carousel: np.ndarray
    slot: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    policy: np.ndarray
    query: np.ndarray

    def placement(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in PLACEMENT_FIELDS}

    def take(self, idx: np.ndarray) -> Journeys:
        return Journeys(**{k: v[idx] for k, v in vars(self).items()})


def _concat_journeys(parts: list[Journeys]) -> Journeys:
    return Journeys(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def _plain_journeys(
    session: np.ndarray, item: np.ndarray, kind: int, query: np.ndarray
) -> Journeys:
    n = session.size
    return Journeys(
        session=session,
        item=item,
        kind=np.full(n, kind, np.int8),
        carousel=np.full(n, -1, np.int32),
        slot=np.zeros(n, np.int64),
        position=np.zeros(n, np.int64),
        propensity=np.full(n, np.nan),
        policy=np.full(n, -1, np.int8),
        query=query,
    )


def _journeys(
    world: World, d: int, sess: Sessions, shown: Placements, rng: np.random.Generator
) -> Journeys:
    t, sim = world.truth, world.sim
    user = sess.user[shown.session]
    clicked = rng.random(user.size) < t.click_probability(
        user, shown.item, shown.slot, shown.position
    )
    c = np.flatnonzero(clicked)
    home = Journeys(
        session=shown.session[c],
        item=shown.item[c],
        kind=np.full(c.size, _HOME, np.int8),
        carousel=shown.carousel[c],
        slot=shown.slot[c],
        position=shown.position[c],
        propensity=shown.propensity[c],
        policy=shown.policy[c],
        query=np.full(c.size, -1, np.int32),
    )

    # Search journeys: a category from the user's taste, a few popular existing items of it as
    # results; the user views the most attractive one (Gumbel-max: a choice ∝ attractiveness).
    lam = np.where(sess.home, sim.search_journeys_home, sim.search_journeys_search)
    n = rng.poisson(lam) + ~sess.home
    s_idx = np.repeat(np.arange(sess.user.size), n)
    u = sess.user[s_idx]
    cats = categorical_rows(rng, t.taste[u], 1)[:, 0]
    exists = t.first_seen_day <= d
    sampler = GroupSampler(
        t.item_category, np.exp(t.popularity.astype(np.float64)) * exists, t.params.categories
    )
    cand = sampler.sample(rng, np.repeat(cats, sim.search_candidates)).reshape(
        -1, sim.search_candidates
    )
    score = np.log(t.attractiveness(u[:, None], np.maximum(cand, 0))) + rng.gumbel(size=cand.shape)
    choice = np.argmax(np.where(cand >= 0, score, -np.inf), axis=1)
    best = cand[np.arange(cand.shape[0]), choice]
    ok = best >= 0
    search = _plain_journeys(
        s_idx[ok], best[ok].astype(np.int64), _SEARCH, _queries(world, best[ok], rng)
    )

    # Staples due on a grocery trip, each bought with its own probability.
    trips = np.flatnonzero(sess.trip)
    st = t.staples[sess.user[trips]]
    due = (st >= 0) & (rng.random(st.shape) < t.staple_prob[sess.user[trips]])
    rows, cols = np.nonzero(due)
    staple_items = st[rows, cols].astype(np.int64)
    staple = _plain_journeys(trips[rows], staple_items, _STAPLE, _queries(world, staple_items, rng))
    return _concat_journeys([home, search, staple])


def _queries(world: World, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A search word for each item: its leaf noun, or sometimes its brand."""
    brand_query = rng.random(items.size) < world.sim.brand_query_share
    n_leaves = len(world.leaf_nouns)
    return np.where(
        brand_query, n_leaves + world.truth.item_brand[items], world.truth.item_leaf[items]
    ).astype(np.int32)


def simulate_day(world: World, d: int, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """All events of day d (index from the first day), sorted by ts, and counts per event type."""
    day = world.first_day + dt.timedelta(days=d)
    day_start = (day - dt.date(1970, 1, 1)).days * 86400 * MICROS
    sess = draw_sessions(world, d, day_start, rng)
    shown = home_pages(world, world.policy.day_tables(d), sess, rng)
    ev = EventColumns(sess)
    # The page renders top to bottom, left to right, within the first ~12 seconds.
    imp_ts = (
        sess.start[shown.session]
        + (shown.slot - 1) * 2 * MICROS
        + (shown.position - 1) * MICROS // 4
    )
    ev.add("impression", "home", imp_ts, shown.session, item=shown.item, **shown.placement())

    j = _journeys(world, d, sess, shown, rng)
    j = j.take(np.lexsort((rng.random(j.session.size), j.kind != _HOME, j.session)))
    _funnel(world, d, sess, j, ev, rng)
    cols = ev.columns()
    counts = np.bincount(cols["etype"], minlength=len(EVENT_TYPES))
    return _to_arrow(world, cols, day.strftime("%Y%m%d")), counts


def _funnel(
    world: World,
    d: int,
    sess: Sessions,
    j: Journeys,
    ev: EventColumns,
    rng: np.random.Generator,
) -> None:
    """Events of the journeys (click or search, view, add to cart, purchase at checkout), and
    the logging policy's end-of-day update from them."""
    t, sim = world.truth, world.sim
    start, checkout = schedule_visits(sess, j.session, rng)
    view_ts = start + (rng.uniform(3.0, 20.0, start.size) * MICROS).astype(np.int64)
    atc_ts = start + (rng.uniform(25.0, 40.0, start.size) * MICROS).astype(np.int64)
    user, dev = sess.user[j.session], sess.device[j.session]
    from_search = j.kind != _HOME
    atc = rng.random(user.size) < t.add_to_cart_probability(user, j.item, dev, d, from_search)
    bought = atc & (rng.random(user.size) < t.purchase_probability(user, j.item, dev, d))
    extra = np.where(j.kind == _STAPLE, sim.staple_quantity_extra, sim.quantity_extra)
    cart = {"quantity": (1 + rng.poisson(extra)).astype(np.int32), "price": t.price[j.item]}

    def cols(idx: np.ndarray, **more: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in {**j.placement(), "item": j.item, **more}.items()}

    home, srch = np.flatnonzero(~from_search), np.flatnonzero(from_search)
    a, b = np.flatnonzero(atc), np.flatnonzero(bought)
    ev.add("click", "home", start[home], j.session[home], **cols(home))
    ev.add("search", "search", start[srch], j.session[srch], query=j.query[srch])
    ev.add("view", "item", view_ts, j.session, **cols(np.arange(j.session.size)))
    ev.add("add_to_cart", "item", atc_ts[a], j.session[a], **cols(a, **cart))
    ev.add("purchase", "checkout", checkout[j.session[b]], j.session[b], **cols(b, **cart))

    engaged = np.concatenate([j.item[home], j.item[a], j.item[b]])
    weights = np.concatenate([np.ones(home.size), np.full(a.size, 3.0), np.full(b.size, 5.0)])
    world.policy.record(engaged, weights, user[b], j.item[b])


def _to_arrow(world: World, c: dict[str, np.ndarray], compact_day: str) -> pa.Table:
    order = np.argsort(c["ts"], kind="stable")
    c = {k: v[order] for k, v in c.items()}
    n = order.size
    return events_table(
        c,
        event_ids=id_array(f"e{compact_day}", np.arange(n), 9),
        users=world.user_vocab.take(pa.array(c["user"])),
        sessions=id_array(f"s{compact_day}", c["session"], 8),
        item_vocab=world.item_vocab,
        carousel_vocab=world.carousel_vocab,
        queries=take(world.query_vocab, c["query"]),
        policies=POLICIES,
    )
