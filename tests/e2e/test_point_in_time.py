"""Nothing dated on or after `ds` reaches a run as of `ds` (issue 33, point 1).

A generated lake split inside its days: the *past* lake holds only the facts dated before `ds`
(events, listed items, price and stock changes, curated carousels); the *full* lake holds the
whole generated data plus hostile facts dated on and after `ds` (a new listing, the best seller
out of stock, price changes, a bad change that would fail validation, a curated carousel that
starts on `ds`). The daily steps ingest → build_features → train → promote → rank run as of
`ds` on both; every catalogue snapshot, feature table, model input, page and evaluation
baseline must be identical. Facts dated before `ds` (a stock-out, a price change, a live and
an expired carousel, present in both lakes) must be applied, so the check is not vacuous.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_LAKE_OVERRIDES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

STEPS = ("ingest", "build_features", "train", "promote", "rank")


def _day(ds: str, k: int) -> dt.date:
    return dt.date.fromisoformat(ds) + dt.timedelta(days=k)


def _write(table: pd.DataFrame, directory: str, name: str, schema: pa.Schema) -> None:
    os.makedirs(directory, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(table, schema=schema, preserve_index=False),
        os.path.join(directory, name),
    )


def _past_only(root: str, ds: str) -> None:
    """Drop every fact dated on or after `ds` from the lake at `root`."""
    from jobs.core.lake import CAROUSEL_SCHEMA, ITEM_CHANGE_SCHEMA, ITEM_SCHEMA, Lake

    lake = Lake(root)
    for part in glob.glob(os.path.join(lake.raw_events, "ds=*")):
        if part.rsplit("=", 1)[1] >= ds:
            shutil.rmtree(part)
    day = dt.date.fromisoformat(ds)
    for table, column, schema in (
        (lake.items, "first_seen", ITEM_SCHEMA),
        (lake.item_changes, "changed_on", ITEM_CHANGE_SCHEMA),
        (lake.carousels, "valid_from", CAROUSEL_SCHEMA),
    ):
        for path in glob.glob(os.path.join(table, "*.parquet")):
            frame = pd.read_parquet(path)
            dated = pd.to_datetime(frame[column])
            frame = frame[dated.isna() | (dated < pd.Timestamp(day))]
            pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)


def _dated_facts(root: str, ds: str, items: pd.DataFrame, future: bool) -> dict[str, Any]:
    """Write facts dated before `ds` (and with `future`, hostile ones dated on/after it)."""
    from jobs.core.lake import CAROUSEL_SCHEMA, ITEM_CHANGE_SCHEMA, ITEM_SCHEMA, Lake

    lake = Lake(root)
    ids = items["item_id"].tolist()
    stocked, priced, best = ids[0], ids[1], ids[2]
    past = pd.DataFrame(
        {
            "item_id": [stocked, priced],
            "changed_on": [_day(ds, -2), _day(ds, -3)],
            "price": [None, 123.45],
            "in_stock": [False, None],
        }
    )
    _write(past, lake.item_changes, "pit-past.parquet", ITEM_CHANGE_SCHEMA)
    cars = [
        ("pit:live", "Live", ids[3:12], _day(ds, -3), None),
        ("pit:expired", "Expired", ids[12:21], _day(ds, -5), _day(ds, -1)),
    ]
    if future:
        later = pd.DataFrame(
            {
                "item_id": [best, priced, stocked, "no-such-item", ids[4]],
                "changed_on": [_day(ds, 0), _day(ds, 1), _day(ds, 0), _day(ds, 0), _day(ds, 2)],
                "price": [None, 0.01, None, 1.0, -5.0],  # -5: a bad row, never read
                "in_stock": [False, None, True, None, None],
            }
        )
        _write(later, lake.item_changes, "pit-future.parquet", ITEM_CHANGE_SCHEMA)
        listing = items.iloc[:1].assign(item_id="pit-new", first_seen=_day(ds, 0))
        _write(listing, lake.items, "pit-future.parquet", ITEM_SCHEMA)
        cars.append(("pit:future", "Future", ids[21:30], _day(ds, 0), None))
    curated = pd.DataFrame(
        {
            "carousel_id": [c[0] for c in cars],
            "title": [c[1] for c in cars],
            "family": "curated",
            "item_ids": [list(c[2]) for c in cars],
            "rule": None,
            "immutable": True,
            "valid_from": [c[3] for c in cars],
            "valid_to": [c[4] for c in cars],
        }
    )
    _write(curated, lake.carousels, "pit.parquet", CAROUSEL_SCHEMA)
    return {"stocked": stocked, "priced": priced}


@pytest.fixture(scope="module")
def two_lakes(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily import training_data as td
    from jobs.daily.pipeline import run_step
    from jobs.inputs.generate import generate_lake

    tmp = tmp_path_factory.mktemp("pit")
    full = str(tmp / "full")
    generate_lake(full, users=900, items=200, days=9, seed=8)
    days = sorted(p.rsplit("=", 1)[1] for p in glob.glob(os.path.join(full, "events", "ds=*")))
    ds = days[-3]  # two days of events (and whatever else the generator dated) after it
    past = str(tmp / "past")
    shutil.copytree(full, past)
    _past_only(past, ds)
    items = pd.read_parquet(os.path.join(past, "items"))
    items = items[items["in_stock"]].sort_values("item_id").reset_index(drop=True)
    facts = _dated_facts(past, ds, items, future=False)
    _dated_facts(full, ds, items, future=True)
    for root in (past, full):
        for step in STEPS:
            run_step(step, root, ds, SMALL_LAKE_OVERRIDES)
    cfg = load_config(None, SMALL_LAKE_OVERRIDES)
    return SimpleNamespace(
        past=Lake(past), full=Lake(full), ds=ds, cutoff=td.cutoff_for(ds, cfg), cfg=cfg, **facts
    )


def _frame(path: str) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    cols = sorted(frame.columns)
    return frame[cols].sort_values(cols, kind="stable").reset_index(drop=True)


def _same_table(a: str, b: str) -> None:
    pd.testing.assert_frame_equal(_frame(a), _frame(b), check_dtype=False)


def test_the_full_lake_really_holds_later_facts(two_lakes):
    full = pd.read_parquet(two_lakes.full.items)
    assert (pd.to_datetime(full["first_seen"]) >= pd.Timestamp(two_lakes.ds)).any()
    assert glob.glob(os.path.join(two_lakes.full.raw_events, f"ds={two_lakes.ds}"))


@pytest.mark.parametrize("day", ["ds", "cutoff"])
def test_catalogue_snapshots_are_equal_and_apply_earlier_changes(two_lakes, day):
    d = getattr(two_lakes, day)
    paths = [
        os.path.join(lake.warehouse, "items", f"ds={d}")
        for lake in (two_lakes.past, two_lakes.full)
    ]
    _same_table(*paths)
    snap = pd.read_parquet(paths[0]).set_index("item_id")
    assert "pit-new" not in snap.index
    if day == "ds":  # the changes dated before ds apply; the cutoff (ds - 2) knows only the price
        assert not snap.loc[two_lakes.stocked, "in_stock"]
    else:
        assert snap.loc[two_lakes.stocked, "in_stock"]
    assert snap.loc[two_lakes.priced, "price"] == pytest.approx(123.45)


@pytest.mark.parametrize("day", ["ds", "cutoff"])
def test_every_feature_table_is_equal(two_lakes, day):
    d = getattr(two_lakes, day)
    tables = sorted(
        os.path.basename(os.path.dirname(p))
        for p in glob.glob(os.path.join(two_lakes.past.warehouse, "features", "*", f"ds={d}"))
    )
    assert len(tables) >= 8, tables
    for table in tables:
        _same_table(two_lakes.past.feature(table, d), two_lakes.full.feature(table, d))


def test_model_inputs_are_equal(two_lakes):
    [a] = glob.glob(os.path.join(two_lakes.past.models(two_lakes.ds), "*"))
    [b] = glob.glob(os.path.join(two_lakes.full.models(two_lakes.ds), "*"))
    _same_table(os.path.join(a, "holdout.parquet"), os.path.join(b, "holdout.parquet"))
    for name in ("mf_item.npz", "mf_category.npz", "engagement/calibration.npz"):
        x, y = np.load(os.path.join(a, name)), np.load(os.path.join(b, name))
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
    for name in ("engagement/click.json", "engagement/purchase.json", "w_grid.csv"):
        if os.path.exists(os.path.join(a, name)):
            with open(os.path.join(a, name)) as f, open(os.path.join(b, name)) as g:
                assert f.read() == g.read(), name


def test_pages_are_equal_and_show_only_live_carousels(two_lakes):
    paths = [
        os.path.join(lake.warehouse, "pages", f"ds={two_lakes.ds}", "pages.parquet")
        for lake in (two_lakes.past, two_lakes.full)
    ]
    _same_table(*paths)
    pages = pd.read_parquet(paths[0])
    shown = set(pages["carousel_id"])
    assert "pit:live" in shown
    assert not {"pit:expired", "pit:future"} & shown
    assert two_lakes.stocked not in set(pages["item_id"])
    assert "pit-new" not in set(pages["item_id"])


def test_baselines_are_equal(two_lakes):
    from jobs.experiments.evaluation_pages import baseline_pages

    pages = pd.read_parquet(
        os.path.join(two_lakes.past.warehouse, "pages", f"ds={two_lakes.ds}", "pages.parquet")
    )
    shown = pages.groupby("user_id").size()
    a, _ = baseline_pages(two_lakes.past, two_lakes.ds, shown, two_lakes.cfg)
    b, _ = baseline_pages(two_lakes.full, two_lakes.ds, shown, two_lakes.cfg)
    assert sorted(a) == sorted(b) == ["popularity", "static", "top_freq"]
    for name in a:
        pd.testing.assert_frame_equal(
            a[name].reset_index(drop=True), b[name].reset_index(drop=True), obj=name
        )
    assert two_lakes.stocked not in set(a["top_freq"]["item_id"])
