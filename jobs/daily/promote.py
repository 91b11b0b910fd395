"""Promote job: the promotion gate between the challenger and the champion (validation/gate.py).

Both models score the *challenger's* held-out examples (users neither model trained on: the
user-hash split is the same every day for a given seed), so the comparison is on identical
rows. The challenger becomes `champion` only if it is not worse beyond the configured
tolerances on AUC, NDCG and calibration error, and its training data passed its checks.
Every decision is appended to the promotion log; a rejection fails the task with each failed
criterion, and the rank step keeps using the champion. Re-running a day (same data and config:
the train step re-uses its registered version) logs nothing twice; re-running a day older than
the newest decided one decides it against the champion of its time and changes neither the
live champion nor the log (`jobs.daily.promotion_log.past_day`). A rejection is final (the same models on
the same rows decide the same way again), so inside an Airflow task it fails the task without
its retries; an unreachable MLflow store (TrackingUnavailable) is transient and is retried.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
from typing import TYPE_CHECKING, Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import GateError
from jobs.core.lake import Lake, is_local, join

if TYPE_CHECKING:
    from validation.gate import GateRejected

log = logging.getLogger(__name__)


@functools.cache
def _final_rejection() -> type[GateRejected]:
    from airflow.sdk.exceptions import AirflowFailException

    from validation.gate import GateRejected

    class FinalGateRejected(GateRejected, AirflowFailException):
        """A GateRejected that Airflow fails without retrying (AirflowFailException)."""

    return FinalGateRejected


def final(exc: GateRejected) -> GateRejected:
    """`exc`, made an AirflowFailException when running inside an Airflow task (its SDK is
    loaded): a retry would reach the same decision and log the rejection once more."""
    if "airflow.sdk" not in sys.modules:
        return exc
    return _final_rejection()(exc.decision, exc.challenger_version, exc.champion_version)


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


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    from jobs.core.tracking import experiment
    from jobs.daily.bundle import load_bundle
    from jobs.daily.promotion_log import append_decision, past_day, same_decision
    from jobs.daily.registry import set_champion
    from models.evaluation.holdout import holdout_metrics
    from validation.gate import GateRejected, Tolerances, decide, enforce

    experiment(lake, cfg)  # points MLflow at this lake's store (or fails with a clear error)
    challenger = load_bundle(lake, cfg, alias="challenger")
    if challenger.info["ds"] != ds:
        raise GateError(
            f"the challenger was trained for ds={challenger.info['ds']}, not {ds}: "
            "run the train step for this ds first"
        )
    holdout = io.read_parquet(join(challenger.path, "holdout.parquet"))
    objectives = challenger.info["objectives"]
    mine = holdout_metrics(challenger.engagement, holdout, objectives=objectives)
    # A day older than the newest decided one (a re-run, a backfill reaching back) is decided
    # again against the champion of its time, and changes neither the live champion nor the log
    past = past_day(lake, ds)
    champion = _champion_to_beat(lake, cfg, past)
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
    log.info("promotion gate for %s: %s", ds, record)
    try:
        enforce(decision, challenger.registry_version, before)
    except GateRejected as exc:
        raise final(exc) from None
    return {
        "ds": ds,
        "action": record["action"] if logged else "unchanged",
        "challenger": challenger.registry_version,
        "champion": after,
        **{f"challenger_{k}": v for k, v in mine.items()},
        **({f"champion_{k}": v for k, v in theirs.items()} if theirs else {}),
    }
