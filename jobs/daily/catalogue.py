"""The catalogue as the rank and train steps see it: the validated item snapshot of a day, the
item table joined with its statistics (`models.ranking.candidates.Catalog`), and the curated
carousels; plus `read_table`, how these steps read a table of the lake."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import yaml

from jobs.core import io
from jobs.core.config import CONF_DIR, Config
from jobs.core.lake import Lake, join, parse_ds

log = logging.getLogger(__name__)


def items_snapshot(lake: Lake, ds: str) -> str:
    """The validated catalogue snapshot as of `ds` (written by ingest, or for a label window's
    start by `jobs.daily.item_catalogue.ensure_items_snapshot`)."""
    path = join(lake.warehouse, "items", f"ds={ds}")
    if not io.exists(join(path, "_SUCCESS")):
        raise FileNotFoundError(
            f"no validated item catalogue as of {ds} ({path}): run ingest for {ds} first"
        )
    return path


def read_table(
    path: str, columns: list[str] | None = None, marker: str | None = "_SUCCESS"
) -> pd.DataFrame:
    """A table of the lake; on a remote lake a Spark output must hold its `_SUCCESS` marker
    (pass marker=None for input tables, which have none)."""
    return io.read_parquet(path, columns, marker=marker)


def load_catalog(lake: Lake, ds: str, cfg: Config) -> tuple[Any, pd.DataFrame]:
    from models.ranking.catalog import Catalog

    items = read_table(items_snapshot(lake, ds)).sort_values("item_id").reset_index(drop=True)
    stats = read_table(lake.feature("item_stats", ds))
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
        category_pool=cfg.page.category_pool,
        brands=items["brand"].to_numpy(object) if "brand" in items else None,
        pop_window=items["pop_30d"].fillna(0.0).to_numpy(float) if "pop_30d" in items else None,
        best_sellers_n=best_sellers_n(cfg.page),
    )
    return catalog, items


def best_sellers_n(pc: Any) -> int:
    """Best sellers the catalogue keeps: as far as the last "Best sellers" row reaches, or the
    "picked for you" pool's `for_you_popular` if that is longer (rows only read their blocks)."""
    rows = (
        pc.candidate_items + max(pc.best_seller_carousels - 1, 0) * pc.items_per_carousel
        if pc.best_seller_carousels
        else 0
    )
    return max(rows, pc.for_you_popular if pc.for_you_carousels else 0)


def rule_items(rule: str, catalog: Any, n: int) -> np.ndarray:
    by_pop = np.argsort(-catalog.popularity, kind="stable")
    by_pop = by_pop[catalog.in_stock[by_pop]]
    if rule == "popular":
        return by_pop[:n]
    if rule == "new":
        return by_pop[catalog.is_new[by_pop]][:n]
    if rule.startswith("category:"):
        hit = np.flatnonzero(catalog.cat_ids == rule.split(":", 1)[1])
        return by_pop[np.isin(catalog.item_cat[by_pop], hit)][:n]
    if rule.startswith("brand:"):
        hit = np.flatnonzero(catalog.brand_names == rule.split(":", 1)[1])
        return by_pop[np.isin(catalog.item_brand[by_pop], hit)][:n]
    raise ValueError(
        f"unknown curated carousel rule {rule!r}; allowed: popular, new, category:<id>, "
        "brand:<name>"
    )


def _day(value: Any) -> dt.date | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).date()


def curated_as_of(rows: list[dict[str, Any]], ds: str) -> list[dict[str, Any]]:
    """The curated carousel rows a run as of `ds` knows and may show: `valid_from` before `ds`
    (known at the end of that day) and `valid_to` on or after it, a null date being open. Of
    rows sharing a carousel_id, the one known latest wins."""
    day = parse_ds(ds)
    live = [
        r
        for r in rows
        if ((start := _day(r.get("valid_from"))) is None or start < day)
        and ((end := _day(r.get("valid_to"))) is None or end >= day)
    ]
    live.sort(key=lambda r: _day(r.get("valid_from")) or dt.date.min)
    return list({str(r.get("carousel_id")): r for r in live}.values())


def load_curated(lake: Lake, catalog: Any, items: pd.DataFrame, cfg: Config, ds: str) -> list[Any]:
    """Curated carousels as of `ds` (`curated_as_of`) from the lake's `carousels` table, else
    `conf/curated.yaml`."""
    from models.ranking.catalog import CuratedCarousel

    n = cfg.page.candidate_items
    if io.list_files(lake.carousels):
        rows = read_table(lake.carousels, marker=None).to_dict("records")
    else:
        path = cfg.page.curated_file or str(CONF_DIR / "curated.yaml")
        rows = []
        if os.path.exists(path):
            with open(path) as f:
                rows = (yaml.safe_load(f) or {}).get("carousels", [])
    index = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy(object))
    out = []
    for r in curated_as_of(rows, ds):
        listed = r.get("item_ids")
        if listed is not None and len(listed) > 0:
            idx = index.reindex([str(x) for x in listed]).dropna().astype(np.int64).to_numpy()
            idx = idx[catalog.in_stock[idx]][:n]
        elif r.get("rule"):
            try:
                idx = rule_items(str(r["rule"]), catalog, n)
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
