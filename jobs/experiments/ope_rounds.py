"""Logged rounds of the OPE job: homepage impressions with their click outcome, read from a lake.

Events. Accepted events (`warehouse/events`, after ingest) when the lake has any, else the raw
`events/` partitions (a lake that was only generated or imported); `events_source` in the
report says which. Only events with a placement are used: impressions and clicks with a
carousel, a position and an item (a missing slot counts as slot 1). A click is matched to its
impression by (logging_policy, user, page view, carousel, slot, position, item), where the page
view is `session_id` when the event has one and the timestamp otherwise (OBD logs a click with
its impression's ts). A round's reward is 1 if its impression was clicked (click-through);
clicks without an impression are counted in `clicks_unmatched` and left out.

Lake kind: "obd" when carousel ids start with "obd:" or `logging_policy` has "bts" (an Open
Bandit Dataset import, `jobs.inputs.importers`); "generated" when `logging_policy` has "random"

Also here: the integer codes (`Codes`, `cell_key`) and the cross-fitting folds the reward models
use, and each logging policy's observed click rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.event_reader import read_event_days
from jobs.core.lake import Lake
from models.evaluation import ope

EVENT_COLUMNS: tuple[str, ...] = (
    "ts",
    "user_id",
    "session_id",
    "event_type",
    "item_id",
    "carousel_id",
    "slot",
    "position",
    "propensity",
    "logging_policy",
)
IMPRESSION_KEY = ["policy", "user_id", "page_key", "carousel_id", "slot", "position", "item_id"]


def event_days(
    lake: Lake, start: str | None = None, end: str | None = None
) -> tuple[str, list[str]]:
    """The events table OPE reads ("warehouse/events" when the lake has accepted events, else
    the raw "events") and its `ds` partitions with `start <= ds < end` (None: unbounded)."""
    source, root = "warehouse/events", lake.events
    days = io.partitions(root)
    if not days:
        source, days = "events", io.partitions(lake.raw_events)
    days = [d for d in days if (start is None or d >= start) and (end is None or d < end)]
    return source, days


def read_events(
    lake: Lake, start: str | None = None, end: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Homepage impressions and clicks with `start <= ds < end` (None: unbounded), and the
    table they came from (see `event_days`)."""
    source, days = event_days(lake, start, end)
    root = lake.events if source == "warehouse/events" else lake.raw_events
    table = read_event_days(
        root, days, EVENT_COLUMNS, event_types=("impression", "click"), present_only=True
    )
    if table is None:
        return pd.DataFrame(columns=list(EVENT_COLUMNS)), source
    return table.to_pandas(), source


def homepage_impressions(events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per logged impression with its click outcome.

    Columns: policy, user_id, page_key, carousel_id, slot, position, item_id, propensity,
    clicked (0/1). Returns also counts: impressions, clicks, clicks_unmatched,
    impressions_duplicated (same key logged twice; the first is kept).
    """
    need = ["event_type", "user_id", "item_id", "carousel_id", "position"]
    missing = [c for c in need if c not in events.columns]
    if missing:
        raise ValueError(f"events lack column(s): {', '.join(missing)}")
    ev = events[
        events["event_type"].isin(["impression", "click"])
        & events["carousel_id"].notna()
        & events["position"].notna()
        & events["item_id"].notna()
    ]

    def col(name: str, default: object) -> pd.Series:
        if name in ev.columns:
            return ev[name]
        return pd.Series(default, index=ev.index)

    # page view: the session where the event has one, else its timestamp (µs)
    page_key = col("session_id", None).astype(object).to_numpy(copy=True)
    no_session = pd.isna(page_key)
    if no_session.any():
        if "ts" not in ev.columns:
            raise ValueError("events without session_id need a ts column to match clicks")
        ts = pd.DatetimeIndex(pd.to_datetime(ev["ts"].to_numpy()[no_session], utc=True))
        page_key[no_session] = np.char.add("t", ts.asi8.astype(str)).astype(object)
    frame = pd.DataFrame(
        {
            "event_type": ev["event_type"].to_numpy(),
            "policy": col("logging_policy", None).fillna("unknown").astype(str).to_numpy(),
            "user_id": ev["user_id"].astype(str).to_numpy(),
            "page_key": page_key.astype(str),
            "carousel_id": ev["carousel_id"].astype(str).to_numpy(),
            "slot": col("slot", 1).fillna(1).astype(np.int64).to_numpy(),
            "position": ev["position"].astype(np.int64).to_numpy(),
            "item_id": ev["item_id"].astype(str).to_numpy(),
            "propensity": col("propensity", np.nan).astype(np.float64).to_numpy(),
        }
    )
    is_imp = frame["event_type"].to_numpy() == "impression"
    imp = frame[is_imp].drop(columns="event_type")
    dup = imp.duplicated(IMPRESSION_KEY)
    imp = imp[~dup].reset_index(drop=True)
    clicks = (
        frame[~is_imp].groupby(IMPRESSION_KEY, sort=False).size().rename("n_clicks").reset_index()
    )
    imp = imp.merge(clicks, on=IMPRESSION_KEY, how="left")
    imp["clicked"] = (imp["n_clicks"].fillna(0) > 0).astype(np.int8)
    matched = int(imp["n_clicks"].fillna(0).sum())
    imp = imp.drop(columns="n_clicks")
    counts = {
        "impressions": len(imp),
        "clicks": int((~is_imp).sum()),
        "clicks_unmatched": int((~is_imp).sum()) - matched,
        "impressions_duplicated": int(dup.sum()),
    }
    return imp, counts


def lake_kind(events: pd.DataFrame) -> str:
    """'obd', 'generated', or 'none' (no randomised traffic to evaluate with)."""
    cars = (
        pd.Series(pd.unique(events["carousel_id"].dropna())).astype(str)
        if "carousel_id" in events
        else pd.Series([], dtype=str)
    )
    policies = (
        set(events["logging_policy"].dropna().astype(str).unique())
        if "logging_policy" in events
        else set()
    )
    if "bts" in policies or cars.str.startswith("obd:").any():
        return "obd"
    if "random" in policies:
        return "generated"
    return "none"


def random_page_rounds(imp: pd.DataFrame) -> pd.DataFrame:
    """The random-policy impressions of `homepage_impressions` with `round`: 0.. per page view
    (user_id, page_key), in sorted order."""
    rand = imp[imp["policy"] == "random"].reset_index(drop=True)
    if rand.empty:
        raise ValueError("no random-policy impressions in the window")
    return rand.assign(round=rand.groupby(["user_id", "page_key"], sort=True).ngroup())


def observed_by_policy(
    imp: pd.DataFrame, *, resamples: int, seed: int, confidence: float
) -> dict[str, dict]:
    """Each logging policy's observed clicks per impression in the window, with intervals."""
    out = {}
    for policy, g in imp.groupby("policy", sort=True):
        res = ope.mean_with_ci(
            g["clicked"].to_numpy(np.float64), resamples=resamples, seed=seed, confidence=confidence
        )
        res["page_views"] = int(g[["user_id", "page_key"]].drop_duplicates().shape[0])
        out[str(policy)] = res
    return out


class Codes:
    """Integer codes of string keys (one vocabulary per kind)."""

    def __init__(self, *values: pd.Series | np.ndarray) -> None:
        self.vocab = pd.Index(
            pd.unique(np.concatenate([np.asarray(v, dtype=object) for v in values]))
        )

    def __call__(self, values: pd.Series | np.ndarray) -> np.ndarray:
        codes = self.vocab.get_indexer(np.asarray(values, dtype=object))
        if (codes < 0).any():
            raise KeyError("value outside the vocabulary")
        return codes

    def __len__(self) -> int:
        return len(self.vocab)


def cell_key(carousel: pd.Series | np.ndarray, position: pd.Series | np.ndarray) -> np.ndarray:
    """The reward model's placement cell of each round: "<carousel_id>|<position>"."""
    return (
        pd.Series(np.asarray(carousel, dtype=object)).astype(str)
        + "|"
        + pd.Series(np.asarray(position)).astype(str)
    ).to_numpy(object)


def cross_fit_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """A seeded fold (0..folds-1) for each of n rounds, as even as n allows."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2 for cross-fitting, got {folds}")
    return np.random.default_rng(seed).permutation(n) % folds
