"""The synthetic export `homepage bench serve` loads the server with: users x slots x items pages of
made-up carousels and items, written and published once per lake root, and the user ids of a
published export."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, local_path

BENCH_DS = "2026-01-01"
# ---------------------------------------------------------------- the export

CATEGORIES = (
    "Fresh produce",
    "Dairy & eggs",
    "Bakery",
    "Snacks",
    "Beverages",
    "Household",
    "Personal care",
    "Frozen",
    "Pantry",
    "Baby",
    "Pet supplies",
    "Electronics",
)
FAMILIES = (  # (family, title template); "{c}" is replaced by a category name
    ("buy_again", "Buy it again"),
    ("top_picks", "Top picks for you"),
    ("because_viewed", "Because you viewed {c}"),
    ("trending", "Trending in {c}"),
    ("new_arrivals", "New in {c}"),
    ("deals", "Deals on {c}"),
)
BRANDS = ("Acme", "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Soylent", "Hooli")
NOUNS = ("Oat Milk", "Crackers", "Sparkling Water", "Dish Soap", "Granola", "Coffee Beans",
         "Shampoo", "Frozen Peas", "Olive Oil", "Dog Treats", "Baby Wipes", "USB-C Cable")  # fmt: skip
SIZES = ("250 g", "500 g", "1 kg", "6-pack", "1 l", "2 l", "family size", "travel size")


def _carousels() -> tuple[list[str], list[str], list[str]]:
    """(carousel_id, title, family) of the synthetic carousel catalogue."""
    ids, titles, fams = [], [], []
    for fam, title in FAMILIES:
        for cat in CATEGORIES if "{c}" in title else (None,):
            slug = "" if cat is None else ":" + re.sub(r"[^a-z]+", "-", cat.lower()).strip("-")
            ids.append(f"{fam}{slug}")
            titles.append(title.format(c=cat))
            fams.append(fam)
    return ids, titles, fams


def synthetic_frames(
    *, users: int, slots: int, items: int, catalog: int, seed: int
) -> tuple[Any, Any, Any]:
    """(pages, default_page, items) frames of the export contract, built column-wise with numpy."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    car_ids, car_titles, car_fams = _carousels()
    n_car = len(car_ids)
    if slots > n_car:
        raise ValueError(f"at most {n_car} slots (distinct synthetic carousels), got {slots}")

    fam_names = [f for f, _ in FAMILIES]
    fam_codes = np.array([fam_names.index(f) for f in car_fams])
    item_cats = "i" + pd.Index(np.arange(catalog).astype(str)).str.zfill(7)

    def frame(n_users: int, user_cats: Any) -> pd.DataFrame:
        n_car_rows = n_users * slots
        n = n_car_rows * items
        # S distinct carousels per user, carousel scores descending by slot.
        chosen = rng.random((n_users, n_car)).argsort(axis=1)[:, :slots].ravel()
        car_score = -np.sort(-rng.random((n_users, slots)), axis=1).ravel()
        item_score = -np.sort(-rng.random((n_car_rows, items)), axis=1).ravel()
        car_rows = np.repeat(chosen, items)
        return pd.DataFrame(
            {
                "user_id": pd.Categorical.from_codes(
                    np.repeat(np.arange(n_users, dtype=np.int32), slots * items), user_cats
                ),
                "slot": np.tile(np.repeat(np.arange(1, slots + 1, dtype=np.int32), items), n_users),
                "carousel_id": pd.Categorical.from_codes(car_rows, car_ids),
                "carousel_title": pd.Categorical.from_codes(car_rows, car_titles),
                "family": pd.Categorical.from_codes(fam_codes[car_rows], fam_names),
                "carousel_score": np.repeat(car_score * 0.9 + 0.05, items),
                "item_rank": np.tile(np.arange(1, items + 1, dtype=np.int32), n_car_rows),
                # popularity-skewed items: low ids are shown far more often
                "item_id": pd.Categorical.from_codes(
                    (catalog * rng.random(n) ** 2).astype(np.int32), item_cats
                ),
                "item_score": item_score * np.repeat(car_score, items),
                "propensity": rng.uniform(0.05, 1.0, n),
                "reason": pd.Categorical.from_codes(fam_codes[car_rows], fam_names),
                "model_version": pd.Categorical.from_codes(
                    np.zeros(n, dtype=np.int8), ["bench-synthetic-v1"]
                ),
            }
        )

    user_cats = "u" + pd.Index(np.arange(users).astype(str)).str.zfill(7)
    pages = frame(users, user_cats)
    default = frame(1, [DEFAULT_PAGE_KEY])
    k = np.arange(catalog)
    brand = np.array(BRANDS)[k % len(BRANDS)]
    noun = np.array(NOUNS)[(k // len(BRANDS)) % len(NOUNS)]
    size = np.array(SIZES)[(k * 7) % len(SIZES)]
    items_df = pd.DataFrame(
        {
            "item_id": np.asarray(item_cats),
            "title": pd.Series(brand) + " " + noun + ", " + size,
            "category_id": pd.Series(k % len(CATEGORIES)).map(lambda c: f"cat-{c:02d}"),
            "brand": brand,
            "price": np.round(rng.lognormal(1.5, 0.7, catalog), 2),
        }
    )
    return pages, default, items_df


def synthetic_export(
    root: str,
    *,
    users: int,
    slots: int = 10,
    items: int = 10,
    seed: int = 11,
    catalog: int | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> Lake:
    """A lake at `root` with one published export of `users` pages of `slots` x `items` items.

    Written (and published) only when `root` has no published export yet; later runs reuse it.
    """
    from serving_export.export.writer import write_export
    from serving_export.publish import current_ds, publish

    lake = Lake(root)
    if current_ds(lake) is not None:
        return lake
    catalog = catalog or max(1000, users // 10)
    t0 = time.perf_counter()
    say(f"writing a synthetic export: {users:,} users x {slots} x {items} items into {root}")
    pages, default, items_df = synthetic_frames(
        users=users, slots=slots, items=items, catalog=catalog, seed=seed
    )
    write_export(
        local_path(lake.export(BENCH_DS)),
        pages,
        default,
        items_df,
        ds=BENCH_DS,
        model_versions={"bench": "synthetic-v1"},
        config_hash="bench-serve",
        map_size_gb=max(0.01, users * slots * items * 120 / 1e9),
    )
    del pages
    publish(lake, BENCH_DS)
    say(f"export written and published in {time.perf_counter() - t0:.1f}s")
    return lake


def export_user_ids(lake: Lake) -> tuple[str, list[str], dict[str, Any]]:
    """(ds, known user ids, manifest) of the lake's published export."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from serving_export.export.format import MANIFEST_FILE, PARQUET_FILE
    from serving_export.publish import current_ds

    ds = current_ds(lake)
    if ds is None:
        raise ValueError(f"{lake.root} has no published export (exports/CURRENT)")
    export_dir = local_path(lake.export(ds))
    with open(os.path.join(export_dir, MANIFEST_FILE)) as f:
        manifest = json.load(f)
    col = pq.read_table(os.path.join(export_dir, PARQUET_FILE), columns=["user_id"]).column(0)
    ids = pc.unique(col)
    ids = pc.filter(ids, pc.invert(pc.starts_with(ids, DEFAULT_PAGE_KEY)))
    return ds, ids.to_pylist(), manifest
