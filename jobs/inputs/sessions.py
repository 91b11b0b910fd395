"""Who visits the generated shop on a day: sessions with their user, start, device, whether
they start on the homepage and whether they are a grocery trip."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from jobs.inputs.eventlog import MICROS
from jobs.inputs.truth import DEVICES
from jobs.inputs.world import World


@dataclass
class Sessions:
    user: np.ndarray  # user index
    start: np.ndarray  # µs since epoch
    device: np.ndarray  # index into DEVICES
    home: np.ndarray  # starts with a homepage visit
    trip: np.ndarray  # grocery trip: due staples are bought in it


def draw_sessions(world: World, d: int, day_start: int, rng: np.random.Generator) -> Sessions:
    t, sim = world.truth, world.sim
    weekend = (world.first_day + dt.timedelta(days=d)).weekday() >= 5
    p_visit = np.minimum(t.activity * (sim.weekend_boost if weekend else 1.0), 0.95)
    active = rng.random(t.n_users) < p_visit
    due = (t.staples[:, 0] >= 0) & ((d + t.trip_phase.astype(np.int64)) % t.trip_period == 0)
    trip = due & (rng.random(t.n_users) < sim.trip_show)
    users = np.flatnonzero(active | trip)
    n = 1 + np.where(active[users], rng.binomial(2, sim.extra_session_p, users.size), 0)
    first = np.cumsum(n) - n
    user = np.repeat(users, n)
    j = np.arange(user.size) - np.repeat(first, n)

    # Sessions of a user-day form a block around their habit hour, >= 95 min apart, and a
    # session lasts < 50 min: so the 30-minute sessionisation recovers them exactly.
    spacing = np.where(
        j > 0, sim.session_spacing_min + sim.session_spacing_jitter_min * rng.random(user.size), 0.0
    )
    offset = np.cumsum(spacing)
    offset -= np.repeat(offset[first], n)
    block = offset[first + n - 1] + 55.0
    center = t.habit_hour[users] * 60.0 + rng.normal(0.0, sim.hour_jitter_min, users.size)
    block_start = np.clip(center - block / 2, 0.0, 1440.0 - block - 1.0)
    start = day_start + ((np.repeat(block_start, n) + offset) * 60 * MICROS).astype(np.int64)

    pref = t.device[user].astype(np.int64)
    switch = rng.random(user.size) > sim.device_loyalty
    device = np.where(
        switch, (pref + rng.integers(1, len(DEVICES), user.size)) % len(DEVICES), pref
    )
    trip_s = np.repeat(trip[users], n) & (j == 0)
    p_home = np.where(trip_s, sim.home_share_trip, np.asarray(sim.home_share)[device])
    home = rng.random(user.size) < p_home
    return Sessions(user=user.astype(np.int64), start=start, device=device, home=home, trip=trip_s)
