"""Export writer, verification and atomic publish on tiny hand-written pages."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import orjson
import pandas as pd
import pytest
from support.exports import (
    CORRUPTIONS,
    DS,
    ITEMS,
    expected_page,
    make_default,
    make_pages,
    read_all,
    write,
)

from jobs.core.config import Config, ExportConfig, PageConfig
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from jobs.daily import export as export_job
from serving_export.export.format import LMDB_FILE, MANIFEST_FILE, PARQUET_FILE
from serving_export.export.verify import ExportInvalid, verify_export
from serving_export.export.writer import write_export, write_export_file
from serving_export.publish import current_ds, publish
from validation.gx import ValidationFailed


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_files_and_manifest(lake):
    m = write(lake, DS)
    d = lake.export(DS)
    assert sorted(os.listdir(d)) == [MANIFEST_FILE, LMDB_FILE, PARQUET_FILE]  # no lock, no tmp
    on_disk = json.loads(Path(os.path.join(d, MANIFEST_FILE)).read_text())
    assert on_disk == m
    assert (m["ds"], m["users"], m["rows"], m["slots_max"]) == (DS, 3, 4 * 6, 2)
    assert m["model_versions"] == {"mf": "7", "engagement": "3"} and m["config_hash"] == "cafe"
    assert m["created_at"].endswith("+00:00")
    for name in (PARQUET_FILE, LMDB_FILE):
        data = Path(os.path.join(d, name)).read_bytes()
        assert m["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert m["bytes_per_user"] == round(m["files"][LMDB_FILE]["bytes"] / 3, 1)
    assert m["bytes_per_user_parquet"] == round(m["files"][PARQUET_FILE]["bytes"] / 3, 1)
    assert m["context_default_pages"] == 0
    pq = pd.read_parquet(os.path.join(d, PARQUET_FILE))
    assert len(pq) == 24 and list(pq.columns)[:3] == ["user_id", "slot", "carousel_id"]
    assert list(pq.columns)[8:10] == ["item_score", "propensity"]
    assert pq["propensity"].dtype == "float64"
    assert pq.equals(pq.sort_values(["user_id", "slot", "item_rank"]).reset_index(drop=True))
    # propensities round-trip exactly into parquet (only the JSON rounds them)
    src = pd.concat([make_pages(["u1", "u2", "u3"]), make_default()])
    src = src.sort_values(["user_id", "slot", "item_rank"]).reset_index(drop=True)
    assert pq["propensity"].tolist() == src["propensity"].tolist()
    assert verify_export(d) == m


def test_lmdb_values_equal_pages_in_order(lake):
    users = ["u1", "u2", "u3"]
    write(lake, DS, users)
    values = read_all(lake.export(DS))
    assert sorted(values) == [DEFAULT_PAGE_KEY.encode(), b"u1", b"u2", b"u3"]
    pages = make_pages(users)
    for u in users:
        raw = values[u.encode()]
        assert b", " not in raw and b": " not in raw  # compact
        assert orjson.loads(raw) == expected_page(pages, u, DS)
    default = orjson.loads(values[DEFAULT_PAGE_KEY.encode()])
    assert default == expected_page(make_default(), DEFAULT_PAGE_KEY, DS)
    assert default["fallback"] is True and default["model_version"] == "popular-1"
    assert list(default) == ["user_id", "ds", "model_version", "fallback", "carousels"]
    item = orjson.loads(values[b"u1"])["carousels"][0]["items"][1]
    assert list(item) == ["item_id", "rank", "score", "propensity", "reason"]
    assert item["propensity"] == 0.142857  # 1/7 to 6 significant digits
    assert b'"propensity":1.0,' in values[b"u1"]  # a deterministic placement stays a float
    items = {k: orjson.loads(v) for k, v in read_all(lake.export(DS), b"items").items()}
    shown = set(pages.item_id) | set(make_default().item_id)
    assert set(items) == {i.encode() for i in shown}
    assert items[b"it1"] == {
        "item_id": "it1",
        "title": "Item 1",
        "category_id": "c1",
        "brand": "b",
        "price": 1.5,
    }


def test_chunking_order_and_map_growth_do_not_change_values(lake):
    users = [f"user{i:03d}" for i in range(60)] + ["Z", "a.b@c"]
    pages = make_pages(users, slots=4, items=5).sample(frac=1.0, random_state=3)  # shuffled
    common = {"ds": DS, "model_versions": {}, "config_hash": "x"}
    m = write_export(
        lake.export(DS),
        pages,
        make_default(),
        ITEMS,
        map_size_gb=1e-9,  # far too small: the writer must grow the map
        chunk_rows=7,
        **common,
    )
    assert m["files"][LMDB_FILE]["bytes"] > 1 << 16
    pages = make_pages(users, slots=4, items=5)
    write_export(
        lake.export("2024-03-02"), pages, make_default(), ITEMS, chunk_rows=10_000_000, **common
    )
    a, b = read_all(lake.export(DS)), read_all(lake.export("2024-03-02"))
    assert list(a) == sorted(a) and len(a) == len(users) + 1
    assert a == b
    assert orjson.loads(a[b"user007"]) == expected_page(pages, "user007", DS)


def test_the_file_writer_equals_the_in_memory_writer(lake, tmp_path):
    """The export job's path (the rank step's shuffled Parquet file, read as dictionaries and
    sorted by code, chunk by chunk) writes the same bytes as `write_export`."""
    users = [f"user{i:03d}" for i in range(40)] + ["Z", "a.b@c", "__default__:mobile:north"]
    pages = make_pages(users, slots=3, items=4)
    default = make_default(slots=3, items=4)
    shuffled = pd.concat([pages, default]).sample(frac=1.0, random_state=5)
    path = str(tmp_path / "ranked.parquet")
    shuffled.to_parquet(path, row_group_size=50)  # pages split across row groups
    common = {"ds": DS, "model_versions": {"mf": "7"}, "config_hash": "x", "map_size_gb": 0.01}
    seen: list[int] = []
    a = write_export(lake.export(DS), pages, default, ITEMS, chunk_rows=30, **common)
    b = write_export_file(
        lake.export("2024-03-02"),
        path,
        ITEMS,
        chunk_rows=30,
        on_chunk=lambda part: seen.append(part.num_rows),
        **common,
    )
    assert a["files"] == b["files"]  # same sizes and sha256: same bytes
    assert {k: v for k, v in a.items() if k != "created_at"} == {
        k: v for k, v in b.items() if k != "created_at"
    }
    assert sum(seen) == len(shuffled) and len(seen) > 1 and all(n % 12 == 0 for n in seen)
    with pytest.raises(ValueError, match="default_page is empty"):
        pages.to_parquet(path)
        write_export_file(lake.export("2024-03-03"), path, ITEMS, **common)


def test_arrow_tables_in_key_order_or_not_write_the_same_bytes_as_frames(lake):
    """The refresh hands the writer Arrow tables (strings as dictionaries); rows already in key
    order are taken as they are, others are sorted: the bytes equal the DataFrame path's."""
    import pyarrow as pa

    users = [f"user{i:03d}" for i in range(25)] + ["Z", "a.b@c"]
    pages = make_pages(users, slots=3, items=4)
    default = make_default(slots=3, items=4)
    common = {"ds": DS, "model_versions": {"mf": "7"}, "config_hash": "x", "map_size_gb": 0.01}
    a = write_export(lake.export(DS), pages, default, ITEMS, chunk_rows=30, **common)

    def arrow(frame: pd.DataFrame) -> pa.Table:
        strings = frame.select_dtypes(object).columns
        return pa.Table.from_pandas(
            frame.astype({c: "category" for c in strings}), preserve_index=False
        )

    in_order = pages.sort_values(
        ["user_id", "slot", "item_rank"],
        key=lambda c: c.map(lambda v: v.encode() if isinstance(v, str) else v),
    )
    shuffled = pages.sample(frac=1.0, random_state=3)
    for i, frame in enumerate((in_order, shuffled)):
        b = write_export(
            lake.export(f"2024-03-0{i + 2}"),
            arrow(frame),
            arrow(default),
            ITEMS,
            chunk_rows=30,
            **common,
        )
        assert a["files"] == b["files"]  # same sizes and sha256: same bytes


def test_writer_rejects_bad_input(lake):
    with pytest.raises(ValueError, match="reserved"):
        write_export(
            lake.export(DS),
            make_default(),
            make_default(),
            ITEMS,
            ds=DS,
            model_versions={},
            config_hash="",
        )
    with pytest.raises(ValueError, match="not servable"):
        write(lake, DS, ["ok", "../etc"])
    dup = pd.concat([make_pages(["u1"]), make_pages(["u1"]).head(1)])
    with pytest.raises(ValueError, match="duplicate"):
        write_export(
            lake.export(DS), dup, make_default(), ITEMS, ds=DS, model_versions={}, config_hash=""
        )
    with pytest.raises(ValueError, match="missing column"):
        write_export(
            lake.export(DS),
            make_pages(["u"]).drop(columns="reason"),
            make_default(),
            ITEMS,
            ds=DS,
            model_versions={},
            config_hash="",
        )
    with pytest.raises(ValueError, match=r"missing column\(s\): propensity"):
        write_export(
            lake.export(DS),
            make_pages(["u"]),
            make_default().drop(columns="propensity"),
            ITEMS,
            ds=DS,
            model_versions={},
            config_hash="",
        )
    write(lake, DS)
    with pytest.raises(FileExistsError):
        write(lake, DS)


def test_context_default_pages_are_exported_as_fallback_pages(lake):
    ctx = "__default__:mobile:north"
    m = write(lake, DS, ["u1", ctx])
    d = lake.export(DS)
    assert (m["users"], m["context_default_pages"]) == (2, 1)
    values = read_all(d)
    assert sorted(values) == [DEFAULT_PAGE_KEY.encode(), ctx.encode(), b"u1"]
    page = orjson.loads(values[ctx.encode()])
    assert page == expected_page(make_pages(["u1", ctx]), ctx, DS) and page["fallback"] is True
    assert orjson.loads(values[b"u1"])["fallback"] is False
    assert ctx in set(pd.read_parquet(os.path.join(d, PARQUET_FILE))["user_id"])
    assert verify_export(d) == m


def test_verify_catches_corruption_and_bad_manifest(lake):
    write(lake, DS)
    d = lake.export(DS)
    path = os.path.join(d, LMDB_FILE)
    original = Path(path).read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(flipped))
    with pytest.raises(ExportInvalid, match="sha256"):
        verify_export(d)
    Path(path).write_bytes(original)
    verify_export(d)

    mf = os.path.join(d, MANIFEST_FILE)
    manifest = json.loads(Path(mf).read_text())
    broken = {k: v for k, v in manifest.items() if k != "users"}
    Path(mf).write_text(json.dumps(broken))
    with pytest.raises(ExportInvalid, match="users"):
        verify_export(d)
    Path(mf).write_text(json.dumps({**manifest, "users": 5}))
    with pytest.raises(ExportInvalid, match="keys"):
        verify_export(d)
    os.remove(mf)
    with pytest.raises(ExportInvalid, match="missing"):
        verify_export(d)


def test_publish_is_atomic_and_refuses_bad_exports(lake):
    assert current_ds(lake) is None
    write(lake, DS)
    assert publish(lake, DS) == lake.export(DS)
    assert Path(lake.current).read_text() == DS + "\n" and current_ds(lake) == DS
    assert [n for n in os.listdir(lake.exports) if "tmp" in n] == []

    bad = "2024-03-02"
    write(lake, bad)
    with open(os.path.join(lake.export(bad), PARQUET_FILE), "ab") as f:
        f.write(b"junk")
    with pytest.raises(ExportInvalid, match="pages.parquet"):
        publish(lake, bad)
    with pytest.raises(ExportInvalid, match="missing"):
        publish(lake, "2024-03-09")  # never written
    assert current_ds(lake) == DS


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_publish_refuses_each_corruption_and_keeps_current(lake, kind):
    write(lake, DS)
    publish(lake, DS)
    mtime = os.stat(lake.current).st_mtime_ns
    bad = "2024-03-02"
    write(lake, bad)
    corrupt, reason = CORRUPTIONS[kind]
    corrupt(lake.export(bad))
    for attempt in (
        lambda: publish(lake, bad),
        lambda: export_job.publish(lake, bad, _job_cfg(slots=2)),  # the DAG's publish step
    ):
        with pytest.raises(ExportInvalid, match=reason):
            attempt()
        assert current_ds(lake) == DS and os.stat(lake.current).st_mtime_ns == mtime
    verify_export(lake.export(DS))
    assert [n for n in os.listdir(lake.exports) if "tmp" in n] == []


def test_keep_last_pruning_and_rollback(lake):
    days = [f"2024-03-{d:02d}" for d in range(1, 7)]
    for ds in days:
        write(lake, ds)
    publish(lake, days[-1], keep_last=3)
    assert sorted(os.listdir(lake.exports)) == ["CURRENT"] + [f"ds={d}" for d in days[-3:]]
    # Rollback to an older export: newer ones are never deleted.
    publish(lake, days[-3], keep_last=1)
    assert current_ds(lake) == days[-3]
    assert sorted(os.listdir(lake.exports)) == ["CURRENT"] + [f"ds={d}" for d in days[-3:]]
    publish(lake, days[-1], keep_last=2)
    assert sorted(os.listdir(lake.exports)) == ["CURRENT"] + [f"ds={d}" for d in days[-2:]]
    with pytest.raises(ValueError, match="keep_last"):
        publish(lake, days[-1], keep_last=0)


def _job_lake(lake: Lake, *, page_stats: pd.DataFrame | None, out_of_stock: str = "it99") -> None:
    """The inputs the export job reads: ranked pages (+ page_stats), items, users, rank report."""
    ctx = "__default__:mobile:north"
    pages = pd.concat([make_pages(["u1", "u2", ctx]), make_default()]).fillna({"reason": "x"})
    pdir = os.path.join(lake.warehouse, "pages", f"ds={DS}")
    os.makedirs(pdir, exist_ok=True)
    pages.to_parquet(os.path.join(pdir, "pages.parquet"))
    stats_path = os.path.join(pdir, "page_stats.parquet")
    if page_stats is not None:
        page_stats.to_parquet(stats_path)
    elif os.path.exists(stats_path):
        os.remove(stats_path)
    items = pd.concat([ITEMS, pd.DataFrame({"item_id": ["it99"], "category_id": ["c1"]})])
    items["in_stock"] = items["item_id"] != out_of_stock
    for path, df in (
        (os.path.join(lake.warehouse, "items", f"ds={DS}"), items),
        (lake.feature("user_activity", DS), pd.DataFrame({"user_id": ["u1", "u2"]})),
    ):
        os.makedirs(path, exist_ok=True)
        df.to_parquet(os.path.join(path, "part-0.parquet"))
    os.makedirs(lake.reports(DS), exist_ok=True)
    Path(os.path.join(lake.reports(DS), "rank.json")).write_text('{"model_version": "mf-7"}')


def _job_cfg(slots: int) -> Config:
    page = PageConfig(slots=slots, items_per_carousel=3, candidate_items=3, min_items=1)
    return Config(page=page, export=ExportConfig(map_size_gb=0.01))


def test_export_job_checks_stock_and_page_length_and_reports_sizes(lake):
    keys = ["u1", "u2", "__default__:mobile:north", DEFAULT_PAGE_KEY]
    stats = pd.DataFrame({"user_id": keys, "slots": 2, "exhausted": [False, True, False, True]})
    _job_lake(lake, page_stats=stats)
    out = export_job.run(lake, DS, _job_cfg(slots=2))
    m = verify_export(out["path"])
    assert (out["users"], m["context_default_pages"]) == (3, 1)  # u1, u2 and the context page
    assert out["bytes_per_user"] == m["bytes_per_user"] > 0
    assert out["bytes_per_user_parquet"] == m["bytes_per_user_parquet"] > 0
    assert sorted(read_all(out["path"])) == sorted(k.encode() for k in keys)

    # Z = 3 with pages of 2 slots: u1 and the context page were not exhausted; it1 is shown but
    # out of stock. Both rules are named and the published export is left alone.
    _job_lake(lake, page_stats=stats, out_of_stock="it1")
    with pytest.raises(ValidationFailed) as err:
        export_job.run(lake, DS, _job_cfg(slots=3))
    msg = str(err.value)
    assert "_short_page_not_exhausted" in msg and "'u1'" in msg and "'it1'" in msg
    assert "_out_of_stock_item" in msg
    assert verify_export(lake.export(DS)) == m
    assert [n for n in os.listdir(lake.exports) if "staging" in n] == []

    # Page dirs written before page_stats existed: the page-length rule is skipped.
    _job_lake(lake, page_stats=None)
    assert export_job.run(lake, DS, _job_cfg(slots=3))["users"] == 3
