"""Export job: validate the ranked pages, write pages.parquet + key-value file + MANIFEST."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import pandas as pd

from jobs import io
from jobs.config import Config
from jobs.lake import DEFAULT_PAGE_KEY, Lake, join, local_path

log = logging.getLogger(__name__)


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Write `exports/ds=<ds>/` completely, or not at all (built aside, then renamed in)."""
    from serving_export.writer import verify_export, write_export
    from validation.export import validate_pages

    pages_dir = local_path(join(lake.warehouse, "pages", f"ds={ds}"))
    pages = pd.read_parquet(os.path.join(pages_dir, "pages.parquet"))
    # One row per page key (user_id, slots, exhausted); page dirs from before it existed lack it,
    # and then the "Z slots unless the policy ran out of candidates" rule is skipped.
    stats_path = os.path.join(pages_dir, "page_stats.parquet")
    page_stats = pd.read_parquet(stats_path) if os.path.exists(stats_path) else None
    if page_stats is None:
        log.warning("export for %s: no %s; skipping the page-length rule", ds, stats_path)
    items = pd.read_parquet(
        local_path(join(lake.warehouse, "items", f"ds={ds}")),
        columns=["item_id", "title", "category_id", "brand", "price", "in_stock"],
    )
    known = pd.read_parquet(local_path(lake.feature("user_activity", ds)), columns=["user_id"])[
        "user_id"
    ]
    if io.list_files(lake.users):
        known = pd.concat(
            [known, pd.read_parquet(local_path(lake.users), columns=["user_id"])["user_id"]]
        )
    known = known.astype(str).unique()
    # Context default pages ("__default__:<context>") are not known users: they are exported
    # like any page (among the regular pages) but nothing requires them to exist.
    validation = validate_pages(
        pages,
        [*known, DEFAULT_PAGE_KEY],
        slots=cfg.page.slots,
        per_carousel=cfg.page.items_per_carousel,
        in_stock_items=items.loc[items["in_stock"].fillna(True).astype(bool), "item_id"].to_numpy(),
        page_stats=page_stats,
    )
    ranked = io.read_json(join(lake.reports(ds), "rank.json"))  # the champion that ranked

    final = local_path(lake.export(ds))
    staging = local_path(join(lake.exports, f".staging-ds={ds}-{os.getpid()}"))
    shutil.rmtree(staging, ignore_errors=True)
    default = pages[pages["user_id"] == DEFAULT_PAGE_KEY]
    user_pages = pages[pages["user_id"] != DEFAULT_PAGE_KEY]
    manifest = write_export(
        staging,
        user_pages,
        default,
        items,
        ds=ds,
        model_versions={
            k: str(v)
            for k, v in {
                "model": ranked["model_version"],
                "registry_version": ranked.get("registry_version"),
                "mlflow_run_id": ranked.get("run_id"),
            }.items()
            if v is not None
        },
        config_hash=cfg.hash(),
        map_size_gb=cfg.export.map_size_gb,
    )
    verify_export(staging)
    # swap the finished export in; a reader holding the old files keeps them open until it closes
    if os.path.exists(final):
        trash = final + f".old-{os.getpid()}"
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    log.info(
        "export for %s: %d users, %d rows, %.0f bytes/user (lmdb), %.0f bytes/user (parquet)",
        ds,
        manifest["users"],
        manifest["rows"],
        manifest["bytes_per_user"],
        manifest["bytes_per_user_parquet"],
    )
    return {
        "ds": ds,
        "path": final,
        "validation": validation,
        "users": manifest["users"],
        "rows": manifest["rows"],
        "bytes_per_user": manifest["bytes_per_user"],
        "bytes_per_user_parquet": manifest["bytes_per_user_parquet"],
    }


def publish(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Verify `exports/ds=<ds>` and atomically make it the served export."""
    from serving_export.publish import publish as do_publish

    current = do_publish(lake, ds, keep_last=cfg.export.keep_last)
    return {"ds": ds, "current": current}
