"""What pages are built from as of a day, for the rank step and the train step's validation
pages alike: the page parameters, `load_inputs` (catalogue, curated carousels, factors,
buy-again lists, brands, priors, feature lookups), the slot examination curve and the carousel
calibration a bundle holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake
from jobs.daily.catalogue import load_catalog, load_curated, read_table


def page_params(cfg: Config) -> Any:
    from models.ranking.rank_inputs import PageParams

    pc = cfg.page
    return PageParams(
        slots=pc.slots,
        items_per_carousel=pc.items_per_carousel,
        candidate_items=pc.candidate_items,
        min_items=pc.min_items,
        category_carousels=pc.category_carousels,
        buy_again_carousels=pc.buy_again_carousels,
        best_seller_carousels=pc.best_seller_carousels,
        for_you_carousels=pc.for_you_carousels,
        for_you_history=pc.for_you_history,
        for_you_pool=pc.for_you_pool,
        for_you_popular=pc.for_you_popular,
        slot_order=pc.slot_order,
        for_you_explore_weight=pc.for_you_explore_weight,
        category_pool=pc.category_pool,
        brand_carousels=pc.brand_carousels,
        new_categories=pc.new_categories,
        candidate_carousels=pc.candidate_carousels,
        beam_width=pc.beam_width,
        beam_start=pc.beam_start,
        carousel_lambda=pc.carousel_lambda,
        item_lambda=pc.item_lambda,
        similarity_weights=tuple(pc.similarity_weights),
        brand_run=pc.brand_run,
        no_image_penalty=pc.no_image_penalty,
        repeat_penalty=pc.repeat_penalty,
        non_repeat_categories=tuple(pc.non_repeat_categories),
        non_repeat_days=pc.non_repeat_days,
        explore_epsilon=pc.explore_epsilon,
        explore_from=pc.explore_from,
        thompson_share=pc.thompson_share,
        thompson_draws=pc.thompson_draws,
        seed=pc.seed,
    )


def _aligned_factors(model: Any, ids: np.ndarray) -> np.ndarray:
    """Factor rows aligned to `ids`; zeros for ids the model never saw (score 0)."""
    idx = model.item_index(ids)
    out = np.zeros((len(ids), model.item_factors.shape[1]), dtype=np.float32)
    out[idx >= 0] = model.item_factors[idx[idx >= 0]]
    return out


def feature_source(lake: Lake, ds: str, catalog: Any, users: np.ndarray | None = None) -> Any:
    """The engagement models' (user, item) feature lookups as of `ds`."""
    from models.ranking.item_features import FeatureSource

    def table(name: str) -> pd.DataFrame:
        return read_table(lake.feature(name, ds))

    return FeatureSource.build(
        as_of=ds,
        item_ids=catalog.item_ids,
        item_cat=catalog.item_cat,
        cat_ids=catalog.cat_ids,
        item_stats=table("item_stats"),
        user_aggregates=table("user_aggregates"),
        user_activity=table("user_activity"),
        user_item_counts=table("user_item_counts"),
        user_category_counts=table("user_category_counts"),
        user_category_frequency=table("user_category_frequency"),
        users=users,
    )


def load_inputs(
    lake: Lake,
    ds: str,
    cfg: Config,
    mf_item: Any,
    mf_cat: Any,
    *,
    engagement: Any = None,
    with_features: bool = False,
    feature_users: np.ndarray | None = None,
) -> Any:
    """Everything `models.ranking.pages` needs as of `ds`: catalogue, curated carousels, factors,
    buy-again lists, top brands, recent non-repeat purchases, category counts, Beta priors,
    and (with an engagement model) the feature lookups for re-ranking items."""
    from models.ranking.item_policy import item_clusters
    from models.ranking.rank_inputs import RankInputs

    pc = cfg.page
    catalog, items = load_catalog(lake, ds, cfg)
    curated = load_curated(lake, catalog, items, cfg, ds)
    ui = _user_item_counts(lake, ds, catalog)
    buy_again = _buy_again(ui, catalog, pc)
    top_brands = _top_brands(ui, catalog, pc.brand_carousels)
    recent = _recent_purchases(ui, catalog, items, ds, pc)
    uc = read_table(lake.feature("user_category_counts", ds), ["user_id", "category_id", "eta"])
    cat_pos = pd.Series(np.arange(len(catalog.cat_ids)), index=catalog.cat_ids)
    uc = uc.assign(c=cat_pos.reindex(uc["category_id"].to_numpy()).to_numpy()).dropna(subset=["c"])
    priors = read_table(
        lake.feature("user_carousel_priors", ds), ["user_id", "carousel_id", "a", "b", "lam"]
    )
    p_global, carousel_lam, carousel_ab = _carousel_priors(lake, ds)
    features = None
    if engagement is not None or with_features:
        features = feature_source(lake, ds, catalog, feature_users)
    v_items = _aligned_factors(mf_item, catalog.item_ids)
    return RankInputs(
        catalog=catalog,
        curated=curated,
        mf_item=mf_item,
        mf_cat=mf_cat,
        v_items=v_items,
        v_cats=_aligned_factors(mf_cat, catalog.cat_ids),
        buy_again=buy_again,
        cat_eta=uc[["user_id", "c", "eta"]],
        priors=priors.set_index(["user_id", "carousel_id"])[["lam", "a", "b"]],
        carousel_lam=carousel_lam,
        p_global=p_global,
        features=features,
        engagement=engagement,
        objective_weights=None if engagement is None else engagement.params.weights,
        top_brands=top_brands,
        recent=recent,
        carousel_ab=carousel_ab,
        item_cluster=item_clusters(v_items, seed=cfg.mf.seed),
        params=page_params(cfg),
    )


def _user_item_counts(lake: Lake, ds: str, catalog: Any) -> pd.DataFrame:
    """The user–item counts as of `ds`, with `i`, the item's catalogue position (items the
    catalogue lacks dropped)."""
    ui = read_table(
        lake.feature("user_item_counts", ds),
        ["user_id", "item_id", "n_click", "n_add_to_cart", "n_purchase", "last_ts"],
    )
    item_pos = pd.Series(np.arange(len(catalog.item_ids)), index=catalog.item_ids)
    ui = ui.assign(i=item_pos.reindex(ui["item_id"].to_numpy()).to_numpy())
    ui = ui.dropna(subset=["i"])
    ui["i"] = ui["i"].astype(np.int64)
    return ui


def _buy_again(ui: pd.DataFrame, catalog: Any, pc: Any) -> dict[str, np.ndarray]:
    """Each user's in-stock bought items, most bought first, as many as the rows need."""
    bought = ui[(ui["n_purchase"] > 0) & catalog.in_stock[ui["i"].to_numpy()]]
    bought = bought.sort_values(["user_id", "n_purchase"], ascending=[True, False])
    return _lists(
        bought,
        "i",
        max(
            pc.candidate_items + (pc.buy_again_carousels - 1) * pc.items_per_carousel,
            pc.for_you_history if pc.for_you_carousels else 0,
        ),
    )


def _carousel_priors(
    lake: Lake, ds: str
) -> tuple[float, dict[Any, Any], dict[Any, tuple[float, float]]]:
    """(p_global, carousel -> prior mean, carousel -> (a0, b0)) of the carousel priors."""
    cprior = read_table(lake.feature("carousel_priors", ds))
    p_global = float(cprior["p_global"].iloc[0]) if len(cprior) else 0.5
    carousel_lam = dict(
        zip(cprior["carousel_id"], cprior["a0"] / (cprior["a0"] + cprior["b0"]), strict=True)
    )
    carousel_ab = {
        c: (float(a), float(b))
        for c, a, b in zip(cprior["carousel_id"], cprior["a0"], cprior["b0"], strict=True)
    }
    return p_global, carousel_lam, carousel_ab


def _lists(frame: pd.DataFrame, col: str, n: int) -> dict[str, np.ndarray]:
    """user_id -> the first n values of `col` per user, in the frame's order (sorted by user)."""
    users = frame["user_id"].to_numpy(object)
    vals = frame[col].to_numpy(np.int64)
    if not len(users):
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {
        users[a]: vals[a : min(b, a + n)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
    }


def _top_brands(ui: pd.DataFrame, catalog: Any, n: int) -> dict[str, np.ndarray]:
    """Each user's n brands of most engagement (click 1, add-to-cart 3, purchase 5; at least 2)."""
    if n < 1 or not len(catalog.brand_names):
        return {}
    brand = catalog.item_brand[ui["i"].to_numpy()]
    weight = ui["n_click"] + 3 * ui["n_add_to_cart"] + 5 * ui["n_purchase"]
    df = pd.DataFrame({"user_id": ui["user_id"].to_numpy(object), "brand": brand, "weight": weight})
    df = (
        df[df["brand"] >= 0].groupby(["user_id", "brand"], sort=False)["weight"].sum().reset_index()
    )
    df = df[df["weight"] >= 2].sort_values(
        ["user_id", "weight", "brand"], ascending=[True, False, True]
    )
    return _lists(df, "brand", n)


def _recent_purchases(
    ui: pd.DataFrame, catalog: Any, items: pd.DataFrame, ds: str, pc: Any
) -> dict[str, np.ndarray]:
    """Items bought in non-repeat categories whose last event is within non_repeat_days."""
    if not pc.non_repeat_categories:
        return {}
    wanted = tuple(str(c) for c in pc.non_repeat_categories)
    cat_id = items["category_id"].astype(str)
    hit = cat_id.isin(wanted).to_numpy()
    if "category_path" in items:
        path = items["category_path"].fillna("").astype(str)
        hit |= np.array([p.startswith(wanted) for p in path], dtype=bool)
    since = pd.Timestamp(ds, tz="UTC") - pd.Timedelta(days=pc.non_repeat_days)
    last = pd.to_datetime(ui["last_ts"], utc=True)
    rec = ui[(ui["n_purchase"] > 0) & (last >= since).to_numpy() & hit[ui["i"].to_numpy()]]
    return {u: np.sort(v) for u, v in _lists(rec.sort_values("user_id"), "i", 10**9).items()}


def known_users(lake: Lake, ds: str) -> np.ndarray:
    users = read_table(lake.feature("user_activity", ds), ["user_id"])["user_id"].astype(str)
    if io.list_files(lake.users):
        users = pd.concat(
            [users, read_table(lake.users, ["user_id"], marker=None)["user_id"].astype(str)]
        )
    return np.sort(users.unique().astype(object))


def slot_examination(lake: Lake, ds: str) -> np.ndarray | None:
    """The slot examination curve e_1..e_S estimated as of `ds`, or None without one."""
    path = lake.feature("examination", ds)
    if not io.exists(path):
        return None
    table = read_table(path)
    curve = table[table["kind"] == "slot"].sort_values("index")
    if not len(curve) or curve["index"].iloc[0] != 1:
        return None
    return np.clip(curve["propensity"].to_numpy(np.float64), 1e-3, 1.0)


def carousel_calibration(info: dict[str, Any]) -> Any:
    """φ -> P(engage | carousel examined), the isotonic map the train step fitted, or None."""
    cal = (info or {}).get("carousel_calibration")
    if not cal:
        return None
    x = np.asarray(cal["x"], dtype=np.float64)
    y = np.asarray(cal["y"], dtype=np.float64)
    return lambda phi: np.interp(phi, x, y)
