"""The matrix factorisations of the train step: user–item and user–category MF on the counts
as of a day, with the configured backend, cached in `warehouse/mf_cache` under a key of their
inputs."""

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
    (`mf_cache_key`). The serving fit of day d and the cutoff fit of day d + training.label_days
    factorise the same counts, so a daily run reads one of its two fits from the run of
    label_days earlier instead of repeating it (ALS is deterministic here: same factors)."""
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
        df = io.read_parquet(lake.feature(table, ds), ["user_id", key, "eta"], marker="_SUCCESS")
        df = df[df["eta"] > 0]
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
