"""models.evaluation.feature_drift.drift_table and jobs.experiments.mf_drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.evaluation.feature_drift import DRIFT_COLUMNS, drift_table


def test_the_same_rows_do_not_drift_and_a_rescaled_feature_keeps_its_ranks():
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"r": rng.normal(size=500), "s": rng.random(500)})
    serve = train.assign(s=3.0 * train["s"])
    t = drift_table(train, serve, ["r", "s"]).set_index("feature")
    assert list(t.reset_index().columns) == list(DRIFT_COLUMNS)
    assert t.loc["r", "mean_abs_diff"] == 0 and t.loc["r", "ks"] == 0
    assert t.loc["r", "spearman"] == pytest.approx(1.0)
    # a pure rescaling: ranks kept, every value moved, the distributions apart
    assert t.loc["s", "spearman"] == pytest.approx(1.0)
    assert t.loc["s", "mean_abs_diff"] == pytest.approx(2.0 * train["s"].mean())
    assert t.loc["s", "p90_abs_diff"] == pytest.approx(2.0 * train["s"].quantile(0.9), rel=1e-3)
    assert t.loc["s", "serve_sd"] == pytest.approx(3.0 * t.loc["s", "train_sd"])
    assert t.loc["s", "ks"] > 0.5


def test_rows_missing_on_either_side_are_left_out_and_frames_must_align():
    train = pd.DataFrame({"r": [1.0, 2.0, np.nan, 4.0]})
    serve = pd.DataFrame({"r": [1.5, np.nan, 3.0, 3.0]})
    t = drift_table(train, serve, ["r"]).iloc[0]
    assert t["rows"] == 2 and t["mean_abs_diff"] == pytest.approx(0.75)
    assert t["median_abs_diff"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="align"):
        drift_table(train, serve.iloc[:3], ["r"])
