"""Experiments (`jobs/experiments/experiment.py`, DAG `homepage_experiment`, `homepage experiment`).

Fast: the DAG's typed params accept good values and reject bad ones; DAG params become the
override list; the plan refuses experiments that cannot be run or compared, naming the reason,
and plans the replicates of `seeds` and `splits`; the summary across replicates by hand.
End to end (one module fixture, ~2-4 minutes on 2 cores): a small generated lake, the champion
config and `page.beam_width=1` evaluated on one split, compared and logged to MLflow; then the
same experiment through `dag.test()` and through the CLI, which reuse both evaluations; then
with one more training seed (CLI, then `dag.test()`) and on one more split date (~1 minute each).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import SMALL_LAKE_OVERRIDES

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- DAG params


@pytest.fixture(scope="module")
def exp_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_experiment.py"))
    assert bag.import_errors == {}
    return bag.dags["homepage_experiment"]


def _resolve(dag: Any, **values: Any) -> dict[str, Any]:
    """The DAG's params with `values` set, validated as a trigger validates them."""
    params = copy.deepcopy(dag.params)
    for key, value in values.items():
        params[key] = value  # ParamsDict validates each value against its Param's schema
    return params.validate()


GOOD = {
    "split_ds": "2026-01-07",
    "name": "beam-1.try_2",
    "test_days": 3,
    "scoring.w": 0.25,
    "scoring.choose_w": False,
    "mf.factors": 64,
    "mf.regularization": 0.1,
    "engagement.weight_click": 0,
    "engagement.weight_add_to_cart": 2.5,
    "engagement.weight_purchase": 12,
    "page.beam_width": 1,
    "page.explore_epsilon": 0.0,
    "page.item_lambda": 1,
    "page.carousel_lambda": 0.5,
    "extra_overrides": ["mf.iterations=20", "page.slots = 8"],
    "seeds": [7, 13],
    "splits": ["2026-01-03", "2025-12-20"],
}


def test_params_accept_typed_values(exp_dag: Any) -> None:
    resolved = _resolve(exp_dag, **GOOD)
    assert {k: resolved[k] for k in GOOD} == GOOD
    # every override param defaults to null ("keep the config's value"); the trigger form then
    # shows typed, optional fields
    defaults = _resolve(exp_dag, split_ds="2026-01-07")
    overrides = [k for k in defaults if "." in k]
    assert len(overrides) == 11
    assert all(defaults[k] is None for k in overrides)
    for k in overrides:
        schema = exp_dag.params.get_param(k).schema
        assert "null" in schema["type"] and len(schema["type"]) == 2, (k, schema)
    assert defaults["extra_overrides"] == [] and defaults["name"] is None
    assert _resolve(exp_dag, split_ds="2026-01-07", name="")["name"] == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("scoring.w", 2),
        ("scoring.w", -0.1),
        ("mf.factors", "abc"),
        ("mf.factors", 0),
        ("mf.factors", 1.5),
        ("mf.regularization", 0),
        ("scoring.choose_w", "yes"),
        ("engagement.weight_purchase", -1),
        ("page.beam_width", 0),
        ("page.explore_epsilon", 1.5),
        ("page.item_lambda", "high"),
        ("page.carousel_lambda", 2),
        ("split_ds", "2026-13-01"),
        ("split_ds", "07/01/2026"),
        ("test_days", 0),
        ("name", "two words"),
        ("name", "../escape"),
        ("extra_overrides", ["no-equals-sign"]),
        ("extra_overrides", "mf.factors=8"),
        ("lake", ""),
        ("seeds", [7, 7]),
        ("seeds", [-1]),
        ("seeds", ["7"]),
        ("seeds", 7),
        ("splits", ["2026-01-03", "2026-01-03"]),
        ("splits", ["not a date"]),
    ],
)
def test_params_reject_bad_values(exp_dag: Any, key: str, value: Any) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match=key.replace(".", r"\.")):
        _resolve(exp_dag, **{"split_ds": "2026-01-07", key: value})


def test_split_ds_is_required(exp_dag: Any) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="split_ds"):
        _resolve(exp_dag)


# ---------------------------------------------------------------- overrides from params


def test_overrides_from_params_drop_nulls_and_merge_extras(exp_dag: Any) -> None:
    from jobs.experiments.plan import flat_overrides, overrides_from_params

    params = _resolve(
        exp_dag,
        split_ds="2026-01-07",
        **{
            "scoring.w": 0.5,
            "scoring.choose_w": False,
            "mf.factors": 64,
            "page.explore_epsilon": 0,
            "extra_overrides": ["mf.iterations=20", " page.slots = 8 "],
        },
    )
    out = overrides_from_params(params)
    assert out == [
        "scoring.w=0.5",
        "scoring.choose_w=false",
        "mf.factors=64",
        "page.explore_epsilon=0",
        "mf.iterations=20",
        "page.slots = 8",
    ]
    # null typed params are not overrides; neither are lake, split_ds, name, ...
    assert not any(o.startswith(("page.beam_width", "lake", "split_ds", "name")) for o in out)
    assert flat_overrides(out) == {
        "scoring.w": 0.5,
        "scoring.choose_w": False,
        "mf.factors": 64,
        "page.explore_epsilon": 0,
        "mf.iterations": 20,
        "page.slots": 8,
    }
    assert overrides_from_params(_resolve(exp_dag, split_ds="2026-01-07")) == []


def test_run_conf_keys_are_overrides_or_known_params(exp_dag: Any) -> None:
    from jobs.core.config import ConfigError
    from jobs.experiments.experiment import overrides_from_params

    # a trigger's conf joins the params: any dotted key in it is an override too
    params = _resolve(exp_dag, split_ds="2026-01-07", **{"mf.iterations": 20})
    assert overrides_from_params(params, known=exp_dag.params) == ["mf.iterations=20"]
    typo = _resolve(exp_dag, split_ds="2026-01-07", split_date="2026-01-07")
    with pytest.raises(ConfigError, match="unknown param.*split_date"):
        overrides_from_params(typo, known=exp_dag.params)


def test_a_key_set_twice_is_an_error(exp_dag: Any) -> None:
    from jobs.core.config import ConfigError
    from jobs.experiments.plan import flat_overrides, overrides_from_params

    params = _resolve(
        exp_dag, split_ds="2026-01-07", **{"mf.factors": 16, "extra_overrides": ["mf.factors=8"]}
    )
    with pytest.raises(ConfigError, match="mf.factors is set twice"):
        overrides_from_params(params)
    with pytest.raises(ConfigError, match="given twice"):
        flat_overrides(["page.slots=4", "page.slots=5"])
    with pytest.raises(ConfigError, match="key=value"):
        flat_overrides(["page.slots"])


# ---------------------------------------------------------------- the plan


@pytest.fixture(scope="module")
def raw_lake(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Input tables only (no pipeline run): enough for the plan's checks."""
    from jobs.core.lake import Lake
    from jobs.inputs.generate import generate_lake

    root = str(tmp_path_factory.mktemp("raw-lake"))
    generate_lake(root, users=60, items=80, days=4, seed=2)
    return Lake(root)


def test_the_plan_names_paths_and_changes(raw_lake: Any) -> None:
    from jobs.core.config import load_config
    from jobs.experiments.experiment import plan

    p = plan(raw_lake, "2026-01-03", ["page.beam_width=1", "mf.factors=32"])
    champion, exp = load_config(), load_config(None, ["page.beam_width=1"])
    assert p["champion_hash"] == champion.hash() and p["experiment_hash"] == exp.hash()
    assert p["name"] == f"exp-{exp.hash()[:8]}"
    # mf.factors=32 is the default already: only beam_width changes
    assert p["changed"] == {"page.beam_width": [3, 1]}
    assert p["overrides"] == ["page.beam_width=1", "mf.factors=32"]
    root = raw_lake.root
    assert p["champion_dir"] == f"{root}/_eval/2026-01-03-{champion.hash()[:8]}"
    assert p["experiment_dir"] == f"{root}/_experiments/{p['name']}/experiment"
    assert p["report_dir"] == f"{root}/warehouse/reports/ds=2026-01-03/experiments/{p['name']}"
    assert (p["test_days"], p["test_end"]) == (7, "2026-01-05")  # cut at the last event day
    json.dumps(p)  # travels through XCom
    named = plan(raw_lake, "2026-01-03", {"scoring.w": 0.5, "scoring.choose_w": False}, name="w05")
    assert named["name"] == "w05" and named["test_days"] == 7
    assert named["changed"] == {"scoring.choose_w": [True, False], "scoring.w": [0.7, 0.5]}


@pytest.mark.parametrize(
    ("overrides", "kwargs", "error"),
    [
        ([], {}, "no overrides"),
        ({}, {}, "no overrides"),
        (["page.beam_width=3"], {}, "change nothing"),
        (["page.beam_widht=1"], {}, r"unknown key\(s\) in page: page.beam_widht"),
        (["nosection.x=1"], {}, r"unknown key\(s\) in config: nosection"),
        (["mf.factors=abc"], {}, "mf.factors must be an integer"),
        (["page.explore_epsilon=2"], {}, r"page.explore_epsilon must be in \[0, 1\]"),
        (["eval.test_days=3"], {}, "cannot override eval.test_days"),
        (["mlflow.experiment=x"], {}, "cannot override mlflow.experiment"),
        (["serve.port=9000", "spark.shuffle_partitions=8"], {}, "cannot change any metric"),
        (["scoring.w=0.5"], {}, "scoring.choose_w"),
        (["page.beam_width=1"], {"name": "a/b"}, "experiment name"),
        (["page.beam_width=1"], {"test_days": 0}, "test_days must be an integer >= 1"),
        (["page.beam_width=1"], {"split_ds": "2026-01-01"}, "no events before the split"),
        (["page.beam_width=1"], {"split_ds": "2026-02-01"}, "no events on or after the split"),
        (["page.beam_width=1"], {"split_ds": "Jan 3"}, "YYYY-MM-DD"),
    ],
)
def test_the_plan_refuses_with_the_reason(
    raw_lake: Any, overrides: Any, kwargs: dict[str, Any], error: str
) -> None:
    from jobs.experiments.experiment import plan

    split = kwargs.pop("split_ds", "2026-01-03")
    with pytest.raises(ValueError, match=error):
        plan(raw_lake, split, overrides, **kwargs)


def test_seeds_add_replicates_trained_with_each_seed(raw_lake: Any) -> None:
    from jobs.core.config import load_config
    from jobs.experiments.plan import plan, side_config

    p = plan(raw_lake, "2026-01-03", ["page.beam_width=1"], name="b1", seeds=[7, 13])
    assert p["seeds"] == [7, 13] and [r["seed"] for r in p["replicates"]] == [7, 13]
    root = raw_lake.root
    r7 = p["replicates"][0]
    champion7 = load_config(None, ["mf.seed=7", "engagement.seed=7"])
    experiment7 = load_config(None, ["mf.seed=7", "engagement.seed=7", "page.beam_width=1"])
    assert r7["champion_hash"] == champion7.hash() != p["champion_hash"]
    assert r7["experiment_hash"] == experiment7.hash()
    assert side_config(r7, "experiment").engagement.seed == 7
    assert side_config(r7, "champion").page.beam_width == 3
    assert r7["champion_dir"] == f"{root}/_eval/2026-01-03-{champion7.hash()[:8]}"
    assert r7["experiment_dir"] == f"{root}/_experiments/b1/experiment-seed7"
    assert r7["report_dir"] == f"{p['report_dir']}/seed-7"
    # the replicate's champion lake starts from the first champion lake's tables
    assert r7["seed_source"] == {"dir": p["champion_dir"], "hash": p["champion_hash"]}
    assert r7["changed"] == p["changed"] and r7["overrides"] == p["overrides"]
    json.dumps(p)  # travels through XCom
    assert plan(raw_lake, "2026-01-03", ["page.beam_width=1"])["replicates"] == []


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        (["page.beam_width=1"], "champion"),  # the replicate's champion lake has the same tables
        (["features.half_life_days=90"], "experiment"),  # only the experiment lake has them
    ],
)
def test_a_replicate_lake_starts_from_up_to_date_tables(
    raw_lake: Any, tmp_path: Path, overrides: list[str], source: str
) -> None:
    from jobs.experiments.plan import plan
    from jobs.experiments.sides import RECORD, _fingerprint, seed_lake

    p = plan(raw_lake, "2026-01-03", overrides, name=f"t-{source}", seeds=[7])
    rp = p["replicates"][0]
    src = p[f"{source}_dir"]
    os.makedirs(os.path.join(src, "warehouse", "events", "ds=2026-01-01"))
    os.makedirs(os.path.join(src, "warehouse", "features"))
    rec = {"fingerprint": _fingerprint(p, p[f"{source}_hash"]), "result": {"eval_lake": src}}
    os.makedirs(os.path.join(src, "warehouse", "pages"))
    with open(os.path.join(src, RECORD), "w") as f:
        json.dump(rec, f)
    # from the first champion lake: the replicate's champion lake; from the first experiment
    # lake: the replicate's experiment lake, where the overrides change ingest or the features
    side = "champion" if source == "champion" else "experiment"
    other = "experiment" if side == "champion" else "champion"
    assert seed_lake(rp, other) == []  # its source holds nothing here
    assert seed_lake(rp, side) == ["events", "features"]
    assert os.path.isdir(os.path.join(rp[f"{side}_dir"], "warehouse", "events", "ds=2026-01-01"))
    assert seed_lake(rp, side) == []  # not a new lake any more
    # a source evaluated by other code or on other inputs is not copied
    rec["fingerprint"] = "stale"
    with open(os.path.join(src, RECORD), "w") as f:
        json.dump(rec, f)
    shutil.rmtree(rp[f"{side}_dir"])
    assert seed_lake(rp, side) == []


def test_splits_add_replicates_on_other_dates(raw_lake: Any) -> None:
    from jobs.core.config import load_config
    from jobs.experiments.plan import plan, side_config

    p = plan(raw_lake, "2026-01-03", ["page.beam_width=1"], name="b1", splits=["2026-01-02"])
    (r,) = p["replicates"]
    h = load_config().hash()[:8]
    root = raw_lake.root
    assert (r["split_ds"], r["replicate_split"], r["test_end"]) == ("2026-01-02",) * 2 + (
        "2026-01-05",
    )
    # the same configs, on the other split's champion lake (homepage evaluate's) and report
    assert (r["champion_hash"], r["experiment_hash"]) == (p["champion_hash"], p["experiment_hash"])
    assert side_config(r, "experiment").page.beam_width == 1
    assert r["champion_dir"] == f"{root}/_eval/2026-01-02-{h}"
    assert r["experiment_dir"] == f"{root}/_experiments/b1/experiment-2026-01-02"
    assert r["report_dir"] == f"{root}/warehouse/reports/ds=2026-01-02/experiments/b1"
    assert "seed_source" not in r  # another split ingests other days: nothing to copy
    json.dumps(p)


def test_seeds_and_splits_make_a_grid(raw_lake: Any) -> None:
    from jobs.core.config import load_config
    from jobs.experiments.experiment import plan

    p = plan(
        raw_lake, "2026-01-03", ["page.beam_width=1"], name="b1", seeds=[7], splits=["2026-01-02"]
    )
    reps = p["replicates"]
    # seed 7 on the experiment's split, the other split, seed 7 on the other split
    assert [(r["split_ds"], r.get("seed")) for r in reps] == [
        ("2026-01-03", 7),
        ("2026-01-02", None),
        ("2026-01-02", 7),
    ]
    cell = reps[2]
    root = raw_lake.root
    h7 = load_config(None, ["mf.seed=7", "engagement.seed=7"]).hash()[:8]
    assert cell["replicate_split"] == "2026-01-02" and cell["test_end"] == reps[1]["test_end"]
    assert cell["champion_dir"] == f"{root}/_eval/2026-01-02-{h7}"
    assert cell["experiment_dir"] == f"{root}/_experiments/b1/experiment-2026-01-02-seed7"
    assert cell["report_dir"] == f"{reps[1]['report_dir']}/seed-7"
    # it starts from its own split's lakes, never from another split's
    assert cell["seed_source"] == {"dir": reps[1]["champion_dir"], "hash": p["champion_hash"]}
    assert cell["experiment_seed_source"]["dir"] == reps[1]["experiment_dir"]
    dirs = [p["champion_dir"], p["experiment_dir"]]
    dirs += [r[f"{side}_dir"] for r in reps for side in ("champion", "experiment")]
    assert len(set(dirs)) == len(dirs) == 8  # every cell has lakes of its own
    json.dumps(p)


def test_grid_rows_by_hand() -> None:
    from jobs.experiments.replicates import grid_rows, markdown, seed_means

    def rows(c: float, e: float) -> list[dict[str, Any]]:
        return [{"metric": "page.page_recall", "champion": c, "experiment": e, "difference": e - c}]

    splits, seeds = ["2026-01-03", "2026-01-02"], ["42", "7"]
    cells = {
        ("2026-01-03", "42"): rows(0.60, 0.62),
        ("2026-01-03", "7"): rows(0.62, 0.66),  # split mean: 0.61 -> 0.64, difference 0.03
        ("2026-01-02", "42"): rows(0.50, 0.51),
        ("2026-01-02", "7"): rows(0.52, 0.52),  # split mean: 0.51 -> 0.515, difference 0.005
    }
    (m,) = seed_means([cells[("2026-01-03", s)] for s in seeds])
    assert (m["champion"], m["experiment"], m["difference"]) == pytest.approx((0.61, 0.64, 0.03))
    (r,) = grid_rows(splits, seeds, cells)
    # across the two splits' seed means, not the four cells
    assert r["n"] == 2 and r["same_sign"] == 2
    assert r["diff_mean"] == pytest.approx(0.0175)
    assert r["champion_mean"] == pytest.approx(0.56) and r["champion_sd"] == pytest.approx(
        0.05 * 2**0.5
    )
    half = 12.706204736174707 * (0.025 / 2**0.5) / 2**0.5  # t(0.975, 1 df) · sd / √n
    assert r["diff_low"] == pytest.approx(0.0175 - half)
    assert r["diff[2026-01-03]"] == pytest.approx(0.03) and r["diff[2026-01-02]"] == pytest.approx(
        0.005
    )
    assert r["diff[2026-01-02 seed 7]"] == pytest.approx(0.0)
    assert r["diff[2026-01-03 seed 7]"] == pytest.approx(0.04)
    md = markdown(
        {
            "name": "x",
            "kind": "grid",
            "split_ds": "2026-01-03",
            "overrides": ["a.b=1"],
            "labels": splits,
            "seeds": seeds,
            "rows": [r],
        }
    )
    assert (
        "each with training seeds 42, 7" in md and "| split 2026-01-03 | split 2026-01-02 |" in md
    )
    assert "in grid.csv" in md


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"splits": ["2026-01-03"]}, "the experiment's own split"),
        ({"splits": ["2026-01-02", "2026-01-02"]}, "distinct"),
        ({"splits": ["Jan 2"]}, "YYYY-MM-DD"),
        ({"splits": ["2025-12-01"]}, "split 2025-12-01: no events before the split"),
    ],
)
def test_splits_are_checked(raw_lake: Any, kwargs: dict[str, Any], error: str) -> None:
    from jobs.experiments.experiment import plan

    with pytest.raises(ValueError, match=error):
        plan(raw_lake, "2026-01-03", ["page.beam_width=1"], **kwargs)


@pytest.mark.parametrize(
    ("overrides", "seeds", "error"),
    [
        (["page.beam_width=1"], [42], "the config's own training seed"),
        (["page.beam_width=1"], [7, 7], "distinct"),
        (["page.beam_width=1"], [-1], "integers >= 0"),
        (["page.beam_width=1"], [True], "integers >= 0"),
        (["page.beam_width=1", "engagement.seed=3"], [7], "engagement.seed cannot be overridden"),
    ],
)
def test_seeds_are_checked(raw_lake: Any, overrides: list[str], seeds: list, error: str) -> None:
    from jobs.experiments.experiment import plan

    with pytest.raises(ValueError, match=error):
        plan(raw_lake, "2026-01-03", overrides, seeds=seeds)


def test_seed_rows_by_hand() -> None:
    from jobs.experiments.replicates import (
        beyond_noise,
        format_replicates,
        markdown,
        replicate_rows,
        unchanged,
    )

    def rows(c: float, e: float, a: float | None) -> list[dict[str, Any]]:
        return [
            {"metric": "page.page_recall", "champion": c, "experiment": e, "difference": e - c},
            {"metric": "ab.ctr", "champion": 1.0, "experiment": a, "difference": None},
        ]

    labels = ["42", "7", "13"]
    out = replicate_rows(
        labels, [rows(0.60, 0.62, None), rows(0.62, 0.63, None), rows(0.61, 0.64, 1)]
    )
    pr, ab = out
    assert pr["n"] == 3 and pr["same_sign"] == 3
    assert pr["champion_mean"] == pytest.approx(0.61) and pr["champion_sd"] == pytest.approx(0.01)
    assert pr["experiment_mean"] == pytest.approx(0.63)
    assert pr["diff_mean"] == pytest.approx(0.02) and pr["diff_sd"] == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / 3**0.5  # t(0.975, 2 df)
    assert pr["diff_low"] == pytest.approx(0.02 - half) and pr["diff_high"] == pytest.approx(
        0.02 + half
    )
    assert not beyond_noise(pr)  # 0.02 ± 0.025: three seeds agree in sign, yet within noise
    steady = replicate_rows(
        ["1", "2", "3"], [rows(0.5, 0.5 + d, None) for d in (0.02, 0.021, 0.019)]
    )
    assert beyond_noise(steady[0]) and steady[0]["diff_low"] > 0
    assert [pr[f"diff[{s}]"] for s in labels] == pytest.approx([0.02, 0.01, 0.03])
    # a metric without differences: counted on no seed, no interval
    assert ab["n"] == 0 and ab["diff_mean"] is None and ab["diff_low"] is None
    assert ab["experiment_mean"] == 1.0 and ab["experiment_sd"] is None
    text = format_replicates({"kind": "seeds", "labels": labels, "rows": out})
    assert "page.page_recall" in text and "3/3" in text and "across 3 training seeds" in text
    # ab.ctr has no difference on any seed: left out of the printout, said so
    assert "ab.ctr" not in text and "1 metrics without a difference" in text
    assert unchanged(ab) and not unchanged(pr)
    summary = {"name": "x", "split_ds": "2026-01-03", "overrides": ["a.b=1"], "rows": out}
    md = markdown({**summary, "kind": "seeds", "labels": labels})
    assert "| seed 42 | seed 7 | seed 13 |" in md and "+0.0300" in md
    assert "across training seeds" in md and "any seed are left out" in md
    dates = ["2026-01-03", "2025-12-20", "2025-12-06"]
    md = markdown({**summary, "kind": "splits", "labels": dates})
    assert "| split 2026-01-03 | split 2025-12-20 | split 2025-12-06 |" in md
    assert "across split dates" in md and "in splits.csv" in md
    text = format_replicates({"kind": "splits", "labels": dates, "rows": out})
    assert "across 3 split dates (2026-01-03, 2025-12-20, 2025-12-06)" in text
    # one seed disagreeing in sign: not beyond noise, counted
    mixed = replicate_rows(["1", "2"], [rows(0.5, 0.52, None), rows(0.5, 0.49, None)])[0]
    assert mixed["same_sign"] == 1 and not beyond_noise(mixed)
    with pytest.raises(ValueError, match="2 labels for 1"):
        replicate_rows(["1", "2"], [rows(0.5, 0.5, None)])


def _comparison_result(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What `compare` returns, as far as the printouts read it."""
    return {
        "name": "t",
        "split_ds": "2026-01-03",
        "test_window": ["2026-01-03", "2026-01-05"],
        "users": 10,
        "overrides": ["page.beam_width=1"],
        "changed": {"page.beam_width": [3, 1]},
        "comparison": rows,
    }


def test_comparison_rows_and_text() -> None:
    import pandas as pd

    from jobs.experiments.compare import comparison_rows
    from jobs.experiments.comparison_report import format_comparison, markdown, mlflow_key

    head = {"objective": "click", "stage": "raw", "auc": 0.7, "pr_auc": 0.2, "log_loss": 0.3}
    side = {
        "pages": {"pipeline": {}},
        "lift": [],
        "engagement": [head | {"ece": 0.01}],
        "ab_test": None,
        # the logging policy's own value is the same for both sides: not a comparison row
        "ope": {"learned_policy": {"per_unit": {"dm": {"estimate": 0.04}, "logging": {}}}},
    }
    other = copy.deepcopy(side)
    other["engagement"][0]["auc"] = 0.77
    other["ope"]["learned_policy"]["per_unit"]["dm"]["estimate"] = 0.05
    lifts = pd.DataFrame(
        [
            {
                "metric": "ndcg_2d",
                "users": 10,
                "a": 0.22,
                "b": 0.2,
                "lift": 0.1,
                "ci_low": -0.05,
                "ci_high": 0.3,
                "diff": 0.02,
                "diff_low": -0.01,
                "diff_high": 0.06,
            }
        ]
    )
    ab = {
        "arms": {
            "control": {"visitors": 5, "ctr": 0.02},
            "treatment": {"visitors": 6, "ctr": 0.03},
        },
        "lift": {"ctr": {"lift": 0.5, "ci_low": -0.2, "ci_high": 1.5}},
    }
    rows = comparison_rows(
        side,
        other,
        {"ndcg_2d": 0.2, "coverage": 0.0},
        {"ndcg_2d": 0.22, "coverage": 0.1},
        lifts,
        ab,
    )
    by = {r["metric"]: r for r in rows}
    assert list(by) == [
        "page.ndcg_2d",
        "page.coverage",
        "ab.ctr",
        "engagement.click.raw.auc",
        "engagement.click.raw.ece",
        "engagement.click.raw.log_loss",
        "engagement.click.raw.pr_auc",
        "ope.dm.per_unit",
    ]
    nd = by["page.ndcg_2d"]
    assert nd["difference"] == pytest.approx(0.02) and nd["relative_difference"] == pytest.approx(
        0.1
    )
    assert (nd["lift"], nd["ci_low"], nd["ci_high"], nd["users"]) == (0.1, -0.05, 0.3, 10.0)
    assert by["page.coverage"]["relative_difference"] is None  # champion 0: undefined
    assert by["page.coverage"]["lift"] is None
    assert by["ab.ctr"]["champion"] == 0.02 and by["ab.ctr"]["users"] == 11
    assert by["engagement.click.raw.auc"]["difference"] == pytest.approx(0.07)
    result = _comparison_result(rows)
    text = format_comparison(result)
    assert "page.ndcg_2d" in text and "+10.0% [-5.0%, +30.0%]" in text
    md = markdown(result, rows)
    assert "| page.ndcg_2d | 0.2000 | 0.2200 | +0.0200 | +10.0% | +10.0% [-5.0%, +30.0%] |" in md
    assert mlflow_key("page.recall@10") == "page.recall_at_10"


def test_shared_heads_shown_once() -> None:
    """Objectives with equal labels share one head (purchase-only logs): printouts show the
    purchase rows once and say so; the rows themselves (csv, MLflow) keep every objective."""
    from jobs.experiments.compare import _row
    from jobs.experiments.comparison_report import format_comparison, markdown, metric_objective
    from jobs.experiments.evaluation_report import format_table, repeated_objectives
    from jobs.experiments.replicates import format_replicates, replicate_rows

    def row(metric: str, c: float, e: float) -> dict[str, Any]:
        return _row(metric, c, e)

    def rows(click_auc: float) -> list[dict[str, Any]]:
        out = [row("page.page_recall", 0.6, 0.62)]
        for o in ("add_to_cart", "click", "purchase"):
            out += [
                row(f"engagement.{o}.raw.auc", click_auc if o == "click" else 0.8, 0.81),
                row(f"engagement.{o}.raw.ece", 0.01, float("nan")),
            ]
        return out

    shared, apart = rows(0.8), rows(0.7)
    assert repeated_objectives(shared, metric_objective) == {
        "add_to_cart": "purchase",
        "click": "purchase",
    }
    assert repeated_objectives(apart, metric_objective) == {"add_to_cart": "purchase"}
    result = _comparison_result(shared)
    text = format_comparison(result)
    assert "engagement.purchase.raw.auc" in text and "page.page_recall" in text
    assert "engagement.click." not in text and "engagement.add_to_cart." not in text
    assert "add_to_cart and click repeat purchase's figures" in text
    assert "comparison.csv keeps them" in text
    assert len(result["comparison"]) == 7  # the rows are not touched
    md = markdown(result, shared)
    assert "| engagement.purchase.raw.auc |" in md and "engagement.click." not in md
    text = format_comparison({**result, "comparison": apart})
    assert "engagement.click.raw.auc" in text and "engagement.add_to_cart." not in text
    assert "add_to_cart repeat purchase's figures" in text
    # across seeds: the same, with the seeds' files named
    summary = replicate_rows(["42", "7"], [shared, shared])
    text = format_replicates({"kind": "seeds", "labels": ["42", "7"], "rows": summary})
    assert "engagement.purchase.raw.auc" in text and "engagement.click." not in text
    assert "seeds.csv keeps them" in text
    # homepage evaluate's printout: the engagement table and the by-item-kind table
    heads = [
        {
            "objective": o,
            "stage": st,
            "auc": 0.8,
            "pr_auc": 0.2,
            "log_loss": 0.1,
            "ece": math.nan * 1,
        }
        for o in ("click", "add_to_cart", "purchase")
        for st in ("raw", "calibrated")
    ]
    kinds = [
        {
            "objective": o,
            "items": "never bought",
            "scorer": "model",
            "rows": 9,
            "positives": 2,
            "auc": 0.7,
            "pr_auc": 0.1,
        }  # fmt: skip
        for o in ("click", "add_to_cart", "purchase")
    ]
    res = {
        "split_ds": "2026-01-03",
        "users": 10,
        "relevant_events": ["purchase"],
        "test_window": ["2026-01-03", "2026-01-05"],
        "pages": {"pipeline": {"page_recall": 0.5}},
        "lift": [],
        "engagement": heads,
        "by_item_kind": kinds,
    }
    text = format_table(res)  # (NaN figures count as equal: each is a distinct float object)
    lines = text.splitlines()
    assert sum(ln.startswith("purchase ") for ln in lines) == 2  # raw and calibrated
    head_row = re.compile(r"\s*(click|add_to_cart)\s+(raw|calibrated|never bought)")
    assert not any(head_row.match(ln) for ln in lines)
    assert "engagement.csv keeps them" in text and "evaluate.json keeps them" in text
    heads[0]["auc"] = 0.75  # click's raw head differs: click is its own head again
    lines = format_table(res).splitlines()
    assert sum(ln.startswith("click ") for ln in lines) == 2


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> SimpleNamespace:
    import yaml

    from jobs.core import io
    from jobs.core.config import parse_overrides
    from jobs.core.lake import Lake, shift_ds
    from jobs.experiments import experiment
    from jobs.inputs.generate import generate_lake

    tmp = tmp_path_factory.mktemp("experiment")
    root = str(tmp / "lake")
    # the smallest lake the daily steps train on: 6 days, a 2-day label window
    generate_lake(root, users=600, items=200, days=6, seed=5)
    lake = Lake(root)
    config = tmp / "small.yaml"
    config.write_text(yaml.safe_dump(parse_overrides(SMALL_LAKE_OVERRIDES)))
    split = shift_ds(io.partitions(lake.raw_events)[-1], -1)
    t0 = time.perf_counter()
    res = experiment.run(
        lake, split, ["page.beam_width=1"], name="beam1", config_path=str(config), say=print
    )
    return SimpleNamespace(
        lake=lake, split=split, config=str(config), res=res, seconds=time.perf_counter() - t0
    )


def _runs(lake: Any, **filters: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{lake.root}/_mlflow/mlflow.db")
    where = " and ".join(f"{k} = '{v}'" for k, v in filters.items())
    return mlflow.search_runs(experiment_names=["homepage-experiments"], filter_string=where)


@pytest.mark.e2e
def test_both_sides_are_evaluated_on_the_same_split(experiment_run: SimpleNamespace) -> None:
    s = experiment_run
    res, p = s.res, s.res["plan"]
    assert res["reused"] == {"champion": False, "experiment": False}
    # only page.* changed: the experiment lake started from the champion's events and features
    assert {"events", "features"} <= set(res["seeded"])
    for side in ("champion", "experiment"):
        r = res[side]
        assert r["eval_lake"] == p[f"{side}_dir"]
        assert r["config_hash"] == p[f"{side}_hash"]
        assert r["split_ds"] == s.split and r["test_window"] == res["test_window"]
        pages = os.path.join(r["eval_lake"], "warehouse", "pages", f"ds={s.split}", "pages.parquet")
        assert os.path.exists(pages), pages
        assert os.path.exists(os.path.join(r["eval_lake"], "_experiment_eval.json"))
    assert p["champion_dir"].startswith(f"{s.lake.root}/_eval/{s.split}-")
    assert p["experiment_dir"] == f"{s.lake.root}/_experiments/beam1/experiment"
    assert p["changed"] == {"page.beam_width": [3, 1]}


@pytest.mark.e2e
def test_the_comparison_has_paired_intervals(experiment_run: SimpleNamespace) -> None:
    from jobs.experiments.experiment import format_comparison

    res = experiment_run.res
    rows = {r["metric"]: r for r in res["comparison"]}
    for m in ("page.ndcg_2d", "page.page_recall", "page.carousel_ndcg", "page.mrr"):
        r = rows[m]
        assert r["users"] == res["users"] > 0, r
        assert r["ci_low"] <= r["lift"] <= r["ci_high"], r
        assert r["diff_low"] <= r["difference"] <= r["diff_high"], r
        # recomputed per user against one truth: the same numbers each evaluation reported
        name = m.split(".", 1)[1]
        assert r["champion"] == pytest.approx(res["champion"]["pages"]["pipeline"][name])
        assert r["experiment"] == pytest.approx(res["experiment"]["pages"]["pipeline"][name])
    # the engagement heads do not depend on page.*: same data, same models, same metrics
    eng = [r for m, r in rows.items() if m.startswith("engagement.")]
    assert any(r["metric"].startswith("engagement.click.") for r in eng)
    assert all(r["difference"] == pytest.approx(0.0, abs=1e-12) for r in eng), eng
    # a generated lake: a simulated A/B test of champion (control) against experiment
    assert res["ab_test"] is not None and "ab.ctr" in rows
    assert math.isfinite(rows["ab.ctr"]["lift"])
    text = format_comparison(res)
    assert "page.ndcg_2d" in text and "page.beam_width=1" in text


@pytest.mark.e2e
def test_report_files(experiment_run: SimpleNamespace) -> None:
    import pandas as pd

    from jobs.experiments.compare import COLUMNS

    s, res = experiment_run, experiment_run.res
    out = f"{s.lake.root}/warehouse/reports/ds={s.split}/experiments/beam1"
    assert res["report_dir"] == out
    table = pd.read_csv(os.path.join(out, "comparison.csv"))
    assert list(table.columns) == list(COLUMNS)
    assert {"page.ndcg_2d", "page.page_recall"} <= set(table["metric"])
    with open(os.path.join(out, "comparison.md")) as f:
        assert "| page.ndcg_2d |" in f.read()
    with open(os.path.join(out, "comparison.json")) as f:
        written = json.load(f)
    assert written["mlflow"] == res["mlflow"] and len(written["comparison"]) == len(table)
    with open(os.path.join(out, "lift.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC


@pytest.mark.e2e
def test_one_parent_run_with_two_child_runs(experiment_run: SimpleNamespace) -> None:
    import mlflow

    s, ids = experiment_run, experiment_run.res["mlflow"]
    assert ids["mlflow_experiment"] == "homepage-experiments"
    parent = _runs(s.lake, **{"attributes.run_id": ids["parent_run_id"]})
    assert len(parent) == 1 and parent["tags.mlflow.runName"].iloc[0] == "beam1"
    assert parent["params.overrides"].iloc[0] == "page.beam_width=1"
    assert parent["params.override.page.beam_width"].iloc[0] == "1"
    children = _runs(s.lake, **{"tags.mlflow.parentRunId": ids["parent_run_id"]})
    assert sorted(children["tags.mlflow.runName"]) == ["champion", "experiment"]
    by = children.set_index("tags.mlflow.runName")
    assert by.loc["champion", "run_id"] == ids["champion_run_id"]
    assert by.loc["experiment", "run_id"] == ids["experiment_run_id"]
    assert by.loc["experiment", "params.override.page.beam_width"] == "1"
    assert by.loc["champion", "params.overrides"] == "(none)"
    for side in ("champion", "experiment"):
        assert math.isfinite(by.loc[side, "metrics.page.pipeline.ndcg_2d"])
        assert "metrics.page.pipeline.recall_at_10" in by.columns
    assert "metrics.lift.page.ndcg_2d" in parent.columns
    client = mlflow.MlflowClient()
    arts = {a.path for a in client.list_artifacts(ids["parent_run_id"])}
    assert {"comparison.csv", "comparison.md", "comparison_table.json", "lift.png"} <= arts
    plots = {a.path for a in client.list_artifacts(ids["experiment_run_id"], "plots")}
    assert "plots/lift.png" in plots
    mlflow.set_experiment("homepage-experiments")
    table = mlflow.load_table("comparison_table.json", run_ids=[ids["parent_run_id"]])
    assert "page.ndcg_2d" in set(table["metric"])


def _dag_run(s: SimpleNamespace, **conf: Any) -> dict[str, Any]:
    """The beam1 experiment of `experiment_run` through `dag.test()` (plus `conf`): its task
    instances by task id, after checking the run succeeded."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()  # idempotent; dag.test needs the metadata tables
    dag = DagBag(dag_folder=str(REPO / "dags" / "homepage_experiment.py")).get_dag(
        "homepage_experiment"
    )
    base = {"lake": s.lake.root, "split_ds": s.split, "config": s.config, "name": "beam1"}
    run = dag.test(run_conf={**base, "page.beam_width": 1, **conf})
    assert str(run.state) == "success"
    return {ti.task_id: ti for ti in run.get_task_instances()}


@pytest.mark.e2e
def test_the_dag_reuses_both_evaluations(experiment_run: SimpleNamespace) -> None:
    """The same experiment through Airflow (`dag.test()`): plan, both evaluations (reused: the
    inputs, configs and code did not change), compare; a second parent run with two children."""
    s = experiment_run
    tis = _dag_run(s)
    assert set(tis) == {"plan", "evaluate_champion", "evaluate_experiment", "compare"}
    assert all(str(ti.state) == "success" for ti in tis.values())
    for side in ("champion", "experiment"):
        out = tis[f"evaluate_{side}"].xcom_pull(task_ids=f"evaluate_{side}")
        assert out["reused"] is True and out["eval_lake"] == s.res["plan"][f"{side}_dir"]
    ids = tis["compare"].xcom_pull(task_ids="compare")
    assert ids["parent_run_id"] != s.res["mlflow"]["parent_run_id"]
    children = _runs(s.lake, **{"tags.mlflow.parentRunId": ids["parent_run_id"]})
    assert sorted(children["tags.mlflow.runName"]) == ["champion", "experiment"]


@pytest.mark.e2e
def test_the_cli_prints_the_comparison(experiment_run: SimpleNamespace, capsys: Any) -> None:
    from jobs.cli.main import main

    s = experiment_run
    argv = ["experiment", "--lake", s.lake.root, "--split-ds", s.split, "--config", s.config]
    rc = main([*argv, "--set", "page.beam_width=1", "--name", "beam1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "reusing the evaluation" in out and "page.ndcg_2d" in out and "MLflow" in out
    assert main([*argv, "--set", "page.beam_width=3"]) == 1
    assert "change nothing" in capsys.readouterr().err


# ---------------------------------------------------------------- across training seeds


@pytest.fixture(scope="module")
def seeded_run(experiment_run: SimpleNamespace) -> SimpleNamespace:
    """The same experiment with one more training seed through the CLI: the experiment and its
    champion are reused, the seed-7 champion lake starts from the champion lake's tables, and
    both seed-7 sides are evaluated (~1 minute)."""
    from jobs.cli.main import main

    s = experiment_run
    argv = ["experiment", "--lake", s.lake.root, "--split-ds", s.split, "--config", s.config]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([*argv, "--set", "page.beam_width=1", "--name", "beam1", "--seeds", "7"])
    out = buf.getvalue()
    return SimpleNamespace(base=s, rc=rc, out=out)


@pytest.mark.e2e
def test_seeds_replicate_the_experiment(seeded_run: SimpleNamespace) -> None:
    import pandas as pd

    from jobs.experiments.experiment import plan

    s, out = seeded_run.base, seeded_run.out
    assert seeded_run.rc == 0, out
    p = plan(s.lake, s.split, ["page.beam_width=1"], name="beam1", config_path=s.config, seeds=[7])
    r7 = p["replicates"][0]
    # the base evaluations are reused; the seed-7 champion starts from the champion's tables
    assert out.count("reusing the evaluation") >= 2
    assert "the champion starts from the tables events" in out
    assert "training seed 7" in out
    with open(os.path.join(r7["champion_dir"], "_experiment_eval.json")) as f:
        rec = json.load(f)
    assert rec["config_hash"] == r7["champion_hash"] and "features" in rec["seeded"]
    with open(os.path.join(r7["experiment_dir"], "_experiment_eval.json")) as f:
        assert json.load(f)["config_hash"] == r7["experiment_hash"]
    # the replicate's own comparison and the summary across seeds
    assert os.path.exists(os.path.join(p["report_dir"], "seed-7", "comparison.csv"))
    table = pd.read_csv(os.path.join(p["report_dir"], "seeds.csv"))
    pr = table.set_index("metric").loc["page.page_recall"]
    assert pr["n"] == 2 and math.isfinite(pr["diff_sd"])
    seeds = [c for c in table.columns if c.startswith("diff[")]
    assert seeds == ["diff[42]", "diff[7]"]  # the config's own seed first
    assert pr["diff_mean"] == pytest.approx((pr["diff[42]"] + pr["diff[7]"]) / 2)
    with open(os.path.join(p["report_dir"], "comparison.json")) as f:
        base = {r["metric"]: r for r in json.load(f)["comparison"]}
    with open(os.path.join(p["report_dir"], "seed-7", "comparison.json")) as f:
        seed7 = {r["metric"]: r for r in json.load(f)["comparison"]}
    assert pr["diff[42]"] == pytest.approx(base["page.page_recall"]["difference"])
    assert pr["diff[7]"] == pytest.approx(seed7["page.page_recall"]["difference"])
    assert "across 2 training seeds" in out
    tail = out[out.index("across 2 training seeds") :]
    printed = [m for m in table["metric"] if f"\n{m} " in tail]
    changed = table[table[seeds].fillna(0).ne(0).any(axis=1)]["metric"].tolist()
    assert printed == changed and changed  # the metrics that differ on some seed, in order
    runs = _runs(s.lake, **{"tags.role": "seeds"})
    assert len(runs) >= 1 and runs["tags.mlflow.runName"].iloc[0] == "beam1-seeds"
    assert "metrics.seeds.diff_mean.page.page_recall" in runs.columns
    rep = _runs(s.lake, **{"tags.training_seed": "7"})
    assert set(rep["tags.mlflow.runName"]) == {"beam1-seed7"}


@pytest.mark.e2e
def test_the_dag_takes_seeds(seeded_run: SimpleNamespace) -> None:
    """The DAG with `seeds`: every evaluation (both seeds, both sides) is reused; compare writes
    the summary and returns its MLflow run."""
    s = seeded_run.base
    tis = _dag_run(s, seeds=[7])
    for side in ("champion", "experiment"):
        got = tis[f"evaluate_{side}"].xcom_pull(task_ids=f"evaluate_{side}")
        assert got["reused"] is True and [r["reused"] for r in got["replicates"]] == [True]
    ids = tis["compare"].xcom_pull(task_ids="compare")
    assert ids["seeds_report"].endswith("experiments/beam1/seeds.md")
    assert len(_runs(s.lake, **{"attributes.run_id": ids["seeds_run_id"]})) == 1


# ---------------------------------------------------------------- across split dates


@pytest.fixture(scope="module")
def split_run(experiment_run: SimpleNamespace) -> dict[str, Any]:
    """The same experiment one day earlier as well (~1 minute): the other split's champion and
    experiment are evaluated in their own lakes."""
    from jobs.core.lake import shift_ds
    from jobs.experiments import experiment

    s = experiment_run
    return experiment.run(
        s.lake,
        s.split,
        ["page.beam_width=1"],
        name="beam1",
        config_path=s.config,
        splits=[shift_ds(s.split, -1)],
        say=print,
    )


@pytest.mark.e2e
def test_splits_replicate_the_experiment_on_another_date(
    experiment_run: SimpleNamespace, split_run: dict[str, Any]
) -> None:
    """The first split's evaluations are reused, and the summary across the two splits is
    written and logged."""
    import pandas as pd

    from jobs.core.lake import shift_ds

    s, res = experiment_run, split_run
    other = shift_ds(s.split, -1)
    assert res["reused"] == {"champion": True, "experiment": True}
    (rep,) = res["replicates"]
    assert rep["split_ds"] == other and rep["test_window"][0] == other
    assert rep["report_dir"].endswith(f"ds={other}/experiments/beam1")
    summary = res["splits"]
    assert summary["kind"] == "splits" and summary["labels"] == [s.split, other]
    table = pd.read_csv(summary["files"]["csv"]).set_index("metric")
    by_split = {r["metric"]: r for r in rep["comparison"]}
    assert table.loc["page.ndcg_2d", f"diff[{other}]"] == pytest.approx(
        by_split["page.ndcg_2d"]["difference"]
    )
    assert summary["files"]["md"].endswith(f"ds={s.split}/experiments/beam1/splits.md")
    runs = _runs(s.lake, **{"attributes.run_id": summary["run_id"]})
    assert runs["tags.mlflow.runName"].iloc[0] == "beam1-splits"
    assert runs["tags.role"].iloc[0] == "splits"
    rep_run = _runs(s.lake, **{"attributes.run_id": rep["mlflow"]["parent_run_id"]})
    assert rep_run["tags.mlflow.runName"].iloc[0] == f"beam1@{other}"


@pytest.mark.e2e
def test_seeds_and_splits_run_the_grid(seeded_run: SimpleNamespace, split_run: Any) -> None:
    """Seed 7 on a second split as well (~1 minute): the three cells the tests above evaluated
    are reused, the new cell starts from its own split's lakes, and the summary averages each
    split over its seeds before it is taken across the splits."""
    import pandas as pd

    from jobs.core.lake import shift_ds
    from jobs.experiments import experiment

    s = seeded_run.base
    other = shift_ds(s.split, -1)
    said: list[str] = []
    res = experiment.run(
        s.lake,
        s.split,
        ["page.beam_width=1"],
        name="beam1",
        config_path=s.config,
        seeds=[7],
        splits=[other],
        say=said.append,
    )
    text = "\n".join(said)
    assert text.count("reusing the evaluation") == 6, text  # 3 cells × 2 sides
    assert f"split {other}, training seed 7" in text
    assert "the champion starts from the tables" in text
    summary = res["grid"]
    assert summary["kind"] == "grid" and summary["labels"] == [s.split, other]
    own = summary["seeds"][0]
    assert summary["seeds"] == [own, "7"]
    table = pd.read_csv(summary["files"]["csv"]).set_index("metric")
    cells = {
        (r["split_ds"], str(rp.get("seed", own))): {c["metric"]: c for c in r["comparison"]}
        for rp, r in zip(res["plan"]["replicates"], res["replicates"], strict=True)
    }
    d = {key: cells[key]["page.ndcg_2d"]["difference"] for key in cells}
    assert table.loc["page.ndcg_2d", f"diff[{other} seed 7]"] == pytest.approx(d[(other, "7")])
    assert table.loc["page.ndcg_2d", f"diff[{other}]"] == pytest.approx(
        (d[(other, own)] + d[(other, "7")]) / 2
    )
    assert table.loc["page.ndcg_2d", "n"] == 2  # the splits, not the cells
    assert summary["files"]["md"].endswith(f"ds={s.split}/experiments/beam1/grid.md")
    runs = _runs(s.lake, **{"attributes.run_id": summary["run_id"]})
    assert runs["tags.mlflow.runName"].iloc[0] == "beam1-grid"
    cell = res["replicates"][-1]["mlflow"]["parent_run_id"]
    assert _runs(s.lake, **{"attributes.run_id": cell})["tags.mlflow.runName"].iloc[0] == (
        f"beam1-seed7@{other}"
    )
