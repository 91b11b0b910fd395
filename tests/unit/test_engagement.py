"""Engagement heads on synthetic data with a known logistic truth (and a position effect)."""

import numpy as np
import pandas as pd
import pytest

from models.evaluation import metrics as m
from models.ranking.engagement import (
    EngagementFitError,
    assign_splits,
    expand_soft_labels,
    fit_engagement,
)
from models.ranking.engagement_model import EngagementModel, EngagementParams, combined_score

FEATURES = ["x0", "x1", "x2", "x3", "slot", "position"]
LABELS = {"click": "click", "add_to_cart": "atc", "purchase": "buy"}
# small trees: 20k rows would overfit the production defaults (200 × depth 6)
SMALL = {"n_estimators": 100, "max_depth": 4}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def synthetic(n: int, seed: int, users: int = 2000) -> pd.DataFrame:
    """Click ~ logistic in the features, −0.25 per slot and −0.15 per position below the first;
    add-to-cart after a click, purchase after an add-to-cart."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    slot = rng.integers(1, 6, n)
    position = rng.integers(1, 9, n)
    content = -2.0 + 0.9 * x[:, 0] - 0.7 * x[:, 1] + 0.5 * x[:, 0] * x[:, 2]
    p_click = _sigmoid(content - 0.25 * (slot - 1) - 0.15 * (position - 1))
    click = rng.random(n) < p_click
    atc = click & (rng.random(n) < _sigmoid(-0.8 + 0.8 * x[:, 3]))
    buy = atc & (rng.random(n) < _sigmoid(-0.5 + 0.6 * x[:, 3]))
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2", "x3"])
    return frame.assign(
        user=rng.integers(0, users, n).astype(str),
        slot=slot,
        position=position,
        click=click.astype(int),
        atc=atc.astype(int),
        buy=buy.astype(int),
        p_click=p_click,
        p_click_first=_sigmoid(content),
    )


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return synthetic(20_000, seed=0)


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    return synthetic(20_000, seed=1)


@pytest.fixture(scope="module")
def model(train) -> EngagementModel:
    return fit_engagement(
        train, features=FEATURES, labels=LABELS, group="user", params=EngagementParams(**SMALL)
    )


@pytest.fixture(scope="module")
def unweighted(train) -> EngagementModel:
    """Downsampled negatives without the 1/negative_rate weight: raw scores are inflated."""
    params = EngagementParams(reweight_negatives=False, **SMALL)
    return fit_engagement(train, features=FEATURES, labels=LABELS, group="user", params=params)


def test_auc_on_held_out_data_is_close_to_the_truth(model, held_out):
    y = held_out["click"].to_numpy()
    truth = m.auc(y, held_out["p_click"].to_numpy())
    preds = model.predict(held_out, position_override=None)
    assert abs(m.auc(y, preds["click"]) - truth) < 0.03


def test_calibration_corrects_downsampled_scores(unweighted, model, held_out):
    for obj, col in LABELS.items():
        y = held_out[col].to_numpy()
        raw = unweighted.predict(held_out, calibrated=False, position_override=None)[obj]
        cal = unweighted.predict(held_out, position_override=None)[obj]
        assert raw.mean() > 2 * y.mean(), obj  # downsampling without weights inflates
        ece_raw, ece_cal = (
            m.expected_calibration_error(y, raw),
            m.expected_calibration_error(y, cal),
        )
        assert ece_cal < 0.02 and ece_cal < ece_raw / 2, (obj, ece_raw, ece_cal)
        assert cal.mean() == pytest.approx(y.mean(), rel=0.15), obj
    # with the 1/negative_rate weights the raw scores are roughly calibrated already
    y = held_out["click"].to_numpy()
    raw = model.predict(held_out, calibrated=False, position_override=None)["click"]
    cal = model.predict(held_out, position_override=None)["click"]
    assert raw.mean() == pytest.approx(y.mean(), rel=0.25)
    assert m.expected_calibration_error(y, cal) < min(0.02, m.expected_calibration_error(y, raw))


def test_isotonic_keeps_the_ranking(model, held_out):
    raw = model.predict(held_out, calibrated=False)
    cal = model.predict(held_out)
    for obj in LABELS:
        order = np.argsort(raw[obj], kind="stable")
        assert (np.diff(cal[obj][order]) >= 0).all(), obj  # monotone: ties, never swaps
    y = held_out["click"].to_numpy()
    assert abs(m.auc(y, cal["click"]) - m.auc(y, raw["click"])) < 0.005


def test_position_override_serves_the_first_position(model, held_out):
    first = model.predict(held_out)["click"]
    explicit = model.predict(held_out, position_override={"slot": 1, "position": 1})["click"]
    logged = model.predict(held_out, position_override=None)["click"]
    last = model.predict(held_out, position_override={"slot": 5, "position": 8})["click"]
    np.testing.assert_array_equal(first, explicit)
    assert (first >= last).mean() > 0.99 and (first > last).mean() > 0.9
    assert first.mean() > 1.5 * logged.mean()
    # roughly the truth's click probability at the first slot and position
    assert first.mean() == pytest.approx(held_out["p_click_first"].mean(), rel=0.25)
    # serving frames need no position columns at all
    served = model.predict(held_out.drop(columns=["slot", "position"]))["click"]
    np.testing.assert_array_equal(served, first)
    with pytest.raises(ValueError, match=r"not position columns of this model"):
        model.predict(held_out, position_override={"x0": 0})
    with pytest.raises(ValueError, match=r"missing feature columns: \['slot'\]"):
        model.predict(held_out.drop(columns=["slot"]), position_override=None)


# determinism for a seed: the trainer contract shared with the Spark booster trainer
# (tests/spark/test_trainer_contracts.py)


def test_save_load_round_trips_predictions_exactly(model, held_out, tmp_path):
    model.save(tmp_path / "engagement")
    assert not list((tmp_path / "engagement").glob("*.pkl"))
    loaded = EngagementModel.load(tmp_path / "engagement")
    assert loaded.params == model.params and loaded.features == model.features
    for calibrated in (True, False):
        a = model.predict(held_out, calibrated=calibrated)
        b = loaded.predict(held_out, calibrated=calibrated)
        for obj in LABELS:
            np.testing.assert_array_equal(a[obj], b[obj])
    pd.testing.assert_frame_equal(loaded.metrics, model.metrics)
    pd.testing.assert_frame_equal(loaded.feature_importance(), model.feature_importance())


def test_named_error_for_a_label_without_positives(train):
    params = EngagementParams(**SMALL)
    with pytest.raises(EngagementFitError, match=r"'purchase' \(label 'buy'\) has no positives"):
        fit_engagement(
            train.assign(buy=0), features=FEATURES, labels=LABELS, group="user", params=params
        )
    # positives only among the training users: the calibration split has none
    split = assign_splits(train["user"], calibration_share=0.2, evaluation_share=0.15, seed=42)
    only_train = train.assign(buy=np.where(split == 0, train["buy"], 0))
    with pytest.raises(EngagementFitError, match="no positives in the calibration split"):
        fit_engagement(only_train, features=FEATURES, labels=LABELS, group="user", params=params)
    with pytest.raises(EngagementFitError, match="no negatives in the train split"):
        fit_engagement(
            train.assign(click=1), features=FEATURES, labels=LABELS, group="user", params=params
        )


def test_combined_score_weights(model):
    preds = {
        "click": np.array([0.5, 0.1]),
        "add_to_cart": np.array([0.0, 0.1]),
        "purchase": np.array([0.0, 0.05]),
    }
    # defaults 1 / 3 / 10: [0.5, 0.1 + 0.3 + 0.5]; deeper engagement wins
    np.testing.assert_allclose(model.combined_score(preds), [0.5, 0.9])
    np.testing.assert_allclose(combined_score(preds, {"click": 1.0}), [0.5, 0.1])
    np.testing.assert_allclose(
        model.combined_score(preds, {"click": 2.0, "purchase": 4.0}), [1.0, 0.4]
    )
    with pytest.raises(ValueError, match="without predictions"):
        combined_score(preds, {"wishlist": 1.0})


def test_metrics_report_calibration_and_evaluation_splits(model):
    table = model.metrics.set_index(["objective", "split", "stage", "metric"])["value"]
    for obj in LABELS:
        for split in ("calibration", "evaluation"):
            for stage in ("raw", "calibrated"):
                for metric in ("auc", "pr_auc", "log_loss", "ece"):
                    assert np.isfinite(table[obj, split, stage, metric])
        # on its own rows isotonic is (optimistically) near perfect; held-out rows are honest
        assert table[obj, "calibration", "calibrated", "ece"] < 1e-6
        assert (
            table[obj, "evaluation", "calibrated", "ece"] < table[obj, "evaluation", "raw", "ece"]
        )
    rows = table.xs(("click", "data", "rows"), level=["objective", "stage", "metric"])
    assert rows.sum() == 20_000


def test_feature_importance(model):
    imp = model.feature_importance()
    assert list(imp.columns) == ["objective", "feature", "gain", "total_gain"]
    assert len(imp) == len(LABELS) * len(FEATURES)
    click = imp[imp["objective"] == "click"]
    assert click["feature"].iloc[0] == "x0"  # the strongest term of the truth
    assert (click.set_index("feature").loc[["slot", "position"], "total_gain"] > 0).all()


def test_splits_are_disjoint_in_groups_and_seeded():
    users = pd.Series(np.arange(50_000) % 5_000).astype(str)
    a = assign_splits(users, calibration_share=0.2, evaluation_share=0.15, seed=1)
    b = assign_splits(users, calibration_share=0.2, evaluation_share=0.15, seed=1)
    c = assign_splits(users, calibration_share=0.2, evaluation_share=0.15, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3
    assert (pd.Series(a).groupby(users).nunique() == 1).all()
    np.testing.assert_allclose(np.bincount(a) / len(a), [0.65, 0.2, 0.15], atol=0.02)


def test_inverse_propensity_weights_debias_positions():
    """Logged positions follow the content (better items shown higher); θ = position^-0.8.
    Without position features, 1/θ on the engaged rows recovers P(click | examined)."""
    rng = np.random.default_rng(3)
    n = 30_000
    x = rng.normal(size=(n, 3))
    relevance = _sigmoid(-2.0 + 1.0 * x[:, 0] - 0.5 * x[:, 1])
    position = np.clip(np.round(5 - 2 * x[:, 0] + rng.normal(0, 1.5, n)), 1, 10)
    theta = position**-0.8
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(
        user=np.arange(n) % 3000, theta=theta, click=(rng.random(n) < theta * relevance).astype(int)
    )
    common = {"objectives": ("click",), "weights": {"click": 1.0}, "position_columns": ()}
    kw = {"features": ["a", "b", "c"], "labels": {"click": "click"}, "group": "user"}
    ips = fit_engagement(
        frame,
        params=EngagementParams(inverse_propensity=True, **common, **SMALL),
        propensity="theta",
        **kw,
    )
    naive = fit_engagement(frame, params=EngagementParams(**common, **SMALL), **kw)
    assert ips.predict(frame)["click"].mean() == pytest.approx(relevance.mean(), rel=0.15)
    assert naive.predict(frame)["click"].mean() < 0.6 * relevance.mean()
    with pytest.raises(ValueError, match="propensity column exactly when"):
        fit_engagement(frame, params=EngagementParams(**common), propensity="theta", **kw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objectives": ()}, "objectives must be unique non-empty names"),
        ({"objectives": ("click", "click")}, "objectives must be unique"),
        ({"objectives": ("a/b",), "weights": {"a/b": 1}}, r"\[A-Za-z0-9_\]"),
        ({"objectives": ("click",)}, "weights must give each objective a weight"),
        (
            {"weights": {"click": 1, "add_to_cart": -1, "purchase": 1}},
            "weights must be finite, >= 0",
        ),
        ({"weights": {"click": 0, "add_to_cart": 0, "purchase": 0}}, "not all 0"),
        ({"n_estimators": 0}, r"n_estimators must be an integer >= 1"),
        ({"learning_rate": 0.0}, r"learning_rate must be in \(0, 1\]"),
        ({"subsample": 1.5}, r"subsample must be in \(0, 1\]"),
        ({"negative_rate": 0.0}, r"negative_rate must be in \(0, 1\]"),
        ({"tree_method": "gpu"}, "tree_method must be one of"),
        ({"calibration_share": 0.0}, r"calibration_share must be in \(0, 1\)"),
        ({"evaluation_share": -0.1}, r"evaluation_share must be in \[0, 1\)"),
        ({"calibration_share": 0.5, "evaluation_share": 0.5}, "leave rows to train on"),
        ({"position_columns": ("slot", "slot")}, "position_columns must be unique"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngagementParams(**kwargs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": FEATURES + ["nope"]}, r"missing required columns: \['nope'\]"),
        ({"features": ["x0", "x1"]}, r"position columns \['slot', 'position'\] are not among"),
        ({"labels": {"click": "click"}}, "labels must map each objective"),
        ({"frame": lambda f: f.assign(atc=f["atc"] * 2)}, "label 'atc' of objective"),
        ({"frame": lambda f: f.assign(x0=f["x0"].astype(str))}, r"non-numeric columns \['x0'\]"),
        ({"propensity": "p_click"}, "propensity column exactly when"),
    ],
)
def test_input_errors(train, change, message):
    kw = {"features": FEATURES, "labels": LABELS, "group": "user", "params": EngagementParams()}
    frame = train.iloc[:2000]
    for k, v in change.items():
        if k == "frame":
            frame = v(frame)
        else:
            kw[k] = v
    with pytest.raises(ValueError, match=message):
        fit_engagement(frame, **kw)


def test_plots_write_pngs(model, held_out, tmp_path):
    from models.evaluation.plots import (
        feature_importance_plot,
        metric_vs_parameter,
        reliability_diagram,
    )

    y = held_out["click"].to_numpy()
    raw = model.predict(held_out, calibrated=False, position_override=None)["click"]
    cal = model.predict(held_out, position_override=None)["click"]
    paths = [
        reliability_diagram(y, raw, cal, tmp_path / "rel.png", title="click"),
        feature_importance_plot(model.feature_importance(), tmp_path / "imp.png"),
        metric_vs_parameter(
            [0.0, 0.5, 1.0], {"auc": [0.7, 0.8, 0.75]}, tmp_path / "w.png", xlabel="w", ylabel="AUC"
        ),
    ]
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_isotonic_calibrator_keeps_the_raw_order_inside_flat_stretches():
    from models.ranking.engagement_model import TIE_SLOPE, IsotonicCalibrator

    # flat at 0.1 over raw [0.2, 0.5], then 0.1 -> 0.3 up to raw 0.6, flat at 0.3 after it
    cal = IsotonicCalibrator(np.array([0.2, 0.5, 0.6]), np.array([0.1, 0.1, 0.3]))
    raw = np.array([0.0, 0.25, 0.3, 0.45, 0.55, 0.7, 0.9, 1.0])
    p = cal(raw)
    assert np.all(np.diff(p) > 0)  # strictly increasing: no ties where the fit is flat
    plain = np.interp(raw, cal.x, cal.y)
    assert np.abs(p - plain).max() <= TIE_SLOPE  # calibration moves by at most the slope
    assert p[4] == pytest.approx(0.2, abs=TIE_SLOPE)
    # probabilities stay in [0, 1] at the ends
    top = IsotonicCalibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    assert top(np.array([1.0]))[0] == 1.0 and top(np.array([0.0]))[0] == 0.0


def test_objectives_with_equal_labels_share_one_head(train, held_out, tmp_path):
    """Purchase-only logs: a purchase is also the click and the add-to-cart, so the three labels
    are equal and one head serves all three (fitted, predicted and saved once)."""
    frame = train.assign(atc=train["click"], buy=train["click"])
    shared = fit_engagement(
        frame, features=FEATURES, labels=LABELS, group="user", params=EngagementParams(**SMALL)
    )
    assert shared.shared == {"add_to_cart": "click", "purchase": "click"}
    assert shared.heads == ("click",)
    preds = shared.predict(held_out, position_override=None)
    assert list(preds) == ["click", "add_to_cart", "purchase"]
    np.testing.assert_array_equal(preds["purchase"], preds["click"])
    # every objective keeps its metric rows (the gates read them by objective)
    per_obj = shared.metrics.set_index(["objective", "split", "stage", "metric"])["value"]
    for obj in ("add_to_cart", "purchase"):
        np.testing.assert_array_equal(per_obj.loc[obj].to_numpy(), per_obj.loc["click"].to_numpy())
    # the same head as fitting the click label alone
    alone = fit_engagement(
        frame,
        features=FEATURES,
        labels={"click": "click"},
        group="user",
        params=EngagementParams(objectives=("click",), weights={"click": 1.0}, **SMALL),
    )
    np.testing.assert_array_equal(
        alone.predict(held_out, position_override=None)["click"], preds["click"]
    )
    d = shared.save(tmp_path / "bundle")
    assert sorted(p.name for p in d.glob("*.json")) == ["click.json", "model.json"]
    loaded = EngagementModel.load(d)
    assert loaded.shared == shared.shared
    again = loaded.predict(held_out, position_override=None)
    for obj in preds:
        np.testing.assert_array_equal(again[obj], preds[obj])


def test_objectives_with_different_labels_keep_their_own_heads(model, held_out):
    assert model.shared == {}
    assert model.heads == ("click", "add_to_cart", "purchase")
    preds = model.predict(held_out, position_override=None)
    assert not np.array_equal(preds["purchase"], preds["click"])


def test_bundles_of_the_first_format_still_load(model, held_out, tmp_path):
    """A champion saved before shared heads existed (format /1, no `shared_heads`) loads."""
    import json

    d = model.save(tmp_path / "old")
    meta = json.loads((d / "model.json").read_text())
    meta["format"] = "homepage.engagement/1"
    del meta["shared_heads"]
    (d / "model.json").write_text(json.dumps(meta))
    loaded = EngagementModel.load(d)
    assert loaded.shared == {}
    np.testing.assert_array_equal(
        loaded.predict(held_out, position_override=None)["purchase"],
        model.predict(held_out, position_override=None)["purchase"],
    )


def test_only_the_objectives_with_equal_labels_share(train, held_out):
    """Logs without clicks: the click label is the add-to-cart label, the purchase differs."""
    frame = train.assign(click=train["atc"])
    model = fit_engagement(
        frame, features=FEATURES, labels=LABELS, group="user", params=EngagementParams(**SMALL)
    )
    assert model.shared == {"add_to_cart": "click"}
    assert model.heads == ("click", "purchase")
    preds = model.predict(held_out, position_override=None)
    np.testing.assert_array_equal(preds["add_to_cart"], preds["click"])
    assert not np.array_equal(preds["purchase"], preds["click"])


def test_soft_labels_expand_to_weighted_binary_rows():
    rows, y, weight = expand_soft_labels(np.array([0.0, 1.0, 0.25, 0.0]))
    np.testing.assert_array_equal(rows, [0, 1, 2, 3, 2])
    np.testing.assert_array_equal(y, [0, 1, 1, 0, 0])
    np.testing.assert_allclose(weight, [1.0, 1.0, 0.25, 1.0, 0.75])
    rows, y, weight = expand_soft_labels(np.array([0.0, 1.0, 1.0]))
    assert rows is None and y.tolist() == [0, 1, 1] and weight.tolist() == [1.0, 1.0, 1.0]


def test_a_head_on_soft_labels_learns_the_probability_they_hold(train, held_out):
    """Soft labels equal to the true click probability: the head ranks and calibrates clicks
    at least as well as one trained on the sampled 0/1 clicks."""
    soft = fit_engagement(
        train,
        features=FEATURES,
        labels={"click": "p_click"},
        group="user",
        params=EngagementParams(objectives=("click",), weights={"click": 1.0}, **SMALL),
    )
    hard = fit_engagement(
        train,
        features=FEATURES,
        labels={"click": "click"},
        group="user",
        params=EngagementParams(objectives=("click",), weights={"click": 1.0}, **SMALL),
    )
    p_soft = soft.predict(held_out, position_override=None)["click"]
    p_hard = hard.predict(held_out, position_override=None)["click"]
    y = held_out["click"].to_numpy()
    assert m.auc(y, p_soft) >= m.auc(y, p_hard) - 0.005
    assert m.log_loss(y, p_soft) <= m.log_loss(y, p_hard) + 0.002
    assert abs(p_soft.mean() - held_out["p_click"].mean()) < 0.01
    # the soft head's fit metrics are weighted: positives count soft rows
    rows = soft.metrics.query("split == 'train' and metric == 'rows'")["value"].iloc[0]
    assert (
        rows
        > (
            assign_splits(train["user"], calibration_share=0.2, evaluation_share=0.15, seed=42) == 0
        ).sum()
    )
