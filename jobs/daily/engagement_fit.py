"""The engagement heads of the train step: their params from the config, the booster trainer
of the configured backend, the objectives with enough positives, the fit on checked examples
and the held-out users' split with the gate's metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from jobs.core.config import Config
from jobs.core.lake import Lake

log = logging.getLogger(__name__)


def engagement_params(cfg: Config, objectives: tuple[str, ...], positions: bool) -> Any:
    from models.ranking.engagement_model import EngagementParams

    ec = cfg.engagement
    return EngagementParams(
        objectives=objectives,
        weights={o: ec.weights()[o] for o in objectives},
        n_estimators=ec.n_estimators,
        max_depth=ec.max_depth,
        learning_rate=ec.learning_rate,
        negative_rate=ec.negative_rate,
        calibration_share=ec.calibration_share,
        evaluation_share=ec.evaluation_share,
        position_columns=("slot", "position") if positions else (),
        inverse_propensity=ec.inverse_propensity,
        n_jobs=ec.n_jobs,
        seed=ec.seed,
    )


def booster_trainer(cfg: Config) -> Any:
    if cfg.engagement.backend == "xgboost_spark":
        from jobs.core.spark import get_spark
        from models.ranking.distributed import spark_booster_trainer

        return spark_booster_trainer(get_spark(cfg.spark))
    return None


def trainable_objectives(examples: pd.DataFrame, cfg: Config) -> tuple[str, ...]:
    from jobs.daily.training_data import OBJECTIVES

    kept = tuple(o for o in OBJECTIVES if int(examples[o].sum()) >= cfg.training.min_positives)
    if not kept:
        from jobs.daily.training_data import TrainingDataError

        raise TrainingDataError(
            f"no objective has {cfg.training.min_positives} positives among "
            f"{len(examples):,} examples: lengthen training.label_days or lower "
            "training.min_positives"
        )
    return kept


def training_labels(
    examples: pd.DataFrame, objectives: tuple[str, ...], cfg: Config
) -> dict[str, str]:
    """The label column each head learns from: its objective's 0/1 column, except the purchase
    head's with `engagement.intent_labels` where the examples carry the purchase-intent soft
    label (logged clicks); without logged clicks the option changes nothing, with a log line."""
    from jobs.daily.training_data import INTENT_LABEL

    labels = {o: o for o in objectives}
    if cfg.engagement.intent_labels and "purchase" in labels:
        if INTENT_LABEL in examples:
            labels["purchase"] = INTENT_LABEL
        else:
            log.info("engagement.intent_labels: no logged clicks to credit, purchase labels kept")
    return labels


def fit_engagement_model(
    lake: Lake,
    cutoff: str,
    cfg: Config,
    examples: pd.DataFrame,
    source: str,
    timings: dict[str, float],
) -> tuple[tuple[str, ...], dict[str, Any], Any, Any]:
    """(objectives, data checks, engagement params, fitted model): the examples checked by
    their suite, one calibrated head per objective with enough positives."""
    from jobs.daily import training_data as td
    from models.ranking.engagement import fit_engagement
    from models.ranking.item_features import FEATURES, PLACEMENT_COLUMNS
    from validation import suites
    from validation.gx import run_suite
    from validation.suites import training_examples

    objectives = trainable_objectives(examples, cfg)
    checks = run_suite("training_examples", examples, training_examples, engine="pandas")
    labels = training_labels(examples, objectives, cfg)
    if td.INTENT_LABEL in labels.values():
        intent = run_suite("purchase_intent", examples, suites.purchase_intent, engine="pandas")
        checks = {**checks, "expectations": checks["expectations"] + intent["expectations"]}
    positions = source == "logged_impressions"
    params = engagement_params(cfg, objectives, positions)
    propensity = None
    if params.inverse_propensity:
        if not positions:
            raise td.TrainingDataError(
                "engagement.inverse_propensity needs logged impressions (slot and position); "
                "this lake trains on time-window candidates"
            )
        examples["theta"] = td.examination_propensity(lake, cutoff, examples)
        propensity = "theta"
    features = [f for f in FEATURES if positions or f not in PLACEMENT_COLUMNS]
    t0 = time.perf_counter()
    model = fit_engagement(
        examples,
        features=features,
        labels=labels,
        group="user_id",
        params=params,
        propensity=propensity,
        booster_trainer=booster_trainer(cfg),
    )
    timings["engagement_fit_s"] = time.perf_counter() - t0
    if model.shared:
        log.info(
            "objectives %s have the same labels as %s on every example: they share its head",
            ", ".join(model.shared),
            ", ".join(sorted(set(model.shared.values()))),
        )
    timings["engagement_rows_per_s"] = len(examples) / max(timings["engagement_fit_s"], 1e-9)
    return objectives, checks, params, model


def holdout_split(
    examples: pd.DataFrame, params: Any, model: Any, objectives: tuple[str, ...]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The evaluation split's examples (held-out users) and the gate's metrics on them."""
    from models.evaluation.holdout import holdout_metrics
    from models.ranking.engagement import assign_splits

    split = assign_splits(
        examples["user_id"],
        calibration_share=params.calibration_share,
        evaluation_share=params.evaluation_share,
        seed=params.seed,
    )
    holdout = examples[split == 2].reset_index(drop=True)
    return holdout, holdout_metrics(model, holdout, objectives=objectives)
