"""Lookup-server helpers shared by the server, serving and fault tests: a tiny export and a
stdlib HTTP client."""

from __future__ import annotations

import http.client
import time
from typing import Any

import orjson
import pandas as pd

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from serving_export.export.writer import write_export
from support.exports import read_all

DS1, DS2, DS3 = "2024-05-01", "2024-05-02", "2024-05-03"
USERS = ["u1", "u2", "a.b@c:d-e_f"]


def pages_for(users: list[str], tag: str) -> pd.DataFrame:
    rows = [
        {
            "user_id": u,
            "slot": s,
            "carousel_id": f"{tag}-c{s}",
            "carousel_title": f"Carousel {s}",
            "family": f"fam{s % 2}",
            "carousel_score": 1.0 / s,
            "item_rank": r,
            "item_id": f"i{s}{r}",
            "item_score": 0.5 / r,
            "propensity": 1.0 / r,
            "reason": "discover",
            "model_version": f"mv-{tag}",
        }
        for u in users
        for s in (1, 2)
        for r in (1, 2)
    ]
    return pd.DataFrame(rows)


ITEMS = pd.DataFrame(
    {"item_id": ["i11"], "title": ["t"], "category_id": ["c"], "brand": ["b"], "price": [1.0]}
)


def default_pages(tag: str) -> pd.DataFrame:
    """The fallback page: `pages_for` one user, keyed DEFAULT_PAGE_KEY."""
    default = pages_for(["x"], tag)
    default["user_id"] = DEFAULT_PAGE_KEY
    return default


def write_small_export(
    path: str,
    pages: pd.DataFrame,
    default: pd.DataFrame,
    items: pd.DataFrame,
    *,
    ds: str,
    model_versions: dict[str, str],
    **kw: Any,
) -> dict:
    """`write_export` of a few-KB test export: config hash "h", a 10 MB LMDB map."""
    return write_export(
        path,
        pages,
        default,
        items,
        ds=ds,
        model_versions=model_versions,
        config_hash="h",
        map_size_gb=0.01,
        **kw,
    )


def write(lake: Lake, ds: str) -> dict[bytes, bytes]:
    """Write an export and return its stored values (read before the server opens the file)."""
    d = lake.export(ds)
    write_small_export(
        d, pages_for(USERS, ds), default_pages(ds), ITEMS, ds=ds, model_versions={"mf": ds}
    )
    return read_all(d)


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def served_ds(port: int) -> str | None:
    status, _, body = get(port, "/readyz")
    return orjson.loads(body).get("ds") if status == 200 else None
