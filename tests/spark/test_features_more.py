"""Known-answer tests of sessions, purchase intent, user/carousel aggregates, context features
and the item_stats extension, on tiny hand-written frames."""

import datetime as dt

import pytest
from support.spark_events import ROW_PREFIX, event_schema

from features.aggregates import carousel_slot_engagement, user_aggregates, user_category_frequency
from features.context import event_context, user_context
from features.items import item_stats, user_activity
from features.sessions import INTENT_COLUMNS, purchase_intent, sessionize

AS_OF = dt.date(2026, 1, 11)  # a Sunday
SCHEMA = event_schema(*ROW_PREFIX, "slot", "position", "device")


def ts(day: int, hour: int = 12, minute: int = 0, month: int = 1) -> dt.datetime:
    year = 2026 if month == 1 else 2025
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def ev(
    eid, when, user, etype, item=None, sid=None, carousel=None, slot=None, pos=None, device=None
):
    return (eid, when, user, sid, etype, item, carousel, slot, pos, device)


def frame(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def by(df, *keys):
    return {
        tuple(getattr(r, k) for k in keys) if len(keys) > 1 else getattr(r, keys[0]): r
        for r in df.collect()
    }


# --- sessions -------------------------------------------------------------------------------


def test_sessionize_gap_boundary_and_session_id(spark):
    rows = [
        ev("e1", ts(5, 10, 0), "u1", "view"),
        ev("e2", ts(5, 10, 30), "u1", "view"),  # exactly 30 min later: same session
        ev("e4", ts(5, 11, 1), "u1", "view"),  # 31 min later: new session
        ev("e3", ts(5, 11, 1), "u1", "click"),  # same ts: ordered by event_id, same session
        ev("s1", ts(5, 10, 45), "u1", "view", sid="S"),  # has an id: does not bridge the gap
        ev("f1", ts(5, 9, 0), "u2", "view"),
    ]
    df = frame(spark, rows)
    got = {r.event_id: r.session_key for r in sessionize(df).collect()}
    assert got == {"e1": "u1#0", "e2": "u1#0", "e3": "u1#1", "e4": "u1#1", "s1": "S", "f1": "u2#0"}
    assert sessionize(df).columns == [*df.columns, "session_key"]
    # without a session_id column every row is derived: the S row (10:45) now bridges the gap
    no_sid = {r.event_id: r.session_key for r in sessionize(df.drop("session_id")).collect()}
    assert {no_sid[e] for e in ("e1", "e2", "s1", "e3", "e4")} == {"u1#0"}
    tighter = {r.event_id: r.session_key for r in sessionize(df, gap_minutes=29.5).collect()}
    assert tighter["e2"] == "u1#1" and tighter["e3"] == "u1#2"
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="gap_minutes must be > 0"):
            sessionize(df, gap_minutes=bad)


def test_purchase_intent_known_answer(spark):
    rows = [
        # u1, session s1: two clicks before a purchase, one between two purchases
        ev("c1", ts(9, 10, 0), "u1", "click", "a", "s1", "k", 1, 2),
        ev("c2", ts(9, 10, 15), "u1", "click", "b", "s1", "k", 1, 3),
        ev("p1", ts(9, 10, 30), "u1", "purchase", "a", "s1"),
        ev("c3", ts(9, 10, 40), "u1", "click", "c", "s1"),
        ev("p2", ts(9, 10, 50), "u1", "purchase", "c", "s1"),
        # u2, session s2: a click and no purchase
        ev("c4", ts(9, 8), "u2", "click", "a", "s2"),
        # u3, derived sessions: 31 min to the purchase is another session; then 30 min is not
        ev("c5", ts(8, 10, 0), "u3", "click", "a"),
        ev("p3", ts(8, 10, 31), "u3", "purchase", "a"),
        ev("c6", ts(8, 12, 0), "u3", "click", "a"),
        ev("p4", ts(8, 12, 30), "u3", "purchase", "a"),
        # u4: a view keeps the derived session alive across 50 minutes
        ev("c7", ts(8, 10, 0), "u4", "click", "a"),
        ev("v1", ts(8, 10, 25), "u4", "view", "a"),
        ev("p5", ts(8, 10, 50), "u4", "purchase", "a"),
        # u5: purchase at the same instant as the click
        ev("c8", ts(7, 9), "u5", "click", "a", "s5"),
        ev("p6", ts(7, 9), "u5", "purchase", "a", "s5"),
        # u6: the purchase falls on as_of, so it is not seen
        ev("c9", ts(10, 23, 50), "u6", "click", "a", "s6"),
        ev("p7", ts(11, 0, 5), "u6", "purchase", "a", "s6"),
    ]
    out = purchase_intent(frame(spark, rows), as_of=AS_OF)
    assert out.columns == list(INTENT_COLUMNS)
    assert (
        dict(out.dtypes)["intent_weight"] == "double" and dict(out.dtypes)["purchased"] == "boolean"
    )
    got = by(out, "event_id")
    want = {
        "c1": 0.5 ** (30 / 30),
        "c2": 0.5 ** (15 / 30),
        "c3": 0.5 ** (10 / 30),  # the first purchase at or after the click: p2, not p1
        "c4": 0.0,
        "c5": 0.0,
        "c6": 0.5,
        "c7": 0.5 ** (50 / 30),
        "c8": 1.0,
        "c9": 0.0,
    }
    assert set(got) == set(want)
    for eid, w in want.items():
        assert got[eid].intent_weight == pytest.approx(w), eid
        assert got[eid].purchased == (w > 0), eid
    assert (got["c1"].carousel_id, got["c1"].slot, got["c1"].position) == ("k", 1, 2)
    assert got["c1"].session_key == "s1" and got["c6"].session_key == "u3#2"
    # epsilon stretches the time scale: 30 minutes with epsilon 2 is half a T
    eps2 = by(
        purchase_intent(frame(spark, rows[:3]), epsilon=2.0, decay=0.25, as_of=AS_OF), "event_id"
    )
    assert eps2["c1"].intent_weight == pytest.approx(0.25**0.5)
    df = frame(spark, rows)
    for kwargs, msg in [
        ({"decay": 1.0}, "decay must be in"),
        ({"decay": 0.0}, "decay must be in"),
        ({"epsilon": 0.0}, "epsilon must be > 0"),
        ({"gap_minutes": 0.0}, "gap_minutes must be > 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            purchase_intent(df, as_of=AS_OF, **kwargs)


# --- aggregates -----------------------------------------------------------------------------


def test_user_aggregates_windows_rates_and_clipping(spark):
    rows = [
        ev("1", ts(4, 0), "u1", "impression", "a"),  # exactly as_of − 7 days: inside 7d
        ev("2", ts(3, 23, 59), "u1", "impression", "a"),  # 30d only
        ev("3", ts(10), "u1", "impression", "a"),
        ev("4", ts(10), "u1", "click", "a"),
        ev("5", ts(9), "u1", "view", "a"),
        ev("6", ts(9), "u1", "view", "b"),
        ev("7", ts(9), "u1", "add_to_cart", "a"),
        ev("8", ts(9), "u1", "purchase", "a"),
        ev("9", ts(9), "u1", "purchase", "b"),  # 2 purchases / 1 add_to_cart: clipped to 1
        ev("10", ts(11, 0), "u1", "click", "a"),  # on as_of: outside
        ev("11", ts(20, month=12), "u2", "purchase", "a"),  # 30d only; no denominators
        ev("12", ts(1, month=12), "u3", "purchase", "a"),  # outside every window: no row
    ]
    got = by(user_aggregates(frame(spark, rows), as_of=AS_OF), "user_id")
    assert set(got) == {"u1", "u2"}
    u1, u2 = got["u1"], got["u2"]
    assert (u1.impressions_7d, u1.views_7d, u1.clicks_7d, u1.add_to_carts_7d, u1.purchases_7d) == (
        2,
        2,
        1,
        1,
        2,
    )
    assert u1.impressions_30d == 3 and u1.clicks_30d == 1
    assert u1.click_rate_7d == pytest.approx(1 / 2) and u1.click_rate_30d == pytest.approx(1 / 3)
    assert u1.cart_rate_7d == pytest.approx(1 / 2)
    assert u1.purchase_rate_7d == 1.0  # 2/1 clipped
    assert u2.purchases_7d == 0 and u2.purchases_30d == 1
    for w in (7, 30):
        for rate in ("click_rate", "cart_rate", "purchase_rate"):
            assert getattr(u2, f"{rate}_{w}d") == 0.0
    one = user_aggregates(frame(spark, rows), as_of=AS_OF, windows=(1,))
    assert "clicks_1d" in one.columns and "clicks_7d" not in one.columns
    for bad in ((), (0,), (7, -1)):
        with pytest.raises(ValueError, match="window"):
            user_aggregates(frame(spark, rows), as_of=AS_OF, windows=bad)


def test_user_category_frequency_known_answer(spark):
    items = spark.createDataFrame(
        [("a", "c1"), ("b", "c1"), ("x", "c2")], ["item_id", "category_id"]
    )
    rows = [
        ev("1", ts(9), "u1", "view", "a"),
        ev("2", ts(9), "u1", "click", "b"),
        ev("3", ts(10), "u1", "purchase", "x"),
        ev("4", ts(10), "u1", "click", "a"),
        ev("5", ts(8), "u1", "impression", "x"),  # not an engagement
        ev("6", ts(8), "u1", "search"),
        ev("7", ts(11, 0), "u1", "purchase", "x"),  # on as_of
        ev("8", ts(12, 0, month=12), "u2", "view", "x"),  # exactly as_of − 30 days: inside
        ev("9", ts(11, 23, month=12), "u2", "view", "a"),  # before the window
    ]
    got = by(
        user_category_frequency(frame(spark, rows), items, as_of=AS_OF), "user_id", "category_id"
    )
    assert set(got) == {("u1", "c1"), ("u1", "c2"), ("u2", "c2")}
    c1, c2 = got[("u1", "c1")], got[("u1", "c2")]
    assert (c1.active_days, c1.events, c1.day_share) == (2, 3, 1.0)
    assert (c2.active_days, c2.events, c2.day_share) == (1, 1, 0.5)
    assert got[("u2", "c2")].day_share == 1.0


def test_carousel_slot_engagement_showings_and_rates(spark):
    rows = [
        # k/1: u1 sees it in two sessions (two rows in the first: one showing)
        ev("1", ts(9, 10), "u1", "impression", "a", "s1", "k", 1, 1),
        ev("2", ts(9, 10), "u1", "impression", "b", "s1", "k", 1, 2),
        ev("3", ts(9, 11), "u1", "click", "a", "s1", "k", 1, 1),
        ev("4", ts(9, 11), "u1", "add_to_cart", "a", "s1", "k", 1, 1),
        ev("5", ts(9, 12), "u1", "impression", "a", "s2", "k", 1, 1),
        # k/1: u2 without sessions, twice on Jan 9 (one showing) and once on Jan 10
        ev("6", ts(9, 10), "u2", "impression", "a", None, "k", 1, 1),
        ev("7", ts(9, 15), "u2", "impression", "a", None, "k", 1, 1),
        ev("8", ts(10, 10), "u2", "impression", "a", None, "k", 1, 1),
        # j/2: clicks but no impressions; m/3: more clicks than showings
        ev("9", ts(9), "u1", "click", "a", "s1", "j", 2, 1),
        ev("10", ts(9), "u1", "click", "b", "s1", "j", 2, 2),
        ev("11", ts(9), "u3", "impression", "a", "s3", "m", 3, 1),
        *[ev(f"m{i}", ts(9), "u3", "click", "a", "s3", "m", 3, 1) for i in range(3)],
        ev("12", ts(9), "u3", "click", "a", "s3"),  # no carousel: ignored
        ev("13", ts(11, 0), "u1", "impression", "a", "s9", "k", 1, 1),  # on as_of
        ev("14", ts(11, 0, month=12), "u1", "impression", "a", "s0", "k", 1, 1),  # too old
    ]
    got = by(carousel_slot_engagement(frame(spark, rows), as_of=AS_OF), "carousel_id", "slot")
    assert set(got) == {("k", 1), ("j", 2), ("m", 3)}
    k = got[("k", 1)]
    assert (k.impressions, k.clicks, k.add_to_carts) == (4, 1, 1)
    assert k.click_rate == pytest.approx(1 / 4)
    assert (got[("j", 2)].impressions, got[("j", 2)].click_rate) == (0, 0.0)
    assert got[("m", 3)].click_rate == 1.0


# --- context --------------------------------------------------------------------------------


def test_event_context_is_utc_whatever_the_session_time_zone(spark):
    rows = [
        ev("1", ts(11, 23, 30), "u1", "view", device=" Mobile "),  # Sunday
        ev("2", ts(5, 0, 10), "u1", "view"),  # Monday, device null
        ev("3", ts(7, 13), "u1", "view", device=""),  # Wednesday
    ]
    df = frame(spark, rows)
    want = {"1": (7, 23, "mobile"), "2": (1, 0, "unknown"), "3": (3, 13, "unknown")}
    old = spark.conf.get("spark.sql.session.timeZone")
    try:
        for tz in ("UTC", "America/Los_Angeles"):
            spark.conf.set("spark.sql.session.timeZone", tz)
            got = {r.event_id: (r.dow, r.hour, r.device) for r in event_context(df).collect()}
            assert got == want, tz
    finally:
        spark.conf.set("spark.sql.session.timeZone", old)
    no_device = event_context(df.drop("device"))
    assert {r.device for r in no_device.collect()} == {"unknown"}


def test_user_context_modes_shares_and_ties(spark):
    rows = [
        ev("1", ts(10, 10), "u1", "view", device="mobile"),  # Saturday
        ev("2", ts(10, 10), "u1", "click", device="Mobile"),  # Saturday
        ev("3", ts(9, 9), "u1", "view", device="desktop"),
        ev("4", ts(9, 9), "u1", "view", device="DESKTOP"),
        ev("5", ts(8, 10), "u1", "view", device="app"),
        ev("6", ts(7, 9), "u1", "view", device="tablet"),  # denominator only
        ev("7", ts(11, 1), "u1", "view", device="app"),  # on as_of: outside
        ev("8", ts(5, 6), "u2", "view"),  # Monday, no device
    ]
    got = by(user_context(frame(spark, rows), as_of=AS_OF), "user_id")
    u1 = got["u1"]
    assert u1.main_device == "desktop"  # 2 mobile, 2 desktop: alphabetical
    assert u1.share_mobile == pytest.approx(2 / 6) and u1.share_desktop == pytest.approx(2 / 6)
    assert u1.share_app == pytest.approx(1 / 6)
    assert u1.main_hour == 9  # hours 9 and 10 both 3 events: the smaller
    assert u1.weekend_share == pytest.approx(2 / 6)
    u2 = got["u2"]
    assert (u2.main_device, u2.share_mobile, u2.main_hour, u2.weekend_share) == (
        "unknown",
        0.0,
        6,
        0.0,
    )
    with pytest.raises(ValueError, match="days must be"):
        user_context(frame(spark, rows), as_of=AS_OF, days=0)


# --- items ----------------------------------------------------------------------------------


def test_item_stats_extension(spark):
    items = spark.createDataFrame(
        [
            ("a", "c1", 1.0, dt.date(2026, 1, 1)),
            ("b", "c1", 2.0, dt.date(2026, 1, 1)),
            ("c", "c1", 3.0, dt.date(2026, 1, 1)),
            ("g", "c1", 3.0, dt.date(2026, 1, 1)),  # ties with c: same band
            ("d", "c1", 4.0, dt.date(2026, 1, 1)),
            ("h", "c1", 5.0, dt.date(2026, 1, 1)),
            ("e", "c1", None, dt.date(2026, 1, 1)),  # no price: no band
            ("f", "c2", 10.0, None),  # alone in its category; unknown first_seen
        ],
        "item_id string, category_id string, price double, first_seen date",
    )
    rows = [
        ev("1", ts(10, 12), "u1", "purchase", "a"),  # 3, in 1d/7d/30d
        ev("2", ts(4, 0), "u1", "click", "a"),  # 1, exactly as_of − 7: in 7d
        ev("3", ts(12, 0, month=12), "u1", "view", "a"),  # 1, exactly as_of − 30: in 30d
        ev("4", ts(11, 23, month=12), "u1", "add_to_cart", "a"),  # 2, total only
        ev("5", ts(10), "u1", "impression", "a"),  # not an engagement
        ev("6", ts(11, 0), "u1", "purchase", "a"),  # on as_of
    ]
    got = by(item_stats(frame(spark, rows), items, as_of=AS_OF, recent_days=7), "item_id")
    a = got["a"]
    assert (a.pop_1d, a.pop_7d, a.pop_30d, a.pop_total, a.pop_recent) == (3.0, 4.0, 5.0, 7.0, 4.0)
    assert a.days_since_last_event == pytest.approx(0.5) and a.age_days == 10
    assert got["b"].pop_30d == 0.0 and got["b"].days_since_last_event is None
    assert got["f"].age_days is None
    # c1 prices 1, 2, 3, 3, 4, 5: percent ranks 0, .2, .4, .4, .8, 1 -> floor(5 pr) + 1, capped
    assert {i: got[i].price_band for i in "abcgdhef"} == {
        "a": 1,
        "b": 2,
        "c": 3,
        "g": 3,
        "d": 5,
        "h": 5,
        "e": None,
        "f": 1,
    }
    assert all(r.in_stock and r.has_image for r in got.values())
    # optional catalogue columns: in_stock copied (null -> true), the rest defaulted
    slim = spark.createDataFrame(
        [("a", dt.date(2026, 1, 1), False), ("b", dt.date(2026, 1, 1), None)],
        "item_id string, first_seen date, in_stock boolean",
    )
    got = by(item_stats(frame(spark, rows), slim, as_of=AS_OF, recent_days=7), "item_id")
    assert (got["a"].in_stock, got["b"].in_stock, got["a"].has_image) == (False, True, True)
    assert got["a"].price_band is None and got["a"].pop_7d == 4.0


def test_item_stats_buyers_and_repeat_rate(spark):
    items = spark.createDataFrame(
        [(i, "c1", dt.date(2026, 1, 1)) for i in "abc"],
        "item_id string, category_id string, first_seen date",
    )
    rows = [
        # a: u1 buys it in two orders, u2 twice in one order, u3 and u5 once -> 1 of 4 repeat
        ev("1", ts(2), "u1", "purchase", "a"),
        ev("2", ts(5), "u1", "purchase", "a"),
        ev("3", ts(3, 9), "u2", "purchase", "a"),
        ev("4", ts(3, 9), "u2", "purchase", "a"),
        ev("5", ts(4), "u3", "purchase", "a"),
        ev("6", ts(4), "u3", "click", "b"),  # b: clicked, never bought
        ev("7", ts(6), "u4", "purchase", "c"),  # c: bought again only on as_of: not counted
        ev("8", ts(11, 1), "u4", "purchase", "c"),
        ev("9", ts(11, 12, month=12), "u5", "purchase", "a"),  # a's first buyer, 31 days back
    ]
    got = by(item_stats(frame(spark, rows), items, as_of=AS_OF, recent_days=7), "item_id")
    assert (got["a"].n_buyers, got["a"].repeat_rate) == (4.0, 0.25)
    assert (got["b"].n_buyers, got["b"].repeat_rate) == (0.0, None)
    assert (got["c"].n_buyers, got["c"].repeat_rate) == (1.0, 0.0)
    # first purchases in the last 30 days: a's u1, u2, u3 (not u5); c's u4
    assert [got[i].new_buyers_30d for i in "abc"] == [3.0, 0.0, 1.0]


def test_user_activity_orders(spark):
    rows = [
        # u1: orders at day 1 (two rows), day 4 and day 7 -> 3 orders, 4 rows, gap 3 days
        ev("1", ts(1), "u1", "purchase", "a"),
        ev("2", ts(1), "u1", "purchase", "b"),
        ev("3", ts(4), "u1", "purchase", "a"),
        ev("4", ts(7), "u1", "purchase", "c"),
        ev("5", ts(8), "u1", "click", "a"),
        ev("6", ts(11, 1), "u1", "purchase", "a"),  # on as_of: not counted
        ev("7", ts(9), "u2", "purchase", "a"),  # one order: no gap
        ev("8", ts(9), "u3", "click", "a"),  # no orders
    ]
    got = by(user_activity(frame(spark, rows), as_of=AS_OF), "user_id")
    u1, u2, u3 = got["u1"], got["u2"], got["u3"]
    assert (u1.n_events, u1.n_orders, u1.basket_size) == (5, 3, pytest.approx(4 / 3))
    assert u1.days_since_order == pytest.approx(3.5)  # day 7 noon -> day 11 midnight
    assert u1.order_gap_days == pytest.approx(3.0)
    assert (u2.n_orders, u2.basket_size, u2.order_gap_days) == (1, 1.0, None)
    assert (u3.n_orders, u3.basket_size, u3.days_since_order, u3.order_gap_days) == (
        0,
        None,
        None,
        None,
    )


# --- cross-cutting --------------------------------------------------------------------------


def _all_outputs(spark, events):
    items = spark.createDataFrame(
        [("a", "c1", 1.0, dt.date(2025, 1, 1)), ("b", "c2", 2.0, dt.date(2025, 1, 1))],
        "item_id string, category_id string, price double, first_seen date",
    )
    outs = [
        purchase_intent(events, as_of=AS_OF),
        user_aggregates(events, as_of=AS_OF),
        user_category_frequency(events, items, as_of=AS_OF),
        carousel_slot_engagement(events, as_of=AS_OF),
        user_context(events, as_of=AS_OF),
        item_stats(events, items, as_of=AS_OF, recent_days=7),
    ]
    return [sorted(map(tuple, o.collect()), key=repr) for o in outs]


def test_point_in_time_later_events_change_nothing(spark):
    base = [
        ev("1", ts(10, 23, 30), "u1", "impression", "a", None, "k", 1, 1, "mobile"),
        ev("2", ts(10, 23, 40), "u1", "click", "a", None, "k", 1, 1, "mobile"),
        ev("3", ts(9), "u2", "purchase", "b", "s2", device="app"),
        ev("4", ts(9), "u2", "add_to_cart", "b", "s2", "j", 2, 1, "app"),
    ]
    leak = base + [
        # continues u1's derived session across midnight: the purchase must not label the click
        ev("5", ts(11, 0, 0), "u1", "purchase", "a", None, device="mobile"),
        ev("6", ts(11, 9), "u1", "impression", "a", "s9", "k", 1, 1, "desktop"),
        ev("7", ts(12), "u3", "click", "b", "s3", "j", 2, 1, "app"),
        ev("8", ts(11, 0), "u2", "view", "a", "s2", device="app"),
    ]
    assert _all_outputs(spark, frame(spark, base)) == _all_outputs(spark, frame(spark, leak))


def test_purchases_only_events_give_zeros_not_errors(spark):
    """Real grocery logs have purchases only, and no sessions, carousels or devices."""
    rows = [
        ("1", ts(9, 10), "u1", "purchase", "a"),
        ("2", ts(9, 11), "u1", "purchase", "b"),
        ("3", ts(5, 10), "u2", "purchase", "a"),
    ]
    df = spark.createDataFrame(
        rows, "event_id string, ts timestamp, user_id string, event_type string, item_id string"
    )
    items = spark.createDataFrame([("a", "c1"), ("b", "c1")], ["item_id", "category_id"])
    assert purchase_intent(df, as_of=AS_OF).count() == 0
    agg = by(user_aggregates(df, as_of=AS_OF), "user_id")
    u1 = agg["u1"]
    assert (u1.impressions_7d, u1.clicks_30d, u1.purchases_7d) == (0, 0, 2)
    assert (u1.click_rate_7d, u1.cart_rate_30d, u1.purchase_rate_30d) == (0.0, 0.0, 0.0)
    freq = by(user_category_frequency(df, items, as_of=AS_OF), "user_id", "category_id")
    assert freq[("u1", "c1")].events == 2 and freq[("u1", "c1")].day_share == 1.0
    # conformed events carry null carousel columns: no showings, no rows
    conformed = df.selectExpr("*", "cast(null as string) carousel_id", "cast(null as int) slot")
    assert carousel_slot_engagement(conformed, as_of=AS_OF).count() == 0
    ctx = by(user_context(df, as_of=AS_OF), "user_id")
    assert ctx["u1"].main_device == "unknown" and ctx["u1"].share_app == 0.0
    sessions = {r.event_id: r.session_key for r in sessionize(df).collect()}
    assert sessions == {"1": "u1#0", "2": "u1#1", "3": "u2#0"}
    with pytest.raises(ValueError, match="missing required column.*carousel_id.*slot"):
        carousel_slot_engagement(df, as_of=AS_OF)
