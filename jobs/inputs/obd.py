"""Open Bandit Dataset importer (`import_dataset("obd", ...)`).

The Open Bandit Dataset has no user id. The pseudo user id is "obd-" + the first 12 hex
digits of sha1(user_feature_0..3): it identifies a segment of users who share the hashed
features (327 in the sample), not a person. Each row becomes an `impression` (item id
"<campaign>:<item_id>", carousel "obd:<campaign>", slot 1, position, propensity, page
"home") and each clicked row also a `click` with the same ts and placement; event ids are
"obd-<policy>-<campaign>-<ts µs>-<position>-i|c". Extra event column `logging_policy` =
behavior_policy ("random" / "bts"). `user_item_affinity` is not imported.
Items: category_id = "<campaign>:<item_feature_2>" (leaf; feature 2 nests in feature 3 in
the data), category_path = "<campaign>/<item_feature_3>/<item_feature_2>", brand =
item_feature_1 (crosses categories, like a brand). `item_feature_0` is standardised (mean 0,
negative values), not a price, so price is null. Users: the pseudo ids with their four
features. Carousels: one per campaign ("obd:<campaign>", family "obd", explicit item list),
undated (valid_from and valid_to null: the campaigns run over the whole log).

Dated facts (a fact dated d is known at the end of day d; see `jobs.core.lake`):
`first_seen` = the item's first logged impression day (the earliest event date if never
shown), so no event precedes it. The data has no prices or stock: price null, in stock, and
no `item_changes` table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from jobs.core.lake import CAROUSEL_SCHEMA, EVENT_SCHEMA, ITEM_SCHEMA
from jobs.inputs.source_tables import (
    Progress,
    Tables,
    first_seen,
    plain_table,
    read_source,
    short_hash,
    to_table,
    to_utc,
)

OBD_USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


def _obd_events(imp: pd.DataFrame) -> pd.DataFrame:
    """One impression per row and one click per clicked row, same ts and placement."""
    ts = to_utc(imp["timestamp"])
    # (policy, campaign, ts, position) is unique in the data: a content key for the event id
    key = (
        "obd-"
        + imp["behavior_policy"]
        + "-"
        + imp["campaign"]
        + "-"
        + (ts.astype("int64")).astype(str)
        + "-"
        + imp["position"].astype(str)
    )
    shown = pd.DataFrame(
        {
            "event_id": key + "-i",
            "ts": ts,
            "user_id": "obd-" + short_hash(imp[list(OBD_USER_FEATURES)]),
            "event_type": "impression",
            "item_id": imp["campaign"] + ":" + imp["item_id"].astype(str),
            "carousel_id": "obd:" + imp["campaign"],
            "slot": 1,
            "position": imp["position"].astype("int64"),
            "propensity": imp["propensity_score"],
            "page": "home",
            "logging_policy": imp["behavior_policy"],
        }
    )
    clicked = shown[imp["click"].to_numpy() == 1].copy()
    clicked["event_id"] = clicked["event_id"].str[:-2] + "-c"
    clicked["event_type"] = "click"
    return pd.concat([shown, clicked], ignore_index=True)


def _obd_items(catalogue: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    campaign = catalogue["campaign"].astype(str)
    items = pd.DataFrame({"item_id": campaign + ":" + catalogue["item_id"].astype(str)})
    items["title"] = "ZOZOTOWN " + campaign + " item " + catalogue["item_id"].astype(str)
    items["category_id"] = campaign + ":" + catalogue["item_feature_2"]
    items["category_path"] = (
        campaign + "/" + catalogue["item_feature_3"] + "/" + catalogue["item_feature_2"]
    )
    items["brand"] = catalogue["item_feature_1"]
    items["in_stock"] = True
    items["has_image"] = True
    items["first_seen"] = first_seen(ev, items["item_id"])
    return items


def _obd_carousels(items: pd.DataFrame) -> pd.DataFrame:
    campaign = items["item_id"].str.split(":", n=1).str[0]
    lists = items.groupby(campaign, sort=True)["item_id"].agg(list)
    return pd.DataFrame(
        {
            "carousel_id": "obd:" + lists.index,
            "title": "ZOZOTOWN: " + lists.index,
            "family": "obd",
            "item_ids": lists.to_list(),
            "rule": None,
            "immutable": False,
        }
    )


def build_obd(src: Path, progress: Progress) -> Tables:
    progress("obd: reading impressions and items")
    cols = [
        "behavior_policy",
        "campaign",
        "timestamp",
        "item_id",
        "position",
        "click",
        "propensity_score",
        *OBD_USER_FEATURES,
    ]
    imp = read_source(src, "impressions.parquet", cols)
    ev = _obd_events(imp)
    items = _obd_items(read_source(src, "items.parquet"), ev)
    users = imp[list(OBD_USER_FEATURES)].drop_duplicates().reset_index(drop=True)
    users.insert(0, "user_id", "obd-" + short_hash(users))
    users = users.sort_values("user_id").reset_index(drop=True)
    extra = pa.schema([("logging_policy", pa.string())])
    return Tables(
        events=to_table(ev, EVENT_SCHEMA, extra),
        items=to_table(items, ITEM_SCHEMA),
        users=plain_table(users.astype("string")),
        carousels=to_table(_obd_carousels(items), CAROUSEL_SCHEMA),
    )
