"""Sampling a `GroundTruth`: the catalogue (categories, leaves, brands, item attributes, new and
out-of-stock items) and the users (tastes, favourite brands, staples, habits)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jobs.inputs.sampling import GroupSampler, categorical_rows, dedupe_rows
from jobs.inputs.truth import DEVICES, NEVER, GroundTruth, ModelParams


def sample_truth(
    rng: np.random.Generator,
    *,
    users: int,
    items: int,
    days: int,
    max_leaves: int = 8,
    params: ModelParams | None = None,
    meta: dict[str, Any] | None = None,
) -> GroundTruth:
    """Sample a catalogue and a population of users."""
    p = params or ModelParams()
    cat = _sample_catalogue(rng, p, items, days, max_leaves)
    usr = _sample_users(rng, p, users, cat)
    return GroundTruth(params=p, days=days, meta=dict(meta or {}), **cat, **usr)


def format_ids(prefix: str, n: int, width: int) -> np.ndarray:
    """`prefix` + zero-padded 0..n-1 as a fixed-width numpy unicode array (vectorised)."""
    digits = np.empty((n, width), dtype=np.uint8)
    x = np.arange(n, dtype=np.int64)
    for k in range(width - 1, -1, -1):  # loop over digit positions, not over ids
        digits[:, k] = 48 + x % 10
        x //= 10
    raw = np.concatenate([np.full((n, len(prefix)), list(prefix.encode()), np.uint8), digits], 1)
    return raw.view(f"S{len(prefix) + width}").ravel().astype(f"U{len(prefix) + width}")


def _sample_catalogue(
    rng: np.random.Generator, p: ModelParams, items: int, days: int, max_leaves: int
) -> dict[str, np.ndarray]:
    """Categories, brands and item attributes."""
    c = p.categories
    # More leaves for bigger catalogues, so a leaf holds a carousel's worth of items.
    leaves_hi = int(np.clip(items // (c * 12), 2, max_leaves))
    leaves_per_cat = rng.integers(max(2, leaves_hi // 2), leaves_hi + 1, size=c)
    leaf_category = np.repeat(np.arange(c), leaves_per_cat).astype(np.int16)
    item_category = rng.choice(c, size=items, p=rng.dirichlet(np.full(c, 5.0))).astype(np.int16)
    leaf_weight = rng.gamma(2.0, 1.0, size=leaf_category.size)
    item_leaf = GroupSampler(leaf_category, leaf_weight, c).sample(rng, item_category)

    # A few big brands per category and a long tail.
    per_cat = np.bincount(item_category, minlength=c)
    brands_per_cat = np.maximum(3, np.ceil(per_cat / p.items_per_brand)).astype(np.int64)
    brand_category = np.repeat(np.arange(c), brands_per_cat).astype(np.int16)
    rank = np.arange(brand_category.size) - np.repeat(
        np.cumsum(brands_per_cat) - brands_per_cat, brands_per_cat
    )
    brand_weight = np.where(
        rank < 3,
        np.array([8.0, 5.0, 3.0])[np.minimum(rank, 2)],
        1.5 / np.maximum(rank - 1, 1) ** 0.7,
    )
    item_brand = GroupSampler(brand_category, brand_weight, c).sample(rng, item_category)

    popularity = rng.normal(size=items) + 0.4 * (rank[item_brand] < 3)
    popularity = (popularity - popularity.mean()) / max(popularity.std(), 1e-9)
    cat_log_price = rng.uniform(np.log(1.5), np.log(12.0), size=c)
    brand_premium = rng.normal(0.0, 0.15, size=brand_category.size)
    log_price = (
        cat_log_price[item_category] + brand_premium[item_brand] + rng.normal(0.0, 0.4, items)
    )
    price = np.maximum(np.round(np.exp(log_price), 2), 0.29)

    new = rng.random(items) < p.new_item_share
    first_seen = np.where(new, rng.integers(0, days, items), -rng.integers(1, 731, items))
    oos = rng.random(items) < p.out_of_stock_share
    oos_day = np.where(oos, np.maximum(rng.integers(0, days, items), first_seen + 1), NEVER)
    return {
        "item_ids": format_ids("i", items, max(6, len(str(items - 1)))),
        "item_category": item_category,
        "item_leaf": item_leaf.astype(np.int32),
        "leaf_category": leaf_category,
        "item_brand": item_brand.astype(np.int32),
        "brand_category": brand_category,
        "brand_weight": brand_weight.astype(np.float32),
        "item_factors": rng.normal(0.0, p.factor_scale, (items, p.factors)).astype(np.float32),
        "popularity": popularity.astype(np.float32),
        "quality": rng.normal(size=items).astype(np.float32),
        "has_image": rng.random(items) >= p.no_image_share,
        "price": price,
        "price_level": (np.log(price) - cat_log_price[item_category]).astype(np.float32),
        "first_seen_day": first_seen.astype(np.int32),
        "out_of_stock_day": oos_day.astype(np.int32),
    }


def _sample_users(
    rng: np.random.Generator, p: ModelParams, users: int, cat: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Tastes, habits and staples of each user."""
    c = p.categories
    taste = rng.dirichlet(np.full(c, p.taste_concentration), size=users).astype(np.float32)
    brand_sampler = GroupSampler(cat["brand_category"], cat["brand_weight"], c)
    fav_brands = brand_sampler.sample(rng, categorical_rows(rng, taste, 3)).astype(np.int32)

    # Staples: popular, already-listed items of the user's favourite categories.
    listed = cat["first_seen_day"] < 0
    staple_weight = np.exp(cat["popularity"]) * listed
    staples = GroupSampler(cat["item_category"], staple_weight, c).sample(
        rng, categorical_rows(rng, taste, p.staples_max)
    )
    n_staples = np.where(
        rng.random(users) < p.regular_share, rng.integers(2, p.staples_max + 1, users), 0
    )
    staples = np.where(np.arange(p.staples_max) < n_staples[:, None], staples, -1)
    staples = dedupe_rows(staples)
    period = rng.integers(p.trip_period_min, p.trip_period_max + 1, users)

    shape = p.activity_shape
    activity = np.minimum(rng.gamma(shape, p.mean_activity / shape, users), 0.8)
    habit = rng.choice(np.array([8.5, 12.5, 20.0]), size=users, p=[0.2, 0.25, 0.55])
    return {
        "user_ids": format_ids("u", users, max(7, len(str(users - 1)))),
        "taste": taste,
        "user_factors": rng.normal(0.0, p.factor_scale, (users, p.factors)).astype(np.float32),
        "fav_brands": fav_brands,
        "staples": staples.astype(np.int32),
        "staple_prob": rng.uniform(0.3, 0.8, staples.shape).astype(np.float32),
        "trip_period": period.astype(np.int16),
        "trip_phase": rng.integers(0, period).astype(np.int16),
        "activity": activity.astype(np.float32),
        "device": rng.choice(len(DEVICES), size=users, p=list(p.device_share)).astype(np.int8),
        "habit_hour": (habit + rng.normal(0.0, 1.0, users)).astype(np.float32),
    }
