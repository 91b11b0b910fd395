"""Export job: validate the ranked pages, write pages.parquet + key-value file + MANIFEST."""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
from typing import Any

import pandas as pd

from jobs.core import io, remote
from jobs.core.config import Config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, join, local_path

log = logging.getLogger(__name__)


def _export_inputs(
    lake: Lake, ds: str, pages_uri: str
) -> tuple[pd.DataFrame | None, pd.DataFrame, Any, Any, dict[str, Any]]:
    """(page stats or None, items, known user ids, in-stock item ids, the rank report)."""
    if io.is_remote(pages_uri):
        remote.check_complete(pages_uri, "ranked pages")  # uploaded whole by the rank step
    # One row per page key (user_id, slots, exhausted); page dirs from before it existed lack it,
    # and then the "Z slots unless the policy ran out of candidates" rule is skipped.
    stats_path = join(pages_uri, "page_stats.parquet")
    page_stats = io.read_parquet(stats_path) if io.exists(stats_path) else None
    if page_stats is None:
        log.warning("export for %s: no %s; skipping the page-length rule", ds, stats_path)
    items = io.read_parquet(
        join(lake.warehouse, "items", f"ds={ds}"),
        ["item_id", "title", "category_id", "brand", "price", "in_stock"],
        marker="_SUCCESS",
    )
    known = io.read_parquet(lake.feature("user_activity", ds), ["user_id"], marker="_SUCCESS")[
        "user_id"
    ]
    if io.list_files(lake.users):
        known = pd.concat([known, io.read_parquet(lake.users, ["user_id"])["user_id"]])
    known = known.astype(str).unique()
    in_stock = items.loc[items["in_stock"].fillna(True).astype(bool), "item_id"].to_numpy()
    ranked = io.read_json(join(lake.reports(ds), "rank.json"))  # the champion that ranked
    return page_stats, items, known, in_stock, ranked


def _model_versions(ranked: dict[str, Any]) -> dict[str, str]:
    """The MANIFEST's model versions: of the champion that ranked the pages."""
    return {
        k: str(v)
        for k, v in {
            "model": ranked["model_version"],
            "registry_version": ranked.get("registry_version"),
            "mlflow_run_id": ranked.get("run_id"),
        }.items()
        if v is not None
    }


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Write `exports/ds=<ds>/` completely, or not at all (built aside, then swapped in).

    The rank step's pages are read, sorted, checked and written chunk by chunk of whole pages
    (`write_export_file`): each chunk is summarised page by page for the export suite
    (`validation.export.page_summary`), and the suite runs on the summary of every page before
    the export is swapped in. A failed check leaves the previous `ds=<ds>` as it was.
    """
    from serving_export.export.verify import verify_export
    from serving_export.export.writer import write_export_file
    from validation.export import check_summary, page_summary

    pages_uri = join(lake.warehouse, "pages", f"ds={ds}")
    page_stats, items, known, in_stock, ranked = _export_inputs(lake, ds, pages_uri)

    summaries: list[pd.DataFrame] = []

    def summarise(part: Any) -> None:
        summaries.append(
            page_summary(
                part,
                slots=cfg.page.slots,
                per_carousel=cfg.page.items_per_carousel,
                in_stock_items=in_stock,
            )
        )

    to_object_store = io.is_remote(lake.export(ds))
    # on a remote lake: built and verified the same way in a local scratch directory, then
    # uploaded with MANIFEST.json last (jobs/core/remote.py upload_dir): readers refuse it until then
    scratch = remote.scratch_dir("export") if to_object_store else None
    final = os.path.join(scratch, f"ds={ds}") if scratch else local_path(lake.export(ds))
    fs, pages_path = io.filesystem(join(pages_uri, "pages.parquet"))
    # Built aside (`.staging-ds=<ds>-<pid>/`), verified, then swapped in whole: a run killed
    # half-way leaves the previous `ds=<ds>` (and CURRENT) as they were, and its retry first
    # deletes the leftovers (jobs.core.io.recover_dir). A reader holding the old files keeps them.
    with io.atomic_dir(final) as staging:
        manifest = write_export_file(
            staging,
            pages_path,
            items,
            ds=ds,
            model_versions=_model_versions(ranked),
            config_hash=cfg.hash(),
            map_size_gb=cfg.export.map_size_gb,
            filesystem=fs,
            on_chunk=summarise,
        )
        # Context default pages ("__default__:<context>") are not known users: they are
        # exported like any page but nothing requires them to exist.
        validation = check_summary(
            pd.concat(summaries, ignore_index=True),
            [*known, DEFAULT_PAGE_KEY],
            slots=cfg.page.slots,
            page_stats=page_stats,
        )
        verify_export(staging)
    if scratch:
        from serving_export.export.format import MANIFEST_FILE

        remote.upload_dir(final, lake.export(ds), last=MANIFEST_FILE)
        shutil.rmtree(scratch, ignore_errors=True)
        final = lake.export(ds)
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
    dropped = []
    if not io.is_remote(lake.root):  # the new export holds what older days' refreshes logged
        dropped = drop_refresh_logs(lake, ds)
    return {"ds": ds, "current": current, "dropped_refresh_logs": dropped}


def publish_newest(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """The pipeline's publish step: `publish`, unless `exports/CURRENT` names a newer day.

    A re-run or a backfill of a past day rewrites that day's export (verified here, so an
    invalid one still fails the step) and leaves the served one alone; `homepage publish --ds`
    (`publish` above) still points CURRENT at an older export on purpose, as a rollback.
    """
    from serving_export.publish import current_ds, verify_export_uri

    try:
        current = current_ds(lake)
    except ValueError:  # a garbled CURRENT: publishing repairs it
        current = None
    if current is not None and current > ds:
        verify_export_uri(lake.export(ds))
        log.info("exports/CURRENT names %s, newer than %s: not published", current, ds)
        return {"ds": ds, "current": lake.export(current), "published": False}
    return {**publish(lake, ds, cfg), "published": True}


def drop_refresh_logs(lake: Lake, keep_base: str) -> list[str]:
    """Remove the intra-day refresh logs of days other than `keep_base`: the newly published
    export was built from everything they logged (the daily ingest has those events)."""
    root = local_path(lake.refresh_logs)
    gone = []
    for path in glob.glob(os.path.join(root, "ds=*")):
        ds = path.rsplit("ds=", 1)[-1]
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", ds) and ds != keep_base:
            shutil.rmtree(path, ignore_errors=True)
            gone.append(ds)
    return gone
