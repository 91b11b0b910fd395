"""The synthetic lake generator: contract schemas, determinism, funnel and logging consistency."""

from __future__ import annotations

import datetime as dt
import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.event_checks import (
    assert_no_event_before_first_seen,
    assert_sessions_split_at_30_minutes,
)

from jobs.core.lake import (
    CAROUSEL_SCHEMA,
    EVENT_SCHEMA,
    EVENT_TYPES,
    ITEM_CHANGE_SCHEMA,
    ITEM_SCHEMA,
    Lake,
    list_partitions,
)
from jobs.inputs.eventlog import GENERATED_EVENT_SCHEMA
from jobs.inputs.generate import generate_lake, load_truth

SMALL = {"users": 500, "items": 200, "days": 7, "seed": 11, "random_share": 0.3}
START = pd.Timestamp("2026-01-01", tz="UTC")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    root = str(tmp_path_factory.mktemp("lake"))
    stats = generate_lake(root, **SMALL)
    return root, stats


@pytest.fixture(scope="module")
def events(lake: tuple[str, dict]) -> pd.DataFrame:
    root, _ = lake
    df = pq.read_table(Lake(root).raw_events).to_pandas()
    df["ds"] = df["ds"].astype(str)
    return df


@pytest.fixture(scope="module")
def items(lake: tuple[str, dict]) -> pd.DataFrame:
    return pq.read_table(Lake(lake[0]).items).to_pandas()


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def _truth_json(root: str) -> dict:
    with open(os.path.join(Lake(root).truth, "truth.json"), encoding="utf-8") as fh:
        return json.load(fh)


# ---- contract ------------------------------------------------------------------------------


def test_tables_match_the_contract_schemas(lake: tuple[str, dict]) -> None:
    root, _ = lake
    paths = Lake(root)
    for ds in list_partitions(paths.raw_events):
        schema = pq.read_schema(os.path.join(paths.raw_events_ds(ds), "part-0.parquet"))
        assert schema.equals(GENERATED_EVENT_SCHEMA)
        assert schema.names[: len(EVENT_SCHEMA)] == EVENT_SCHEMA.names
        assert schema.names[len(EVENT_SCHEMA) :] == ["logging_policy"]
    assert pq.read_schema(os.path.join(paths.items, "part-0.parquet")).equals(ITEM_SCHEMA)
    assert pq.read_schema(os.path.join(paths.carousels, "part-0.parquet")).equals(CAROUSEL_SCHEMA)
    users = pq.read_table(paths.users).to_pandas()
    assert len(users) == SMALL["users"] and users["user_id"].is_unique
    assert users["user_id"].str.fullmatch(r"u\d{7}").all()


def test_one_file_per_day_and_stats(lake: tuple[str, dict], events: pd.DataFrame) -> None:
    root, stats = lake
    days = list_partitions(Lake(root).raw_events)
    assert days == [f"2026-01-0{d}" for d in range(1, SMALL["days"] + 1)]
    for ds in days:
        assert os.listdir(Lake(root).raw_events_ds(ds)) == ["part-0.parquet"]
    assert stats["events"] == len(events) == sum(stats[t] for t in EVENT_TYPES)
    for t in EVENT_TYPES:
        assert stats[t] == (events["event_type"] == t).sum() > 0
    assert stats["events_per_s"] > 0 and stats["seconds"] > 0
    assert (stats["users"], stats["items"], stats["days"]) == (500, 200, 7)
    assert stats["impression"] > len(events) / 2  # mostly impressions


def test_values_are_well_formed(events: pd.DataFrame) -> None:
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert events["event_id"].is_unique
    assert events["user_id"].notna().all() and events["session_id"].notna().all()
    home = events["carousel_id"].notna()
    assert set(events.loc[home, "logging_policy"]) == {"default", "random"}
    assert events.loc[~home, "logging_policy"].isna().all()
    for col in ("slot", "position", "propensity"):
        assert events.loc[home, col].notna().all() and events.loc[~home, col].isna().all()
    search = events["event_type"] == "search"
    assert events.loc[search, "item_id"].isna().all() and events.loc[search, "query"].notna().all()
    assert (events.loc[search, "page"] == "search").all()
    assert events.loc[~search, "item_id"].notna().all()
    cart = events["event_type"].isin(["add_to_cart", "purchase"])
    assert (events.loc[cart, "quantity"] >= 1).all() and (events.loc[cart, "price"] > 0).all()
    assert events.loc[~cart, "quantity"].isna().all()
    assert set(events["device"]) == {"mobile", "desktop", "app"}
    imp = events["event_type"] == "impression"
    assert (events.loc[imp, "page"] == "home").all()
    assert events.loc[imp, "slot"].between(1, 6).all()
    assert events.loc[imp, "position"].between(1, 6).all()


def test_carousel_ids_follow_the_scheme(
    lake: tuple[str, dict], events: pd.DataFrame, items: pd.DataFrame
) -> None:
    carousels = pq.read_table(Lake(lake[0]).carousels).to_pandas()
    ids = set(events["carousel_id"].dropna())
    curated = {c for c in ids if c.startswith("curated:")}
    assert curated <= set(carousels["carousel_id"])
    assert {"buy_again", "trending", "discover"} <= ids
    categories = {c.split(":", 1)[1] for c in ids if c.startswith("category:")}
    brands = {c.split(":", 1)[1] for c in ids if c.startswith("brand:")}
    assert categories and categories <= set(items["category_id"])
    assert brands and brands <= set(items["brand"])
    assert ids == curated | {"buy_again", "trending", "discover"} | {
        f"category:{c}" for c in categories
    } | {f"brand:{b}" for b in brands}


def test_catalogue_and_carousels(items: pd.DataFrame, lake: tuple[str, dict]) -> None:
    assert items["item_id"].is_unique and len(items) == 200
    assert items["category_id"].str.fullmatch(r"c\d{2}_\d{2}").all()
    assert (
        items["category_path"] == items["category_id"].str[:3] + "/" + items["category_id"]
    ).all()
    assert items["category_id"].str[:3].nunique() >= 15  # ~20 top categories
    first_seen = pd.to_datetime(items["first_seen"])
    new = first_seen >= pd.Timestamp("2026-01-01")
    assert 0 < new.sum() < 0.2 * len(items)  # a few new items arrive during the window
    assert (first_seen[new] <= pd.Timestamp("2026-01-07")).all()
    assert items["in_stock"].all()  # the status at listing; stock-outs are dated changes
    assert 0 < (~items["has_image"]).sum() < 0.2 * len(items)
    assert items["title"].str.contains("<b>").any() and items["title"].str.contains("&").any()
    assert (items["price"] > 0).all()
    carousels = pq.read_table(Lake(lake[0]).carousels).to_pandas().set_index("carousel_id")
    assert len(carousels) == 5
    assert carousels.loc["curated:deals", "family"] == "promo"
    assert carousels.loc["curated:deals", "immutable"]
    assert carousels.loc["curated:new_arrivals", "rule"] == "new"
    assert carousels.loc["curated:new_arrivals", "item_ids"] is None
    assert set(carousels.loc["curated:top_rated", "item_ids"]) <= set(items["item_id"])
    assert carousels["valid_from"].isna().all() and carousels["valid_to"].isna().all()


def test_stock_outs_are_item_changes_dated_the_day_they_happen(
    items: pd.DataFrame, lake: tuple[str, dict], events: pd.DataFrame
) -> None:
    table = pq.read_table(Lake(lake[0]).item_changes)
    assert table.schema.equals(ITEM_CHANGE_SCHEMA)
    changes = table.to_pandas()
    truth = load_truth(lake[0])
    oos = np.flatnonzero(truth.out_of_stock_day < SMALL["days"])
    assert 0 < oos.size < 0.2 * len(items)
    want = {
        (str(truth.item_ids[i]), (START + pd.Timedelta(days=int(truth.out_of_stock_day[i]))).date())
        for i in oos
    }
    assert set(zip(changes["item_id"], changes["changed_on"], strict=True)) == want
    assert len(changes) == oos.size and not changes["in_stock"].any()
    assert changes["price"].isna().all()  # prices never change in the simulation
    # an item that goes out of stock on day k >= 1 is in stock in `items`
    later = changes[changes["changed_on"] > START.date()]
    assert len(later) and items.set_index("item_id").loc[later["item_id"], "in_stock"].all()
    # and nobody buys it from that day on
    bought = events[events["event_type"].isin(["add_to_cart", "purchase"])]
    out_from = bought["item_id"].map(changes.set_index("item_id")["changed_on"])
    assert not (bought["ts"].dt.date >= out_from).any()


def test_no_event_precedes_its_items_first_seen(items: pd.DataFrame, events: pd.DataFrame) -> None:
    e = events[events["item_id"].notna()]
    assert e["item_id"].isin(items["item_id"]).all()
    assert_no_event_before_first_seen(e, items)
    new = items["first_seen"] >= START.date()
    shown = set(e["item_id"])
    assert new.any() and shown & set(items.loc[new, "item_id"])  # new items do get events


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_files(tmp_path) -> None:
    args = {**SMALL, "users": 200, "days": 3}
    generate_lake(str(tmp_path / "a"), **args)
    generate_lake(str(tmp_path / "b"), **args)
    generate_lake(str(tmp_path / "c"), **{**args, "seed": args["seed"] + 1})
    a, b, c = (_files(str(tmp_path / x)) for x in "abc")
    assert a.keys() == b.keys() and a == b  # byte-identical, truth files included
    events = [k for k in a if k.startswith("events")]
    assert any(a[k] != c.get(k) for k in events)


# ---- time ----------------------------------------------------------------------------------


def test_timestamps_lie_inside_their_partition_day(events: pd.DataFrame) -> None:
    day = events["ts"].dt.floor("D").dt.strftime("%Y-%m-%d")
    assert (day == events["ds"]).all()
    assert str(events["ts"].dt.tz) == "UTC"


def test_sessions_are_recoverable_with_a_30_minute_gap(events: pd.DataFrame) -> None:
    assert_sessions_split_at_30_minutes(events)


# ---- funnel --------------------------------------------------------------------------------


def test_homepage_clicks_follow_impressions(events: pd.DataFrame) -> None:
    key = ["session_id", "item_id", "carousel_id", "slot", "position"]
    imp = events[events["event_type"] == "impression"]
    clicks = events[events["event_type"] == "click"]
    assert len(clicks) > 0
    m = clicks.merge(
        imp[[*key, "ts", "propensity", "logging_policy"]], on=key, suffixes=("", "_imp")
    )
    assert m["event_id"].nunique() == len(clicks)
    assert (m["ts_imp"] < m["ts"]).all()
    assert np.allclose(m["propensity"], m["propensity_imp"])
    assert (m["logging_policy"] == m["logging_policy_imp"]).all()


def test_homepage_add_to_cart_follows_a_click(events: pd.DataFrame) -> None:
    key = ["user_id", "session_id", "item_id", "carousel_id", "slot", "position"]
    carts = events[(events["event_type"] == "add_to_cart") & events["carousel_id"].notna()]
    clicks = events[events["event_type"] == "click"]
    assert len(carts) > 0
    m = carts.merge(clicks[[*key, "ts"]], on=key, suffixes=("", "_click"))
    earlier = m[m["ts_click"] < m["ts"]]
    assert set(earlier["event_id"]) == set(carts["event_id"])


def test_purchases_follow_add_to_cart(events: pd.DataFrame) -> None:
    key = ["user_id", "session_id", "item_id"]
    carts = events[events["event_type"] == "add_to_cart"]
    buys = events[events["event_type"] == "purchase"]
    assert len(buys) > 0 and buys["carousel_id"].isna().any() and buys["carousel_id"].notna().any()
    n_carts = carts.groupby(key).size()
    n_buys = buys.groupby(key).size()
    assert (n_buys <= n_carts.reindex(n_buys.index, fill_value=0)).all()
    last_cart = carts.groupby(key)["ts"].max()
    first_buy = buys.groupby(key)["ts"].min()
    assert (first_buy > last_cart.reindex(first_buy.index)).all()
    assert (buys["page"] == "checkout").all()


def test_items_appear_only_when_listed_and_are_not_bought_out_of_stock(
    lake: tuple[str, dict], events: pd.DataFrame
) -> None:
    truth = load_truth(lake[0])
    e = events[events["item_id"].notna()]
    item = truth.item_index(e["item_id"].to_numpy())
    day = (e["ts"] - START).dt.days.to_numpy()
    assert (item >= 0).all()
    assert (truth.first_seen_day[item] <= day).all()
    bought = e["event_type"].isin(["add_to_cart", "purchase"]).to_numpy()
    assert (day[bought] < truth.out_of_stock_day[item[bought]]).all()


def test_staples_are_bought_again(lake: tuple[str, dict], events: pd.DataFrame) -> None:
    truth = load_truth(lake[0])
    buys = events[events["event_type"] == "purchase"]
    u = truth.user_index(buys["user_id"].to_numpy())
    i = truth.item_index(buys["item_id"].to_numpy())
    staple = truth.is_staple(u, i)
    assert staple.mean() > 0.3  # grocery repeats are a large part of purchases
    repeat = buys[staple].groupby(["user_id", "item_id"])["ds"].nunique()
    assert (repeat >= 2).any()


# ---- logging policy ------------------------------------------------------------------------


def test_randomised_pages_log_uniform_propensities(
    lake: tuple[str, dict], events: pd.DataFrame
) -> None:
    meta = _truth_json(lake[0])["meta"]
    k, n_max, positions = meta["candidate_carousels"], meta["candidate_items"], meta["positions"]
    rho = meta["random_share"]
    imp = events[events["event_type"] == "impression"]
    rand = imp[imp["logging_policy"] == "random"]
    assert len(rand) > 0
    # Per shown carousel: one propensity 1/(K·n), n = its number of candidate items.
    per = rand.groupby(["session_id", "carousel_id"]).agg(
        p=("propensity", "first"), p_max=("propensity", "max"), shown=("item_id", "size")
    )
    assert np.allclose(per["p"], per["p_max"])
    n = 1.0 / (k * per["p"])
    assert np.allclose(n, n.round()) and n.round().between(1, n_max).all()
    assert (n.round() >= per["shown"]).all()
    short = per["shown"] < positions  # fewer shown than positions: all candidates were shown
    assert np.allclose(n[short], per.loc[short, "shown"])
    full = per.index.get_level_values("carousel_id").isin(["trending", "curated:deals"])
    assert np.allclose(per.loc[full, "p"], 1.0 / (k * n_max))
    # The carousel order of a random page is a permutation of the K candidates: slot 1 is not
    # always the default policy's first carousel.
    first = rand[rand["slot"] == 1].groupby("session_id")["carousel_id"].first()
    assert first.nunique() > 3
    # Default pages: the mixture probability of the deterministic placement.
    default = imp[imp["logging_policy"] == "default"]
    n_default = 1.0 / (k * (default["propensity"] - (1 - rho)) / rho)
    assert (default["propensity"] > 1 - rho).all()
    assert np.allclose(n_default, n_default.round()) and n_default.round().between(1, n_max).all()


def test_random_pages_click_rates_fall_with_slot(events: pd.DataFrame) -> None:
    rand = events[events["logging_policy"] == "random"]
    imp = rand[rand["event_type"] == "impression"].groupby("slot").size()
    clicks = (
        rand[rand["event_type"] == "click"].groupby("slot").size().reindex(imp.index, fill_value=0)
    )
    ctr = clicks / imp
    assert ctr.loc[1] > ctr.loc[[5, 6]].mean()


# ---- truth ---------------------------------------------------------------------------------


def test_truth_files_load_and_score_placements(lake: tuple[str, dict]) -> None:
    root = lake[0]
    doc = _truth_json(root)
    assert doc["meta"]["seed"] == SMALL["seed"]
    assert doc["exam_slot"][0] == 1.0 and doc["exam_position"][0] == 1.0
    assert all(a > b for a, b in zip(doc["exam_slot"], doc["exam_slot"][1:], strict=False))
    truth = load_truth(root)
    assert truth.n_users == 500 and truth.n_items == 200
    assert truth.taste.shape == (500, truth.params.categories)
    assert np.allclose(truth.taste.sum(1), 1.0, atol=1e-4)
    assert (truth.staples >= -1).all() and (truth.staples >= 0).any()

    users = truth.user_index(["u0000000", "u0000499", "nobody"])
    assert users.tolist() == [0, 499, -1]
    assert truth.item_index(["i000007"]).tolist() == [7]

    rng = np.random.default_rng(0)
    u = rng.integers(0, 500, 1000)
    i = rng.integers(0, 200, 1000)
    p = truth.engage_probability(u, i, np.ones(1000, int), np.ones(1000, int))
    assert set(p) == {"click", "add_to_cart", "purchase"}
    assert all(v.shape == (1000,) for v in p.values())
    assert ((p["purchase"] >= 0) & (p["purchase"] <= p["add_to_cart"])).all()
    assert (p["add_to_cart"] <= p["click"]).all() and (p["click"] <= 1).all()
    # Position-based: the ratio to the top-left placement is the examination curve.
    lower = truth.engage_probability(u, i, 3, 4)
    ratio = lower["click"][p["click"] > 0] / p["click"][p["click"] > 0]
    assert np.allclose(ratio, doc["exam_slot"][2] * doc["exam_position"][3])
    # Out-of-stock items can be clicked but not bought after the window.
    oos = np.flatnonzero(truth.out_of_stock_day < truth.days)
    q = truth.engage_probability(np.zeros(oos.size, int), oos, 1, 1, device="app")
    assert (q["purchase"] == 0).all() and (q["click"] > 0).all()
    with pytest.raises(ValueError):
        truth.engage_probability(u, i, 0, 1)


# ---- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [{"users": 0}, {"items": -1}, {"days": 0}, {"start": "2026-13-01"}, {"start": "yesterday"}],
)
def test_bad_arguments_raise(tmp_path, override: dict) -> None:
    args = {"users": 10, "items": 10, "days": 1, "seed": 1, **override}
    with pytest.raises(ValueError):
        generate_lake(str(tmp_path), **args)
    assert not os.path.exists(tmp_path / "events")


def test_existing_lake_needs_overwrite(tmp_path) -> None:
    args = {"users": 50, "items": 40, "days": 2, "seed": 3}
    generate_lake(str(tmp_path), **args)
    with pytest.raises(ValueError, match="overwrite"):
        generate_lake(str(tmp_path), **args)
    stats = generate_lake(str(tmp_path), **{**args, "days": 1}, overwrite=True)
    assert list_partitions(Lake(str(tmp_path)).raw_events) == ["2026-01-01"]
    assert stats["days"] == 1


def test_overwrite_replaces_a_stale_item_changes_table(tmp_path) -> None:
    stale = Lake(str(tmp_path)).item_changes
    os.makedirs(stale)
    pq.write_table(
        pa.table({"item_id": ["gone"], "changed_on": [dt.date(2020, 1, 1)]}),
        os.path.join(stale, "part-0.parquet"),
    )
    with pytest.raises(ValueError, match="item_changes"):
        generate_lake(str(tmp_path), users=50, items=40, days=2, seed=3)
    generate_lake(str(tmp_path), users=50, items=40, days=2, seed=3, overwrite=True)
    if os.path.exists(stale):
        assert "gone" not in set(pq.read_table(stale).column("item_id").to_pylist())


def test_progress_is_reported(tmp_path) -> None:
    messages: list[str] = []
    generate_lake(str(tmp_path), users=20, items=30, days=2, seed=5, progress=messages.append)
    assert any(re.search(r"day 2/2", m) for m in messages)
