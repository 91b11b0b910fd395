"""Features of (user, item) pairs for the engagement models, from one day's feature tables.

One `FeatureSource` is built from the feature tables *as of* a date (and the MF factors fitted
on the same data). Training builds it as of the label window's start, serving as of `ds`: the
same code gives both, so what the trees learn on is what they score on.

Feature groups (docs/methods.md §3): item historical engagement (popularity over 1/7/30 days, trend, age,
price band, image, buyers, their repeat rate, new buyers over 30 days), user aggregates over 7 and
30 days with their rates, the user's orders (count, basket size, days since the last, mean gap),
user × category cross features (decayed counts, share of active days), user × item history (decayed
counts, days since last engagement), MF affinity r̂_ui, category affinity ŝ_uc and discovery g =
ŝ·exp(−η), and the placement (slot, position; fixed to the first slot at serving).
Missing values stay NaN: XGBoost learns a default direction for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

ITEM_COLUMNS: Mapping[str, str] = {
    "item_pop_1d": "pop_1d",
    "item_pop_7d": "pop_7d",
    "item_pop_30d": "pop_30d",
    "item_trend": "trend",
    "item_is_new": "is_new",
    "item_age_days": "age_days",
    "item_price_band": "price_band",
    "item_has_image": "has_image",
    "item_days_since_event": "days_since_last_event",
    "item_buyers": "n_buyers",
    "item_repeat_rate": "repeat_rate",
    "item_new_buyers_30d": "new_buyers_30d",
}
# from the user_activity table (whole history): events, and orders (one purchase timestamp each)
ACTIVITY_COLUMNS: tuple[str, ...] = (
    "n_events",
    "n_orders",
    "basket_size",
    "days_since_order",
    "order_gap_days",
)
USER_COLUMNS: tuple[str, ...] = (
    tuple(
        f"{what}_{days}d"
        for days in (7, 30)
        for what in (
            "impressions",
            "views",
            "clicks",
            "add_to_carts",
            "purchases",
            "click_rate",
            "cart_rate",
            "purchase_rate",
        )
    )
    + ACTIVITY_COLUMNS
)
PAIR_COLUMNS: tuple[str, ...] = (
    "ui_n_click",
    "ui_n_add_to_cart",
    "ui_n_purchase",
    "ui_eta",
    "ui_days_since",
)
CATEGORY_COLUMNS: tuple[str, ...] = ("uc_eta", "uc_n_purchase", "uc_day_share", "uc_active_days")
MF_COLUMNS: tuple[str, ...] = ("mf_score", "cat_affinity", "discovery")
PLACEMENT_COLUMNS: tuple[str, ...] = ("slot", "position")
FEATURES: tuple[str, ...] = (
    *ITEM_COLUMNS,
    *(f"user_{c}" for c in USER_COLUMNS),
    *PAIR_COLUMNS,
    *CATEGORY_COLUMNS,
    *MF_COLUMNS,
    *PLACEMENT_COLUMNS,
)


def _sorted_keys(rows: np.ndarray, cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    keys = rows.astype(np.int64) * np.int64(width) + cols.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    return keys[order], order


def _lookup_keys(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in `sorted_keys`, -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, pos, -1)


def _index(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


@dataclass(frozen=True)
class FeatureSource:
    """Lookup tables of one as-of date, aligned to a catalogue and a sorted user list."""

    as_of: np.datetime64
    user_ids: np.ndarray  # object, sorted
    item_ids: np.ndarray  # object, catalogue order
    item_cat: np.ndarray  # int, category index of each item
    n_cats: int
    item_values: np.ndarray  # (n_items, len(ITEM_COLUMNS)) float32
    user_values: np.ndarray  # (n_users + 1, len(USER_COLUMNS)) float32; last row = unknown
    pair_keys: np.ndarray  # sorted user_row * n_items + item
    pair_values: np.ndarray  # (nnz, len(PAIR_COLUMNS)) float32, aligned to pair_keys
    cat_keys: np.ndarray  # sorted user_row * n_cats + category
    cat_values: np.ndarray  # (nnz, len(CATEGORY_COLUMNS)) float32

    @classmethod
    def build(
        cls,
        *,
        as_of: str,
        item_ids: np.ndarray,
        item_cat: np.ndarray,
        cat_ids: np.ndarray,
        item_stats: pd.DataFrame,
        user_aggregates: pd.DataFrame,
        user_activity: pd.DataFrame,
        user_item_counts: pd.DataFrame,
        user_category_counts: pd.DataFrame,
        user_category_frequency: pd.DataFrame,
        users: np.ndarray | None = None,
    ) -> FeatureSource:
        """From the feature tables (pandas) of one as-of date. `users` restricts the user-level
        tables to those users (a training sample); None keeps every user in the tables."""
        item_ids = np.asarray(item_ids, dtype=object)
        cat_ids = np.asarray(cat_ids, dtype=object)
        when = np.datetime64(as_of, "s")
        if users is None:
            users = np.union1d(
                user_activity["user_id"].to_numpy(str), user_item_counts["user_id"].to_numpy(str)
            )
        user_ids = np.unique(np.asarray(users, dtype=str)).astype(object)
        user_values = _user_values(user_aggregates, user_activity, user_ids)
        pair_keys, pair_values = _pair_table(user_item_counts, user_ids, item_ids, when)
        cat_keys, cat_values = _category_table(
            user_category_counts, user_category_frequency, user_ids, cat_ids
        )
        return cls(
            as_of=when,
            user_ids=user_ids,
            item_ids=item_ids,
            item_cat=np.asarray(item_cat, dtype=np.int64),
            n_cats=len(cat_ids),
            item_values=_item_values(item_stats, item_ids),
            user_values=user_values,
            pair_keys=pair_keys,
            pair_values=pair_values,
            cat_keys=cat_keys,
            cat_values=cat_values,
        )

    def user_rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each user id, -1 for users without data as of this date."""
        return _index(np.asarray(ids, dtype=object), self.user_ids)

    def frame(
        self,
        user_rows: np.ndarray,
        items: np.ndarray,
        *,
        mf_score: np.ndarray,
        cat_affinity: np.ndarray,
        slot: np.ndarray | float = np.nan,
        position: np.ndarray | float = np.nan,
    ) -> pd.DataFrame:
        """One row of FEATURES per (user row, item index) pair. `mf_score` and `cat_affinity`
        are the pair's r̂_ui and ŝ_u,ψ(i) (the caller holds the factors)."""
        user_rows = np.asarray(user_rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n = len(items)
        cols: dict[str, np.ndarray] = {}
        iv = self.item_values[items]
        for j, name in enumerate(ITEM_COLUMNS):
            cols[name] = iv[:, j]
        uv = self.user_values[np.where(user_rows >= 0, user_rows, len(self.user_ids))]
        for j, name in enumerate(USER_COLUMNS):
            cols[f"user_{name}"] = uv[:, j]
        known = user_rows >= 0
        pos = _lookup_keys(
            self.pair_keys,
            np.where(known, user_rows, 0) * np.int64(len(self.item_ids)) + items,
        )
        pos = np.where(known, pos, -1)
        hit = pos >= 0
        pv = np.full((n, len(PAIR_COLUMNS)), np.nan, np.float32)
        pv[hit] = self.pair_values[pos[hit]]
        pv[~hit, :4] = 0.0  # no history with the item: zero counts, unknown recency
        for j, name in enumerate(PAIR_COLUMNS):
            cols[name] = pv[:, j]
        cats = self.item_cat[items]
        cpos = _lookup_keys(
            self.cat_keys, np.where(known, user_rows, 0) * np.int64(self.n_cats) + cats
        )
        cpos = np.where(known, cpos, -1)
        chit = cpos >= 0
        cv = np.zeros((n, len(CATEGORY_COLUMNS)), np.float32)
        cv[chit] = np.nan_to_num(self.cat_values[cpos[chit]])
        for j, name in enumerate(CATEGORY_COLUMNS):
            cols[name] = cv[:, j]
        cols["mf_score"] = np.asarray(mf_score, np.float32)
        cols["cat_affinity"] = np.asarray(cat_affinity, np.float32)
        cols["discovery"] = (cols["cat_affinity"] * np.exp(-cols["uc_eta"])).astype(np.float32)
        cols["slot"] = np.broadcast_to(np.asarray(slot, np.float32), (n,)).copy()
        cols["position"] = np.broadcast_to(np.asarray(position, np.float32), (n,)).copy()
        return pd.DataFrame(cols, columns=list(FEATURES))


def _item_values(item_stats: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """(n_items, len(ITEM_COLUMNS)) float32 in catalogue order, NaN where a column is absent."""
    stats = item_stats.set_index("item_id").reindex(item_ids)
    return np.column_stack(
        [
            pd.to_numeric(stats[src], errors="coerce").to_numpy(np.float32)
            if src in stats
            else np.full(len(item_ids), np.nan, np.float32)
            for src in ITEM_COLUMNS.values()
        ]
    ).astype(np.float32)


def _user_values(
    user_aggregates: pd.DataFrame, user_activity: pd.DataFrame, user_ids: np.ndarray
) -> np.ndarray:
    """(n_users + 1, len(USER_COLUMNS)) float32 aligned to `user_ids`; the last row (unknown
    users) and absent columns are NaN."""
    agg = user_aggregates.merge(
        user_activity[["user_id", *(c for c in ACTIVITY_COLUMNS if c in user_activity)]],
        on="user_id",
        how="outer",
    )
    agg = agg.set_index("user_id").reindex(user_ids)
    return np.vstack(
        [
            np.column_stack(
                [
                    agg[c].to_numpy(np.float32)
                    if c in agg
                    else np.full(len(user_ids), np.nan, np.float32)
                    for c in USER_COLUMNS
                ]
            ).reshape(len(user_ids), len(USER_COLUMNS)),
            np.full((1, len(USER_COLUMNS)), np.nan, np.float32),
        ]
    ).astype(np.float32)


def _pair_table(
    ui: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, when: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted user_row * n_items + item keys, PAIR_COLUMNS values aligned to them) of the
    (user, item) counts whose user and item are known."""
    u = _index(ui["user_id"].to_numpy(object), user_ids)
    i = _index(ui["item_id"].to_numpy(object), np.sort(item_ids))
    item_order = np.argsort(item_ids, kind="stable")
    keep = (u >= 0) & (i >= 0)
    i = np.where(keep, item_order[np.where(i >= 0, i, 0)], -1)
    last = pd.to_datetime(ui["last_ts"], utc=True).dt.tz_localize(None).to_numpy("datetime64[s]")
    days_since = ((when - last) / np.timedelta64(1, "D")).astype(np.float32)
    pair_raw = np.column_stack(
        [ui[c].to_numpy(np.float32) for c in ("n_click", "n_add_to_cart", "n_purchase", "eta")]
        + [days_since]
    )[keep]
    pair_keys, order = _sorted_keys(u[keep], i[keep], len(item_ids))
    return pair_keys, pair_raw[order]


def _category_table(
    user_category_counts: pd.DataFrame,
    user_category_frequency: pd.DataFrame,
    user_ids: np.ndarray,
    cat_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted user_row * n_cats + category keys, CATEGORY_COLUMNS values aligned to them)."""
    uc = user_category_counts.merge(
        user_category_frequency[["user_id", "category_id", "day_share", "active_days"]],
        on=["user_id", "category_id"],
        how="outer",
    )
    cu = _index(uc["user_id"].to_numpy(object), user_ids)
    cat_order = np.argsort(cat_ids, kind="stable")
    cc = _index(uc["category_id"].to_numpy(object), cat_ids[cat_order])
    cc = np.where(cc >= 0, cat_order[np.where(cc >= 0, cc, 0)], -1)
    ckeep = (cu >= 0) & (cc >= 0)
    cat_raw = np.column_stack(
        [uc[c].to_numpy(np.float32) for c in ("eta", "n_purchase", "day_share", "active_days")]
    )[ckeep]
    cat_keys, corder = _sorted_keys(cu[ckeep], cc[ckeep], len(cat_ids))
    return cat_keys, cat_raw[corder]
