"""Promote job: the promotion gate between the challenger and the champion (validation/gate.py).

Both models score the *challenger's* held-out examples (users neither model trained on: the
user-hash split is the same every day for a given seed), so the comparison is on identical
rows. The challenger becomes `champion` only if it is not worse beyond the configured
tolerances on AUC, NDCG and calibration error, and its training data passed its checks.
Every decision is appended to the promotion log; a rejection fails the task with each failed
criterion, and the rank step keeps using the champion.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import pandas as pd

from jobs.config import Config
from jobs.lake import Lake, local_path

log = logging.getLogger(__name__)


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    from jobs.bundle import NoChampion, load_bundle
    from jobs.registry import append_decision, set_champion
    from jobs.tracking import experiment
    from models.holdout import holdout_metrics
    from validation.gate import Tolerances, decide, enforce

    experiment(lake, cfg)  # points MLflow at this lake's store (or fails with a clear error)
    challenger = load_bundle(lake, cfg, alias="challenger")
    if challenger.info["ds"] != ds:
        raise RuntimeError(
            f"the challenger was trained for ds={challenger.info['ds']}, not {ds}: "
            "run the train step for this ds first"
        )
    holdout = pd.read_parquet(os.path.join(local_path(challenger.path), "holdout.parquet"))
    objectives = challenger.info["objectives"]
    mine = holdout_metrics(challenger.engagement, holdout, objectives=objectives)
    try:
        champion = load_bundle(lake, cfg, alias="champion")
    except NoChampion:
        champion = None
    theirs = None
    if champion is not None:
        theirs = holdout_metrics(champion.engagement, holdout, objectives=objectives)
    checks = challenger.info.get("data_checks", {})
    decision = decide(
        mine,
        theirs,
        Tolerances(
            auc_drop=cfg.gate.auc_drop, ndcg_drop=cfg.gate.ndcg_drop, ece_rise=cfg.gate.ece_rise
        ),
        data_checks_passed=bool(checks.get("passed")),
        data_checks_detail=str(checks),
    )
    before = champion.registry_version if champion else None
    promoted = decision.promote
    if promoted and before == challenger.registry_version:
        promoted = False  # re-running a promoted ds: nothing to change
    after = challenger.registry_version if decision.promote else before
    record = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "action": "promote" if decision.promote else "reject",
        "ds": ds,
        "challenger": challenger.registry_version,
        "champion_before": before,
        "champion_after": after,
        "criteria": decision.to_dict()["criteria"],
        "reason": decision.reason,
    }
    if promoted:
        set_champion(lake, cfg, challenger.registry_version)
    if promoted or not decision.promote:
        append_decision(lake, record)
    log.info("promotion gate for %s: %s", ds, record)
    enforce(decision, challenger.registry_version, before)
    return {
        "ds": ds,
        "action": record["action"] if promoted or not decision.promote else "unchanged",
        "challenger": challenger.registry_version,
        "champion": after,
        **{f"challenger_{k}": v for k, v in mine.items()},
        **({f"champion_{k}": v for k, v in theirs.items()} if theirs else {}),
    }
