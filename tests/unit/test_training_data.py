"""Training-set helpers that need no Spark: examination propensities for inverse weights."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from jobs.core.lake import Lake
from jobs.daily.training_data import TrainingDataError, examination_propensity


def _write_examination(lake: Lake, ds: str) -> None:
    table = pd.DataFrame(
        {
            "kind": ["slot", "slot", "slot", "position", "position"],
            "index": [1, 2, 3, 1, 2],
            "propensity": [1.0, 0.5, 0.25, 1.0, 0.8],
        }
    )
    path = lake.feature("examination", ds)
    os.makedirs(path)
    table.to_parquet(os.path.join(path, "part-0.parquet"))


def test_theta_is_slot_times_position_propensity(tmp_path):
    lake = Lake(str(tmp_path))
    _write_examination(lake, "2026-01-05")
    frame = pd.DataFrame({"slot": [1, 2, 3, 3, 7], "position": [1, 2, 1, 2, 9]})
    theta = examination_propensity(lake, "2026-01-05", frame)
    # beyond the estimated curve a placement takes the curve's last value
    np.testing.assert_allclose(theta, [1.0, 0.4, 0.25, 0.2, 0.2])


def test_theta_needs_the_examination_table(tmp_path):
    with pytest.raises(TrainingDataError, match="randomised traffic"):
        examination_propensity(Lake(str(tmp_path)), "2026-01-05", pd.DataFrame({"slot": [1]}))
