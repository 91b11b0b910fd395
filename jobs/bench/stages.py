"""Benchmarks (`homepage bench …`): wall time, throughput and peak memory of pipeline stages.

Run on generated lakes kept under `var/bench/` (generated once per size and seed). Reported
figures are for the machine it runs on; nothing here is asserted by `make test`.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from typing import Any

from jobs.core.lake import Lake


def _peak_rss_gb() -> float:
    """Peak RSS of this Python process and its *finished* children, in GiB (the live Spark JVM
    is not included: see `_jvm_rss_gb`)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + kids) / 1024**2, 2)


def _jvm_rss_gb() -> float | None:
    """Current RSS of the Spark driver JVM (a live child, so not in RUSAGE_CHILDREN yet)."""
    try:
        import subprocess

        out = subprocess.run(
            ["ps", "-o", "rss=", "--ppid", str(os.getpid())],
            capture_output=True,
            text=True,
            check=False,
        )
        vals = [int(x) for x in out.stdout.split()]
        return round(sum(vals) / 1024**2, 2) if vals else None
    except OSError:
        return None


def ensure_lake(
    root: str, *, users: int, items: int, days: int, seed: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Generate the lake once; later runs reuse it (its stats are cached beside it)."""
    from jobs.inputs.generate import generate_lake

    stats_path = os.path.join(root, "_bench_generate.json")
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            return json.load(f)
    say(f"generating {users:,} users x {items:,} items x {days} days into {root}")
    stats = generate_lake(root, users=users, items=items, days=days, seed=seed, overwrite=True)
    with open(stats_path, "w") as f:
        json.dump(stats, f)
    return stats


def bench_features(
    *,
    users: int,
    items: int,
    days: int,
    seed: int,
    root: str,
    overrides: list[str],
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate (once), ingest, then time the feature stage on its own."""
    from jobs.daily.pipeline import default_ds, run_step

    gen = ensure_lake(root, users=users, items=items, days=days, seed=seed, say=say)
    lake = Lake(root)
    ds = default_ds(lake)
    result: dict[str, Any] = {
        "users": users,
        "items": items,
        "days": days,
        "events": gen["events"],
        "ds": ds,
        "generate_s": gen["seconds"],
        "overrides": overrides,
    }
    for step in ("ingest", "build_features"):
        say(f"[{users:,} users] {step} ...")
        t0 = time.perf_counter()
        out = run_step(step, lake.root, ds, overrides)
        result[f"{step}_s"] = round(time.perf_counter() - t0, 1)
        result[f"{step}_jvm_rss_gb"] = _jvm_rss_gb()
        if step == "build_features":
            result["priors_mode"] = out.get("priors_mode")
            result["tables"] = {k: v.get("rows") for k, v in out["tables"].items()}
        say(f"[{users:,} users] {step} done in {result[f'{step}_s']}s")
    result["features_events_per_s"] = round(gen["events"] / result["build_features_s"])
    result["peak_rss_gb"] = _peak_rss_gb()
    return result


def scaling_exponent(small: dict[str, Any], large: dict[str, Any], key: str) -> float:
    """b in time ∝ size^b between two runs (1 = linear)."""
    import math

    return round(math.log(large[key] / small[key]) / math.log(large["events"] / small["events"]), 2)


def bench_rank(
    *,
    users: int,
    items: int,
    days: int,
    seed: int,
    root: str,
    overrides: list[str],
    item_mode: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Page construction for every user of a generated lake: the rank step on its own.
    `item_mode="fixed"` leaves out the engagement model's predictions (the policy layer alone);
    None uses the champion's mode.

    Runs (once) whatever the lake still lacks: ingest and features, then train and promote when
    there is no champion. Reports the rank step's wall time split by part, users/s with and
    without the engagement model's predictions, and peak memory.
    """
    from jobs.core.config import load_config
    from jobs.daily.bundle import NoChampion, load_bundle
    from jobs.daily.pipeline import default_ds, run_step

    gen = ensure_lake(root, users=users, items=items, days=days, seed=seed, say=say)
    lake = Lake(root)
    ds = default_ds(lake)
    cfg = load_config(None, overrides)
    setup: dict[str, float] = {}
    if not os.path.exists(lake.feature("user_activity", ds)):
        for step in ("ingest", "build_features"):
            say(f"[{users:,} users] {step} (set-up) ...")
            t0 = time.perf_counter()
            run_step(step, lake.root, ds, overrides)
            setup[f"{step}_s"] = round(time.perf_counter() - t0, 1)
    try:
        load_bundle(lake, cfg, alias="champion")
    except NoChampion:
        from jobs.daily.registry import version_for

        steps = ["promote"] if version_for(lake, cfg, "challenger") else ["train", "promote"]
        for step in steps:
            say(f"[{users:,} users] {step} (set-up) ...")
            t0 = time.perf_counter()
            run_step(step, lake.root, ds, overrides)
            setup[f"{step}_s"] = round(time.perf_counter() - t0, 1)
    from jobs.daily import rank

    say(f"[{users:,} users] rank ({item_mode or 'champion item mode'}) ...")
    t0 = time.perf_counter()
    stats = rank.run(lake, ds, cfg, progress=say, item_mode=item_mode)
    wall = time.perf_counter() - t0
    return {
        "users": users,
        "items": items,
        "ds": ds,
        "events": gen["events"],
        "setup": setup,
        "rank_s": round(wall, 1),
        "warm_users": stats["warm_users"],
        "rows": stats["rows"],
        "pages_s": stats["pages_s"],
        "users_per_s": stats["users_per_s"],
        "threads": stats["threads"],
        "load_s": stats["load_s"],
        "parts_thread_s": stats["parts_thread_s"],
        "item_mode": stats["item_mode"],
        "peak_rss_gb": _peak_rss_gb(),
    }
