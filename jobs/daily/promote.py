"""Promote job: the promotion gate between the challenger and the champion (validation/gate.py).

Both models score the *challenger's* held-out examples (users neither model trained on: the
user-hash split is the same every day for a given seed), so the comparison is on identical
rows, and a paired bootstrap over those users gives each difference an interval. The
challenger becomes `champion` only if no gated metric (AUC, NDCG, calibration error) is worse
beyond both its tolerance and that interval, and its training data passed its checks.
Every decision is appended to the promotion log and written to
`warehouse/reports/ds=<ds>/promote.json`. A rejection does not stop the day: the step returns,
rank, export and publish build today's pages with the champion, and the `gate_alert` step
(jobs/daily/gate_alert.py) then fails loudly with every failed criterion. Re-running a day
(same data and config: the train step re-uses its registered version) logs nothing twice;
re-running a day older than the newest decided one decides it against the champion of its time
and changes neither the live champion nor the log (`jobs.daily.promotion_log.past_day`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import GateError
from jobs.core.lake import Lake, is_local, join

log = logging.getLogger(__name__)


def _champion_to_beat(lake: Lake, cfg: Config, past: dict[str, Any] | None) -> Any:
    """The champion bundle the challenger is compared with (None without one): of the day's
    own time for a past day (`past`), else the live champion."""
    from jobs.daily.bundle import NoChampion, load_bundle, load_version

    if past is not None:
        then = past["champion_before"]
        return load_version(lake, cfg, then) if then is not None else None
    try:
        return load_bundle(lake, cfg, alias="champion")
    except NoChampion:
        return None


def _judge(challenger: Any, champion: Any, cfg: Config) -> tuple[Any, dict, dict | None]:
    """(GateDecision, challenger metrics, champion metrics or None) on the challenger's
    held-out rows, with paired-bootstrap intervals when there is a champion."""
    from models.evaluation.holdout import holdout_metrics, paired_holdout_metrics
    from validation.gate import Tolerances, decide

    holdout = io.read_parquet(join(challenger.path, "holdout.parquet"))
    objectives = challenger.info["objectives"]
    theirs, intervals = None, None
    if champion is None:
        mine = holdout_metrics(challenger.engagement, holdout, objectives=objectives)
    else:
        mine, theirs, intervals = paired_holdout_metrics(
            challenger.engagement,
            champion.engagement,
            holdout,
            objectives=objectives,
            resamples=cfg.gate.bootstrap_resamples,
            seed=cfg.gate.bootstrap_seed,
            level=cfg.gate.interval_level,
        )
    checks = challenger.info.get("data_checks", {})
    decision = decide(
        mine,
        theirs,
        Tolerances(
            auc_drop=cfg.gate.auc_drop, ndcg_drop=cfg.gate.ndcg_drop, ece_rise=cfg.gate.ece_rise
        ),
        data_checks_passed=bool(checks.get("passed")),
        data_checks_detail=str(checks),
        intervals=intervals,
        level=cfg.gate.interval_level,
    )
    return decision, mine, theirs


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    from jobs.core.tracking import experiment
    from jobs.daily.bundle import load_bundle
    from jobs.daily.promotion_log import (
        append_decision,
        decision_path,
        past_day,
        same_decision,
    )
    from jobs.daily.registry import set_champion

    experiment(lake, cfg)  # points MLflow at this lake's store (or fails with a clear error)
    challenger = load_bundle(lake, cfg, alias="challenger")
    if challenger.info["ds"] != ds:
        raise GateError(
            f"the challenger was trained for ds={challenger.info['ds']}, not {ds}: "
            "run the train step for this ds first"
        )
    # A day older than the newest decided one (a re-run, a backfill reaching back) is decided
    # again against the champion of its time, and changes neither the live champion nor the log
    past = past_day(lake, ds)
    champion = _champion_to_beat(lake, cfg, past)
    decision, mine, theirs = _judge(challenger, champion, cfg)
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
    logged = past is None and (promoted or not decision.promote)
    # the promotion log lives beside the SQLite store, on local disk (jobs/daily/promotion_log.py):
    # a remote lake keeps the decision in the registry's aliases and in this task's log only
    has_log = is_local(lake.root)
    if logged and has_log and same_decision(lake, record):
        logged = False  # this day's decision, already logged (a re-run of a rejected day)
    if promoted and past is None:
        set_champion(lake, cfg, challenger.registry_version)
    if logged and has_log:
        append_decision(lake, record)
    elif logged:
        log.warning("no promotion log for remote lake %s; decision not appended", lake.root)
    # what gate_alert reads: this run's decision for ds, whether or not it was logged again
    io.write_json(decision_path(lake, ds), record)
    if decision.promote:
        log.info("promotion gate for %s: %s", ds, record)
    else:
        log.error(
            "promotion gate for %s REJECTED challenger %s; the pages are built with champion"
            " %s and gate_alert will fail the run: %s",
            ds,
            challenger.registry_version,
            before,
            decision.reason,
        )
    return {
        "ds": ds,
        "action": record["action"] if logged else "unchanged",
        "rejected": not decision.promote,
        "failed": ", ".join(c.name for c in decision.failed),
        "challenger": challenger.registry_version,
        "champion": after,
        **{f"challenger_{k}": v for k, v in mine.items()},
        **({f"champion_{k}": v for k, v in theirs.items()} if theirs else {}),
    }
