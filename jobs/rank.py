"""Rank job: carousel candidates → item order → Walmart score φ → pages of Z × M for every user.

Reads the feature tables of `ds` and the *champion* model bundle (MF factors, calibrated
engagement heads, the w chosen on validation data); writes the scored candidates (λ, α, γ, φ
per user–carousel, reused by later refreshes) and the pages in the export's row format.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import yaml

from jobs import io
from jobs.config import CONF_DIR, Config
from jobs.lake import DEFAULT_PAGE_KEY, Lake, join, local_path

log = logging.getLogger(__name__)

BATCH = 1024


def _read(path: str, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(local_path(path), columns=columns)


def load_catalog(lake: Lake, ds: str, cfg: Config) -> tuple[Any, pd.DataFrame]:
    from jobs.build_features import items_snapshot
    from models.candidates import Catalog

    items = _read(items_snapshot(lake, ds)).sort_values("item_id").reset_index(drop=True)
    stats = _read(lake.feature("item_stats", ds))
    # the catalogue snapshot is the source of truth for stock and image flags
    stats = stats.drop(columns=[c for c in stats.columns if c != "item_id" and c in items.columns])
    items = items.merge(stats, on="item_id", how="left")
    for c in ("pop_total", "pop_recent", "trend"):
        items[c] = items[c].fillna(0.0 if c != "trend" else 1.0)
    items["is_new"] = items["is_new"].fillna(False).astype(bool)
    names = {}
    if "category_path" in items:
        for cid, path in zip(items["category_id"], items["category_path"], strict=True):
            if isinstance(path, str) and path:
                names[cid] = path.split("/")[-1]
    catalog = Catalog.build(
        item_ids=items["item_id"].to_numpy(object),
        categories=items["category_id"].to_numpy(object),
        cat_names=names,
        in_stock=items["in_stock"].to_numpy(bool),
        has_image=items["has_image"].to_numpy(bool),
        is_new=items["is_new"].to_numpy(bool),
        pop_total=items["pop_total"].to_numpy(float),
        pop_recent=items["pop_recent"].to_numpy(float),
        trend=items["trend"].to_numpy(float),
        trending_n=cfg.page.candidate_items,
    )
    return catalog, items


def _rule_items(rule: str, catalog: Any, n: int) -> np.ndarray:
    by_pop = np.argsort(-catalog.popularity, kind="stable")
    by_pop = by_pop[catalog.in_stock[by_pop]]
    if rule == "popular":
        return by_pop[:n]
    if rule == "new":
        return by_pop[catalog.is_new[by_pop]][:n]
    if rule.startswith("category:"):
        hit = np.flatnonzero(catalog.cat_ids == rule.split(":", 1)[1])
        return by_pop[np.isin(catalog.item_cat[by_pop], hit)][:n]
    raise ValueError(
        f"unknown curated carousel rule {rule!r}; allowed: popular, new, category:<id>"
    )


def load_curated(lake: Lake, catalog: Any, items: pd.DataFrame, cfg: Config) -> list[Any]:
    """Curated carousels from the lake's `carousels` table, else `conf/curated.yaml`."""
    from models.candidates import CuratedCarousel

    n = cfg.page.candidate_items
    if io.list_files(lake.carousels):
        rows = _read(lake.carousels).to_dict("records")
    else:
        path = cfg.page.curated_file or str(CONF_DIR / "curated.yaml")
        rows = []
        if os.path.exists(path):
            with open(path) as f:
                rows = (yaml.safe_load(f) or {}).get("carousels", [])
    index = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy(object))
    out = []
    for r in rows:
        listed = r.get("item_ids")
        if listed is not None and len(listed) > 0:
            idx = index.reindex([str(x) for x in listed]).dropna().astype(np.int64).to_numpy()
            idx = idx[catalog.in_stock[idx]][:n]
        elif r.get("rule"):
            try:
                idx = _rule_items(str(r["rule"]), catalog, n)
            except ValueError:
                log.warning(
                    "curated carousel %s has an unsupported rule %r; skipped",
                    r.get("carousel_id"),
                    r["rule"],
                )
                continue
        else:
            continue
        if len(idx) >= cfg.page.min_items:
            out.append(
                CuratedCarousel(
                    carousel_id=str(r["carousel_id"]),
                    title=str(r.get("title") or r["carousel_id"]),
                    family=str(r.get("family") or "curated"),
                    items=np.asarray(idx, dtype=np.int64),
                    immutable=bool(r.get("immutable") or False),
                )
            )
    return out


def _aligned_factors(model: Any, ids: np.ndarray) -> np.ndarray:
    """Factor rows aligned to `ids`; zeros for ids the model never saw (score 0)."""
    idx = model.item_index(ids)
    out = np.zeros((len(ids), model.item_factors.shape[1]), dtype=np.float32)
    out[idx >= 0] = model.item_factors[idx[idx >= 0]]
    return out


def page_params(cfg: Config) -> Any:
    from models.ranking import PageParams

    pc = cfg.page
    return PageParams(
        slots=pc.slots,
        items_per_carousel=pc.items_per_carousel,
        candidate_items=pc.candidate_items,
        min_items=pc.min_items,
        category_carousels=pc.category_carousels,
    )


def feature_source(lake: Lake, ds: str, catalog: Any, users: np.ndarray | None = None) -> Any:
    """The engagement models' (user, item) feature lookups as of `ds`."""
    from models.item_features import FeatureSource

    def table(name: str) -> pd.DataFrame:
        return _read(lake.feature(name, ds))

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
    """Everything `models.ranking` needs as of `ds`: catalogue, curated carousels, factors,
    buy-again lists, category counts, Beta priors, and (with an engagement model) the
    feature lookups for re-ranking items."""
    from models.ranking import RankInputs

    pc = cfg.page
    catalog, items = load_catalog(lake, ds, cfg)
    curated = load_curated(lake, catalog, items, cfg)
    ui = _read(lake.feature("user_item_counts", ds), ["user_id", "item_id", "n_purchase"])
    ui = ui[ui["n_purchase"] > 0]
    item_pos = pd.Series(np.arange(len(catalog.item_ids)), index=catalog.item_ids)
    ui = ui.assign(i=item_pos.reindex(ui["item_id"].to_numpy()).to_numpy())
    ui = ui.dropna(subset=["i"])
    ui = ui[catalog.in_stock[ui["i"].astype(np.int64).to_numpy()]]
    ui = ui.sort_values(["user_id", "n_purchase"], ascending=[True, False])
    buy_again = {
        u: g["i"].astype(np.int64).to_numpy()[: pc.candidate_items]
        for u, g in ui.groupby("user_id", sort=False)
    }
    uc = _read(lake.feature("user_category_counts", ds), ["user_id", "category_id", "eta"])
    cat_pos = pd.Series(np.arange(len(catalog.cat_ids)), index=catalog.cat_ids)
    uc = uc.assign(c=cat_pos.reindex(uc["category_id"].to_numpy()).to_numpy()).dropna(subset=["c"])
    priors = _read(lake.feature("user_carousel_priors", ds), ["user_id", "carousel_id", "lam"])
    cprior = _read(lake.feature("carousel_priors", ds))
    p_global = float(cprior["p_global"].iloc[0]) if len(cprior) else 0.5
    carousel_lam = dict(
        zip(cprior["carousel_id"], cprior["a0"] / (cprior["a0"] + cprior["b0"]), strict=True)
    )
    features = None
    if engagement is not None or with_features:
        features = feature_source(lake, ds, catalog, feature_users)
    return RankInputs(
        catalog=catalog,
        curated=curated,
        mf_item=mf_item,
        mf_cat=mf_cat,
        v_items=_aligned_factors(mf_item, catalog.item_ids),
        v_cats=_aligned_factors(mf_cat, catalog.cat_ids),
        buy_again=buy_again,
        cat_eta=uc[["user_id", "c", "eta"]],
        priors=pd.Series(
            priors["lam"].to_numpy(),
            index=pd.MultiIndex.from_arrays([priors["user_id"], priors["carousel_id"]]),
        ),
        carousel_lam=carousel_lam,
        p_global=p_global,
        features=features,
        engagement=engagement,
        objective_weights=None if engagement is None else engagement.params.weights,
    )


def known_users(lake: Lake, ds: str) -> np.ndarray:
    users = _read(lake.feature("user_activity", ds), ["user_id"])["user_id"].astype(str)
    if io.list_files(lake.users):
        users = pd.concat([users, _read(lake.users, ["user_id"])["user_id"].astype(str)])
    return np.sort(users.unique().astype(object))


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Build every known user's page plus the `__default__` page, with the champion model."""
    from jobs.bundle import load_bundle
    from models.ranking import pages, score_batch

    bundle = load_bundle(lake, cfg, alias="champion")
    mode = bundle.item_mode if bundle.engagement is not None else "fixed"
    params = page_params(cfg)
    users = known_users(lake, ds)
    inputs = load_inputs(lake, ds, cfg, bundle.mf_item, bundle.mf_cat, engagement=bundle.engagement)
    catalog = inputs.catalog
    warm = inputs.warm(users)
    page_frames: list[pd.DataFrame] = []
    cand_frames: list[pd.DataFrame] = []

    def add(batch_users: np.ndarray, matrices: Any, reason: str | None = None) -> None:
        scored = score_batch(inputs, batch_users, matrices, params, mode, reason)
        page_frames.append(pages(scored, bundle.w, params, catalog.item_ids))
        cand_frames.append(scored.candidates_frame(bundle.w))

    default_users = np.array([DEFAULT_PAGE_KEY], dtype=object)
    # the default page ranks items by popularity, not by a user's engagement scores
    default_scored = score_batch(
        inputs, default_users, inputs.default_matrices(), params, "fixed", "popular"
    )
    page_frames.append(pages(default_scored, bundle.w, params, catalog.item_ids))
    cand_frames.append(default_scored.candidates_frame(bundle.w))
    warm_users = users[warm]
    for start in range(0, len(warm_users), BATCH):
        bu = warm_users[start : start + BATCH]
        add(bu, inputs.user_matrices(bu))

    page_df = pd.concat(page_frames, ignore_index=True)
    page_df["model_version"] = bundle.model_version
    default = page_df[page_df["user_id"] == DEFAULT_PAGE_KEY]
    cold = users[~warm]
    if len(cold):
        # users without history get the default page under their own id (cold start)
        rep = default.iloc[np.tile(np.arange(len(default)), len(cold))].copy()
        rep["user_id"] = np.repeat(cold, len(default))
        page_df = pd.concat([page_df, rep], ignore_index=True)
    page_df = page_df.sort_values(["user_id", "slot", "item_rank"], kind="stable").reset_index(
        drop=True
    )
    out_dir = local_path(join(lake.warehouse, "pages", f"ds={ds}"))
    os.makedirs(out_dir, exist_ok=True)
    page_df.to_parquet(os.path.join(out_dir, "pages.parquet"), index=False)
    cand_dir = local_path(lake.candidates(ds))
    os.makedirs(cand_dir, exist_ok=True)
    pd.concat(cand_frames, ignore_index=True).to_parquet(
        os.path.join(cand_dir, "candidates.parquet"), index=False
    )
    stats = {
        "ds": ds,
        "users": int(len(users)),
        "warm_users": int(warm.sum()),
        "cold_users": int(len(cold)),
        "rows": int(len(page_df)),
        "model_version": bundle.model_version,
        "registry_version": bundle.registry_version,
        "run_id": bundle.info.get("run_id"),
        "bundle": bundle.path,
        "w": bundle.w,
        "item_mode": mode,
    }
    io.write_json(join(lake.reports(ds), "rank.json"), stats)
    log.info("ranked pages for %s: %s", ds, stats)
    return stats
