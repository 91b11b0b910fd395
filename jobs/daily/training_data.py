"""Training sets for the engagement models, point-in-time correct.

Labels come from the label window `[cutoff, ds)` (cutoff = ds − training.label_days); every
feature comes from the feature store *as of cutoff* (the tables the daily run of that day
wrote, built here if that run never happened) and from MF factors fitted on the same data.
So no feature sees a label.

Two sources of examples, chosen by what the lake holds:

- **logged impressions** (the generated lake, the Open Bandit Dataset): one row per (user,
  item, day) shown on the homepage in the window, with the slot and position of its first
  impression that day; positive for an objective if the user did it to that item that day.
- **time-window candidate labels** (the grocery datasets, which log no impressions): the
  carousel candidates the pipeline itself would have shown each user at cutoff; an item is
  positive if the user engaged with it anywhere in the label window.

Objectives nest: a purchase is also an add-to-cart and a click (grocery logs hold purchases
only, and a purchase is the deepest engagement).

With `engagement.intent_labels`, logged impressions also carry `INTENT_LABEL`, eBay's
purchase-intent soft label (`intent_labels`), which the purchase head then learns from.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import TrainingError
from jobs.core.lake import Lake, join, shift_ds

log = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("click", "add_to_cart", "purchase")
ENGAGED = {
    "click": ("click", "add_to_cart", "purchase"),
    "add_to_cart": ("add_to_cart", "purchase"),
    "purchase": ("purchase",),
}
INTENT_LABEL = "purchase_intent"
CUTOFF_TABLES: tuple[str, ...] = (
    "user_item_counts",
    "user_category_counts",
    "user_carousel_priors",
    "carousel_priors",
    "item_stats",
    "user_activity",
    "user_aggregates",
    "user_category_frequency",
)


class TrainingDataError(TrainingError):
    """The lake cannot give a training set for this `ds` (too little history or labels)."""


def cutoff_for(ds: str, cfg: Config) -> str:
    return shift_ds(ds, -cfg.training.label_days)


def stale_columns(lake: Lake, day: str) -> dict[str, list[str]]:
    """Per feature table as of `day`: the columns the engagement features read that it lacks
    (tables written before those features existed); tables that have them all are left out."""
    from models.ranking.item_features import ACTIVITY_COLUMNS, ITEM_COLUMNS

    needed = {"item_stats": list(ITEM_COLUMNS.values()), "user_activity": list(ACTIVITY_COLUMNS)}
    out = {}
    for table, cols in needed.items():
        have = set(io.parquet_columns(lake.feature(table, day)))
        if missing := [c for c in cols if c not in have]:
            out[table] = missing
    return out


def ensure_cutoff_features(lake: Lake, cutoff: str, cfg: Config) -> str:
    """The feature tables as of `cutoff`: reused when that day's run wrote them, else built.
    Tables written by an older version, without columns the features now read, are rebuilt:
    training on them would learn from NaN where serving sees values. The catalogue as of
    `cutoff` is validated first when that day was never ingested."""
    from jobs.daily.item_catalogue import ensure_items_snapshot

    ensure_items_snapshot(lake, cutoff, cfg)
    if all(io.exists(join(lake.feature(t, cutoff), "_SUCCESS")) for t in CUTOFF_TABLES):
        stale = stale_columns(lake, cutoff)
        if not stale:
            return "existing"
        log.warning("feature tables as of %s lack %s: rebuilding them", cutoff, stale)
    if not [p for p in io.partitions(lake.events) if p < cutoff]:
        raise TrainingDataError(
            f"no accepted events before the label window's start {cutoff}: the lake's history "
            f"is too short for training.label_days={cfg.training.label_days}"
        )
    from jobs.daily import build_features

    build_features.run(lake, cutoff, cfg)
    return "built"


def window_events(lake: Lake, cutoff: str, ds: str, cfg: Config) -> Any:
    """Accepted events of the label window, as a Spark DataFrame."""
    from pyspark.sql import functions as F

    from jobs.core.spark import get_spark

    parts = [p for p in io.partitions(lake.events) if cutoff <= p < ds]
    if not parts:
        raise TrainingDataError(f"no accepted events in the label window [{cutoff}, {ds})")
    spark = get_spark(cfg.spark)
    df = spark.read.option("basePath", lake.events).parquet(
        *[join(lake.events, f"ds={p}") for p in parts]
    )
    return df.withColumn("ds", F.col("ds").cast("string"))


def sample_users(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most `n` users, chosen by a seeded hash (the same users for the same seed), sorted."""
    users = np.unique(np.asarray(users, dtype=object))
    if len(users) <= n:
        return users
    h = pd.util.hash_array(users.astype(str))
    salt = np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    keep = np.argsort(h ^ salt, kind="stable")[:n]
    return np.sort(users[keep])


def window_labels(events: Any, users: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(engaged, impressions) of the sampled users in the window.

    engaged: user_id, item_id, click, add_to_cart, purchase (0/1 over the whole window).
    impressions: user_id, item_id, day, slot, position, carousel_id and the same labels for
    that day; first impression of the item that day.
    """
    from pyspark.sql import functions as F

    spark = events.sparkSession
    sample = spark.createDataFrame(pd.DataFrame({"user_id": users.astype(str)}))
    ev = events.join(F.broadcast(sample), "user_id").filter(F.col("item_id").isNotNull())
    ev = ev.withColumn("day", F.to_date("ts"))

    def labels(keys: list[str]) -> Any:
        return (
            ev.filter(F.col("event_type").isin(*ENGAGED["click"]))
            .groupBy(*keys)
            .agg(
                *[
                    F.max(F.col("event_type").isin(*ENGAGED[o]).cast("int")).alias(o)
                    for o in OBJECTIVES
                ]
            )
        )

    engaged = labels(["user_id", "item_id"]).toPandas()
    shown = (
        ev.filter(F.col("event_type") == "impression")
        .groupBy("user_id", "item_id", "day")
        .agg(
            F.min_by("slot", "ts").alias("slot"),
            F.min_by("position", "ts").alias("position"),
            F.min_by("carousel_id", "ts").alias("carousel_id"),
        )
    )
    impressions = (
        shown.join(labels(["user_id", "item_id", "day"]), ["user_id", "item_id", "day"], "left")
        .fillna(0, subset=list(OBJECTIVES))
        .toPandas()
    )
    return engaged, impressions


def intent_labels(events: Any, users: np.ndarray, end: str, cfg: Config) -> pd.DataFrame:
    """eBay's purchase-intent soft labels of the sampled users' clicks in the label window
    (`features.sessions.purchase_intent` on the window's events only, strictly before `end`),
    per (user_id, item_id, day): the largest credit of that day's clicks on the item, with
    `INTENT_LABEL` in [0, 1]. Sessions are cut from every event of the user, not just clicks."""
    from pyspark.sql import functions as F

    from features.sessions import purchase_intent
    from jobs.core.lake import parse_ds

    fc = cfg.features
    sample = events.sparkSession.createDataFrame(pd.DataFrame({"user_id": users.astype(str)}))
    credit = purchase_intent(
        events.join(F.broadcast(sample), "user_id"),
        decay=fc.intent_decay,
        epsilon=fc.intent_epsilon,
        gap_minutes=fc.session_gap_minutes,
        as_of=parse_ds(end),
    )
    return (
        credit.filter(F.col("item_id").isNotNull())
        .withColumn("day", F.to_date("ts"))
        .groupBy("user_id", "item_id", "day")
        .agg(F.max("intent_weight").alias(INTENT_LABEL))
        .toPandas()
    )


def with_intent_labels(impressions: pd.DataFrame, intent: pd.DataFrame) -> pd.DataFrame:
    """`impressions` plus `INTENT_LABEL`: 1 for an item bought that day (a purchase is the
    deepest engagement), else the intent credit of that day's clicks on it, 0 without any."""
    keys = ["user_id", "item_id", "day"]
    out = impressions.merge(intent[[*keys, INTENT_LABEL]], on=keys, how="left")
    credit = out[INTENT_LABEL].fillna(0.0).to_numpy(np.float64)
    out[INTENT_LABEL] = np.where(out["purchase"].to_numpy() == 1, 1.0, np.clip(credit, 0.0, 1.0))
    return out


def _pair_features(
    inputs: Any,
    user_ids: np.ndarray,
    items: np.ndarray,
    slot: np.ndarray | float = np.nan,
    position: np.ndarray | float = np.nan,
) -> pd.DataFrame:
    """FEATURES of (user id, catalogue item index) pairs from the cutoff's inputs."""
    ui = inputs.mf_item.user_index(user_ids)
    uc = inputs.mf_cat.user_index(user_ids)
    mf = np.full(len(items), np.nan, np.float32)
    ok = ui >= 0
    mf[ok] = np.einsum("ij,ij->i", inputs.mf_item.user_factors[ui[ok]], inputs.v_items[items[ok]])
    aff = np.full(len(items), np.nan, np.float32)
    okc = uc >= 0
    aff[okc] = np.einsum(
        "ij,ij->i",
        inputs.mf_cat.user_factors[uc[okc]],
        inputs.v_cats[inputs.catalog.item_cat[items[okc]]],
    )
    return inputs.features.frame(
        inputs.features.user_rows(user_ids),
        items,
        mf_score=mf,
        cat_affinity=aff,
        slot=slot,
        position=position,
    )


def impression_examples(inputs: Any, impressions: pd.DataFrame) -> pd.DataFrame:
    """One example per logged (user, item, day) impression, placement as logged."""
    pos = pd.Series(np.arange(len(inputs.catalog.item_ids)), index=inputs.catalog.item_ids)
    idx = pos.reindex(impressions["item_id"].to_numpy()).to_numpy()
    known = ~np.isnan(idx)
    if not known.all():
        log.info("%d impressions of items missing from the catalogue skipped", (~known).sum())
    imp = impressions[known].reset_index(drop=True)
    feats = _pair_features(
        inputs,
        imp["user_id"].to_numpy(object),
        idx[known].astype(np.int64),
        slot=imp["slot"].to_numpy(np.float32),
        position=imp["position"].to_numpy(np.float32),
    )
    labels = [*OBJECTIVES, *([INTENT_LABEL] if INTENT_LABEL in imp else [])]
    return pd.concat([imp[["user_id", "item_id", *labels]], feats], axis=1)


def candidate_examples(
    inputs: Any, users: np.ndarray, engaged: pd.DataFrame, params: Any, batch: int = 1024
) -> pd.DataFrame:
    """One example per distinct item among the carousel candidates each user would have been
    shown at cutoff (and, with "picked for you" on, the items of its personal pool: the most
    bought, the highest-r̂ ones and the best sellers); labelled by the user's engagement with it
    in the window."""
    from models.ranking.batch_scoring import personal_pool, score_batch
    from models.ranking.candidates import PAD

    warm = np.sort(users[inputs.warm(users)])
    frames = []
    for start in range(0, len(warm), batch):
        bu = warm[start : start + batch]
        matrices = inputs.user_matrices(bu)
        scored = score_batch(inputs, bu, matrices, params, "fixed")
        cu = np.asarray(scored.cands.user, dtype=np.int64)
        rows, cols = np.nonzero(scored.items != PAD)
        key_parts = [cu[rows] * np.int64(len(inputs.catalog.item_ids)) + scored.items[rows, cols]]
        if params.for_you_carousels:  # what "picked for you" weighs at serving, besides these
            pool = personal_pool(matrices, params, inputs.catalog.best_sellers)
            pr, pc = np.nonzero(pool != PAD)
            key_parts.append(pr * np.int64(len(inputs.catalog.item_ids)) + pool[pr, pc])
        keys = np.unique(np.concatenate(key_parts))
        n = len(inputs.catalog.item_ids)
        frames.append(pd.DataFrame({"user_id": bu[keys // n], "item": (keys % n).astype(np.int64)}))
    if not frames:
        raise TrainingDataError("no user in the label window is known to the cutoff's MF models")
    pairs = pd.concat(frames, ignore_index=True)
    pairs["item_id"] = inputs.catalog.item_ids[pairs["item"].to_numpy()]
    pairs = pairs.merge(engaged, on=["user_id", "item_id"], how="left")
    pairs[list(OBJECTIVES)] = pairs[list(OBJECTIVES)].fillna(0).astype(np.int8)
    feats = _pair_features(
        inputs, pairs["user_id"].to_numpy(object), pairs["item"].to_numpy(np.int64)
    )
    return pd.concat([pairs[["user_id", "item_id", *OBJECTIVES]], feats], axis=1)


def examination_propensity(lake: Lake, cutoff: str, frame: pd.DataFrame) -> np.ndarray:
    """θ = P_exam(slot) · P_exam(position), relative to the first, from the examination table
    as of cutoff (position-based model); for inverse-propensity weights."""
    path = lake.feature("examination", cutoff)
    if not io.exists(path):
        raise TrainingDataError(
            f"engagement.inverse_propensity needs examination propensities, but {path} does not "
            "exist (the lake has no randomised traffic before the label window)"
        )
    table = io.read_parquet(path, marker="_SUCCESS")
    theta = np.ones(len(frame))
    for kind in ("slot", "position"):
        curve = table[table["kind"] == kind].set_index("index")["propensity"]
        vals = curve.reindex(frame[kind].to_numpy()).to_numpy(np.float64)
        # placements beyond the estimated curve take its last value
        vals = np.where(np.isnan(vals), curve.iloc[-1] if len(curve) else 1.0, vals)
        theta *= vals
    return np.clip(theta, 1e-3, 1.0)
