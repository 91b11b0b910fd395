"""Training matches serving: the users folded into one factor space
(models.ranking.mf.fold_in, jobs.daily.factorisations.serving_factorisations)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from jobs.core.config import load_config
from jobs.core.lake import Lake
from jobs.daily.factorisations import serving_factorisations, window_factorisations
from models.ranking.mf import MFParams, build_matrix, fit_mf, fold_in

PARAMS = MFParams(factors=6, iterations=5, regularization=0.1, alpha=4.0)


def _triples(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{x:03d}" for x in rng.integers(0, 80, n)], dtype=object)
    items = np.array([f"i{x:02d}" for x in rng.integers(0, 40, n)], dtype=object)
    return users, items, rng.random(n) + 0.1


def test_fold_in_is_implicits_exact_user_step():
    from implicit.cpu.als import AlternatingLeastSquares

    users, items, eta = _triples(1)
    model = fit_mf(users, items, eta, PARAMS)
    folded = fold_in(model, users, items, eta, PARAMS, "implicit")
    matrix, user_ids, item_ids = build_matrix(users, items, eta)
    als = AlternatingLeastSquares(
        factors=PARAMS.factors, regularization=PARAMS.regularization, alpha=PARAMS.alpha
    )
    als.user_factors = model.user_factors.copy()
    als.item_factors = model.item_factors.copy()
    want = als.recalculate_user(np.arange(len(user_ids)), matrix)
    assert np.array_equal(folded.user_ids, user_ids)
    assert np.array_equal(folded.item_factors, model.item_factors)
    np.testing.assert_allclose(folded.user_factors, want, rtol=1e-3, atol=1e-4)
    # the fit's own user factors are one half-step (and a CG solve) away: close, not equal
    r_fit = model.user_factors @ model.item_factors.T
    r_fold = folded.user_factors @ model.item_factors.T
    assert np.corrcoef(r_fit.ravel(), r_fold.ravel())[0, 1] > 0.9


def test_spark_style_solves_mllibs_normal_equations():
    users, items, eta = _triples(2)
    model = fit_mf(users, items, eta, PARAMS)
    folded = fold_in(model, users, items, eta, PARAMS, "spark")
    y = model.item_factors.astype(np.float64)
    df = pd.DataFrame({"u": users, "i": items, "eta": eta}).groupby(["u", "i"]).sum()
    rows = df.loc["u007"]
    yy = y[model.item_index(rows.index.to_numpy(object))]
    c = PARAMS.alpha * rows["eta"].to_numpy()
    a = y.T @ y + (yy.T * c) @ yy + PARAMS.regularization * len(rows) * np.eye(y.shape[1])
    x = np.linalg.solve(a, yy.T @ (1.0 + c))
    np.testing.assert_allclose(folded.user_factors[folded.user_index(["u007"])[0]], x, rtol=1e-4)


def test_a_users_factors_depend_on_their_rows_only_and_unknown_items_are_dropped():
    users, items, eta = _triples(3)
    model = fit_mf(users, items, eta, PARAMS)
    one = fold_in(model, users, items, eta, PARAMS)
    extra_u = np.array(["u001", "zz-new", "u002"], dtype=object)
    extra_i = np.array(["i03", "no-such-item", "no-such-item"], dtype=object)
    more = fold_in(
        model,
        np.r_[users, extra_u],
        np.r_[items, extra_i],
        np.r_[eta, [1.0, 1.0, 1.0]],
        PARAMS,
    )
    assert "zz-new" not in set(more.user_ids)  # only unknown items: left out (cold)
    same = [u for u in one.user_ids if u != "u001"]
    np.testing.assert_array_equal(
        one.user_factors[one.user_index(same)], more.user_factors[more.user_index(same)]
    )
    changed = one.user_index(["u001"])[0], more.user_index(["u001"])[0]
    assert not np.allclose(one.user_factors[changed[0]], more.user_factors[changed[1]])
    with pytest.raises(ValueError, match="fold-in style"):
        fold_in(model, users, items, eta, PARAMS, "svd")


def _write_counts(lake: Lake, ds: str, users, items, eta) -> None:
    for table, key, ids in (
        ("user_item_counts", "item_id", items),
        ("user_category_counts", "category_id", np.array([f"c{i[-1]}" for i in items])),
    ):
        path = lake.feature(table, ds)
        os.makedirs(path, exist_ok=True)
        frame = pd.DataFrame({"user_id": users, key: ids, "eta": eta})
        frame.groupby(["user_id", key], as_index=False)["eta"].sum().to_parquet(
            f"{path}/part-0.parquet"
        )
        open(f"{path}/_SUCCESS", "w").close()


def _r_hat(item_mf, cat_mf, user: str) -> tuple[np.ndarray, np.ndarray]:
    """r̂ of `user` over every item and ŝ over every category (the heads' MF inputs)."""
    ui, uc = item_mf.user_index([user])[0], cat_mf.user_index([user])[0]
    return (
        item_mf.user_factors[ui] @ item_mf.item_factors.T,
        cat_mf.user_factors[uc] @ cat_mf.item_factors.T,
    )


@pytest.mark.parametrize("serving", ["default", "refit"])
def test_an_unchanged_user_is_served_the_mf_inputs_the_heads_were_trained_on(tmp_path, serving):
    # counts as of cutoff, and as of ds with the label window's new rows of other users (no
    # decay, so an inactive user's counts are the same on both days)
    lake = Lake(str(tmp_path))
    cfg = load_config(
        overrides=[
            "mf.iterations=4",
            "mf.factors=6",
            "training.label_days=3",
        ]
        + ([] if serving == "default" else [f"mf.serving={serving}"])
    )
    users, items, eta = _triples(4)
    _write_counts(lake, "2026-01-05", users, items, eta)
    nu, ni, ne = _triples(5, n=300)
    active = nu != "u010"
    _write_counts(
        lake,
        "2026-01-08",
        np.r_[users, nu[active], ["new-user"]],
        np.r_[items, ni[active], ["i01"]],
        np.r_[eta, ne[active], [2.0]],
    )
    train_item, train_cat, _ = window_factorisations(lake, "2026-01-05", cfg)
    serve_item, serve_cat, _ = serving_factorisations(
        lake, "2026-01-08", cfg, train_item, train_cat
    )
    r_train, s_train = _r_hat(train_item, train_cat, "u010")
    r_serve, s_serve = _r_hat(serve_item, serve_cat, "u010")
    same = np.allclose(r_train, r_serve, rtol=1e-5, atol=1e-6) and np.allclose(
        s_train, s_serve, rtol=1e-5, atol=1e-6
    )
    assert same == (serving == "default")  # the refit serves another factorisation
    assert serve_item.user_index(["new-user"])[0] >= 0  # users new since cutoff are served
    if serving == "default":
        assert np.array_equal(serve_item.item_factors, train_item.item_factors)
        assert np.array_equal(serve_cat.item_factors, train_cat.item_factors)
