"""Intra-day deltas: the writer's delta mode, publishing and pruning them, and the lookup server
overlaying the newest valid one on the daily export."""

from __future__ import annotations

import os

import orjson
import pytest
from support.exports import read_all
from support.servers import (
    DS1,
    DS2,
    ITEMS,
    USERS,
    default_pages,
    get,
    pages_for,
    wait_for,
    write,
    write_small_export,
)

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from serving_export.export.format import LMDB_FILE
from serving_export.export.verify import ExportInvalid, verify_export
from serving_export.export.writer import write_export
from serving_export.http.server import start_in_thread
from serving_export.publish import current_delta, point_delta, prune_deltas, publish


def delta_path(lake: Lake, ds: str, stamp: str) -> str:
    return os.path.join(lake.exports, "deltas", f"ds={ds}", f"wm={stamp}")


def write_delta(lake: Lake, ds: str, stamp: str, users: list[str], *, default: bool = False):
    pages = pages_for(users, f"d{stamp}") if users else pages_for(["x"], "x").iloc[0:0]
    dflt = default_pages(f"d{stamp}") if default else pages.iloc[0:0]
    when = f"{ds}T{stamp[9:11]}:{stamp[11:13]}:00Z"
    return write_small_export(
        delta_path(lake, ds, stamp),
        pages,
        dflt,
        ITEMS,
        ds=ds,
        model_versions={"model": "m"},
        delta={"watermark": when, "refreshed_at": when},
    )


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_a_delta_holds_only_its_pages_each_with_refreshed_at(lake):
    manifest = write_delta(lake, DS1, "20240501T101500Z", ["u2"])
    assert manifest["kind"] == "delta" and manifest["users"] == 1
    assert manifest["has_default"] is False and manifest["refreshed_at"] == "2024-05-01T10:15:00Z"
    assert verify_export(delta_path(lake, DS1, "20240501T101500Z"))["users"] == 1
    values = read_all(delta_path(lake, DS1, "20240501T101500Z"))
    assert list(values) == [b"u2"]
    page = orjson.loads(values[b"u2"])
    assert list(page)[:5] == ["user_id", "ds", "model_version", "refreshed_at", "fallback"]
    assert page["refreshed_at"] == "2024-05-01T10:15:00Z" and page["fallback"] is False
    # a delta may carry a changed default page; an empty delta is valid too
    assert write_delta(lake, DS1, "20240501T103000Z", ["u1"], default=True)["has_default"]
    assert write_delta(lake, DS1, "20240501T104500Z", [])["users"] == 0
    assert verify_export(delta_path(lake, DS1, "20240501T104500Z"))["rows"] == 0


def test_a_daily_export_still_needs_its_default_page(lake):
    with pytest.raises(ValueError, match="default_page is empty"):
        write_export(
            lake.export(DS1),
            pages_for(USERS, "x"),
            pages_for(["x"], "x").iloc[0:0],
            ITEMS,
            ds=DS1,
            model_versions={},
            config_hash="h",
        )


def test_point_delta_never_goes_back_and_prune_keeps_the_served_one(lake):
    for stamp in ("20240501T100000Z", "20240501T101500Z", "20240501T103000Z"):
        write_delta(lake, DS1, stamp, ["u1"])
    assert point_delta(lake, DS1, "20240501T101500Z") == "20240501T101500Z"
    assert point_delta(lake, DS1, "20240501T100000Z") == "20240501T101500Z"  # a re-run
    assert current_delta(lake, DS1) == "20240501T101500Z"
    write_delta(lake, DS2, "20240502T001500Z", ["u1"])
    gone = prune_deltas(lake, DS1, keep_last=1)
    # the other day's deltas and the older ones; the served one and newer ones stay
    assert set(gone) == {DS2, f"{DS1}/20240501T100000Z"}
    left = sorted(os.listdir(os.path.join(lake.exports, "deltas", f"ds={DS1}")))
    assert left == ["CURRENT", "wm=20240501T101500Z", "wm=20240501T103000Z"]


def test_the_daily_publish_drops_older_days_deltas(lake):
    write(lake, DS1)
    write(lake, DS2)
    write_delta(lake, DS1, "20240501T100000Z", ["u1"])
    point_delta(lake, DS1, "20240501T100000Z")
    publish(lake, DS2)
    assert not os.path.exists(os.path.join(lake.exports, "deltas", f"ds={DS1}"))


@pytest.fixture
def served(lake):
    daily = write(lake, DS1)
    publish(lake, DS1)
    thread, port, stop = start_in_thread(lake, reload_interval_s=0.05)
    wait_for(lambda: get(port, "/readyz")[0] == 200)
    yield port, daily
    stop()
    assert not thread.is_alive()


def delta_of(port: int) -> str | None:
    return orjson.loads(get(port, "/readyz")[2]).get("delta")


def test_the_server_overlays_the_newest_delta_and_hot_swaps_it(lake, served):
    port, daily = served
    assert delta_of(port) is None
    write_delta(lake, DS1, "20240501T101500Z", ["u2"])
    point_delta(lake, DS1, "20240501T101500Z")
    wait_for(lambda: delta_of(port) == "20240501T101500Z")
    status, headers, body = get(port, "/v1/users/u2/homepage")
    assert status == 200 and headers["x-fallback"] == "false"
    page = orjson.loads(body)
    assert page["refreshed_at"] == "2024-05-01T10:15:00Z"
    assert page["carousels"][0]["carousel_id"].startswith("d20240501T101500Z")
    assert get(port, "/v1/users/u1/homepage")[2] == daily[b"u1"]  # not in the delta
    assert get(port, "/v1/users/nobody/homepage")[2] == daily[DEFAULT_PAGE_KEY.encode()]
    ready = orjson.loads(get(port, "/readyz")[2])
    assert ready["refreshed_at"] == "2024-05-01T10:15:00Z" and ready["ds"] == DS1
    # the next delta replaces it; a delta with a new default page serves it to unknown users
    write_delta(lake, DS1, "20240501T103000Z", ["u1", "u2"], default=True)
    new = read_all(delta_path(lake, DS1, "20240501T103000Z"))  # before the server opens it
    point_delta(lake, DS1, "20240501T103000Z")
    wait_for(lambda: delta_of(port) == "20240501T103000Z")
    assert get(port, "/v1/users/u1/homepage")[2] == new[b"u1"]
    status, headers, body = get(port, "/v1/users/nobody/homepage")
    assert body == new[DEFAULT_PAGE_KEY.encode()] and headers["x-fallback"] == "true"


def test_a_corrupt_delta_is_refused_and_the_pages_keep_serving(lake, served):
    port, daily = served
    write_delta(lake, DS1, "20240501T101500Z", ["u2"])
    point_delta(lake, DS1, "20240501T101500Z")
    wait_for(lambda: delta_of(port) == "20240501T101500Z")
    good = get(port, "/v1/users/u2/homepage")[2]
    path = delta_path(lake, DS1, "20240501T103000Z")
    write_delta(lake, DS1, "20240501T103000Z", ["u2"])
    with open(os.path.join(path, LMDB_FILE), "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    with pytest.raises(ExportInvalid, match="sha256"):
        verify_export(path)
    point_delta(lake, DS1, "20240501T103000Z")  # published by hand, past the refresh's check
    wait_for(lambda: 'result="refused"} 1' in get(port, "/metrics")[2].decode())
    for _ in range(20):  # many reload rounds: still the good delta
        assert get(port, "/v1/users/u2/homepage")[2] == good
    assert delta_of(port) == "20240501T101500Z"


def test_a_new_daily_export_replaces_the_day_and_its_deltas(lake, served):
    port, _ = served
    write_delta(lake, DS1, "20240501T101500Z", ["u2"])
    point_delta(lake, DS1, "20240501T101500Z")
    wait_for(lambda: delta_of(port) == "20240501T101500Z")
    daily2 = write(lake, DS2)
    publish(lake, DS2)
    wait_for(lambda: orjson.loads(get(port, "/readyz")[2]).get("ds") == DS2)
    assert delta_of(port) is None
    assert get(port, "/v1/users/u2/homepage")[2] == daily2[b"u2"]
    assert not os.path.exists(os.path.join(lake.exports, "deltas", f"ds={DS1}"))
