"""
### homepage_experiment

Try config overrides against the champion config on one time split, without touching
production: both configs are trained on the events before `split_ds`, build their pages as of
it, and are scored on what users did in `[split_ds, split_ds + test_days)`.

Manual only (no schedule). Trigger it from the UI form or with
`airflow dags trigger homepage_experiment -c '{"split_ds": "2026-01-10", "page.beam_width": 1}'`.

* The **champion** is the config file alone (`config`, empty = `conf/default.yaml`); its
  evaluation lake `<lake>/_eval/<split>-<config hash>` is shared by every experiment on that
  split (and by `homepage evaluate`) and is reused while nothing it depends on changed.
* The **experiment** is the same config plus the overrides: every param below whose name is a
  config key (empty = keep the config's value), any other dotted config key in the run conf,
  and `extra_overrides` (`key=value` strings, any config key). Its evaluation lake is
  `<lake>/_experiments/<name>/experiment`.

Tasks: plan (checks the overrides and builds both configs: an unknown key, a wrong type or an
override that changes nothing fails here, in seconds) → evaluate_champion → evaluate_experiment
(in turn: a new experiment lake starts from the champion lake's ingested events and features
when the overrides leave `ingest.*` and `features.*` alone, and two Spark evaluations at once
would only compete for the cores) → compare (per-user paired bootstrap lifts of the page
metrics, a simulated A/B test on generated lakes, engagement and off-policy metrics). The result is in
`warehouse/reports/ds=<split>/experiments/<name>/comparison.{md,csv,json}` and in MLflow
experiment `<mlflow.experiment>-experiments`: a parent run named after the experiment with the
comparison table, and two child runs, `champion` and `experiment`.

With `seeds`, each task also does its work for every replicate: both sides trained again with
that training seed (`mf.seed` and `engagement.seed`), compared the same way (report
`experiments/<name>/seed-<seed>/`, parent run `<name>-seed<seed>`), and `compare` summarises
the differences across all seeds (`experiments/<name>/seeds.{md,csv,json}`, MLflow run
`<name>-seeds`): whether the change is larger than what a retrain alone moves. With
`splits`, likewise for the same experiment on other split dates
(`experiments/<name>/splits.{md,csv,json}` of the first split, MLflow run `<name>-splits`).
With both, every split with every seed (parent runs `<name>-seed<seed>@<split>`); the summary
averages each split over its seeds and is taken across splits (`grid.{md,csv,json}`, MLflow run
`<name>-grid`). `compare` returns `<seeds|splits|grid>_run_id` and `..._report`.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Param, dag, task

OVERRIDES = "Overrides (empty = keep the config's value)"


def _number(lo: float | None = None, hi: float | None = None) -> dict:
    """JSON schema of an optional number in [lo, hi] (null = keep the config's value)."""
    bounds = {"minimum": lo} if lo is not None else {}
    if hi is not None:
        bounds["maximum"] = hi
    return {"type": ["null", "number"], **bounds}


PARAMS = {
    "lake": Param(
        os.environ.get("HOMEPAGE_LAKE", "var/lake"),
        type="string",
        minLength=1,
        title="Lake",
        description="lake path (local disk: the evaluation lakes live inside it)",
    ),
    "split_ds": Param(
        type="string",
        format="date",
        title="Split date",
        description="first day of the test window (YYYY-MM-DD); models see only events before it",
    ),
    "name": Param(
        None,
        type=["null", "string"],
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$",
        title="Experiment name",
        description="names the MLflow parent run, the experiment lake and the report "
        "(empty = exp-<config hash>)",
    ),
    "test_days": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        title="Test days",
        description="length of the test window (empty = eval.test_days)",
    ),
    "config": Param("", type="string", description="config YAML path (empty = conf/default.yaml)"),
    "rerun": Param(
        False,
        type="boolean",
        description="evaluate both sides again even when an up-to-date evaluation exists",
    ),
    "seeds": Param(
        [],
        type="array",
        items={"type": "integer", "minimum": 0},
        uniqueItems=True,
        title="More training seeds",
        description="also train both sides again with each seed (mf.seed and engagement.seed) "
        "and summarise the differences across seeds (empty = the config's seeds only)",
    ),
    "splits": Param(
        [],
        type="array",
        items={"type": "string", "format": "date"},
        uniqueItems=True,
        title="More split dates",
        description="also run the same experiment on each split date (its own test window) and "
        "summarise the differences across splits (empty = none; with seeds: every split with "
        "every seed)",
    ),
    "scoring.w": Param(
        None,
        section=OVERRIDES,
        description="carousel score φ = w·α + (1 − w)·γ; needs scoring.choose_w = false",
        **_number(0, 1),
    ),
    "scoring.choose_w": Param(
        None,
        type=["null", "boolean"],
        section=OVERRIDES,
        description="grid-search w on held-out users (false: keep scoring.w)",
    ),
    "mf.factors": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        section=OVERRIDES,
        description="matrix factorisation: latent factors",
    ),
    "mf.regularization": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        section=OVERRIDES,
        description="matrix factorisation: L2 regularisation (> 0)",
    ),
    "engagement.weight_click": Param(
        None,
        section=OVERRIDES,
        description="objective weight of P(click) in the item score",
        **_number(0),
    ),
    "engagement.weight_add_to_cart": Param(
        None,
        section=OVERRIDES,
        description="objective weight of P(add to cart) in the item score",
        **_number(0),
    ),
    "engagement.weight_purchase": Param(
        None,
        section=OVERRIDES,
        description="objective weight of P(purchase) in the item score",
        **_number(0),
    ),
    "page.beam_width": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        section=OVERRIDES,
        description="slot assignment beam width (1 = greedy)",
    ),
    "page.explore_epsilon": Param(
        None,
        section=OVERRIDES,
        description=(
            "ε: chance that an exploration position (from page.explore_from, not in "
            '"Buy it again") shows a new item'
        ),
        **_number(0, 1),
    ),
    "page.item_lambda": Param(
        None,
        section=OVERRIDES,
        description="MMR λ inside a carousel (1 = relevance only)",
        **_number(0, 1),
    ),
    "page.carousel_lambda": Param(
        None,
        section=OVERRIDES,
        description="MMR λ between carousels (1 = relevance only)",
        **_number(0, 1),
    ),
    "extra_overrides": Param(
        [],
        type="array",
        items={"type": "string", "pattern": r"^\s*[A-Za-z_]\w*(\.[A-Za-z_]\w*)+\s*=.*$"},
        section=OVERRIDES,
        description="any other config key as key=value, e.g. mf.iterations=20",
    ),
}


@dag(
    dag_id="homepage_experiment",
    schedule=None,
    start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # each evaluation trains and ranks a whole lake: one experiment at a time on one machine
    # (runs started from the CLI meanwhile wait on the evaluation lakes' file locks)
    max_active_runs=1,
    doc_md=__doc__,
    tags=["homepage", "experiment"],
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=1), "owner": "data-science"},
    params=PARAMS,
)
def homepage_experiment() -> None:
    @task(retries=0)  # a bad override is not transient
    def plan(**context) -> dict:
        from jobs.experiments.experiment import overrides_from_params, plan

        p = context["params"]
        # the plan is parameters and paths (a few hundred bytes); data stays in the lakes
        return plan(
            p["lake"],
            p["split_ds"],
            overrides_from_params(p, known=PARAMS),
            name=p["name"] or None,
            config_path=p["config"] or None,
            test_days=p["test_days"],
            seeds=p["seeds"] or (),
            splits=p["splits"] or (),
        )

    def evaluation(side: str):  # noqa: ANN202 - an Airflow task factory
        @task(task_id=f"evaluate_{side}")
        def evaluate(the_plan: dict, **context) -> dict:
            from jobs.experiments.experiment import evaluate_all

            return evaluate_all(the_plan, side, rerun=bool(context["params"]["rerun"]))

        return evaluate

    @task
    def compare(the_plan: dict, champion: dict, experiment: dict) -> dict:
        from jobs.experiments.experiment import compare_all

        res = compare_all(the_plan, champion, experiment)
        out = {"report_dir": res["report_dir"], **res["mlflow"]}
        for kind in ("seeds", "splits", "grid"):
            if kind in res:
                out[f"{kind}_run_id"] = res[kind]["run_id"]
                out[f"{kind}_report"] = res[kind]["files"]["md"]
        return out

    the_plan = plan()
    champion = evaluation("champion")(the_plan)
    experiment = evaluation("experiment")(the_plan)
    champion >> experiment  # the experiment lake may start from the champion lake's tables
    compare(the_plan, champion, experiment)


homepage_experiment()
