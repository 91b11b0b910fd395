"""`homepage bench serve` smoke test: a tiny export, one worker, short levels (no speed asserts)."""

from __future__ import annotations

import os

import orjson

from jobs.bench.serve import bench_serve, format_report
from jobs.bench.synthetic_export import synthetic_export
from jobs.core.lake import Lake
from serving_export.export.format import LMDB_FILE
from serving_export.export.verify import open_lmdb_readonly
from serving_export.publish import current_ds


def test_synthetic_export_pages(tmp_path):
    lake = synthetic_export(str(tmp_path / "lake"), users=50, slots=3, items=4, seed=3)
    ds = current_ds(lake)
    assert ds is not None
    env = open_lmdb_readonly(lake.export(ds))
    try:
        with env.begin(db=env.open_db(b"pages", create=False)) as txn:
            page = orjson.loads(txn.get(b"u0000007"))
            assert txn.stat(env.open_db(b"pages", create=False))["entries"] == 51
    finally:
        env.close()
    assert page["user_id"] == "u0000007" and page["fallback"] is False
    assert [c["slot"] for c in page["carousels"]] == [1, 2, 3]
    assert len({c["carousel_id"] for c in page["carousels"]}) == 3
    for c in page["carousels"]:
        assert [i["rank"] for i in c["items"]] == [1, 2, 3, 4]
        scores = [i["score"] for i in c["items"]]
        assert scores == sorted(scores, reverse=True)
    # a second call reuses the published export
    again = synthetic_export(str(tmp_path / "lake"), users=50, slots=3, items=4, seed=3)
    assert again == Lake(str(tmp_path / "lake"))


def test_bench_serve_smoke(tmp_path):
    lines: list[str] = []
    res = bench_serve(
        root=str(tmp_path),
        users=200,
        slots=3,
        items=3,
        workers=1,
        rates=[200],
        concurrency=[4],
        seconds=1.0,
        requests=2000,
        clients=1,
        warmup_s=0.2,
        unknown_share=0.1,
        say=lines.append,
    )
    assert res["export"]["users"] == 200
    assert (
        os.path.getsize(os.path.join(res["export"]["lake"], "exports", "ds=2026-01-01", LMDB_FILE))
        == res["export"]["lmdb_bytes"]
    )
    assert [lv["mode"] for lv in res["levels"]] == ["rate", "closed"]
    for lv in res["levels"]:
        assert lv["requests"] > 0
        assert lv["errors"] == 0 and lv["non_200"] == 0 and lv["fallback_mismatch"] == 0
        assert lv["statuses"] == {"200": lv["requests"]}
        assert 0 < lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"] <= lv["max_ms"]
        assert lv["rps"] > 0
    rate, closed = res["levels"]
    assert rate["target_rps"] == 200 and rate["requests"] <= 200
    assert rate["service_p99_ms"] > 0
    assert closed["concurrency"] == 4 and closed["requests"] <= 2000
    (mem,) = res["memory"]
    assert mem["rss_mib"] > 0 and mem["pss_mib"] > 0
    # the worker has read the export's pages through its mapping: resident, at most the whole
    # file (both in MiB rounded to one decimal)
    assert 0 < mem["export_rss_mib"] <= round(res["export"]["lmdb_bytes"] / 2**20, 1)
    assert 0 < mem["export_pss_mib"] <= mem["export_rss_mib"] <= mem["rss_mib"]
    report = format_report(res)
    assert "| rate 200/s" in report and "| closed, 4 conns" in report and "PSS" in report
