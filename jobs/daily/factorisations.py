"""The matrix factorisations of the train step: user–item and user–category MF on the counts
as of a day, with the configured backend, cached in `warehouse/mf_cache` under a key of their
inputs; and the factors the heads are trained on and served with (`window_factorisations`,
`serving_factorisations`): with `mf.serving=fold_in` one item (and category) factor space, the
fit as of the label window's start, with every user's factors solved from their counts as of
the day they are used (`models.ranking.mf.fold_in`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake, join, shift_ds

log = logging.getLogger(__name__)


def mf_params(cfg: Config) -> Any:
    """The model's own params from the job config (models/ never imports jobs/)."""
    from models.ranking.mf import MFParams

    fields = {f.name for f in dataclasses.fields(MFParams)}
    return MFParams(**{k: v for k, v in dataclasses.asdict(cfg.mf).items() if k in fields})


MF_CACHE = "mf_cache"


def mf_cache_key(rows: pd.DataFrame, table: str, params: Any, backend: str) -> str:
    """What a factorisation depends on: the MF settings, the backend, the table and its rows
    (user, key, eta) as a multiset: Spark writes the same rows in a different order or split
    from run to run, so neither the files' bytes nor their names and times identify them (a
    key of those gave a backfill and seven single runs different cache entries)."""
    h = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    # two order-free sums of the rows' 64-bit hashes (wrapping): the rows, in any order
    content = [len(h), int(h.sum(dtype=np.uint64)), int((h * h).sum(dtype=np.uint64))]
    blob = json.dumps(
        {
            "params": dataclasses.asdict(params),
            "backend": backend,
            "table": table,
            "columns": list(rows.columns),
            "rows": content,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prune_mf_cache(lake: Lake, ds: str, cfg: Config) -> None:
    """Drop factorisations no later run reads: the run of a day d fits as of d and as of its
    cutoff d - training.label_days, so runs from the newest day on need none older than the
    newest day's cutoff. Measured from the newest day, not from `ds`: a re-run of a past day
    (a backfill reprocessing it) then leaves the cache as it found it."""
    base = join(lake.warehouse, MF_CACHE)
    days = io.partitions(base)
    oldest = shift_ds(max([ds, *days]), -cfg.training.label_days * cfg.training.label_windows)
    for day in days:
        if day < oldest:
            io.delete_dir(join(base, f"ds={day}"))


def fit_factorisations(lake: Lake, ds: str, cfg: Config) -> tuple[Any, Any, dict[str, float]]:
    """User–item and user–category MF on the counts as of `ds`, with the configured backend.

    Each fit is kept in `warehouse/mf_cache/ds=<ds>/` under a key of its inputs
    (`mf_cache_key`): a re-run, a retry or an evaluation of the same day reads it back (ALS is
    deterministic here: same factors). With `mf.serving=refit` the serving fit of day d and the
    cutoff fit of day d + training.label_days factorise the same counts and share one entry."""
    from models.ranking.mf import MFModel, fit_mf

    params = mf_params(cfg)
    fit = fit_mf
    if cfg.mf.backend == "spark":
        from jobs.core.spark import get_spark
        from models.ranking.distributed import fit_mf_spark

        spark = get_spark(cfg.spark)

        def fit(u: np.ndarray, i: np.ndarray, eta: np.ndarray, p: Any) -> Any:
            return fit_mf_spark(spark, u, i, eta, p)

    models, seconds = [], {}
    for name, table, key in (
        ("item", "user_item_counts", "item_id"),
        ("category", "user_category_counts", "category_id"),
    ):
        t0 = time.perf_counter()
        df = _counts(lake, ds, table, key)
        cached = join(
            lake.warehouse,
            MF_CACHE,
            f"ds={ds}",
            f"{name}-{mf_cache_key(df, table, params, cfg.mf.backend)}.npz",
        )
        if io.exists(cached):
            models.append(MFModel.from_bytes(io.read_bytes(cached)))
            seconds[name] = time.perf_counter() - t0
            seconds[f"{name}_cached"] = 1.0
            log.info("MF %s as of %s read from %s", name, ds, cached)
            continue
        t0 = time.perf_counter()
        model = fit(df["user_id"].to_numpy(), df[key].to_numpy(), df["eta"].to_numpy(), params)
        seconds[name] = time.perf_counter() - t0
        seconds[f"{name}_nnz"] = float(len(df))
        io.write_bytes(cached, model.to_bytes())  # read back once, days later: speed over size
        models.append(model)
    _prune_mf_cache(lake, ds, cfg)
    return models[0], models[1], seconds


TABLES: tuple[tuple[str, str], ...] = (
    ("user_item_counts", "item_id"),
    ("user_category_counts", "category_id"),
)


def _counts(lake: Lake, ds: str, table: str, key: str) -> pd.DataFrame:
    """user_id, key, eta (> 0) of a count table as of `ds`."""
    df = io.read_parquet(lake.feature(table, ds), ["user_id", key, "eta"], marker="_SUCCESS")
    return df[df["eta"] > 0]


def fold_in_factorisations(
    lake: Lake, ds: str, cfg: Config, mf_item: Any, mf_cat: Any
) -> tuple[Any, Any]:
    """`mf_item` and `mf_cat`'s entity factors with every user's factors solved from the
    counts as of `ds` (`models.ranking.mf.fold_in`, the loss of `mf.backend`)."""
    from models.ranking.mf import fold_in

    params = mf_params(cfg)
    style = "spark" if cfg.mf.backend == "spark" else "implicit"
    out = []
    for model, (table, key) in zip((mf_item, mf_cat), TABLES, strict=True):
        df = _counts(lake, ds, table, key)
        out.append(
            fold_in(
                model,
                df["user_id"].to_numpy(object),
                df[key].to_numpy(object),
                df["eta"].to_numpy(np.float64),
                params,
                style,
            )
        )
    return out[0], out[1]


def window_factorisations(lake: Lake, start: str, cfg: Config) -> tuple[Any, Any, float]:
    """(item MF, category MF, seconds) the engagement examples of a label window starting at
    `start` are built with: the fit as of `start`, its users folded in with
    `mf.serving=fold_in` (the way `serving_factorisations` gives them at serving)."""
    t0 = time.perf_counter()
    mf_item, mf_cat, _ = fit_factorisations(lake, start, cfg)
    if cfg.mf.serving == "fold_in":
        mf_item, mf_cat = fold_in_factorisations(lake, start, cfg, mf_item, mf_cat)
    return mf_item, mf_cat, time.perf_counter() - t0


def serving_factorisations(
    lake: Lake, ds: str, cfg: Config, cutoff_item: Any, cutoff_cat: Any
) -> tuple[Any, Any, dict[str, float]]:
    """(item MF, category MF, timings) rank serves with on `ds`, given the newest label
    window's factors (`window_factorisations` as of cutoff). fold_in: the cutoff's item and
    category factors, users folded in from the counts as of `ds`, so the heads and the φ → q
    map see r̂, ŝ and g in the space they were trained in (a user whose counts did not change
    gets the same factors). refit: a new fit on all data before `ds`."""
    if cfg.mf.serving == "refit":
        return fit_factorisations(lake, ds, cfg)
    t0 = time.perf_counter()
    mf_item, mf_cat = fold_in_factorisations(lake, ds, cfg, cutoff_item, cutoff_cat)
    return mf_item, mf_cat, {"fold_in": time.perf_counter() - t0}
