"""Rank job: carousel candidates → Walmart score φ → pages of Z slots × M items for every user.

Reads the feature tables and fitted factors for `ds`; writes the scored candidates (α, γ, φ per
user–carousel, reused by later refreshes) and the pages in the export's row format.
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
    from models.candidates import Catalog

    items = (
        _read(join(lake.warehouse, "items", f"ds={ds}"))
        .sort_values("item_id")
        .reset_index(drop=True)
    )
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


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Build every known user's page plus the `__default__` page."""
    from models.candidates import generate
    from models.mf import MFModel
    from models.page import assemble_page
    from models.scoring import carousel_scores

    pc = cfg.page
    model_info = io.read_json(join(lake.models(ds), "MODEL.json"))
    version = model_info["model_version"]
    catalog, items = load_catalog(lake, ds, cfg)
    curated = load_curated(lake, catalog, items, cfg)
    mf_item = MFModel.load(os.path.join(local_path(lake.models(ds)), "mf_item.npz"))
    mf_cat = MFModel.load(os.path.join(local_path(lake.models(ds)), "mf_category.npz"))
    v_items = _aligned_factors(mf_item, catalog.item_ids)
    v_cats = _aligned_factors(mf_cat, catalog.cat_ids)

    users = _read(lake.feature("user_activity", ds), ["user_id"])["user_id"].astype(str)
    if io.list_files(lake.users):
        users = pd.concat([users, _read(lake.users, ["user_id"])["user_id"].astype(str)])
    users = np.sort(users.unique().astype(object))
    u_item = mf_item.user_index(users)
    u_cat = mf_cat.user_index(users)
    warm = (u_item >= 0) & (u_cat >= 0)

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
    user_pos = pd.Series(np.arange(len(users)), index=users)
    uc = uc.assign(u=user_pos.reindex(uc["user_id"].to_numpy()).to_numpy()).dropna(subset=["u"])

    priors = _read(lake.feature("user_carousel_priors", ds), ["user_id", "carousel_id", "lam"])
    cprior = _read(lake.feature("carousel_priors", ds))
    p_global = float(cprior["p_global"].iloc[0]) if len(cprior) else 0.5
    carousel_lam = dict(
        zip(cprior["carousel_id"], cprior["a0"] / (cprior["a0"] + cprior["b0"]), strict=True)
    )
    prior_lookup = pd.Series(
        priors["lam"].to_numpy(),
        index=pd.MultiIndex.from_arrays([priors["user_id"], priors["carousel_id"]]),
    )

    pages: list[pd.DataFrame] = []
    cand_frames: list[pd.DataFrame] = []

    def score_batch(
        batch_users: np.ndarray,
        r_hat: np.ndarray,
        aff: np.ndarray,
        eta: np.ndarray,
        batch_buy: list[np.ndarray],
        reason_override: str | None = None,
    ) -> None:
        r_hat = np.where(catalog.in_stock[None, :], r_hat, -np.inf)
        cands = generate(
            catalog=catalog,
            item_scores=r_hat,
            cat_affinity=aff,
            cat_eta=eta,
            buy_again=batch_buy,
            curated=curated,
            n_items=pc.candidate_items,
            min_items=pc.min_items,
            n_category=pc.category_carousels,
        )
        if not cands.user:
            return
        cu = np.asarray(cands.user)
        mat = cands.item_matrix(pc.candidate_items)
        keys = pd.MultiIndex.from_arrays(
            [batch_users[cu], np.asarray(cands.carousel_id, dtype=object)]
        )
        lam = prior_lookup.reindex(keys).to_numpy()
        fallback = np.array([carousel_lam.get(c, p_global) for c in cands.carousel_id])
        lam = np.where(np.isnan(lam), fallback, lam)
        discovery = aff * np.exp(-eta)
        phi, alpha, gamma = carousel_scores(
            items=mat[:, : pc.items_per_carousel],
            users=cu,
            item_scores=np.where(np.isfinite(r_hat), r_hat, 0.0),
            discovery=discovery,
            item_cat=catalog.item_cat,
            lam=lam,
            w=cfg.scoring.w,
        )
        cand_frames.append(
            pd.DataFrame(
                {
                    "user_id": batch_users[cu],
                    "carousel_id": cands.carousel_id,
                    "family": cands.family,
                    "lam": lam,
                    "alpha": alpha,
                    "gamma": gamma,
                    "phi": phi,
                }
            )
        )
        rows: dict[str, list[Any]] = {
            k: []
            for k in (
                "user_id",
                "slot",
                "carousel_id",
                "carousel_title",
                "family",
                "carousel_score",
                "item_rank",
                "item_id",
                "item_score",
                "reason",
            )
        }
        bounds = np.flatnonzero(np.diff(cu)) + 1
        for group in np.split(np.arange(len(cu)), bounds):
            u = cu[group[0]]
            order = group[np.argsort(-phi[group], kind="stable")]
            for placed in assemble_page(
                order=order,
                families=cands.family,
                items=mat,
                slots=pc.slots,
                per_carousel=pc.items_per_carousel,
                min_items=pc.min_items,
            ):
                j, n = placed.candidate, len(placed.items)
                rows["user_id"].extend([batch_users[u]] * n)
                rows["slot"].extend([placed.slot] * n)
                rows["carousel_id"].extend([cands.carousel_id[j]] * n)
                rows["carousel_title"].extend([cands.title[j]] * n)
                rows["family"].extend([cands.family[j]] * n)
                rows["carousel_score"].extend([float(phi[j])] * n)
                rows["item_rank"].extend(range(1, n + 1))
                rows["item_id"].extend(catalog.item_ids[placed.items])
                rows["item_score"].extend(r_hat[u, placed.items].astype(float))
                rows["reason"].extend([reason_override or cands.reason[j]] * n)
        pages.append(pd.DataFrame(rows))

    # the default page: a pseudo-user whose tastes are the catalogue's popularity
    cat_pop = np.bincount(
        catalog.item_cat, weights=catalog.popularity, minlength=len(catalog.cat_ids)
    )
    cat_pop = cat_pop / cat_pop.max() if cat_pop.max() > 0 else cat_pop
    score_batch(
        np.array([DEFAULT_PAGE_KEY], dtype=object),
        catalog.popularity[None, :].copy(),
        cat_pop[None, :],
        np.zeros((1, len(cat_pop))),
        [np.empty(0, dtype=np.int64)],
        reason_override="popular",
    )

    warm_idx = np.flatnonzero(warm)
    for start in range(0, len(warm_idx), BATCH):
        sel = warm_idx[start : start + BATCH]
        bu = users[sel]
        r_hat = mf_item.user_factors[u_item[sel]] @ v_items.T
        aff = mf_cat.user_factors[u_cat[sel]] @ v_cats.T
        eta = np.zeros_like(aff)
        sub = uc[uc["u"].isin(sel)]
        local = pd.Series(np.arange(len(sel)), index=sel)
        eta[
            local.reindex(sub["u"].astype(np.int64)).to_numpy(),
            sub["c"].astype(np.int64).to_numpy(),
        ] = sub["eta"].to_numpy()
        score_batch(
            bu, r_hat, aff, eta, [buy_again.get(x, np.empty(0, dtype=np.int64)) for x in bu]
        )

    page_df = pd.concat(pages, ignore_index=True)
    page_df["model_version"] = version
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
        "model_version": version,
    }
    io.write_json(join(lake.reports(ds), "rank.json"), stats)
    log.info("ranked pages for %s: %s", ds, stats)
    return stats
