"""Train job: implicit MF on user–item and user–category counts; log to MLflow; save factors."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from jobs import io
from jobs.config import Config
from jobs.lake import Lake, join, local_path

log = logging.getLogger(__name__)


def mf_params(cfg: Config) -> Any:
    """The model's own params from the job config (models/ never imports jobs/)."""
    import dataclasses

    from models.mf import MFParams

    return MFParams(**dataclasses.asdict(cfg.mf))


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Fit both factorisations for `ds`, write them to `warehouse/models/ds=`, log an MLflow run."""
    import mlflow
    import pandas as pd

    from jobs.tracking import experiment
    from models.mf import fit_mf

    params = mf_params(cfg)
    ui = pd.read_parquet(
        local_path(lake.feature("user_item_counts", ds)), columns=["user_id", "item_id", "eta"]
    )
    uc = pd.read_parquet(
        local_path(lake.feature("user_category_counts", ds)),
        columns=["user_id", "category_id", "eta"],
    )
    ui = ui[ui["eta"] > 0]
    uc = uc[uc["eta"] > 0]
    out_dir = local_path(lake.models(ds))
    os.makedirs(out_dir, exist_ok=True)

    t0 = time.perf_counter()
    item_model = fit_mf(
        ui["user_id"].to_numpy(), ui["item_id"].to_numpy(), ui["eta"].to_numpy(), params
    )
    t_item = time.perf_counter() - t0
    t0 = time.perf_counter()
    cat_model = fit_mf(
        uc["user_id"].to_numpy(), uc["category_id"].to_numpy(), uc["eta"].to_numpy(), params
    )
    t_cat = time.perf_counter() - t0
    item_model.save(os.path.join(out_dir, "mf_item.npz"))
    cat_model.save(os.path.join(out_dir, "mf_category.npz"))

    exp_id = experiment(lake, cfg)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{ds}") as run:
        mlflow.set_tags({"ds": ds, "step": "train", "config_hash": cfg.hash()})
        mlflow.log_params(
            {f"mf.{k}": v for k, v in vars(params).items()} | {"ds": ds, "config_hash": cfg.hash()}
        )
        mlflow.log_metrics(
            {
                "item.users": len(item_model.user_ids),
                "item.items": len(item_model.item_ids),
                "item.nnz": len(ui),
                "item.fit_seconds": t_item,
                "category.users": len(cat_model.user_ids),
                "category.categories": len(cat_model.item_ids),
                "category.nnz": len(uc),
                "category.fit_seconds": t_cat,
                "item.mean_abs_factor": float(np.abs(item_model.item_factors).mean()),
            }
        )
        mlflow.log_artifacts(out_dir, artifact_path="mf")
        run_id = run.info.run_id
    version = f"{ds}.{run_id[:8]}"
    info = {
        "ds": ds,
        "run_id": run_id,
        "model_version": version,
        "path": out_dir,
        "fit_seconds": {"item": t_item, "category": t_cat},
    }
    io.write_json(join(lake.models(ds), "MODEL.json"), info)
    log.info("trained MF for %s: %s", ds, info)
    return info
