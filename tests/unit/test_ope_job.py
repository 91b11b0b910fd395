"""OPE job (jobs/experiments/ope.py): the OBD check, the learned policy on OBD and on generated lakes."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from jobs.experiments import ope, ope_learned, ope_policies, ope_rounds

# ---- (a) a hand-made OBD-style log where BTS's action distribution is known ----------------

ITEMS = [f"x:{k}" for k in range(5)]
EXAM = np.array([1.0, 0.7, 0.5])  # positions 1-3
ATTRACT = np.array([0.02, 0.05, 0.10, 0.04, 0.08])
PI_BTS = np.array(  # rows: positions, columns: items
    [[0.05, 0.15, 0.50, 0.10, 0.20], [0.10, 0.20, 0.30, 0.10, 0.30], [0.2, 0.2, 0.2, 0.2, 0.2]]
)
BTS_VALUE = float(np.mean([(PI_BTS[p] * EXAM[p] * ATTRACT).sum() for p in range(3)]))


def _obd_log(n: int, seed: int) -> pd.DataFrame:
    """n random-policy and n BTS impressions (positions 1-3 in turn) with their clicks."""
    rng = np.random.default_rng(seed)
    rows = []
    for policy in ("random", "bts"):
        pos = np.arange(n) % 3
        if policy == "random":
            item = rng.integers(0, 5, n)
            prop = np.full(n, 0.2)
        else:
            cum = PI_BTS[pos].cumsum(axis=1)
            item = (rng.random(n)[:, None] > cum).sum(axis=1)
            prop = PI_BTS[pos, item]
        click = rng.random(n) < EXAM[pos] * ATTRACT[item]
        ts = pd.Timestamp("2019-11-24", tz="UTC") + pd.to_timedelta(
            np.arange(n) + (0 if policy == "random" else n), unit="s"
        )
        frame = pd.DataFrame(
            {
                "ts": ts,
                "user_id": "obd-" + (np.arange(n) % 7).astype(str),
                "event_type": "impression",
                "item_id": np.array(ITEMS)[item],
                "carousel_id": "obd:x",
                "slot": 1,
                "position": pos + 1,
                "propensity": prop,
                "logging_policy": policy,
            }
        )
        rows += [frame, frame[click].assign(event_type="click")]
    return pd.concat(rows, ignore_index=True)


def test_obd_check_recovers_a_known_bts_rate_from_the_random_log():
    covered, estimates = 0, []
    for seed in range(5):
        res = ope.obd_check(_obd_log(15_000, seed), resamples=200, dm_resamples=20, seed=seed)
        ips = res["overall"]["estimators"]["ips"]
        estimates.append(ips["estimate"])
        covered += ips["ci_low"] <= BTS_VALUE <= ips["ci_high"]
        assert res["overall"]["observed"]["n"] == 15_000
        assert res["overall"]["rounds"] == 15_000
        assert set(res["campaigns"]) == {"obd:x"}
        assert res["overall"]["match_share"] == 1.0  # every item has BTS mass here
        assert res["counts"]["clicks_unmatched"] == 0
    assert covered >= 4
    assert abs(np.mean(estimates) - BTS_VALUE) < 0.1 * BTS_VALUE


def test_obd_check_mean_propensity_is_exact_for_a_constant_bts():
    log = _obd_log(3_000, 0)
    dist, support = ope_policies.bts_action_distribution(
        ope_rounds.homepage_impressions(log)[0].query("policy == 'bts'"), "mean_propensity"
    )
    got = dist.pivot(index="position", columns="item_id", values="probability").to_numpy()
    np.testing.assert_allclose(got, PI_BTS, atol=1e-12)
    np.testing.assert_allclose(support["mean_propensity_mass"], 1.0)
    freq, _ = ope_policies.bts_action_distribution(
        ope_rounds.homepage_impressions(log)[0].query("policy == 'bts'"), "frequency"
    )
    got = freq.pivot(index="position", columns="item_id", values="probability").to_numpy()
    np.testing.assert_allclose(got, PI_BTS, atol=0.05)


def test_obd_check_needs_both_logs():
    log = _obd_log(300, 0)
    with pytest.raises(ValueError, match="both logging policies"):
        ope.obd_check(log[log["logging_policy"] == "random"], resamples=10)


def test_clicks_are_matched_to_their_impression():
    log = _obd_log(300, 1)
    imp, counts = ope_rounds.homepage_impressions(log)
    assert counts["impressions"] == 600
    assert counts["clicks"] == int((log["event_type"] == "click").sum()) == imp["clicked"].sum()
    assert counts["clicks_unmatched"] == 0
    # a click on the page of a logged click, at an (item, position) that page never showed
    source = log[log["event_type"] == "click"].head(1)
    orphan = source.assign(item_id="x:4", position=3)
    page = log[(log["event_type"] == "impression") & (log["ts"] == source["ts"].iloc[0])]
    assert len(page) == 1 and not ((page["item_id"] == "x:4") & (page["position"] == 3)).any()
    _, more = ope_rounds.homepage_impressions(pd.concat([log, orphan]))
    assert more["clicks_unmatched"] == counts["clicks_unmatched"] + 1
    assert more["clicks"] == counts["clicks"] + 1
    assert more["impressions"] == counts["impressions"]


# ---- (b) the real Open Bandit Dataset sample ------------------------------------------------


@pytest.fixture(scope="module")
def obd_lake(shared_data, tmp_path_factory):
    from jobs.inputs.importers import import_dataset

    root = str(tmp_path_factory.mktemp("ope") / "obd")
    import_dataset("obd", str(shared_data / "obd"), root)
    return Lake(root)


def _finite_in_unit(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and 0.0 <= x <= 1.0


def test_obd_check_on_the_real_sample(obd_lake):
    events, source = ope_rounds.read_events(obd_lake)
    assert source == "events"  # imported, never ingested
    res = ope.obd_check(events, resamples=200, dm_resamples=30)
    assert set(res["campaigns"]) == {"obd:all", "obd:men", "obd:women"}
    for sec in [res["overall"], *res["campaigns"].values()]:
        assert _finite_in_unit(sec["observed"]["estimate"])
        for name in ("ips", "snips", "dm", "dr"):
            e = sec["estimators"][name]
            assert _finite_in_unit(e["estimate"]), (name, e)
            assert e["ci_low"] <= e["estimate"] <= e["ci_high"]
            assert isinstance(sec["comparison"][name]["observed_in_ci"], bool)
            assert math.isfinite(sec["comparison"][name]["relative_error"])
        assert 0.9 < sec["mean_weight"] < 1.1  # BTS's frequencies average 1 over uniform logs
    assert res["overall"]["rounds"] == sum(s["rounds"] for s in res["campaigns"].values())
    # IPS from the random log agrees with BTS's observed rate on this sample
    assert res["overall"]["comparison"]["ips"]["observed_in_ci"]


def _obd_pages(lake: Lake, events: pd.DataFrame) -> pd.DataFrame:
    """A page per user (and __default__): every campaign's carousel, items by a fixed score."""
    cars = pd.read_parquet(lake.carousels)
    rng = np.random.default_rng(0)
    rows = []
    users = [*sorted(events["user_id"].unique())[:200], DEFAULT_PAGE_KEY]
    for slot, (cid, item_ids) in enumerate(
        zip(cars["carousel_id"], cars["item_ids"], strict=True), start=1
    ):
        for user in users:
            score = rng.random(len(item_ids))
            order = np.argsort(-score)[:10]
            for rank, k in enumerate(order, start=1):
                rows.append((user, slot, rank, item_ids[k], cid, "obd", score[k], 1.0 / slot))
    return pd.DataFrame(
        rows,
        columns=[
            "user_id",
            "slot",
            "item_rank",
            "item_id",
            "carousel_id",
            "family",
            "item_score",
            "carousel_score",
        ],
    )


def test_run_on_the_obd_sample_writes_the_report(obd_lake, tmp_path):
    events, _ = ope_rounds.read_events(obd_lake)
    pages = _obd_pages(obd_lake, events)
    path = tmp_path / "pages.parquet"
    pages.to_parquet(path)
    res = ope.run(
        obd_lake.root, "2019-11-27", pages_path=str(path), test_days=2, resamples=100, seed=1
    )
    assert res["kind"] == "obd"
    assert res["window"]["first_day"] == "2019-11-27" and res["window"]["last_day"] == "2019-11-28"
    with open(os.path.join(obd_lake.reports("2019-11-27"), "ope.json")) as f:
        saved = json.load(f)
    assert saved["learned_policy"]["random"]["rounds"] == res["learned_policy"]["random"]["rounds"]
    rnd = res["learned_policy"]["random"]
    # users without a page fall back to __default__, so no round is skipped
    assert rnd["skipped_rounds"] == 0 and rnd["rounds_without_user_page"] > 0
    # a deterministic target over n items matches about 1/n of uniform rounds
    assert 0.005 < rnd["match_share"] < 0.06
    assert 0.5 < rnd["mean_weight"] < 1.5
    for name in ("ips", "snips", "dm", "dr"):
        assert math.isfinite(rnd["estimators"][name]["estimate"])
    assert "bts" in res["learned_policy"]
    text = ope.format_report(res)
    assert "OBD check" in text and "SNIPS" in text and "[random rounds]" in text


# ---- (c) the learned policy on a generated lake ---------------------------------------------


@pytest.fixture(scope="module")
def gen_lake(tmp_path_factory):
    from jobs.inputs.generate import generate_lake

    root = str(tmp_path_factory.mktemp("ope") / "gen")
    generate_lake(root, users=8000, items=500, days=6, seed=5, random_share=0.5)
    lake = Lake(root)
    events, _ = ope_rounds.read_events(lake)
    return lake, events


def _first_default_pages(imp: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A fixed target: each user's first logged default page, carousels and items scored at
    random (so the target knows some carousels and items of the random pages, not all)."""
    d = imp[imp["policy"] == "default"]
    d = d[d["page_key"] == d.groupby("user_id")["page_key"].transform("min")]
    rng = np.random.default_rng(seed)
    car_score = (
        pd.Series(rng.random(len(d)), index=d.index)
        .groupby([d["user_id"], d["carousel_id"]])
        .transform("first")
    )
    return pd.DataFrame(
        {
            "user_id": d["user_id"],
            "slot": d["slot"],
            "item_rank": d["position"],
            "item_id": d["item_id"],
            "carousel_id": d["carousel_id"],
            "item_score": rng.random(len(d)),
            "carousel_score": car_score,
        }
    )


def test_learned_policy_on_generated_pages_is_unbiased_against_the_truth(gen_lake):
    from jobs.inputs.generate import load_truth

    lake, events = gen_lake
    imp, _ = ope_rounds.homepage_impressions(events)
    pages = _first_default_pages(imp, 0)
    res = ope_learned.learned_policy_ope(lake, pages, events, resamples=300, dm_resamples=20)
    assert res["kind"] == "generated" and res["layout_slots"] == 6
    # the true expected clicks of the target's arrangement of every logged random page
    truth = load_truth(lake.root)
    rand = ope_rounds.random_page_rounds(imp)
    arranged, tiers = ope_policies.arrange_random_pages(rand, pages)
    assert tiers == res["target_tiers"]
    p = truth.click_probability(
        truth.user_index(arranged["user_id"]),
        truth.item_index(arranged["item_id"]),
        arranged["target_slot"].to_numpy(),
        arranged["target_position"].to_numpy(),
    )
    value = p.sum() / rand["round"].nunique()
    assert res["rounds"] == rand["round"].nunique()
    for name in ("ips", "dr"):
        e = res["estimators"][name]
        assert abs(e["estimate"] - value) < 3 * e["se"], (name, e, value)
    assert 0.85 < res["mean_weight"] < 1.15  # E[w] = 1 per placement
    assert 0.0 < res["placement_match_share"] < 0.1
    # the target never reproduces the logged arrangement where it knows nothing
    assert "unscored (hash order)" in res["target_tiers"]["carousels"]
    assert res["per_unit"]["logging"]["estimate"] == pytest.approx(
        res["logging"]["estimate"] / res["mean_units"]
    )


def test_snips_equals_the_observed_rate_when_the_target_copies_full_pages(gen_lake):
    lake, events = gen_lake
    imp, _ = ope_rounds.homepage_impressions(events)
    rand = imp[imp["policy"] == "random"]
    views = rand.groupby(["user_id", "page_key"]).size()
    full = views[views == 36].reset_index()  # 6 carousels x 6 items: every weight is 36
    full = full[~full["user_id"].duplicated(keep=False)]  # users with one such page view
    once = rand.groupby("user_id")["page_key"].nunique()
    full = full[full["user_id"].map(once) == 1]
    assert len(full) >= 50
    keep = rand.merge(full[["user_id", "page_key"]], on=["user_id", "page_key"])
    pages = pd.DataFrame(
        {
            "user_id": keep["user_id"],
            "slot": keep["slot"],
            "item_rank": keep["position"],
            "item_id": keep["item_id"],
            "carousel_id": keep["carousel_id"],
            "item_score": -keep["position"].astype(float),
            "carousel_score": -keep["slot"].astype(float),
        }
    )
    users = set(full["user_id"])
    ev = events[(events["logging_policy"] != "random") | events["user_id"].isin(users)]
    res = ope_learned.learned_policy_ope(lake, pages, ev, resamples=50, dm_resamples=5)
    assert res["rounds"] == len(full)
    assert res["match_share"] == 1.0 and res["placement_match_share"] == 1.0
    est = res["estimators"]
    assert est["snips"]["estimate"] == pytest.approx(res["logging"]["estimate"], rel=1e-12)
    # a target chosen after seeing the log: IPS counts every placement 36 times
    assert est["ips"]["estimate"] == pytest.approx(36 * res["logging"]["estimate"], rel=1e-12)


def test_run_on_a_generated_lake(gen_lake, tmp_path):
    lake, events = gen_lake
    imp, _ = ope_rounds.homepage_impressions(events)
    path = tmp_path / "pages.parquet"
    _first_default_pages(imp, 1).to_parquet(path)
    res = ope.run(
        lake.root, "2026-01-04", pages_path=str(path), test_days=2, resamples=50, write=False
    )
    assert res["kind"] == "generated" and "obd_check" not in res
    assert res["window"] == {
        "start": "2026-01-04",
        "end": "2026-01-06",
        "first_day": "2026-01-04",
        "last_day": "2026-01-05",
    }
    lp = res["learned_policy"]
    assert lp["examination"]["source"].startswith("CTR ratios")
    assert set(lp["observed_by_policy"]) == {"default", "random"}
    assert "per impression" in ope.format_report(res)
    with pytest.raises(FileNotFoundError, match="no pages"):
        ope.run(lake.root, "2026-01-04", resamples=10)
    with pytest.raises(ValueError, match="no homepage impressions"):
        ope.run(lake.root, "2027-01-01", pages_path=str(path), resamples=10)
