"""Training against serving: how far the MF-derived inputs of the engagement heads (r̂ =
`mf_score`, ŝ = `cat_affinity`, g = `discovery`) move between the factors the heads are trained
on (the label window's, as of cutoff) and the factors rank serves them with on `ds`, on the same
(user, item) pairs: the cutoff's candidate items of a sample of users known to both
(`training_data.candidate_examples`), each pair's features computed as of cutoff with the
training factors and as of `ds` with the serving factors (`models.evaluation.feature_drift`).
The rows are split into all users and users without an engagement in `[cutoff, ds)`, whose
changes come from the factorisation (and time decay) alone.

    python -m jobs.experiments.mf_drift --lake LAKE --ds DS [--config conf/x.yaml] [--set k=v]

LAKE must hold the feature tables as of ds and as of its cutoff (a daily run of ds, or the
evaluation lake `homepage evaluate` leaves in `<lake>/_eval/`).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from jobs.core.config import Config, load_config
from jobs.core.lake import Lake
from jobs.daily import training_data as td
from jobs.daily.catalogue import read_table
from jobs.daily.factorisations import serving_factorisations, window_factorisations
from jobs.daily.page_inputs import load_inputs, page_params
from models.evaluation.feature_drift import drift_table

MF_FEATURES: tuple[str, ...] = ("mf_score", "cat_affinity", "discovery")


def _pair_frame(inputs: Any, pairs: pd.DataFrame) -> pd.DataFrame:
    """The heads' features of (user_id, item_id) pairs from `inputs` (NaN for items its
    catalogue lacks)."""
    pos = pd.Series(np.arange(len(inputs.catalog.item_ids)), index=inputs.catalog.item_ids)
    idx = pos.reindex(pairs["item_id"].to_numpy()).to_numpy()
    known = ~np.isnan(idx)
    out = pd.DataFrame(np.nan, index=pairs.index, columns=list(MF_FEATURES))
    feats = td._pair_features(
        inputs, pairs["user_id"].to_numpy(object)[known], idx[known].astype(np.int64)
    )
    out.loc[known, list(MF_FEATURES)] = feats[list(MF_FEATURES)].to_numpy()
    return out


def unchanged_users(lake: Lake, cutoff: str, ds: str) -> set[str]:
    """Users whose last engagement with any item is before `cutoff` (as of `ds`)."""
    ui = read_table(lake.feature("user_item_counts", ds), ["user_id", "last_ts"])
    last = pd.to_datetime(ui["last_ts"], utc=True).groupby(ui["user_id"]).max()
    return set(last.index[last < pd.Timestamp(cutoff, tz="UTC")])


def mf_drift(lake: Lake, ds: str, cfg: Config, max_users: int = 2000) -> pd.DataFrame:
    """`drift_table` of `MF_FEATURES` between training (as of cutoff) and serving (as of `ds`)
    under `cfg` (`mf.serving` chooses the serving factors), with a `users` column: "all" or
    "unchanged" (no engagement in the label window)."""
    cutoff = td.cutoff_for(ds, cfg)
    train_item, train_cat, _ = window_factorisations(lake, cutoff, cfg)
    serve_item, serve_cat, _ = serving_factorisations(lake, ds, cfg, train_item, train_cat)
    known = np.intersect1d(
        np.intersect1d(train_item.user_ids, train_cat.user_ids),
        np.intersect1d(serve_item.user_ids, serve_cat.user_ids),
    )
    users = td.sample_users(known.astype(object), max_users, cfg.engagement.seed)
    at_cutoff = load_inputs(
        lake, cutoff, cfg, train_item, train_cat, with_features=True, feature_users=users
    )
    at_ds = load_inputs(
        lake, ds, cfg, serve_item, serve_cat, with_features=True, feature_users=users
    )
    engaged = pd.DataFrame(
        {"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object)}
        | {o: pd.Series(dtype=np.int8) for o in td.OBJECTIVES}
    )
    pairs = td.candidate_examples(at_cutoff, users, engaged, page_params(cfg))
    pairs = pairs[["user_id", "item_id"]].reset_index(drop=True)
    train, serve = _pair_frame(at_cutoff, pairs), _pair_frame(at_ds, pairs)
    still = pairs["user_id"].isin(unchanged_users(lake, cutoff, ds)).to_numpy()
    tables = []
    for name, rows in (("all", np.ones(len(pairs), bool)), ("unchanged", still)):
        t = drift_table(
            train[rows].reset_index(drop=True), serve[rows].reset_index(drop=True), MF_FEATURES
        )
        tables.append(t.assign(users=name, n_users=int(pairs["user_id"][rows].nunique())))
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--ds", required=True)
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--max-users", type=int, default=2000)
    args = ap.parse_args(argv)
    cfg = load_config(args.config, overrides=args.overrides)
    table = mf_drift(Lake(args.lake), args.ds, cfg, args.max_users)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
