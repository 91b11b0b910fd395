"""jobs.experiments.mf_drift on a generated lake: the heads' MF inputs at training against
serving, refitted against folded in (mf.serving)."""

from __future__ import annotations

import pytest
from conftest import SMALL_LAKE_OVERRIDES, copy_lake

pytestmark = pytest.mark.e2e


def test_folding_users_in_keeps_the_heads_mf_inputs_where_training_saw_them(story_lake, tmp_path):
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily.pipeline import default_ds
    from jobs.experiments.mf_drift import MF_FEATURES, mf_drift

    lake = Lake(copy_lake(story_lake, str(tmp_path / "lake")))
    ds = default_ds(lake)
    tables = {
        serving: mf_drift(
            lake, ds, load_config(None, SMALL_LAKE_OVERRIDES | {"mf.serving": serving}), 400
        ).set_index(["users", "feature"])
        for serving in ("fold_in", "refit")
    }
    fold, refit = tables["fold_in"], tables["refit"]
    assert set(fold.index) == {(u, f) for u in ("all", "unchanged") for f in MF_FEATURES}
    assert fold.loc[("unchanged", "mf_score"), "n_users"] > 10
    for users in ("all", "unchanged"):
        for f in ("mf_score", "cat_affinity"):
            # each table on its own pairs (the cutoff's candidates): refitting moves r̂ and ŝ
            # (another factorisation), folding in only as far as the users' counts changed
            assert fold.loc[(users, f), "rows"] > 1000 and refit.loc[(users, f), "rows"] > 1000
            assert fold.loc[(users, f), "rel_abs_diff"] < refit.loc[(users, f), "rel_abs_diff"]
            assert fold.loc[(users, f), "spearman"] > refit.loc[(users, f), "spearman"]
    # without engagement since cutoff, only time decay moves a user's folded-in scores
    assert fold.loc[("unchanged", "mf_score"), "spearman"] > 0.95
