"""The traffic simulator: the pipeline's pages served to the generator's ground-truth users."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.event_checks import assert_sessions_split_at_30_minutes

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, list_partitions
from jobs.experiments.simulate import ab_test, simulate_day, simulate_visits, split_arms
from jobs.inputs.eventlog import GENERATED_EVENT_SCHEMA
from jobs.inputs.generate import generate_lake, load_truth
from jobs.inputs.truth import DEVICES, GroundTruth

SMALL = {"users": 400, "items": 200, "days": 3, "seed": 11}
DAY = dt.date(2026, 1, 4)  # the day after the generated window
D = 3  # its day index
SLOTS, POSITIONS = 7, 7  # pages hold more than the 6 x 6 a visit shows
ABSENT = 40  # the last users have no page of their own


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("simlake"))
    generate_lake(root, **SMALL)
    return root


@pytest.fixture(scope="module")
def truth(lake: str) -> GroundTruth:
    return load_truth(lake)


def make_pages(truth: GroundTruth, kind: str, seed: int = 0) -> pd.DataFrame:
    """A page per user (but the last ABSENT) plus `__default__`: SLOTS x POSITIONS distinct items
    available on DAY, the most attractive first (kind "top") or in random order ("random")."""
    rng = np.random.default_rng(seed)
    users = truth.user_ids[: truth.n_users - ABSENT]
    n = SLOTS * POSITIONS
    available = np.flatnonzero(truth.available(np.arange(truth.n_items), D))
    if kind == "top":
        attr = truth.attractiveness(
            np.arange(users.size)[:, None], available[None, :]
        )  # (users, available items)
        top = available[np.argsort(-attr, axis=1, kind="stable")[:, :n]]
    else:
        top = available[np.argsort(rng.random((users.size, available.size)), axis=1)[:, :n]]
    default = available[rng.permutation(available.size)[:n]]
    items = np.vstack([top, default[None, :]])
    keys = np.append(users.astype(object), DEFAULT_PAGE_KEY)
    rows = items.size
    slot = np.tile(np.repeat(np.arange(1, SLOTS + 1), POSITIONS), keys.size)
    return pd.DataFrame(
        {
            "user_id": np.repeat(keys, n),
            "slot": slot.astype(np.int32),
            "carousel_id": [f"{kind}:{s}" for s in slot],
            "carousel_title": [f"Carousel {s}" for s in slot],
            "family": np.where(slot % 2 == 0, "even", "odd"),
            "carousel_score": 1.0 / slot,
            "item_rank": np.tile(np.arange(1, POSITIONS + 1), SLOTS * keys.size).astype(np.int32),
            "item_id": truth.item_ids[items.ravel()].astype(object),
            "item_score": rng.random(rows),
            "reason": "discover",
            "model_version": f"{kind}-v1",
            "propensity": np.round(rng.uniform(0.05, 1.0, rows), 4),
        }
    )


@pytest.fixture(scope="module")
def top_pages(truth: GroundTruth) -> pd.DataFrame:
    return make_pages(truth, "top")


@pytest.fixture(scope="module")
def random_pages(truth: GroundTruth) -> pd.DataFrame:
    return make_pages(truth, "random", seed=1)


@pytest.fixture(scope="module")
def events(truth: GroundTruth, top_pages: pd.DataFrame) -> pd.DataFrame:
    table = simulate_visits(
        truth, top_pages, users=None, day=DAY, visits_per_user=1.5, seed=5, policy_name="top"
    )
    assert table.schema.equals(GENERATED_EVENT_SCHEMA)
    return table.to_pandas()


def shown(pages: pd.DataFrame) -> pd.DataFrame:
    return pages[(pages["slot"] <= 6) & (pages["item_rank"] <= 6)]


# ---- contract ------------------------------------------------------------------------------


def test_events_are_well_formed_like_generated_ones(
    lake: str, truth: GroundTruth, events: pd.DataFrame
) -> None:
    e = events
    assert list(e.columns) == GENERATED_EVENT_SCHEMA.names
    assert e["event_id"].is_unique and e["event_id"].str.fullmatch(r"e20260104\d{9}").all()
    assert e["session_id"].str.fullmatch(r"s20260104\d{8}").all()
    assert e["ts"].is_monotonic_increasing and str(e["ts"].dt.tz) == "UTC"
    assert (e["ts"].dt.date == DAY).all()
    assert e[["user_id", "session_id", "item_id", "device", "page"]].notna().all().all()
    counts = e["event_type"].value_counts()
    assert set(counts.index) == {"impression", "click", "view", "add_to_cart", "purchase"}
    assert counts["click"] == counts["view"] >= counts["add_to_cart"] >= counts["purchase"] > 0
    # every event is attributed to a homepage placement of the "top" policy
    for col in ("carousel_id", "slot", "position", "propensity"):
        assert e[col].notna().all()
    assert (e["logging_policy"] == "top").all()
    assert ((e["propensity"] > 0) & (e["propensity"] <= 1)).all()
    assert e["slot"].between(1, 6).all() and e["position"].between(1, 6).all()
    page_of = {"impression": "home", "click": "home", "view": "item"}
    page_of |= {"add_to_cart": "item", "purchase": "checkout"}
    assert (e["page"] == e["event_type"].map(page_of)).all()
    cart = e["event_type"].isin(["add_to_cart", "purchase"])
    assert (e.loc[cart, "quantity"] >= 1).all() and (e.loc[cart, "price"] > 0).all()
    assert e.loc[~cart, ["quantity", "price"]].isna().all().all() and e["query"].isna().all()
    # device from the user's profile; users and items exist in the lake's tables
    users = pq.read_table(Lake(lake).users).to_pandas().set_index("user_id")
    assert (e["device"] == users.loc[e["user_id"], "device"].to_numpy()).all()
    assert set(e["device"]) <= set(DEVICES)
    items = pq.read_table(Lake(lake).items).to_pandas()
    assert set(e["item_id"]) <= set(items["item_id"])


def test_sessions_are_recoverable_with_a_30_minute_gap(events: pd.DataFrame) -> None:
    assert_sessions_split_at_30_minutes(events)
    assert (events.groupby("user_id")["session_id"].nunique() > 1).any()  # repeat visits


# ---- pages ---------------------------------------------------------------------------------


def test_impressions_are_the_shown_placements_of_the_users_page(
    events: pd.DataFrame, top_pages: pd.DataFrame
) -> None:
    imp = events[events["event_type"] == "impression"].copy()
    has_page = set(top_pages["user_id"])
    imp["page_key"] = imp["user_id"].where(imp["user_id"].isin(has_page), DEFAULT_PAGE_KEY)
    page = shown(top_pages).rename(columns={"user_id": "page_key", "item_rank": "position"})
    key = ["page_key", "slot", "position"]
    m = imp.merge(page, on=key, how="left", suffixes=("", "_page"), validate="many_to_one")
    assert (m["item_id"] == m["item_id_page"]).all()
    assert (m["carousel_id"] == m["carousel_id_page"]).all()
    assert np.allclose(m["propensity"], m["propensity_page"])
    # each visit shows its whole page once: 6 x 6 placements, none beyond
    per_visit = imp.groupby("session_id").size()
    assert (per_visit == 36).all()
    assert not imp.duplicated(["session_id", "slot", "position"]).any()


def test_unknown_users_get_the_default_page(
    truth: GroundTruth, events: pd.DataFrame, top_pages: pd.DataFrame
) -> None:
    absent = set(truth.user_ids[-ABSENT:])
    imp = events[(events["event_type"] == "impression") & events["user_id"].isin(absent)]
    assert imp["user_id"].nunique() > 5
    default = shown(top_pages[top_pages["user_id"] == DEFAULT_PAGE_KEY])
    expected = set(zip(default["slot"], default["item_rank"], default["item_id"], strict=True))
    for _, visit in imp.groupby("session_id"):  # over a handful of visits
        got = set(zip(visit["slot"], visit["position"], visit["item_id"], strict=True))
        assert got == expected


def test_a_missing_propensity_column_means_deterministic_placements(
    truth: GroundTruth, random_pages: pd.DataFrame
) -> None:
    old = random_pages.drop(columns=["propensity"])
    users = truth.user_ids[:30]
    e = simulate_visits(truth, old, users=users, day=DAY, visits_per_user=1.0, seed=2)
    e = e.to_pandas()
    assert len(e) > 0 and (e["propensity"] == 1.0).all()
    assert set(e["user_id"]) <= set(users) and (e["logging_policy"] == "pipeline").all()


# ---- clicks and funnel ---------------------------------------------------------------------


def test_clicks_follow_shown_placements(events: pd.DataFrame) -> None:
    key = ["session_id", "item_id", "carousel_id", "slot", "position"]
    imp = events[events["event_type"] == "impression"]
    clicks = events[events["event_type"] == "click"]
    m = clicks.merge(imp[[*key, "ts", "propensity"]], on=key, suffixes=("", "_imp"))
    assert len(m) == len(clicks) and m["event_id"].is_unique
    assert (m["ts_imp"] < m["ts"]).all()
    assert np.allclose(m["propensity"], m["propensity_imp"])
    # views, carts and purchases keep the clicked placement
    for etype in ("view", "add_to_cart", "purchase"):
        rows = events[events["event_type"] == etype]
        mm = rows.merge(clicks[[*key, "ts"]], on=key, suffixes=("", "_click"))
        assert set(mm.loc[mm["ts_click"] < mm["ts"], "event_id"]) == set(rows["event_id"])


def test_clicks_respect_availability_and_the_position_model(
    truth: GroundTruth, events: pd.DataFrame
) -> None:
    e = events[events["event_type"] != "impression"]
    item = truth.item_index(e["item_id"].to_numpy())
    assert (truth.first_seen_day[item] <= D).all()
    bought = e["event_type"].isin(["add_to_cart", "purchase"]).to_numpy()
    assert truth.available(item[bought], D).all()
    # the top-left placements are clicked more than the bottom-right ones (position bias)
    imp = events[events["event_type"] == "impression"]
    clicks = events[events["event_type"] == "click"]
    ctr = clicks.groupby("slot").size() / imp.groupby("slot").size()
    assert ctr.loc[1] > ctr.loc[6]


def test_unlisted_items_are_shown_but_never_clicked(
    truth: GroundTruth, top_pages: pd.DataFrame
) -> None:
    pages = top_pages.copy()
    future = np.flatnonzero(truth.first_seen_day > 0)  # listed during the window, not on day 0
    assert future.size > 0
    pages.loc[pages["slot"] == 1, "item_id"] = truth.item_ids[future[0]]
    pages = pages.drop_duplicates(["user_id", "slot", "item_id"])  # one per carousel
    e = simulate_visits(
        truth, pages, users=None, day=dt.date(2026, 1, 1), visits_per_user=3.0, seed=4
    ).to_pandas()
    at = e["item_id"] == truth.item_ids[future[0]]
    assert (e.loc[at, "event_type"] == "impression").sum() > 100
    assert set(e.loc[at, "event_type"]) == {"impression"}


# ---- visits --------------------------------------------------------------------------------


def test_activity_rates_follow_the_generator(truth: GroundTruth, top_pages: pd.DataFrame) -> None:
    visits = pd.Series(0, index=truth.user_ids)
    for k in range(6):
        e = simulate_visits(
            truth,
            top_pages,
            users=None,
            day=DAY + dt.timedelta(days=k),
            visits_per_user=None,
            seed=8,
        ).to_pandas()
        visits = visits.add(e.groupby("user_id")["session_id"].nunique(), fill_value=0)
    assert 0 < visits.sum() < truth.n_users  # about 1% of users browse on a given day
    active = truth.activity > np.median(truth.activity)
    regular = truth.staples[:, 0] >= 0  # regulars also come on their grocery trips
    assert visits[active].mean() > visits[~active & ~regular].mean()


def test_same_seed_same_events(truth: GroundTruth, random_pages: pd.DataFrame) -> None:
    args = {"users": None, "day": DAY, "visits_per_user": 1.0}
    a = simulate_visits(truth, random_pages, seed=3, **args)
    b = simulate_visits(truth, random_pages, seed=3, **args)
    c = simulate_visits(truth, random_pages, seed=4, **args)
    assert a.equals(b)
    assert not a.equals(c)
    # the visitors depend on the seed and day only, not on the pages shown
    d = simulate_visits(truth, make_pages(truth, "top"), seed=3, **args)
    first = pd.DataFrame({"u": a["user_id"], "s": a["session_id"]}).drop_duplicates()
    second = pd.DataFrame({"u": d["user_id"], "s": d["session_id"]}).drop_duplicates()
    assert first.reset_index(drop=True).equals(second.reset_index(drop=True))


def test_bad_inputs_raise(truth: GroundTruth, top_pages: pd.DataFrame) -> None:
    args = {"day": DAY, "visits_per_user": 1.0, "seed": 1}
    with pytest.raises(ValueError, match="not in the ground truth"):
        simulate_visits(truth, top_pages, users=np.array(["nobody"]), **args)
    no_default = top_pages[top_pages["user_id"] != DEFAULT_PAGE_KEY]
    with pytest.raises(ValueError, match=DEFAULT_PAGE_KEY):
        simulate_visits(truth, no_default, users=None, **args)
    bad = top_pages.assign(propensity=0.0)
    with pytest.raises(ValueError, match="propensit"):
        simulate_visits(truth, bad, users=None, **args)
    with pytest.raises(ValueError, match="item_rank"):
        simulate_visits(truth, top_pages.drop(columns=["item_rank"]), users=None, **args)
    with pytest.raises(ValueError, match="seed"):
        simulate_visits(truth, top_pages, users=None, **{**args, "seed": -1})


# ---- A/B tests -----------------------------------------------------------------------------


def test_split_arms_is_stable_and_balanced(truth: GroundTruth) -> None:
    ids = truth.user_ids
    arms = split_arms(ids)
    assert set(arms) == {0, 1} and 0.4 < arms.mean() < 0.6
    assert (split_arms(ids[::-1]) == arms[::-1]).all()
    assert (split_arms(list(ids[:5])) == arms[:5]).all()
    assert (split_arms(ids, salt="other") != arms).any()


def test_attractive_pages_beat_random_pages(
    truth: GroundTruth, top_pages: pd.DataFrame, random_pages: pd.DataFrame
) -> None:
    res = ab_test(truth, random_pages, top_pages, users=None, days=2, seed=7, visits_per_user=1.0)
    control, treatment = res["arms"]["control"], res["arms"]["treatment"]
    assert control["visitors"] + treatment["visitors"] <= truth.n_users
    assert min(control["visitors"], treatment["visitors"]) > 120
    assert treatment["ctr"] > control["ctr"]
    for metric in ("ctr", "add_to_carts_per_visitor"):
        lift = res["lift"][metric]
        assert lift["ci_low"] > 0 and lift["ci_low"] < lift["lift"] < lift["ci_high"]
    assert res["resamples"] == 1000 and res["days"] == 2 and res["start"] == "2026-01-04"
    assert res == ab_test(
        truth, random_pages, top_pages, users=None, days=2, seed=7, visits_per_user=1.0
    )


def test_an_a_a_test_finds_no_difference(truth: GroundTruth, random_pages: pd.DataFrame) -> None:
    res = ab_test(
        truth, random_pages, random_pages, users=None, days=2, seed=7, visits_per_user=1.0
    )
    for metric in ("ctr", "add_to_carts_per_visitor"):
        lift = res["lift"][metric]
        assert lift["ci_low"] < 0 < lift["ci_high"]


# ---- simulate_day --------------------------------------------------------------------------


def _publish_pages(root: str, ds: str, pages: pd.DataFrame) -> None:
    out = Lake(root).export(ds)
    os.makedirs(out, exist_ok=True)
    pages.to_parquet(os.path.join(out, "pages.parquet"), index=False)
    with open(Lake(root).current, "w") as fh:
        fh.write(ds + "\n")


def test_simulate_day_appends_a_partition_and_refuses_to_overwrite(
    lake: str, tmp_path, top_pages: pd.DataFrame
) -> None:
    root = str(tmp_path / "lake")
    shutil.copytree(lake, root)
    _publish_pages(root, "2026-01-04", top_pages)
    stats = simulate_day(root, "2026-01-04", seed=1, visits_per_user=1.0)
    paths = Lake(root)
    assert list_partitions(paths.raw_events)[-1] == "2026-01-04"
    assert os.listdir(paths.raw_events_ds("2026-01-04")) == ["part-0.parquet"]
    assert not [p for p in os.listdir(paths.raw_events) if p.startswith(".")]
    table = pq.read_table(stats["path"])
    assert table.schema.equals(GENERATED_EVENT_SCHEMA)
    e = table.to_pandas()
    assert stats["events"] == len(e) and stats["export_ds"] == "2026-01-04"
    assert stats["impressions"] == (e["event_type"] == "impression").sum() == 36 * stats["visits"]
    assert stats["clicks"] == (e["event_type"] == "click").sum() > 0
    assert stats["users"] == e["user_id"].nunique()
    assert stats["ctr"] == pytest.approx(stats["clicks"] / stats["impressions"])
    assert stats["add_to_carts_per_visitor"] == pytest.approx(
        stats["add_to_carts"] / stats["users"]
    )
    assert stats["model_versions"] == ["top-v1"]
    assert (e["logging_policy"] == "pipeline").all()

    with pytest.raises(ValueError, match="already exists"):
        simulate_day(root, "2026-01-04", seed=2, visits_per_user=1.0)
    with pytest.raises(ValueError, match="already exists"):
        simulate_day(root, "2026-01-02", seed=2)  # a generated day
    with pytest.raises(ValueError, match="earlier"):
        simulate_day(root, "2025-12-31", seed=2)
    with pytest.raises(ValueError, match="no export"):
        simulate_day(root, "2026-01-05", export_ds="2026-01-03", seed=2)
    # the next day, at the generator's activity rates, from an explicitly named export
    later = simulate_day(root, "2026-01-05", export_ds="2026-01-04", seed=2)
    assert later["visits"] < stats["visits"] and later["ds"] == "2026-01-05"
    assert os.path.exists(paths.raw_events_ds("2026-01-05"))


def test_simulate_day_needs_a_generated_lake(tmp_path) -> None:
    with pytest.raises(ValueError, match="ground truth"):
        simulate_day(str(tmp_path), "2026-01-04", seed=1)
    root = str(tmp_path / "lake")
    generate_lake(root, users=30, items=40, days=1, seed=2)
    with pytest.raises(ValueError, match="CURRENT"):
        simulate_day(root, "2026-01-02", seed=1)
