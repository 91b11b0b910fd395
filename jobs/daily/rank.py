"""Rank job: carousel candidates → item order → Walmart score φ → pages of Z × M for every user.

Reads the feature tables of `ds` and the *champion* model bundle (MF factors, calibrated
engagement heads, the w chosen on validation data); writes the scored candidates (λ, α, γ, φ
per user–carousel, reused by later refreshes) and the pages in the export's row format.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any

import numpy as np
import pandas as pd
import yaml

from jobs.core import io
from jobs.core.config import CONF_DIR, Config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path
from jobs.daily.page_state import STATE_DIR, StateWriter

log = logging.getLogger(__name__)

BATCH = 1024


def _read(
    path: str, columns: list[str] | None = None, marker: str | None = "_SUCCESS"
) -> pd.DataFrame:
    """A table of the lake; on a remote lake a Spark output must hold its `_SUCCESS` marker
    (pass marker=None for input tables, which have none)."""
    return io.read_parquet(path, columns, marker=marker)


def load_catalog(lake: Lake, ds: str, cfg: Config) -> tuple[Any, pd.DataFrame]:
    from jobs.daily.build_features import items_snapshot
    from models.ranking.catalog import Catalog

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
        category_pool=cfg.page.category_pool,
        brands=items["brand"].to_numpy(object) if "brand" in items else None,
        pop_window=items["pop_30d"].fillna(0.0).to_numpy(float) if "pop_30d" in items else None,
        best_sellers_n=_best_sellers_n(cfg.page),
    )
    return catalog, items


def _best_sellers_n(pc: Any) -> int:
    """Best sellers the catalogue keeps: as far as the last "Best sellers" row reaches, or the
    "picked for you" pool's `for_you_popular` if that is longer (rows only read their blocks)."""
    rows = (
        pc.candidate_items + max(pc.best_seller_carousels - 1, 0) * pc.items_per_carousel
        if pc.best_seller_carousels
        else 0
    )
    return max(rows, pc.for_you_popular if pc.for_you_carousels else 0)


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
    if rule.startswith("brand:"):
        hit = np.flatnonzero(catalog.brand_names == rule.split(":", 1)[1])
        return by_pop[np.isin(catalog.item_brand[by_pop], hit)][:n]
    raise ValueError(
        f"unknown curated carousel rule {rule!r}; allowed: popular, new, category:<id>, "
        "brand:<name>"
    )


def load_curated(lake: Lake, catalog: Any, items: pd.DataFrame, cfg: Config) -> list[Any]:
    """Curated carousels from the lake's `carousels` table, else `conf/curated.yaml`."""
    from models.ranking.catalog import CuratedCarousel

    n = cfg.page.candidate_items
    if io.list_files(lake.carousels):
        rows = _read(lake.carousels, marker=None).to_dict("records")
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


def feature_source(lake: Lake, ds: str, catalog: Any, users: np.ndarray | None = None) -> Any:
    """The engagement models' (user, item) feature lookups as of `ds`."""
    from models.ranking.item_features import FeatureSource

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
    """Everything `models.ranking.pages` needs as of `ds`: catalogue, curated carousels, factors,
    buy-again lists, top brands, recent non-repeat purchases, category counts, Beta priors,
    and (with an engagement model) the feature lookups for re-ranking items."""
    from models.ranking.item_policy import item_clusters
    from models.ranking.rank_inputs import RankInputs

    pc = cfg.page
    catalog, items = load_catalog(lake, ds, cfg)
    curated = load_curated(lake, catalog, items, cfg)
    ui = _read(
        lake.feature("user_item_counts", ds),
        ["user_id", "item_id", "n_click", "n_add_to_cart", "n_purchase", "last_ts"],
    )
    item_pos = pd.Series(np.arange(len(catalog.item_ids)), index=catalog.item_ids)
    ui = ui.assign(i=item_pos.reindex(ui["item_id"].to_numpy()).to_numpy())
    ui = ui.dropna(subset=["i"])
    ui["i"] = ui["i"].astype(np.int64)
    bought = ui[(ui["n_purchase"] > 0) & catalog.in_stock[ui["i"].to_numpy()]]
    bought = bought.sort_values(["user_id", "n_purchase"], ascending=[True, False])
    buy_again = _lists(
        bought,
        "i",
        max(
            pc.candidate_items + (pc.buy_again_carousels - 1) * pc.items_per_carousel,
            pc.for_you_history if pc.for_you_carousels else 0,
        ),
    )
    top_brands = _top_brands(ui, catalog, pc.brand_carousels)
    recent = _recent_purchases(ui, catalog, items, ds, pc)
    uc = _read(lake.feature("user_category_counts", ds), ["user_id", "category_id", "eta"])
    cat_pos = pd.Series(np.arange(len(catalog.cat_ids)), index=catalog.cat_ids)
    uc = uc.assign(c=cat_pos.reindex(uc["category_id"].to_numpy()).to_numpy()).dropna(subset=["c"])
    priors = _read(
        lake.feature("user_carousel_priors", ds), ["user_id", "carousel_id", "a", "b", "lam"]
    )
    cprior = _read(lake.feature("carousel_priors", ds))
    p_global = float(cprior["p_global"].iloc[0]) if len(cprior) else 0.5
    carousel_lam = dict(
        zip(cprior["carousel_id"], cprior["a0"] / (cprior["a0"] + cprior["b0"]), strict=True)
    )
    carousel_ab = {
        c: (float(a), float(b))
        for c, a, b in zip(cprior["carousel_id"], cprior["a0"], cprior["b0"], strict=True)
    }
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
    df = pd.DataFrame({"user_id": ui["user_id"].to_numpy(object), "brand": brand, "w": weight})
    df = df[df["brand"] >= 0].groupby(["user_id", "brand"], sort=False)["w"].sum().reset_index()
    df = df[df["w"] >= 2].sort_values(["user_id", "w", "brand"], ascending=[True, False, True])
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
    users = _read(lake.feature("user_activity", ds), ["user_id"])["user_id"].astype(str)
    if io.list_files(lake.users):
        users = pd.concat(
            [users, _read(lake.users, ["user_id"], marker=None)["user_id"].astype(str)]
        )
    return np.sort(users.unique().astype(object))


def slot_examination(lake: Lake, ds: str) -> np.ndarray | None:
    """The slot examination curve e_1..e_S estimated as of `ds`, or None without one."""
    path = lake.feature("examination", ds)
    if not io.exists(path):
        return None
    table = _read(path)
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


class _Sink:
    """A Parquet file written one batch at a time (to `<path>.tmp`, renamed in on close)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = f"{path}.tmp-{os.getpid()}"
        self.writer: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        if self.writer is None:
            # categoricals are written as plain strings (Arrow decodes them in C++)
            self.schema = pa.schema(
                [
                    pa.field(
                        f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type
                    )
                    for f in table.schema
                ]
            )
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.writer.write_table(table.cast(self.schema))

    def write_table(self, table: Any) -> None:
        """Rows already in the file's columns (after at least one `write`)."""
        self.writer.write_table(table.select(self.schema.names).cast(self.schema))

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        os.replace(self.tmp, self.path)


DAYPARTS = ("night", "morning", "afternoon", "evening")  # hours 0-5, 6-11, 12-17, 18-23


def context_segments(lake: Lake, ds: str, users: np.ndarray) -> pd.DataFrame:
    """user_id, device, region, daypart of every known user ("any" where unknown): the profile
    from the `users` table where present, else the user's main device and hour."""
    seg = pd.DataFrame({"user_id": users})
    ctx_path = lake.feature("user_context", ds)
    if io.exists(ctx_path):
        ctx = _read(ctx_path, ["user_id", "main_device", "main_hour"])
        ctx["daypart"] = np.asarray(DAYPARTS, dtype=object)[
            (ctx["main_hour"].fillna(0).astype(int) // 6).clip(0, 3).to_numpy()
        ]
        seg = seg.merge(ctx.rename(columns={"main_device": "device"}), on="user_id", how="left")
    if io.list_files(lake.users):
        prof = _read(lake.users, marker=None)
        keep = [c for c in ("user_id", "device", "region") if c in prof.columns]
        prof = prof[keep].drop_duplicates("user_id")
        prof["user_id"] = prof["user_id"].astype(str)
        seg = seg.merge(prof, on="user_id", how="left", suffixes=("_ctx", ""))
        if "device_ctx" in seg:
            seg["device"] = seg["device"].fillna(seg.pop("device_ctx"))
    for c in ("device", "region", "daypart"):
        if c not in seg:
            seg[c] = "any"
        seg[c] = seg[c].fillna("any").astype(str).str.replace(r"[^A-Za-z0-9_.-]", "_", regex=True)
    return seg[["user_id", "device", "region", "daypart"]]


def context_key(device: str, region: str, daypart: str) -> str:
    return f"{DEFAULT_PAGE_KEY}:{device}:{region}:{daypart}"


def context_popularity(
    lake: Lake, ds: str, catalog: Any, seg: pd.DataFrame, keys: list[tuple[str, str, str]]
) -> np.ndarray:
    """(len(keys), n_items) popularity per context: engagement of the segment's users, shrunk
    towards the catalogue's popularity (equal weight at equal volume), log-scaled to [0, 1]."""
    ui = _read(
        lake.feature("user_item_counts", ds),
        ["user_id", "item_id", "n_click", "n_add_to_cart", "n_purchase"],
    )
    n = len(catalog.item_ids)
    item = pd.Series(np.arange(n), index=catalog.item_ids).reindex(ui["item_id"].to_numpy())
    ok = item.notna().to_numpy()
    ui = ui[ok]
    item = item.to_numpy()[ok].astype(np.int64)
    w = (ui["n_click"] + 3 * ui["n_add_to_cart"] + 5 * ui["n_purchase"]).to_numpy(np.float64)
    seg_of = seg.set_index("user_id").reindex(ui["user_id"].to_numpy())
    total = np.bincount(item, weights=w, minlength=n)
    out = np.zeros((len(keys), n))
    for k, (device, region, daypart) in enumerate(keys):
        m = np.ones(len(ui), dtype=bool)
        for col, want in (("device", device), ("region", region), ("daypart", daypart)):
            if want != "any":
                m &= (seg_of[col] == want).to_numpy()
        counts = np.bincount(item[m], weights=w[m], minlength=n)
        share = counts.sum() / max(total.sum(), 1e-12)
        pop = np.log1p(counts + share * total)
        out[k] = pop / pop.max() if pop.max() > 0 else pop
    return out


def run(
    lake: Lake, ds: str, cfg: Config, progress: Any = None, item_mode: str | None = None
) -> dict[str, Any]:
    """Build every known user's page, the `__default__` page and the context default pages,
    with the champion model."""
    import time
    import zlib
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from jobs.daily.bundle import load_bundle, load_version
    from jobs.daily.registry import past_day
    from models.ranking.batch_scoring import score_batch
    from models.ranking.pages import build_pages

    t0 = time.perf_counter()
    past = past_day(lake, ds)
    if past is not None and past["champion_after"] is not None:
        # a day older than the newest decided one (a re-run, a backfill reaching back) is
        # ranked by the version that served it, not by a champion trained on later data
        bundle = load_version(lake, cfg, past["champion_after"])
    else:
        bundle = load_bundle(lake, cfg, alias="champion")
    mode = item_mode or bundle.item_mode
    if bundle.engagement is None:
        mode = "fixed"
    params = page_params(cfg)
    users = known_users(lake, ds)
    inputs = load_inputs(lake, ds, cfg, bundle.mf_item, bundle.mf_cat, engagement=bundle.engagement)
    catalog = inputs.catalog
    warm = inputs.warm(users)
    exam = slot_examination(lake, ds)
    calibration = carousel_calibration(bundle.info)
    seed = zlib.crc32(f"{ds}:{cfg.page.seed}".encode())
    t_load = time.perf_counter() - t0
    pages_uri, cand_uri = join(lake.warehouse, "pages", f"ds={ds}"), lake.candidates(ds)
    # on a remote lake both directories are written locally, then uploaded (marker last)
    scratch = io.scratch_dir("rank") if io.is_remote(pages_uri) else None
    if scratch:
        out_dir, cand_dir = os.path.join(scratch, "pages"), os.path.join(scratch, "candidates")
    else:
        out_dir, cand_dir = local_path(pages_uri), local_path(cand_uri)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(cand_dir, exist_ok=True)
    # pages and candidates are streamed to Parquet batch by batch: memory stays bounded at 1M+
    page_sink = _Sink(os.path.join(out_dir, "pages.parquet"))
    cand_sink = _Sink(os.path.join(cand_dir, "candidates.parquet"))
    # the score components of every warm user's candidates, for intra-day refreshes
    state = StateWriter(os.path.join(out_dir, STATE_DIR))
    stat_frames: list[pd.DataFrame] = []
    defaults: list[pd.DataFrame] = []
    counts = {"rows": 0, "explored": 0, "randomised": 0}
    parts: dict[str, float] = {}

    def emit(frame: pd.DataFrame) -> None:
        frame["model_version"] = bundle.model_version
        page_sink.write(frame)
        counts["rows"] += len(frame)
        counts["explored"] += int((frame["reason"] == "explore").sum())
        counts["randomised"] += int((frame["propensity"] < 1).sum())

    def build(
        batch_users: np.ndarray, matrices: Any, reason: str | None, item_mode: str
    ) -> tuple[Any, Any, dict[str, float], Any]:
        t = time.perf_counter()
        if matrices is None:
            matrices = inputs.user_matrices(batch_users)
        timing = {"user_matrices": time.perf_counter() - t}
        scored = score_batch(inputs, batch_users, matrices, params, item_mode, reason)
        timing |= scored.timings
        t_pages = time.perf_counter()
        built = build_pages(
            scored,
            bundle.w,
            params,
            catalog.item_ids,
            exam=exam,
            calibration=calibration,
            randomise=reason is None,
            seed=seed,
            categorical=True,
        )
        timing["slots_and_rows"] = time.perf_counter() - t_pages
        timing["total"] = time.perf_counter() - t
        return built, scored.candidates_frame(bundle.w), timing, scored

    def add(result: tuple[Any, Any, dict[str, float], Any], reason: str | None) -> None:
        built, cands, timing, scored = result
        if reason is None:
            t = time.perf_counter()
            state.add(scored)
            timing["state"] = time.perf_counter() - t
        for key, v in timing.items():
            parts[key] = parts.get(key, 0.0) + v
        if reason is not None:
            defaults.append(built.frame)
        emit(built.frame)
        stat_frames.append(built.stats)
        cand_sink.write(cands)

    # default pages rank items by (context) popularity, not by a user's engagement scores
    seg = context_segments(lake, ds, users)
    cold_seg = seg[~warm]
    keys = sorted(
        {("any", "any", "any")}
        | {(d, r, "any") for d, r in zip(cold_seg["device"], cold_seg["region"], strict=True)}
        | {(d, "any", p) for d in seg["device"].unique() for p in DAYPARTS}
    )
    names = np.array([DEFAULT_PAGE_KEY if k == ("any",) * 3 else context_key(*k) for k in keys])
    pop = context_popularity(lake, ds, catalog, seg, keys)
    add(build(names.astype(object), inputs.default_matrices(pop), "popular", "fixed"), "popular")
    t1 = time.perf_counter()
    warm_users = users[warm]
    parts.clear()  # time the personal pages only
    # numpy and XGBoost release the GIL for most of a batch: a few threads use both cores;
    # results are written in batch order, so the output does not depend on the thread count
    threads = cfg.page.threads or (os.cpu_count() or 1) + 1
    starts = list(range(0, len(warm_users), BATCH))
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Any] = deque()
        for k, start in enumerate(starts):
            bu = warm_users[start : start + BATCH]
            pending.append(pool.submit(build, bu, None, None, mode))
            if len(pending) >= 2 * threads:
                add(pending.popleft().result(), None)
            if progress and k % 50 == 0:
                progress(f"rank: {start + len(bu):,}/{len(warm_users):,} warm users")
        while pending:
            add(pending.popleft().result(), None)
    t_pages = time.perf_counter() - t1

    stats_df = pd.concat(stat_frames, ignore_index=True)
    cold = cold_seg.assign(
        key=[
            context_key(d, r, "any") if (d, r) != ("any", "any") else DEFAULT_PAGE_KEY
            for d, r in zip(cold_seg["device"], cold_seg["region"], strict=True)
        ]
    )[["user_id", "key"]]
    if len(cold):
        # users without history get their context's default page under their own id
        import pyarrow as pa

        base = pd.concat(defaults, ignore_index=True)
        base = base.sort_values(["user_id", "slot", "item_rank"], kind="stable")
        table = pa.Table.from_pandas(base.drop(columns="user_id"), preserve_index=False)
        row_keys = base["user_id"].astype(str).to_numpy(object)
        first = {k: i for i, k in reversed(list(enumerate(row_keys)))}
        size = pd.Series(row_keys).value_counts()
        start_of = cold["key"].map(first).to_numpy(np.int64)
        len_of = cold["key"].map(size).to_numpy(np.int64)
        cold_ids = cold["user_id"].to_numpy(object)
        for lo in range(0, len(cold), 50_000):
            st, ln = start_of[lo : lo + 50_000], len_of[lo : lo + 50_000]
            idx = np.repeat(st - np.cumsum(ln) + ln, ln) + np.arange(ln.sum())
            rows = table.take(pa.array(idx))
            uid = pa.array(np.repeat(cold_ids[lo : lo + 50_000], ln), pa.string())
            page_sink.write_table(rows.add_column(0, "user_id", uid))
            counts["rows"] += len(idx)
            counts["randomised"] += int((base["propensity"].to_numpy()[idx] < 1).sum())
        rep_stats = cold.merge(stats_df.rename(columns={"user_id": "key"}), on="key")
        stats_df = pd.concat(
            [stats_df, rep_stats.drop(columns="key")[stats_df.columns]], ignore_index=True
        )
    page_sink.close()
    cand_sink.close()
    state_info = state.close(
        {
            "ds": ds,
            "model_version": bundle.model_version,
            "w": bundle.w,
            "item_mode": mode,
            "seed": seed,
            "width": params.candidate_items,
            "new_pool": params.explore_pool,
            "page_params": dataclasses.asdict(params),
            "carousel_ab": {k: list(v) for k, v in inputs.carousel_ab.items()},
            "carousel_lam": dict(inputs.carousel_lam),
            "p_global": inputs.p_global,
            "carousel_calibration": (bundle.info or {}).get("carousel_calibration"),
        },
        {
            "item_ids": catalog.item_ids.astype(str),
            "in_stock": catalog.in_stock,
            "v_items": inputs.v_items,
            "item_cat": catalog.item_cat,
            "item_brand": catalog.item_brand,
            **({"exam": exam} if exam is not None else {}),
        },
    )
    stats_df.to_parquet(os.path.join(out_dir, "page_stats.parquet"), index=False)
    if scratch:
        io.upload_dir(cand_dir, cand_uri)
        io.upload_dir(out_dir, pages_uri)
        shutil.rmtree(scratch, ignore_errors=True)
    stats = {
        "ds": ds,
        "users": int(len(users)),
        "warm_users": int(warm.sum()),
        "cold_users": int(len(cold)),
        "context_pages": int(len(keys)),
        "rows": counts["rows"],
        "model_version": bundle.model_version,
        "registry_version": bundle.registry_version,
        "run_id": bundle.info.get("run_id"),
        "bundle": bundle.path,
        "w": bundle.w,
        "item_mode": mode,
        "slot_examination": "estimated" if exam is not None else "default 1/log2(1+s)",
        "carousel_calibration": calibration is not None,
        "explored_items": counts["explored"],
        "randomised_placements": counts["randomised"],
        "short_pages": int((stats_df["slots"] < params.slots).sum()),
        "state": state_info,
        "load_s": round(t_load, 1),
        "pages_s": round(t_pages, 1),
        "users_per_s": round(len(warm_users) / max(t_pages, 1e-9), 1),
        "threads": threads,
        # seconds per part, summed over threads (so they add up to more than the wall time)
        "parts_thread_s": {k: round(v, 1) for k, v in parts.items()},
    }
    io.write_json(join(lake.reports(ds), "rank.json"), stats)
    log.info("ranked pages for %s: %s", ds, stats)
    return stats
