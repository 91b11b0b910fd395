"""The logging policy's homepage of each homepage session: candidate carousels by role, the
slots and positions they fill, and each placement's propensity (one row per impression)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.inputs.logging_policy import DayTables
from jobs.inputs.sessions import Sessions
from jobs.inputs.site_model import ROLES
from jobs.inputs.world import World

PLACEMENT_FIELDS = ("carousel", "slot", "position", "propensity", "policy")  # a homepage placement


@dataclass
class Placements:
    """Shown items of homepage visits, one row per impression."""

    session: np.ndarray
    item: np.ndarray
    carousel: np.ndarray
    slot: np.ndarray  # 1-based
    position: np.ndarray  # 1-based
    propensity: np.ndarray
    policy: np.ndarray  # index into POLICIES

    def placement(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in PLACEMENT_FIELDS}


def home_pages(
    world: World, tables: DayTables, sess: Sessions, rng: np.random.Generator
) -> Placements:
    sim, policy = world.sim, world.policy
    visits = np.flatnonzero(sess.home)
    users = sess.user[visits]
    h, k, n_cand = visits.size, len(ROLES), sim.candidate_items
    cand = np.full((h, k, n_cand), -1, np.int32)
    count = np.zeros((h, k), np.int32)
    car = np.zeros((h, k), np.int32)
    leaf_table, leaf_count = tables.leaf
    for r, role in enumerate(ROLES):  # fill each candidate role for all visits at once
        if role in tables.fixed:
            row, c = tables.fixed[role]
            cand[:, r], count[:, r] = row[0], c[0]
            car[:, r] = world.carousel_index(role, users)
        elif role == "brand":
            b = policy.brand[users]
            cand[:, r], count[:, r] = tables.brand[0][b], tables.brand[1][b]
            car[:, r] = world.carousel_index(role, users)
        elif role == "buy_again":
            items, c = policy.buy_again(users, tables.available)
            has = c >= sim.min_buy_again
            leaf = policy.top_leaves[users, 2]  # fallback: a third favourite category
            cand[:, r] = np.where(has[:, None], items, leaf_table[leaf])
            count[:, r] = np.where(has, c, leaf_count[leaf])
            car[:, r] = np.where(
                has,
                world.carousel_index(role, users),
                world.carousel_index("category", users, leaf),
            )
        else:
            if role == "discover":
                cats = policy.discover_cats[users, rng.integers(0, sim.discover_categories, h)]
                leaf = policy.leaf_sampler.sample(rng, cats)
                car[:, r] = world.carousel_index(role, users)
            else:
                leaf = policy.top_leaves[users, int(role[-1]) - 1]
                car[:, r] = world.carousel_index("category", users, leaf)
            ok = leaf >= 0
            leaf = np.maximum(leaf, 0)
            cand[:, r] = np.where(ok[:, None], leaf_table[leaf], -1)
            count[:, r] = np.where(ok, leaf_count[leaf], 0)

    # Which role fills each slot, and which candidate fills each position.
    s_, p_ = sim.slots, sim.positions
    random_page = rng.random(h) < sim.random_share
    role_at = np.where(
        random_page[:, None],
        np.argsort(rng.random((h, k)), axis=1)[:, :s_],
        policy.orders[policy.segment[users]][:, :s_],
    )
    n_at = np.take_along_axis(count, role_at, 1)
    keys = np.where(np.arange(n_cand) < n_at[..., None], rng.random((h, s_, n_cand)), 2.0)
    pick = np.where(random_page[:, None, None], np.argsort(keys, axis=2)[:, :, :p_], np.arange(p_))
    items = np.take_along_axis(np.take_along_axis(cand, role_at[..., None], 1), pick, 2)
    shown = np.arange(p_) < n_at[..., None]

    uniform = 1.0 / (k * np.maximum(n_at, 1))
    rho = sim.random_share
    prop = np.where(random_page[:, None], uniform, (1.0 - rho) + rho * uniform)
    grid = np.broadcast_to
    shape = (h, s_, p_)
    return Placements(
        session=grid(visits[:, None, None], shape)[shown],
        item=items[shown].astype(np.int64),
        carousel=grid(np.take_along_axis(car, role_at, 1)[..., None], shape)[shown],
        slot=grid(np.arange(1, s_ + 1)[None, :, None], shape)[shown],
        position=grid(np.arange(1, p_ + 1)[None, None, :], shape)[shown],
        propensity=grid(prop[..., None], shape)[shown],
        policy=grid(random_page.astype(np.int8)[:, None, None], shape)[shown],
    )
