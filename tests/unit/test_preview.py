"""`GET /preview/{user_id}`: the stored page as escaped HTML, checked as text and in Chromium."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest
from support.servers import default_pages, get, pages_for, wait_for, write_small_export

from jobs.core.lake import Lake
from serving_export.http.preview import render_preview
from serving_export.http.server import start_in_thread

DS = "2024-06-01"
EVIL = "<img src=x onerror=\"document.title='pwned'\">Oat & <b>Honey</b>"


def _export(lake: Lake) -> None:
    pages = pages_for(["u1"], "mine")
    pages.loc[pages["item_rank"] == 2, "reason"] = "explore"
    items = pd.DataFrame(
        {
            "item_id": ["i11", "i12", "i21", "i22"],
            "title": [EVIL, "Milk", "Bread", "Tea"],
            "category_id": ["cereal", "dairy", "bakery", "drinks"],
            "brand": ["Acme", "Moo", "Crust", "Leaf"],
            "price": [3.5, 1.25, 2.0, 4.0],
        }
    )
    write_small_export(
        lake.export(DS),
        pages,
        default_pages("default"),
        items,
        ds=DS,
        model_versions={"model": "mv-7"},
    )
    with open(lake.current, "w") as f:
        f.write(DS + "\n")


@pytest.fixture
def served(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _export(lake)
    _, port, stop = start_in_thread(lake, reload_interval_s=0.05)
    wait_for(lambda: get(port, "/readyz")[0] == 200)
    yield port
    stop()


def test_markup_in_the_export_is_escaped():
    page = {
        "user_id": "u<1>",
        "ds": DS,
        "model_version": "mv",
        "carousels": [
            {
                "slot": 1,
                "title": "<i>t</i>",
                "family": "f",
                "score": 1.0,
                "items": [{"item_id": "a", "rank": 1, "reason": "x"}],
            }
        ],
    }
    html = render_preview(page, lambda _: {"title": EVIL}, fallback=False).decode()
    assert "<img" not in html and "<b>Honey" not in html and "<i>t</i>" not in html
    assert "&lt;img src=x onerror=&quot;" in html and "Oat &amp; &lt;b&gt;Honey" in html
    assert "u&lt;1&gt;" in html


def test_preview_shows_the_users_page(served):
    status, headers, body = get(served, "/preview/u1")
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = body.decode()
    assert html.count("<section") == 2  # one row per carousel
    assert "1. Carousel 1" in html and "2. Carousel 2" in html
    for shown in ("Milk", "Bread", "Tea", "dairy", "Moo", "1.25", "explore", "discover"):
        assert shown in html
    assert "Oat &amp; &lt;b&gt;Honey" in html and "<img" not in html
    assert f'<span id="ds">{DS}</span>' in html and "mv-mine" in html
    assert "fallback" not in html


def test_preview_of_an_unknown_user_is_the_default_page_and_bad_ids_are_refused(served):
    status, headers, body = get(served, "/preview/nobody")
    assert status == 200 and headers["x-fallback"] == "true"
    assert "default page (fallback)" in body.decode() and "mv-default" in body.decode()
    assert get(served, "/preview/..%2F..%2Fetc")[0] == 400
    assert get(served, "/preview/" + "a" * 200)[0] == 400
    metrics = get(served, "/metrics")[2].decode()
    assert 'homepage_requests_total{route="preview",status="200"}' in metrics
    assert 'homepage_requests_total{route="preview",status="400"}' in metrics


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium)",
)
def test_preview_in_headless_chromium(served):
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=2000",
            "--dump-dom",
            f"http://127.0.0.1:{served}/preview/u1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dom = out.stdout
    # the browser built the rows and cards, and the markup in a title stayed text
    assert dom.count("<section") == 2 and dom.count("<li ") == 4
    # no <img> element was created, so its onerror never ran and the title is unchanged
    assert "<title>Homepage preview: u1</title>" in dom and "<img" not in dom
    assert "&lt;img src=x" in dom and "Milk" in dom and "mv-mine" in dom
