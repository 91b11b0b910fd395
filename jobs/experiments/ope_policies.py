"""Target policies of the OPE job: what the evaluated policy would have shown in a logged round.

BTS (the OBD check): its time-averaged action distribution per (campaign, position),
`bts_action_distribution`. The pipeline's pages on OBD lakes: the p-th item of the page's
carousel "obd:<campaign>", with fallbacks (`obd_targets`, `attach_obd_targets`). The pipeline's
pages on generated lakes, `arrange_random_pages`:
    carousels ordered by (tier, −score, tie), tiers: 0 the user's page has the carousel
    (score = its carousel_score φ); 1 the user's page has a carousel of the same family (the
    family's best φ; a carousel the pipeline did not put on the page is assumed to score below
    those it did); 2/3 the same two rules on the `__default__` page; 4 unscored;
    items in each carousel ordered by (tier, −score, tie), tiers: 0 the item's item_score on
    the user's page (in that carousel, else its best on the page); 1 its item_score on the
    `__default__` page (popularity); 2 popularity `pop_total` from the `item_stats` feature
    table as of split_ds (when the lake has it); 3 unscored.
    Ties and unscored carousels/items follow a fixed pseudo-random order, a hash of (user,
    carousel[, item]), NOT the logged order: a target that keeps the logged order where it
    knows nothing depends on the logged action and is not a policy (IPS then counts every
    such placement as a match with weight S·P_k, an estimate ~30 times too high).
(A user without a page uses `__default__` as their page.) Carousels go to slots 1..C, items to
positions 1..P_k.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path

PAGE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "slot",
    "item_rank",
    "item_id",
    "carousel_id",
    "item_score",
    "carousel_score",
)
# target_source labels of the OBD target's rules (see `obd_targets`, `attach_obd_targets`)
OBD_TARGET_SOURCES = {
    0: "user page carousel",
    1: "user page items by item_score",
    2: "default page carousel",
    3: "default page items by item_score",
}


def bts_action_distribution(
    bts: pd.DataFrame, method: str = "frequency"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BTS's action distribution per (carousel_id, position) from its own log.

    Returns (distribution: carousel_id, position, item_id, probability; support: per
    (carousel_id, position) impressions, items in the support, singletons and the Good–Turing
    missing mass = singletons / impressions, and for "mean_propensity" the sum of the mean
    propensities before normalising).
    """
    if method not in ("frequency", "mean_propensity"):
        raise ValueError(
            f"bts_distribution must be 'frequency' or 'mean_propensity', got {method!r}"
        )
    cell = ["carousel_id", "position"]
    g = bts.groupby([*cell, "item_id"], sort=True)
    dist = g.agg(n=("clicked", "size"), mean_prop=("propensity", "mean")).reset_index()
    if method == "frequency":
        raw = dist["n"].astype(np.float64)
    else:
        raw = dist["mean_prop"].astype(np.float64)
    total = raw.groupby([dist["carousel_id"], dist["position"]]).transform("sum")
    dist["probability"] = raw / total
    sup = dist.groupby(cell, sort=True).agg(
        impressions=("n", "sum"),
        items=("n", "size"),
        singletons=("n", lambda s: int((s == 1).sum())),
        mean_propensity_mass=("mean_prop", "sum"),
    )
    sup["missing_mass_good_turing"] = sup["singletons"] / sup["impressions"]
    return dist[[*cell, "item_id", "probability"]], sup.reset_index()


def check_pages(pages: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PAGE_COLUMNS if c not in pages.columns]
    if missing:
        raise ValueError(f"pages lack column(s): {', '.join(missing)}")
    if pages.empty:
        raise ValueError("pages are empty")
    out = pages.copy()
    out["user_id"] = out["user_id"].astype(str)
    out["carousel_id"] = out["carousel_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    if "family" not in out.columns:
        ids = pd.Series(pd.unique(out["carousel_id"]))
        out["family"] = out["carousel_id"].map(dict(zip(ids, ids.map(family_from_id), strict=True)))
    return out


def family_from_id(carousel_id: str) -> str:
    head = str(carousel_id).split(":", 1)[0]
    return head if head in ("category", "brand", "obd") else str(carousel_id)


def page_user(users: pd.Series, pages: pd.DataFrame) -> tuple[np.ndarray, int]:
    known = pd.Index(pages["user_id"].unique())
    has = users.isin(known).to_numpy()
    return np.where(has, users.to_numpy(object), DEFAULT_PAGE_KEY), int((~has).sum())


def obd_targets(pages: pd.DataFrame) -> pd.DataFrame:
    """Per (page user, carousel 'obd:<c>', position p): the target item and its source rule
    (0: the page's carousel, by item_rank; 1: the page has no such carousel, the campaign's
    items ("<campaign>:<id>") anywhere on the page by descending item_score)."""
    obd = pages[pages["carousel_id"].str.startswith("obd:")]
    car = obd.sort_values(["user_id", "carousel_id", "item_rank"], kind="stable")
    car = car.drop_duplicates(["user_id", "carousel_id", "item_id"])
    car = car.assign(position=car.groupby(["user_id", "carousel_id"]).cumcount() + 1, source=0)
    # fallback: the campaign's items anywhere on the page by descending item_score
    camp = pages["item_id"].str.split(":", n=1).str[0]
    anyw = pages.assign(carousel_id="obd:" + camp)[pages["item_id"].str.contains(":", regex=False)]
    anyw = (
        anyw.groupby(["user_id", "carousel_id", "item_id"], sort=False)["item_score"]
        .max()
        .reset_index()
    )
    anyw = anyw.sort_values(
        ["user_id", "carousel_id", "item_score", "item_id"],
        ascending=[True, True, False, True],
        kind="stable",
    )
    anyw = anyw.assign(position=anyw.groupby(["user_id", "carousel_id"]).cumcount() + 1, source=1)
    # only for pages without the campaign's carousel
    has = pd.MultiIndex.from_frame(car[["user_id", "carousel_id"]].drop_duplicates())
    anyw = anyw[~pd.MultiIndex.from_frame(anyw[["user_id", "carousel_id"]]).isin(has)]
    cols = ["user_id", "carousel_id", "position", "item_id", "source"]
    both = pd.concat([car[cols], anyw[cols]], ignore_index=True)
    both = both.sort_values(["user_id", "carousel_id", "position", "source"], kind="stable")
    return both.drop_duplicates(["user_id", "carousel_id", "position"])


def attach_obd_targets(
    frame: pd.DataFrame, pages: pd.DataFrame, targets: pd.DataFrame
) -> pd.DataFrame:
    """OBD rounds with the target's item (`target_item`, NaN: no target) and its rule
    (`source`, see `OBD_TARGET_SOURCES`): the page user's (`page_user`) page, else the
    `__default__` page (`targets` from `obd_targets`)."""
    pu, _ = page_user(frame["user_id"], pages)
    f = frame.assign(page_user=pu)
    t = targets.rename(columns={"user_id": "page_user", "item_id": "target_item"})
    m = f.merge(t, on=["page_user", "carousel_id", "position"], how="left")
    d = (
        targets[targets["user_id"] == DEFAULT_PAGE_KEY]
        .drop(columns="user_id")
        .rename(columns={"item_id": "default_item", "source": "default_source"})
    )
    m = m.merge(d, on=["carousel_id", "position"], how="left")
    use_default = (
        m["target_item"].isna() & m["default_item"].notna() & (m["page_user"] != DEFAULT_PAGE_KEY)
    )
    m.loc[use_default, "target_item"] = m.loc[use_default, "default_item"]
    m.loc[use_default, "source"] = m.loc[use_default, "default_source"] + 2
    m.loc[(m["page_user"] == DEFAULT_PAGE_KEY) & m["target_item"].notna(), "source"] += 2
    return m.drop(columns=["default_item", "default_source"])


def lake_families(lake: Lake) -> dict[str, str] | None:
    """The curated carousels' families (carousel_id -> family), None when unreadable."""
    if not os.path.isdir(local_path(lake.carousels)):
        return None
    try:
        cars = pd.read_parquet(local_path(lake.carousels), columns=["carousel_id", "family"])
        return dict(zip(cars["carousel_id"].astype(str), cars["family"].astype(str), strict=True))
    except (FileNotFoundError, OSError, ValueError):
        return None


def lake_popularity(lake: Lake, split_ds: str) -> pd.Series | None:
    """`pop_total` per item of the `item_stats` feature table as of split_ds (None: no table)."""
    days = [
        d for d in io.partitions(join(lake.warehouse, "features", "item_stats")) if d <= split_ds
    ]
    if not days:
        return None
    stats = pd.read_parquet(
        local_path(lake.feature("item_stats", days[-1])), columns=["item_id", "pop_total"]
    )
    return stats.set_index(stats["item_id"].astype(str))["pop_total"].astype(float)


def arrange_random_pages(
    placements: pd.DataFrame,
    pages: pd.DataFrame,
    *,
    families: dict[str, str] | None = None,
    popularity: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """The target's arrangement of each logged random page (generated lakes).

    `placements`: one row per logged placement with round, user_id, carousel_id, slot,
    position, item_id. Adds target_slot and target_position (see the module docstring for the
    ordering rules), and returns counts of carousels and items per ordering tier.
    """
    pages = check_pages(pages)
    fam = dict(pages.groupby("carousel_id")["family"].first())
    fam.update({k: v for k, v in (families or {}).items() if k not in fam})
    p = placements.copy()
    p["page_user"], _ = page_user(p["user_id"], pages)
    p["page_user"] = p["page_user"].astype(object)

    car = _arrange_carousels(p, pages, fam)
    p = _arrange_items(p, pages, car, popularity)
    return p.drop(columns=["item_score_used", "page_user", "tie"]), _tier_counts(car, p, popularity)


_UNIT = ["round", "carousel_id", "slot"]  # a logged carousel of a random page


def _arrange_carousels(p: pd.DataFrame, pages: pd.DataFrame, fam: dict[str, str]) -> pd.DataFrame:
    """One row per logged carousel (`_UNIT`) with its tier, score, tie and target_slot."""
    car = p.groupby(_UNIT, sort=False).agg(page_user=("page_user", "first")).reset_index()
    ids = pd.unique(car["carousel_id"])
    car["family"] = car["carousel_id"].map({c: fam.get(c, family_from_id(c)) for c in ids})
    by_car = pages.groupby(["user_id", "carousel_id"])["carousel_score"].max()
    by_fam = pages.groupby(["user_id", "family"])["carousel_score"].max()
    default = np.full(len(car), DEFAULT_PAGE_KEY, dtype=object)
    lookups = [
        (by_car, car["page_user"], car["carousel_id"]),
        (by_fam, car["page_user"], car["family"]),
        (by_car, default, car["carousel_id"]),
        (by_fam, default, car["family"]),
    ]
    car["tier"], car["score"] = _tiers(lookups, len(car))
    # ties and unscored carousels: a fixed pseudo-random order per (user, carousel), never the
    # logged order (a target that copies the logged arrangement would not be a policy)
    car["tie"] = _hash(car["page_user"], car["carousel_id"])
    car = car.sort_values(
        ["round", "tier", "score", "tie"], ascending=[True, True, False, True], kind="stable"
    )
    car["target_slot"] = car.groupby("round").cumcount() + 1
    return car


def _arrange_items(
    p: pd.DataFrame, pages: pd.DataFrame, car: pd.DataFrame, popularity: pd.Series | None
) -> pd.DataFrame:
    """The placements with their carousel's target_slot and tier, their item tier and
    target_position, in the placements' order."""
    unit = _UNIT
    by_item_car = pages.groupby(["user_id", "carousel_id", "item_id"])["item_score"].max()
    by_item = pages.groupby(["user_id", "item_id"])["item_score"].max()
    default = np.full(len(p), DEFAULT_PAGE_KEY, dtype=object)
    own = _lookup(by_item_car, p["page_user"], p["carousel_id"], p["item_id"])
    own = np.where(np.isnan(own), _lookup(by_item, p["page_user"], p["item_id"]), own)
    tiers = [own, _lookup(by_item, default, p["item_id"])]
    if popularity is not None:
        tiers.append(popularity.reindex(p["item_id"].to_numpy()).to_numpy(np.float64))
    p["item_tier"], p["item_score_used"] = _first_present(tiers, len(p))
    p["tie"] = _hash(p["page_user"], p["carousel_id"], p["item_id"])
    p = p.merge(
        car[[*unit, "target_slot", "tier"]].rename(columns={"tier": "carousel_tier"}),
        on=unit,
        how="left",
    )
    p = p.sort_values(
        [*unit, "item_tier", "item_score_used", "tie"],
        ascending=[True, True, True, True, False, True],
        kind="stable",
    )
    p["target_position"] = p.groupby(unit, sort=False).cumcount() + 1
    return p.sort_index()


def _tier_counts(
    car: pd.DataFrame, p: pd.DataFrame, popularity: pd.Series | None
) -> dict[str, dict[str, int]]:
    """Carousels and items per ordering tier, by tier name."""
    car_names = [
        "user page",
        "user page family",
        "default page",
        "default page family",
        "unscored (hash order)",
    ]
    item_names = [
        "user page",
        "default page",
        *(["popularity"] if popularity is not None else []),
        "unscored (hash order)",
    ]
    return {
        "carousels": {
            car_names[int(k)]: int(n) for k, n in car["tier"].value_counts().sort_index().items()
        },
        "items": {
            item_names[int(k)]: int(n)
            for k, n in p["item_tier"].value_counts().sort_index().items()
        },
    }


def _hash(*keys: pd.Series) -> np.ndarray:
    """A deterministic 64-bit hash of string keys (pseudo-random, stable across runs)."""
    text = keys[0].astype(str)
    for k in keys[1:]:
        text = text + "\x1f" + k.astype(str).to_numpy()
    return pd.util.hash_array(text.to_numpy(object))


def _lookup(series: pd.Series, *keys: object) -> np.ndarray:
    idx = (
        pd.MultiIndex.from_arrays([np.asarray(k, dtype=object) for k in keys])
        if len(keys) > 1
        else pd.Index(np.asarray(keys[0], dtype=object))
    )
    return series.reindex(idx).to_numpy(np.float64)


def _tiers(lookups: list[tuple], n: int) -> tuple[np.ndarray, np.ndarray]:
    return _first_present([_lookup(s, *k) for s, *k in lookups], n)


def _first_present(values: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    tier = np.full(n, len(values), np.int64)
    score = np.zeros(n)
    for t in range(len(values) - 1, -1, -1):
        ok = ~np.isnan(values[t])
        tier[ok] = t
        score[ok] = values[t][ok]
    return tier, score
