import datetime as dt

import pytest
from support.spark_events import ROW_PREFIX, event_schema

from features.counts import user_category_counts, user_item_counts
from features.items import item_stats, user_activity
from features.priors import (
    advance_state,
    carousel_prior,
    carousel_trials,
    trial_counts,
    user_carousel_priors,
)

AS_OF = dt.date(2026, 1, 11)
SCHEMA = event_schema(*ROW_PREFIX, "quantity")


def ts(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, tzinfo=dt.UTC)


def frame(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def test_counts_weights_and_decay_known_answer(spark):
    rows = [
        ("1", ts(10, 0), "u1", "s1", "click", "a", None, None),  # 1 day old
        ("2", ts(10, 0), "u1", "s1", "add_to_cart", "a", None, None),
        ("3", ts(10, 0), "u1", "s1", "purchase", "a", None, 2),  # quantity 2
        ("4", ts(9, 0), "u1", "s2", "click", "b", None, None),  # 2 days old
        ("5", ts(11, 1), "u1", "s3", "purchase", "b", None, 1),  # on as_of: must not count
        ("6", ts(10, 0), "u2", "s4", "view", "a", None, None),  # views are not transactions
    ]
    out = user_item_counts(
        frame(spark, rows),
        as_of=AS_OF,
        half_life_days=1.0,
        weights={"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0},
    )
    got = {(r.user_id, r.item_id): r for r in out.collect()}
    assert set(got) == {("u1", "a"), ("u1", "b")}
    a = got[("u1", "a")]
    assert (
        a.n_click == pytest.approx(0.5)
        and a.n_add_to_cart == pytest.approx(0.5)
        and a.n_purchase == pytest.approx(1.0)
    )
    assert a.eta == pytest.approx(0.5 * 1 + 0.5 * 3 + 1.0 * 5)
    assert got[("u1", "b")].eta == pytest.approx(0.25)
    items = spark.createDataFrame([("a", "c1"), ("b", "c1")], ["item_id", "category_id"])
    cat = user_category_counts(out, items).collect()
    assert len(cat) == 1 and cat[0].category_id == "c1"
    assert cat[0].n_click == pytest.approx(0.75) and cat[0].n_add_to_cart == pytest.approx(0.5)
    assert cat[0].n_purchase == pytest.approx(1.0) and cat[0].eta == pytest.approx(a.eta + 0.25)
    no_decay = user_item_counts(
        frame(spark, rows), as_of=AS_OF, half_life_days=0, weights={"purchase": 1.0}
    )
    assert {(r.user_id, r.item_id): r.eta for r in no_decay.collect()}[
        ("u1", "a")
    ] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown event type"):
        user_item_counts(frame(spark, rows), as_of=AS_OF, half_life_days=0, weights={"view": 1.0})


def test_point_in_time_a_later_event_changes_nothing(spark):
    """Features for ds use only events strictly before ds: adding events on/after ds is a no-op."""
    base = [
        ("1", ts(9), "u1", "s1", "purchase", "a", "buy_again", 1),
        ("2", ts(9), "u1", "s1", "impression", "a", "buy_again", None),
        ("3", ts(10), "u1", "s2", "impression", "b", "trending", None),
    ]
    leak = base + [
        ("4", ts(11, 0), "u1", "s3", "purchase", "b", "trending", 5),  # midnight of as_of
        ("5", ts(12), "u2", "s4", "click", "a", "trending", None),
        ("6", ts(11, 23), "u1", "s3", "impression", "b", "trending", None),
    ]
    items = spark.createDataFrame(
        [("a", "c1", dt.date(2025, 1, 1)), ("b", "c2", dt.date(2025, 1, 1))],
        ["item_id", "category_id", "first_seen"],
    )

    def snapshot(ev):
        w = {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
        ui = user_item_counts(ev, as_of=AS_OF, half_life_days=30, weights=w)
        state = trial_counts(carousel_trials(ev, as_of=AS_OF), as_of=AS_OF, half_life_days=3)
        prior = carousel_prior(state, strength=10)
        return (
            sorted(map(tuple, ui.drop("last_ts").collect())),
            sorted(map(tuple, user_category_counts(ui, items).collect())),
            sorted(map(tuple, user_carousel_priors(state, prior).collect())),
            sorted(map(tuple, item_stats(ev, items, as_of=AS_OF, recent_days=7).collect())),
            sorted(map(tuple, user_activity(ev, as_of=AS_OF).collect())),
        )

    assert snapshot(frame(spark, base)) == snapshot(frame(spark, leak))


def test_beta_priors_known_answer(spark):
    rows = [
        # u1 sees carousel k in two sessions, clicks in one -> 2 trials, 1 success
        ("1", ts(5), "u1", "s1", "impression", "a", "k", None),
        ("2", ts(5), "u1", "s1", "impression", "b", "k", None),
        ("3", ts(5), "u1", "s1", "click", "a", "k", None),
        ("4", ts(6), "u1", "s2", "impression", "a", "k", None),
        # u2 sees k once and adds to cart; sees j once without engaging
        ("5", ts(6), "u2", "s3", "impression", "a", "k", None),
        ("6", ts(6), "u2", "s3", "add_to_cart", "a", "k", None),
        ("7", ts(6), "u2", "s3", "impression", "c", "j", None),
    ]
    trials = carousel_trials(frame(spark, rows), as_of=AS_OF)
    assert sorted((r.user_id, r.carousel_id, r.success) for r in trials.collect()) == [
        ("u1", "k", 0),
        ("u1", "k", 1),
        ("u2", "j", 0),
        ("u2", "k", 1),
    ]
    state = trial_counts(trials, as_of=AS_OF)
    prior = {r.carousel_id: r for r in carousel_prior(state, strength=10).collect()}
    p_global = (2 + 1) / (4 + 2)
    assert prior["k"].p_global == pytest.approx(p_global)
    p_k = (2 + p_global * 10) / (3 + 10)
    assert prior["k"].a0 == pytest.approx(10 * p_k) and prior["k"].b0 == pytest.approx(
        10 * (1 - p_k)
    )
    post = {
        (r.user_id, r.carousel_id): r
        for r in user_carousel_priors(state, carousel_prior(state, strength=10)).collect()
    }
    u1 = post[("u1", "k")]
    assert u1.a == pytest.approx(10 * p_k + 1) and u1.b == pytest.approx(10 * (1 - p_k) + 1)
    assert u1.lam == pytest.approx(u1.a / (u1.a + u1.b))
    assert 0 < post[("u2", "j")].lam < 1
    with pytest.raises(ValueError, match="prior strength"):
        carousel_prior(state, strength=0)


@pytest.mark.parametrize("half_life", [0.0, 2.0])
def test_incremental_priors_equal_a_full_recompute(spark, half_life):
    """Advancing yesterday's state by one day at a time gives the full-history numbers."""
    rows = []
    n = 0
    for day in (3, 4, 5, 6, 8):  # day 7 has no traffic: the state must still age by two days
        for u in ("u1", "u2", "u3"):
            for k in ("k", "j"):
                n += 1
                rows.append((f"i{n}", ts(day, 10), u, f"s{u}{day}", "impression", "a", k, None))
                if (n % 3 == 0) or (u == "u1" and k == "k"):
                    rows.append((f"c{n}", ts(day, 11), u, f"s{u}{day}", "click", "a", k, None))
    # a session crossing midnight: counted once per day on both paths
    rows.append(("x1", ts(5, 23), "u2", "late", "impression", "a", "k", None))
    rows.append(("x2", ts(6, 0), "u2", "late", "add_to_cart", "a", "k", None))
    events = frame(spark, rows)

    full = trial_counts(
        carousel_trials(events, as_of=dt.date(2026, 1, 9)),
        as_of=dt.date(2026, 1, 9),
        half_life_days=half_life,
    )
    state = trial_counts(
        carousel_trials(events, as_of=dt.date(2026, 1, 4)),
        as_of=dt.date(2026, 1, 4),
        half_life_days=half_life,
    )
    prev_day = dt.date(2026, 1, 4)
    for day in range(4, 9):
        as_of = dt.date(2026, 1, day + 1)
        new = trial_counts(
            carousel_trials(events, as_of=as_of, since=dt.date(2026, 1, day)),
            as_of=as_of,
            half_life_days=half_life,
        )
        state = advance_state(state, new, half_life_days=half_life, days=(as_of - prev_day).days)
        prev_day = as_of
    got = {(r.user_id, r.carousel_id): (r.trials, r.successes) for r in state.collect()}
    want = {(r.user_id, r.carousel_id): (r.trials, r.successes) for r in full.collect()}
    assert got.keys() == want.keys()
    for key, (t_, s_) in want.items():
        assert got[key][0] == pytest.approx(t_) and got[key][1] == pytest.approx(s_), key
    if half_life == 0:
        assert want[("u1", "k")] == (5.0, 5.0)
    a = {r.carousel_id: (r.a0, r.b0) for r in carousel_prior(state, strength=5).collect()}
    b = {r.carousel_id: (r.a0, r.b0) for r in carousel_prior(full, strength=5).collect()}
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a)


def test_item_stats_popularity_windows(spark):
    rows = [
        ("1", ts(10), "u1", None, "purchase", "a", None, 1),  # recent window (3 days)
        ("2", ts(6), "u1", None, "click", "a", None, None),  # prior window
        ("3", ts(6), "u2", None, "click", "b", None, None),
    ]
    items = spark.createDataFrame(
        [
            ("a", "c1", dt.date(2025, 1, 1)),
            ("b", "c1", dt.date(2026, 1, 9)),
            ("z", "c2", dt.date(2025, 1, 1)),
        ],
        ["item_id", "category_id", "first_seen"],
    )
    got = {
        r.item_id: r
        for r in item_stats(frame(spark, rows), items, as_of=AS_OF, recent_days=3).collect()
    }
    assert (
        got["a"].pop_recent == 3.0
        and got["a"].pop_prior == 1.0
        and got["a"].trend == pytest.approx(4 / 2)
    )
    assert got["z"].pop_total == 0.0 and not got["z"].is_new
    assert got["b"].is_new


def test_missing_columns_are_named(spark):
    df = spark.createDataFrame([("u1",)], ["user_id"])
    with pytest.raises(ValueError, match="missing required column.*item_id.*event_type.*ts"):
        user_item_counts(df, as_of=AS_OF, half_life_days=1, weights={})
