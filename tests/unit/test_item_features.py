"""FeatureSource.build + frame on tiny hand-built feature tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.ranking.item_features import (
    ACTIVITY_COLUMNS,
    FEATURES,
    ITEM_COLUMNS,
    USER_COLUMNS,
    FeatureSource,
)

AS_OF = "2024-03-10"
# catalogue order deliberately not sorted, so a lookup by sorted id would misalign
ITEM_IDS = np.array(["i3", "i1", "i4", "i2"], dtype=object)
ITEM_CAT = np.array([0, 1, 0, 1])  # i3, i4 -> cA; i1, i2 -> cB
CAT_IDS = np.array(["cA", "cB"], dtype=object)  # sorted, as Catalog.build gives them
I3, I1, I4, I2 = range(4)  # catalogue positions

# item_stats source values per item id ("i4" has no row at all)
STAT_COLUMNS = (
    "pop_1d",
    "pop_7d",
    "pop_30d",
    "trend",
    "is_new",
    "age_days",
    "n_buyers",
    "repeat_rate",
    "new_buyers_30d",
)
STATS = {
    item: dict(zip(STAT_COLUMNS, values, strict=True))
    for item, values in {
        "i1": (1.0, 10.0, 100.0, 1.5, True, 3.0, 4.0, 0.25, 1.0),
        "i2": (2.0, 20.0, 200.0, 0.5, False, 30.0, 0.0, np.nan, 0.0),
        "i3": (3.0, 30.0, 300.0, 2.0, False, 90.0, 2.0, 1.0, 0.0),
    }.items()
}
UI_COUNTS = ["ui_n_click", "ui_n_add_to_cart", "ui_n_purchase", "ui_eta"]  # user × item counts
EXTRA = {"i1": (1, True, 0.5), "i2": (2, False, 4.0), "i3": (3, True, 1.0)}  # band, image, days
# user_activity rows: events, orders, basket size, days since the last order, mean order gap
ACTIVITY = [("u2", 7, 3, 4.5, 2.0, 6.0), ("u1", 40, 0, np.nan, np.nan, np.nan)]


def _user_aggregates() -> pd.DataFrame:
    rows = []
    for base, u in ((100.0, "u1"), (200.0, "u2")):
        row = {"user_id": u}
        row.update({c: base + j for j, c in enumerate(USER_COLUMNS) if c not in ACTIVITY_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


def _tables() -> dict[str, pd.DataFrame]:
    item_stats = pd.DataFrame(
        [
            {
                "item_id": i,
                **STATS[i],
                "price_band": EXTRA[i][0],
                "has_image": EXTRA[i][1],
                "days_since_last_event": EXTRA[i][2],
            }
            for i in ("i2", "i3", "i1")  # shuffled relative to the catalogue, i4 missing
        ]
    )
    user_activity = pd.DataFrame(ACTIVITY, columns=["user_id", *ACTIVITY_COLUMNS])
    user_item_counts = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u1", "u9"],
            "item_id": ["i1", "i4", "i3", "zz_not_in_catalogue", "i2"],
            "n_click": [3, 1, 5, 9, 2],
            "n_add_to_cart": [1, 1, 0, 9, 2],
            "n_purchase": [0, 1, 0, 9, 2],
            "eta": [2.5, 4.0, 1.25, 9.0, 3.0],
            "last_ts": pd.to_datetime(
                [
                    "2024-03-08 00:00:00",  # 2 days before as_of
                    "2024-03-09 12:00:00",  # 0.5 days
                    "2024-02-29 00:00:00",  # 10 days (leap year)
                    "2024-03-01 00:00:00",
                    "2024-03-05 00:00:00",  # u9: 5 days
                ]
            ),
        }
    )
    user_category_counts = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1"],
            "category_id": ["cA", "cB", "cZ_unknown"],
            "eta": [1.5, 0.7, 5.0],
            "n_purchase": [2, 1, 7],
        }
    )
    user_category_frequency = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "category_id": ["cA", "cA"],  # u2 × cA has a frequency row but no counts row
            "day_share": [0.25, 0.1],
            "active_days": [5, 2],
        }
    )
    return dict(
        item_stats=item_stats,
        user_aggregates=_user_aggregates(),
        user_activity=user_activity,
        user_item_counts=user_item_counts,
        user_category_counts=user_category_counts,
        user_category_frequency=user_category_frequency,
    )


def _source(**overrides) -> FeatureSource:
    kw = dict(as_of=AS_OF, item_ids=ITEM_IDS, item_cat=ITEM_CAT, cat_ids=CAT_IDS, **_tables())
    kw.update(overrides)
    return FeatureSource.build(**kw)


def _cross(src: FeatureSource, users: list[str], **kw) -> pd.DataFrame:
    """Every (user, item) pair, users outer, items in catalogue order."""
    rows = np.repeat(src.user_rows(np.array(users, dtype=object)), len(ITEM_IDS))
    items = np.tile(np.arange(len(ITEM_IDS)), len(users))
    n = len(items)
    kw.setdefault("mf_score", np.arange(n, dtype=np.float64) / 10)
    kw.setdefault("cat_affinity", np.linspace(0.1, 0.9, n))
    return src.frame(rows, items, **kw)


def _pair(frame: pd.DataFrame, user_pos: int, item: int) -> pd.Series:
    return frame.iloc[user_pos * len(ITEM_IDS) + item]


def test_columns_are_features_in_order_and_float32():
    f = _cross(_source(), ["u1", "u2"])
    assert list(f.columns) == list(FEATURES)
    # 12 item + 21 user + 5 user×item + 4 user×category + 3 MF + 2 placement
    assert len(FEATURES) == len(set(FEATURES)) == 12 + 21 + 5 + 4 + 3 + 2
    assert len(f) == 8
    assert all(f[c].dtype == np.float32 for c in f.columns)


def test_item_columns_follow_catalogue_order_with_nan_for_missing_items():
    f = _cross(_source(), ["u1"])
    for item_id, pos in (("i3", I3), ("i1", I1), ("i2", I2)):
        row = f.iloc[pos]
        for name, src in ITEM_COLUMNS.items():
            if src in STATS[item_id]:
                want = float(STATS[item_id][src])
            else:
                band, image, days = EXTRA[item_id]
                want = {"price_band": band, "has_image": image, "days_since_last_event": days}[src]
            assert row[name] == pytest.approx(float(want), nan_ok=True), (item_id, name)
    # exact spot checks, so a misalignment cannot hide behind the loop above
    assert f["item_pop_7d"].iloc[[I3, I1, I2]].tolist() == [30.0, 10.0, 20.0]
    assert f["item_pop_30d"].iloc[[I3, I1, I2]].tolist() == [300.0, 100.0, 200.0]
    assert f["item_is_new"].iloc[I1] == 1.0 and f["item_is_new"].iloc[I3] == 0.0
    # i4 has no item_stats row: every item column is NaN
    assert f.iloc[I4][list(ITEM_COLUMNS)].isna().all()


def test_item_column_absent_from_item_stats_is_nan():
    tables = _tables()
    src = _source(item_stats=tables["item_stats"].drop(columns=["price_band"]))
    f = _cross(src, ["u1"])
    assert f["item_price_band"].isna().all()
    assert f["item_pop_7d"].iloc[I1] == 10.0


def test_user_aggregates_are_looked_up_per_user():
    src = _source()
    assert list(src.user_ids) == ["u1", "u2", "u9"]  # activity ∪ user_item_counts, sorted
    f = _cross(src, ["u2", "u1", "u9"])
    for pos, base, activity in ((0, 200.0, ACTIVITY[0]), (1, 100.0, ACTIVITY[1])):
        for item in range(4):
            row = _pair(f, pos, item)
            for j, c in enumerate(USER_COLUMNS):
                if c not in ACTIVITY_COLUMNS:
                    assert row[f"user_{c}"] == base + j
            got = row[[f"user_{c}" for c in ACTIVITY_COLUMNS]].to_numpy(float)
            np.testing.assert_array_equal(got, np.array(activity[1:], float))
    # u9 only has user × item counts: known user, but no aggregates
    u9 = _pair(f, 2, I2)
    assert u9[[f"user_{c}" for c in USER_COLUMNS]].isna().all()
    assert u9["ui_n_click"] == 2 and u9["ui_days_since"] == pytest.approx(5.0)


def test_user_item_counts_and_days_since():
    f = _cross(_source(), ["u1", "u2"])
    u1_i1 = _pair(f, 0, I1)
    assert u1_i1[UI_COUNTS].tolist() == [3.0, 1.0, 0.0, 2.5]
    assert u1_i1["ui_days_since"] == pytest.approx(2.0)
    u1_i4 = _pair(f, 0, I4)
    assert u1_i4[UI_COUNTS].tolist() == [1.0, 1.0, 1.0, 4.0]
    assert u1_i4["ui_days_since"] == pytest.approx(0.5)
    u2_i3 = _pair(f, 1, I3)
    assert u2_i3["ui_n_click"] == 5.0 and u2_i3["ui_eta"] == 1.25
    assert u2_i3["ui_days_since"] == pytest.approx(10.0)
    # pairs without history: zero counts, unknown recency
    for pos, item in ((0, I3), (0, I2), (1, I1), (1, I4), (1, I2)):
        row = _pair(f, pos, item)
        assert row[UI_COUNTS].tolist() == [0.0] * 4
        assert np.isnan(row["ui_days_since"]), (pos, item)


def test_unknown_user_gets_nan_user_features_and_zero_counts():
    src = _source()
    assert src.user_rows(np.array(["nobody", "u1"], dtype=object)).tolist() == [-1, 0]
    f = _cross(src, ["nobody"], cat_affinity=np.full(4, 0.5))
    assert f[[f"user_{c}" for c in USER_COLUMNS]].isna().all().all()
    assert (f[UI_COUNTS] == 0).all().all()
    assert f["ui_days_since"].isna().all()
    assert (f[["uc_eta", "uc_n_purchase", "uc_day_share", "uc_active_days"]] == 0).all().all()
    np.testing.assert_allclose(f["discovery"], 0.5)  # exp(-0) = 1
    # item columns still come from the catalogue
    assert f["item_pop_7d"].iloc[I2] == 20.0


def test_user_category_columns_and_discovery():
    aff = np.array([0.8, 0.6, 0.4, 0.2, 0.9, 0.7, 0.5, 0.3])
    f = _cross(_source(), ["u1", "u2"], cat_affinity=aff)
    cols = ["uc_eta", "uc_n_purchase", "uc_day_share", "uc_active_days"]
    # u1 × cA (items i3, i4): counts and frequency rows
    for item in (I3, I4):
        np.testing.assert_allclose(_pair(f, 0, item)[cols].to_numpy(float), [1.5, 2, 0.25, 5])
    # u1 × cB: nothing (the cZ_unknown row must not leak anywhere)
    for item in (I1, I2):
        assert _pair(f, 0, item)[cols].tolist() == [0.0] * 4
    # u2 × cB: counts only -> frequency columns 0
    for item in (I1, I2):
        np.testing.assert_allclose(_pair(f, 1, item)[cols].to_numpy(float), [0.7, 1, 0, 0])
    # u2 × cA: frequency only -> count columns 0
    for item in (I3, I4):
        np.testing.assert_allclose(_pair(f, 1, item)[cols].to_numpy(float), [0, 0, 0.1, 2])
    # discovery = cat_affinity · exp(-uc_eta), pair by pair
    eta = np.array([1.5, 0, 1.5, 0, 0, 0.7, 0, 0.7])  # catalogue order i3, i1, i4, i2
    np.testing.assert_allclose(f["uc_eta"], eta, rtol=1e-6)
    np.testing.assert_allclose(f["discovery"], aff * np.exp(-eta), rtol=1e-6)
    np.testing.assert_allclose(f["cat_affinity"], aff, rtol=1e-6)
    np.testing.assert_allclose(f["mf_score"], np.arange(8) / 10, rtol=1e-6)


def test_slot_and_position_broadcast_from_scalars_or_arrays():
    src = _source()
    f = _cross(src, ["u1"])
    assert f["slot"].isna().all() and f["position"].isna().all()  # default: unknown placement
    f = _cross(src, ["u1"], slot=1, position=3)
    assert f["slot"].tolist() == [1.0] * 4 and f["position"].tolist() == [3.0] * 4
    f = _cross(src, ["u1"], slot=np.array([1, 2, 3, 4]), position=np.array([4, 3, 2, 1]))
    assert f["slot"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert f["position"].tolist() == [4.0, 3.0, 2.0, 1.0]


def test_frame_rows_follow_the_requested_pairs_in_any_order():
    src = _source()
    rows = src.user_rows(np.array(["u2", "u1", "u1"], dtype=object))
    f = src.frame(rows, np.array([I3, I4, I1]), mf_score=np.zeros(3), cat_affinity=np.zeros(3))
    assert f["ui_n_click"].tolist() == [5.0, 1.0, 3.0]
    assert f["item_pop_7d"].iloc[0] == 30.0 and np.isnan(f["item_pop_7d"].iloc[1])


def test_users_restricts_the_user_set():
    src = _source(users=np.array(["u1", "u3"], dtype=object))
    assert list(src.user_ids) == ["u1", "u3"]
    assert src.user_rows(np.array(["u1", "u2", "u3", "u9"], dtype=object)).tolist() == [
        0,
        -1,
        1,
        -1,
    ]
    f = _cross(src, ["u2", "u1", "u3"])
    u2 = f.iloc[0:4]  # outside the sample: unknown even though the tables hold it
    assert u2[[f"user_{c}" for c in USER_COLUMNS]].isna().all().all()
    assert (u2[["ui_n_click", "ui_eta"]] == 0).all().all()
    assert u2["ui_days_since"].isna().all()
    assert (u2[["uc_eta", "uc_day_share"]] == 0).all().all()
    # u1 keeps its history
    assert _pair(f, 1, I1)["ui_n_click"] == 3.0 and _pair(f, 1, I1)["user_n_events"] == 40.0
    assert _pair(f, 1, I3)["uc_eta"] == 1.5
    # u3 is in the sample but in no table: known row, no data
    u3 = f.iloc[8:12]
    assert u3[[f"user_{c}" for c in USER_COLUMNS]].isna().all().all()
    assert (u3["ui_n_click"] == 0).all()
