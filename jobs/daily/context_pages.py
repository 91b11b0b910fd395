"""The context default pages of the rank step: each user's segment (device, region, daypart),
the page keys of segments, and the popularity each segment's default page ranks items by."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from jobs.daily.catalogue import read_table

DAYPARTS = ("night", "morning", "afternoon", "evening")  # hours 0-5, 6-11, 12-17, 18-23


def context_segments(lake: Lake, ds: str, users: np.ndarray) -> pd.DataFrame:
    """user_id, device, region, daypart of every known user ("any" where unknown): the profile
    from the `users` table where present, else the user's main device and hour."""
    seg = pd.DataFrame({"user_id": users})
    ctx_path = lake.feature("user_context", ds)
    if io.exists(ctx_path):
        ctx = read_table(ctx_path, ["user_id", "main_device", "main_hour"])
        ctx["daypart"] = np.asarray(DAYPARTS, dtype=object)[
            (ctx["main_hour"].fillna(0).astype(int) // 6).clip(0, 3).to_numpy()
        ]
        seg = seg.merge(ctx.rename(columns={"main_device": "device"}), on="user_id", how="left")
    if io.list_files(lake.users):
        prof = read_table(lake.users, marker=None)
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
    ui = read_table(
        lake.feature("user_item_counts", ds),
        ["user_id", "item_id", "n_click", "n_add_to_cart", "n_purchase"],
    )
    n = len(catalog.item_ids)
    item = pd.Series(np.arange(n), index=catalog.item_ids).reindex(ui["item_id"].to_numpy())
    ok = item.notna().to_numpy()
    ui = ui[ok]
    item = item.to_numpy()[ok].astype(np.int64)
    engagement_weight = (ui["n_click"] + 3 * ui["n_add_to_cart"] + 5 * ui["n_purchase"]).to_numpy(
        np.float64
    )
    seg_of = seg.set_index("user_id").reindex(ui["user_id"].to_numpy())
    total = np.bincount(item, weights=engagement_weight, minlength=n)
    out = np.zeros((len(keys), n))
    for k, (device, region, daypart) in enumerate(keys):
        m = np.ones(len(ui), dtype=bool)
        for col, want in (("device", device), ("region", region), ("daypart", daypart)):
            if want != "any":
                m &= (seg_of[col] == want).to_numpy()
        counts = np.bincount(item[m], weights=engagement_weight[m], minlength=n)
        share = counts.sum() / max(total.sum(), 1e-12)
        pop = np.log1p(counts + share * total)
        out[k] = pop / pop.max() if pop.max() > 0 else pop
    return out
