"""The site's logging policy in the generator: what its current recommender knows (popularity,
each user's top leaves, favourite brand, purchase history), the candidate lists it computes once
a day, and its end-of-day update."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.inputs.sampling import GroupSampler, dedupe_rows
from jobs.inputs.site_model import CURATED, DEFAULT_ORDERS, ROLES, SimParams
from jobs.inputs.truth import GroundTruth


def _top_by_group(
    group: np.ndarray, score: np.ndarray, mask: np.ndarray, n_groups: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the (up to) n masked members with the highest score: (table[G, n], count[G])."""
    idx = np.flatnonzero(mask)
    order = idx[np.lexsort((-score[idx], group[idx]))]
    g = group[order].astype(np.int64)
    rank = np.arange(order.size) - np.searchsorted(g, g)
    keep = rank < n
    table = np.full((n_groups, n), -1, np.int32)
    table[g[keep], rank[keep]] = order[keep]
    return table, np.minimum(np.bincount(g, minlength=n_groups), n).astype(np.int32)


@dataclass
class DayTables:
    """Candidate item lists the site computes once a day (item indices, -1 padded)."""

    available: np.ndarray
    leaf: tuple[np.ndarray, np.ndarray]
    brand: tuple[np.ndarray, np.ndarray]
    fixed: dict[str, tuple[np.ndarray, np.ndarray]]  # trending and curated carousels


class LoggingPolicy:
    """What the site's current recommender knows and does: popularity counts, each user's top
    leaf categories (noisy: sampled from their taste), favourite brand and purchase history."""

    def __init__(
        self,
        truth: GroundTruth,
        sim: SimParams,
        curated: list[np.ndarray | None],
        rng: np.random.Generator,
    ) -> None:
        self.truth, self.sim, self.curated = truth, sim, curated
        prior = np.exp(truth.popularity.astype(np.float64))  # pseudo-counts before the window
        self.pop = 5.0 * prior
        self.trend = 1.0 * prior
        self.top_leaves = _user_top_leaves(truth, rng, 3)
        self.brand = truth.fav_brands[:, 0]
        self.discover_cats = np.argsort(truth.taste, axis=1)[:, : sim.discover_categories].astype(
            np.int16
        )
        self.segment = rng.integers(0, len(DEFAULT_ORDERS), truth.n_users).astype(np.int8)
        self.orders = np.array(
            [[ROLES.index(r) for r in order] for order in DEFAULT_ORDERS], np.int64
        )
        leaf_size = np.bincount(truth.item_leaf, minlength=truth.leaf_category.size).astype(
            np.float64
        )
        self.leaf_sampler = GroupSampler(truth.leaf_category, leaf_size, truth.params.categories)
        # The shop existed before the window: the site already remembers regulars' staples.
        size = max(sim.history, sim.candidate_items, truth.staples.shape[1])
        self.history = np.full((truth.n_users, size), -1, np.int32)
        self.history[:, : truth.staples.shape[1]] = truth.staples
        self.history_next = np.full(truth.n_users, truth.staples.shape[1], np.int64)

    def day_tables(self, d: int) -> DayTables:
        t, n = self.truth, self.sim.candidate_items
        available = t.available(np.arange(t.n_items), d)
        fixed = {
            "trending": _top_by_group(np.zeros(t.n_items, np.int64), self.trend, available, 1, n)
        }
        # "new" rule: newest first (first_seen), ties broken by popularity
        newness = t.first_seen_day + 0.5 * self.pop / (self.pop.max() + 1.0)
        recent = available & (t.first_seen_day > d - self.sim.new_window_days)
        for (carousel_id, _, _, rule, immutable), lst in zip(CURATED, self.curated, strict=True):
            if rule == "new" or lst is None:
                fixed[carousel_id] = _top_by_group(
                    np.zeros(t.n_items, np.int64), newness, recent, 1, n
                )
                continue
            lst = lst[available[lst]]
            if not immutable:
                lst = lst[np.argsort(-self.pop[lst], kind="stable")]
            row = np.full((1, n), -1, np.int32)
            row[0, : min(n, lst.size)] = lst[:n]
            fixed[carousel_id] = (row, np.array([min(n, lst.size)], np.int32))
        return DayTables(
            available=available,
            leaf=_top_by_group(t.item_leaf, self.pop, available, t.leaf_category.size, n),
            brand=_top_by_group(t.item_brand, self.pop, available, t.brand_category.size, n),
            fixed=fixed,
        )

    def buy_again(self, users: np.ndarray, available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct remembered purchases, most popular first: (items[V, N], count[V])."""
        n = self.sim.candidate_items
        hist = dedupe_rows(self.history[users])
        ok = (hist >= 0) & available[np.maximum(hist, 0)]
        key = np.where(ok, -self.pop[np.maximum(hist, 0)], np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :n]
        count = np.minimum(ok.sum(1), n).astype(np.int32)
        out = np.take_along_axis(np.where(ok, hist, -1), order, 1)
        return np.where(np.arange(n) < count[:, None], out, -1), count

    def record(
        self, engaged_items: np.ndarray, weights: np.ndarray, buyers: np.ndarray, bought: np.ndarray
    ) -> None:
        """End of day: decay and add engagement counts; remember each buyer's last purchases."""
        counts = np.bincount(engaged_items, weights=weights, minlength=self.truth.n_items)
        self.pop = self.pop * 0.5 ** (1.0 / self.sim.pop_half_life_days) + counts
        self.trend = self.trend * 0.5 ** (1.0 / self.sim.trend_half_life_days) + counts
        if buyers.size == 0:
            return
        size = self.history.shape[1]
        order = np.argsort(buyers, kind="stable")  # purchases arrive in time order
        u, it = buyers[order], bought[order]
        first = np.searchsorted(u, u)
        rank = np.arange(u.size) - first
        per_user = np.bincount(u, minlength=self.truth.n_users)
        keep = rank >= per_user[u] - size  # only the last `size` purchases of the day matter
        pos = (self.history_next[u] + rank) % size
        self.history[u[keep], pos[keep]] = it[keep]
        self.history_next += per_user


def _user_top_leaves(truth: GroundTruth, rng: np.random.Generator, k: int) -> np.ndarray:
    """k distinct leaves per user, drawn without replacement ∝ taste × leaf size (Gumbel top-k)."""
    leaf_size = np.bincount(truth.item_leaf, minlength=truth.leaf_category.size).astype(np.float64)
    cat_size = np.bincount(
        truth.leaf_category, weights=leaf_size, minlength=truth.params.categories
    )
    share = leaf_size / np.maximum(cat_size[truth.leaf_category], 1.0)
    log_share = np.where(share > 0, np.log(np.maximum(share, 1e-300)), -np.inf)
    out = np.empty((truth.n_users, k), np.int32)
    chunk = 16384
    for lo in range(0, truth.n_users, chunk):  # chunks bound memory to chunk × leaves
        taste = truth.taste[lo : lo + chunk][:, truth.leaf_category].astype(np.float64)
        keys = np.log(taste + 1e-30) + log_share + rng.gumbel(size=taste.shape)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # the k best, unordered
        order = np.argsort(-np.take_along_axis(keys, top, 1), axis=1, kind="stable")
        out[lo : lo + chunk] = np.take_along_axis(top, order, 1)
    return out
