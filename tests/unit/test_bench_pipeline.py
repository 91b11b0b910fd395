"""The end-to-end benchmark's bookkeeping (the benchmark itself runs in `make bench`)."""

from __future__ import annotations

import os
import sys

import pytest

from jobs.bench.pipeline import (
    STAGES,
    _mf_cmd,
    _reset_measured_outputs,
    exponent,
    format_table,
    run_measured,
)
from jobs.core.lake import Lake


def test_exponent_is_the_power_law_slope():
    assert exponent(10.0, 100.0, 1_000, 10_000) == 1.0
    assert exponent(10.0, 10.0, 1_000, 10_000) == 0.0
    assert exponent(1.0, 4.0, 10, 20) == 2.0
    assert exponent(0.0, 4.0, 10, 20) is None


def test_run_measured_reports_wall_peak_memory_and_exit(tmp_path):
    log = str(tmp_path / "x.log")
    # a child that holds ~200 MB for half a second: the sampler must see it
    code = "b = bytearray(200 * 1024**2); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(0.6)"
    ok = run_measured([sys.executable, "-c", code], log, interval_s=0.05)
    assert ok["exit"] == 0 and ok["s"] >= 0.6
    assert ok["peak_gb"] >= 0.19 and ok["peak_anon_gb"] >= 0.19
    bad = run_measured([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log)
    assert bad["exit"] == 3
    with open(log) as f:
        assert "boom" in f.read()


def test_reset_removes_only_what_the_measured_run_writes(tmp_path):
    work = Lake(str(tmp_path))
    ds, yesterday, older = "2026-01-31", "2026-01-30", "2026-01-29"
    keep = [
        f"warehouse/events/ds={older}",
        "warehouse/features/user_activity/ds=2026-01-28",
        f"warehouse/items/ds={yesterday}",
        "warehouse/mf_cache/ds=2026-01-28",  # the set-up's factorisations as of the cutoff
    ]
    gone = [
        f"warehouse/events/ds={yesterday}",
        f"warehouse/quarantine/ds={yesterday}",
        f"warehouse/pages/ds={ds}",
        f"warehouse/items/ds={ds}",
        f"warehouse/mf_cache/ds={ds}",
        "exports/CURRENT",
        "_mlflow/mlflow.db",
    ]
    for p in keep + gone:
        os.makedirs(tmp_path / p, exist_ok=True)
    _reset_measured_outputs(work, ds)
    assert all((tmp_path / p).exists() for p in keep)
    assert not any((tmp_path / p).exists() for p in gone)


def test_the_set_up_fits_and_caches_the_factorisations_as_of_the_cutoff(tmp_path):
    import subprocess

    import pandas as pd

    lake = Lake(str(tmp_path))
    ds = "2026-01-28"
    users = [f"u{k % 9}" for k in range(40)]
    for table, key in (("user_item_counts", "item_id"), ("user_category_counts", "category_id")):
        os.makedirs(lake.feature(table, ds))
        frame = pd.DataFrame({"user_id": users, key: [f"x{k % 7}" for k in range(40)], "eta": 1.0})
        frame.drop_duplicates(["user_id", key]).to_parquet(lake.feature(table, ds) + "/p.parquet")
    cmd = _mf_cmd(lake.root, ds, ["mf.iterations=2", "mf.factors=3"], None)
    subprocess.run(
        cmd,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    cached = sorted(os.listdir(tmp_path / "warehouse" / "mf_cache" / f"ds={ds}"))
    assert [c.split("-")[0] for c in cached] == ["category", "item"]


def _result(users: int, scale: float) -> dict:
    stages = {s: {"s": 10.0 * scale, "peak_gb": 1.5} for s in STAGES}
    return {
        "users": users,
        "stages": stages,
        "total_s": sum(v["s"] for v in stages.values()),
        "peak_gb": 1.5,
    }


def test_table_has_a_row_per_stage_and_the_exponents():
    table = format_table([_result(100_000, 10.0), _result(10_000, 1.0)])
    lines = table.splitlines()
    assert lines[0].startswith("| stage | 10,000 users s | peak GiB | 100,000 users s")
    assert "b 10,000→100,000" in lines[0]
    assert len(lines) == 2 + len(STAGES) + 1
    assert lines[2].startswith("| ingest | 10.0 | 1.50 | 100.0 | 1.50 | 1.00 |")
    assert lines[-1].startswith("| **daily run** | 70.0")


@pytest.mark.parametrize("n", [1, 3])
def test_table_of_one_or_more_sizes_has_n_minus_1_exponent_columns(n):
    table = format_table([_result(10**k, float(k)) for k in range(4, 4 + n)])
    assert table.splitlines()[0].count("| b ") == n - 1
