"""The engagement heads on the test window: trained before the split, scored raw and
calibrated (AUC, PR-AUC, log loss, ECE, reliability diagrams), and ranked by item kind against
the popularity and frequency baselines."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobs.core.config import Config
from jobs.core.lake import Lake, shift_ds
from jobs.experiments.evaluation_report import jsonable

log = logging.getLogger(__name__)


def engagement_eval(
    elake: Lake, split_ds: str, end: str, cfg: Config, out_dir: str
) -> tuple[pd.DataFrame, list[str], dict[str, Any], pd.DataFrame]:
    """AUC, PR-AUC, log loss, ECE of heads trained before the split, on the test window; and
    the test window's candidate rows (user_id, item_id) with the combined calibrated score."""
    from jobs.daily import training_data as td
    from jobs.daily.engagement_fit import (
        booster_trainer,
        engagement_params,
        trainable_objectives,
        training_labels,
    )
    from jobs.daily.train import window_dataset
    from models.evaluation.plots import reliability_diagram
    from models.ranking.engagement import fit_engagement, score_predictions
    from models.ranking.item_features import FEATURES, PLACEMENT_COLUMNS

    start = td.cutoff_for(split_ds, cfg)
    train = window_dataset(elake, start, split_ds, cfg)
    test = window_dataset(elake, split_ds, end, cfg)
    if train.source != test.source:
        raise td.TrainingDataError(
            f"the train window has {train.source} examples but the test window {test.source}: "
            "choose a split where both windows log impressions (or neither does)"
        )
    objectives = tuple(
        o for o in trainable_objectives(train.examples, cfg) if test.examples[o].any()
    )
    positions = train.source == "logged_impressions"
    model = fit_engagement(
        train.examples,
        features=[f for f in FEATURES if positions or f not in PLACEMENT_COLUMNS],
        labels=training_labels(train.examples, objectives, cfg),
        group="user_id",
        params=engagement_params(cfg, objectives, positions),
        booster_trainer=booster_trainer(cfg),
    )
    ex = test.examples
    raw = model.predict(ex, calibrated=False, position_override=None)
    cal = model.predict(ex, calibrated=True, position_override=None)
    scored = pd.DataFrame(
        {"user_id": ex["user_id"], "item_id": ex["item_id"], "score": model.combined_score(cal)}
    )
    rows = []
    for o in objectives:
        y = ex[o].to_numpy().astype(np.int8)
        for stage, p in (("raw", raw[o]), ("calibrated", cal[o])):
            rows.append({"objective": o, "stage": stage, **score_predictions(y, p)})
    plots = [
        str(
            reliability_diagram(
                ex[o].to_numpy().astype(np.int8),
                raw[o],
                cal[o],
                os.path.join(out_dir, f"calibration_{o}.png"),
                title=f"{o}: test window {split_ds}..{shift_ds(end, -1)}, raw vs calibrated",
            )
        )
        for o in objectives
    ]
    info = {
        "train_window": [start, split_ds],
        "source": train.source,
        "train_examples": int(len(train.examples)),
        "test_examples": int(len(ex)),
        "by_item_kind": item_kind_ranking(ex, cal, objectives),
    }
    return pd.DataFrame(rows), plots, info, scored


def item_kind_ranking(
    examples: pd.DataFrame, predictions: dict[str, np.ndarray], objectives: Sequence[str]
) -> list[dict[str, Any]]:
    """AUC and PR-AUC of the calibrated heads on the test window's rows of items the user
    bought before (`ui_n_purchase` > 0 as of the split) and never bought, next to the item's
    30-day popularity (`item_pop_30d`) ranking the same rows, and on bought rows the user's
    purchase count (top frequency's order): whether the model ranks each kind better than the
    baseline that owns it."""
    from models.evaluation import metrics as m

    def unit(col: str) -> np.ndarray:  # the metrics take scores in [0, 1]; AUC ignores scale
        x = np.maximum(examples[col].fillna(0).to_numpy(np.float64), 0.0)
        return x / x.max() if len(x) and x.max() > 0 else x

    freq = unit("ui_n_purchase")
    bought = freq > 0
    pop = unit("item_pop_30d")
    out = []
    for o in objectives:
        y = examples[o].to_numpy().astype(np.int8)
        for items, mask in (("bought before", bought), ("never bought", ~bought)):
            if not mask.any() or y[mask].min() == y[mask].max():
                continue  # no rows of this kind (a lake without purchases), or one class only
            scorers = [("model", predictions[o]), ("popularity", pop)]
            if items == "bought before":
                scorers.append(("frequency", freq))  # top frequency's order
            for scorer, score in scorers:
                out.append(
                    {
                        "objective": o,
                        "items": items,
                        "scorer": scorer,
                        "rows": int(mask.sum()),
                        "positives": int(y[mask].sum()),
                        "auc": m.auc(y[mask], score[mask]),
                        "pr_auc": m.pr_auc(y[mask], score[mask]),
                    }
                )
    return jsonable(out)
