"""An experiment's differences across replicates: other training seeds (`homepage experiment
--seeds`, DAG param `seeds`), other split dates (`--splits`, DAG param `splits`) or both.

The paired bootstrap of one comparison covers the sampling of users, not the randomness of
training nor the choice of the split. On the grocery samples a retrain with another seed alone
moves page recall by up to 0.004 and explore recall by up to 0.009, as much as many changes a
data scientist tries. So an experiment can be replicated (`jobs.experiments.plan.plan`'s replicates):
with `seeds`, both sides are trained again with `mf.seed` and `engagement.seed` set to each
seed; with `splits`, the same experiment runs on each other split date. Every replicate is
compared as the experiment itself is, and this module summarises each metric's difference
(experiment − champion) over the experiment and its replicates:

- the champion's and the experiment's mean and standard deviation over the replicates (the sd
  is what a retrain, or another split, alone moves the metric by);
- the mean difference with a 95% Student-t interval over the replicates (n − 1 degrees of
  freedom; with few replicates the interval is wide, as it should be), and on how many the
  difference has the sign of the mean;
- each replicate's difference.

With both (`grid`), every split is run with every seed. Each split's figures are first
averaged over its seeds (which shrinks the training noise), and the summary is then
taken across splits, the independent units: the same columns, each split's seed mean
(`diff[<split>]`), and every cell's own difference (`diff[<split> seed <seed>]`, in the csv).

Written to `<report>/<kind>.{csv,md,json}` (`seeds.*`, `splits.*` or `grid.*`) next to the experiment's
comparison and logged as an MLflow run `<name>-<kind>` in the experiment's MLflow experiment,
beside the parent runs of the experiment and its replicates (a seed replicate's comparison is in
`<report>/seed-<seed>/`, a split replicate's in its own split's report folder).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobs.experiments.comparison_report import finite, fmt_value, mlflow_key, shown_rows
from jobs.experiments.plan import side_config

log = logging.getLogger(__name__)

COLUMNS = (
    "metric",
    "n",
    "champion_mean",
    "champion_sd",
    "experiment_mean",
    "experiment_sd",
    "diff_mean",
    "diff_sd",
    "diff_low",
    "diff_high",
    "same_sign",
)


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def replicate_rows(
    labels: Sequence[str], comparisons: Sequence[Sequence[Mapping[str, Any]]]
) -> list:
    """One row per metric of the first comparison: the sides' mean and sd over the replicates,
    the mean difference with its 95% t-interval, the number of replicates whose difference has
    the mean's sign (`same_sign`), and each replicate's difference (`diff[<label>]`). A metric
    missing on a replicate is left out of its figures (`n` counts the replicates it has)."""
    from scipy import stats

    if len(labels) != len(comparisons):
        raise ValueError(f"{len(labels)} labels for {len(comparisons)} comparisons")
    by_rep = [{r["metric"]: r for r in rows} for rows in comparisons]
    out = []
    for metric in (r["metric"] for r in comparisons[0]):
        got = [s.get(metric) or {} for s in by_rep]
        champ = [float(r["champion"]) for r in got if finite(r.get("champion"))]
        exp = [float(r["experiment"]) for r in got if finite(r.get("experiment"))]
        diffs = [r.get("difference") for r in got]
        finite_diffs = [float(d) for d in diffs if finite(d)]
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row["metric"] = metric
        row["n"] = len(finite_diffs)
        row["champion_mean"], row["champion_sd"] = _mean_sd(champ)
        row["experiment_mean"], row["experiment_sd"] = _mean_sd(exp)
        mean, sd = _mean_sd(finite_diffs)
        row["diff_mean"], row["diff_sd"] = mean, sd
        if sd is not None:
            half = (
                float(stats.t.ppf(0.975, len(finite_diffs) - 1)) * sd / math.sqrt(len(finite_diffs))
            )
            row["diff_low"], row["diff_high"] = mean - half, mean + half
        if mean is not None:
            sign = (mean > 0) - (mean < 0)
            row["same_sign"] = sum(1 for d in finite_diffs if sign and (d > 0) - (d < 0) == sign)
        for label, d in zip(labels, diffs, strict=True):
            row[f"diff[{label}]"] = float(d) if finite(d) else None
        out.append(row)
    return out


def beyond_noise(row: Mapping[str, Any]) -> bool:
    """Whether the interval over the replicates leaves out 0."""
    lo, hi = row.get("diff_low"), row.get("diff_high")
    return finite(lo) and finite(hi) and (lo > 0 or hi < 0)


def _interval(r: Mapping[str, Any]) -> str:
    if not finite(r.get("diff_low")):
        return fmt_value(r.get("diff_mean"), sign=True)
    mark = " *" if beyond_noise(r) else ""
    return (
        f"{fmt_value(r['diff_mean'], sign=True)} [{fmt_value(r['diff_low'], sign=True)}, "
        f"{fmt_value(r['diff_high'], sign=True)}]{mark}"
    )


def _sd(mean: Any, sd: Any) -> str:
    return f"{fmt_value(mean)} ± {fmt_value(sd)}" if finite(sd) else fmt_value(mean)


AXES = {
    "seeds": {"what": "training seeds", "one": "seed", "spread": "what a retrain alone moves it"},
    "splits": {"what": "split dates", "one": "split", "spread": "what another split moves it"},
    "grid": {
        "what": "split dates",
        "one": "split",
        "spread": "what another split moves it, after averaging the seeds",
    },
}


def _how(kind: str) -> str:
    a = AXES[kind]
    first = "each split's figures are the mean over its training seeds; " if kind == "grid" else ""
    return (
        f"{first}mean over {a['what']} ± sd ({a['spread']}); difference = experiment − champion, "
        f"mean with a 95% t-interval over {a['what']} (* = the interval leaves out 0); same sign "
        f"= {a['what']} whose difference has the mean's sign"
    )


def _across(summary: Mapping[str, Any]) -> str:
    kind, labels = summary["kind"], summary["labels"]
    text = f"across {len(labels)} {AXES[kind]['what']} ({', '.join(labels)})"
    if kind == "grid":
        text += f", each with training seeds {', '.join(summary['seeds'])}"
    return text


def seed_means(comparisons: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One comparison from a split's comparisons under several training seeds: each metric's
    champion, experiment and difference averaged over the seeds that have it."""
    by_seed = [{r["metric"]: r for r in rows} for rows in comparisons]
    out = []
    for metric in (r["metric"] for r in comparisons[0]):
        row: dict[str, Any] = {"metric": metric}
        for col in ("champion", "experiment", "difference"):
            got = [b[metric].get(col) for b in by_seed if metric in b]
            vals = [float(v) for v in got if finite(v)]
            row[col] = statistics.fmean(vals) if vals else None
        out.append(row)
    return out


def grid_rows(
    splits: Sequence[str],
    seeds: Sequence[str],
    cells: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """`replicate_rows` across `splits` of each split's `seed_means`, with every cell's own
    difference (`diff[<split> seed <seed>]`); `cells`: (split, seed) -> comparison rows."""
    rows = replicate_rows(splits, [seed_means([cells[(sp, sd)] for sd in seeds]) for sp in splits])
    diffs = {
        key: {r["metric"]: r.get("difference") for r in comparison}
        for key, comparison in cells.items()
    }
    for r in rows:
        for sp in splits:
            for sd in seeds:
                d = diffs[(sp, sd)].get(r["metric"])
                r[f"diff[{sp} seed {sd}]"] = float(d) if finite(d) else None
    return rows


def unchanged(row: Mapping[str, Any]) -> bool:
    """No difference on any replicate (e.g. user counts, the baselines' own figures)."""
    diffs = [v for k, v in row.items() if k.startswith("diff[")]
    return all(not finite(d) or d == 0 for d in diffs)


def _left_out(kind: str, rows: Sequence[Mapping[str, Any]]) -> str:
    n = sum(1 for r in rows if unchanged(r))
    return (
        f"{n} metrics without a difference on any {AXES[kind]['one']} are left out (they are "
        f"in {kind}.csv)"
    )


def format_replicates(summary: Mapping[str, Any]) -> str:
    """The summary as aligned text (what `homepage experiment --seeds/--splits` prints);
    metrics without a difference on any replicate are left out."""
    kind = summary["kind"]
    rows, note = shown_rows([r for r in summary["rows"] if not unchanged(r)], f"{kind}.csv")
    width = max([len("metric"), *(len(r["metric"]) for r in rows)]) + 2
    lines = [
        f"{_across(summary)}: {_how(kind)}",
        "",
        f"{'metric':<{width}}{'champion':>18}{'experiment':>18}   {'difference [95% interval]':<40}"
        "same sign",
    ]
    for r in rows:
        lines.append(
            f"{r['metric']:<{width}}{_sd(r['champion_mean'], r['champion_sd']):>18}"
            f"{_sd(r['experiment_mean'], r['experiment_sd']):>18}   {_interval(r):<40}"
            f"{_same_sign(r)}"
        )
    notes = [_left_out(kind, summary["rows"]), *([f"engagement.*: {note}"] if note else [])]
    return "\n".join([*lines, "", *notes])


def _same_sign(r: Mapping[str, Any]) -> str:
    return f"{r['same_sign'] if r['same_sign'] is not None else '—'}/{r['n']}"


def markdown(summary: Mapping[str, Any]) -> str:
    kind, labels = summary["kind"], list(summary["labels"])
    one = AXES[kind]["one"]
    if kind == "seeds":
        what = (
            f"Split {summary['split_ds']}; training seeds {', '.join(labels)} (`mf.seed` and "
            "`engagement.seed` on both sides)"
        )
    else:
        what = f"Splits {', '.join(labels)}, each with its own test window"
    if kind == "grid":
        what += (
            f", each with training seeds {', '.join(summary['seeds'])} (`mf.seed` and "
            f"`engagement.seed` on both sides); each {one} column is the mean over its seeds, "
            "every cell's own difference is in grid.csv"
        )
    lines = [
        f"# Experiment `{summary['name']}` vs champion across {AXES[kind]['what']}",
        "",
        f"{what}; overrides: " + ", ".join(f"`{o}`" for o in summary["overrides"]),
        "",
        _how(kind) + "; " + _left_out(kind, summary["rows"]) + ".",
        "",
        "| metric | champion | experiment | difference [95% interval] | same sign | "
        + " | ".join(f"{one} {s}" for s in labels)
        + " |",
        "|---|---:|---:|---|---:|" + "---:|" * len(labels),
    ]
    rows, note = shown_rows([r for r in summary["rows"] if not unchanged(r)], f"{kind}.csv")
    for r in rows:
        each = " | ".join(fmt_value(r.get(f"diff[{s}]"), sign=True) for s in labels)
        lines.append(
            f"| {r['metric']} | {_sd(r['champion_mean'], r['champion_sd'])} "
            f"| {_sd(r['experiment_mean'], r['experiment_sd'])} | {_interval(r)} "
            f"| {_same_sign(r)} | {each} |"
        )
    if note:
        lines += ["", f"`engagement.*`: {note}."]
    return "\n".join(lines) + "\n"


def _config_seed_label(p: Mapping[str, Any]) -> str:
    cfg = side_config(p, "champion")
    a, b = cfg.mf.seed, cfg.engagement.seed
    return str(a) if a == b else f"{a}/{b}"


def summarise(
    p: Mapping[str, Any],
    result: Mapping[str, Any],
    replicates: Sequence[Mapping[str, Any]],
    *,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Summarise the experiment's comparison (`result`) and its replicates' (`compare` results,
    in the plan's replicate order); write the report files and log the MLflow run."""
    import pandas as pd

    from jobs.core import io

    own = _config_seed_label(p)
    cells = {(p["split_ds"], own): result["comparison"]}
    for rp, r in zip(p["replicates"], replicates, strict=True):
        cells[(rp["split_ds"], str(rp["seed"]) if "seed" in rp else own)] = r["comparison"]
    seeds = [own, *(str(s) for s in p.get("seeds") or [])]
    splits = [p["split_ds"], *(p.get("splits") or [])]
    if len(seeds) > 1 and len(splits) > 1:
        kind, labels = "grid", splits
        rows = grid_rows(splits, seeds, cells)
    else:
        kind, labels = ("seeds", seeds) if len(seeds) > 1 else ("splits", splits)
        rows = replicate_rows(labels, list(cells.values()))
    summary: dict[str, Any] = {
        "name": p["name"],
        "kind": kind,
        "split_ds": p["split_ds"],
        "overrides": list(p["overrides"]),
        "labels": labels,
        "seeds": seeds,
        "rows": rows,
        "parent_run_ids": [result["mlflow"]["parent_run_id"]]
        + [r["mlflow"]["parent_run_id"] for r in replicates],
    }
    out = p["report_dir"]
    os.makedirs(out, exist_ok=True)
    files = {ext: os.path.join(out, f"{kind}.{ext}") for ext in ("csv", "md", "json")}
    pd.DataFrame(rows).to_csv(files["csv"], index=False)
    with open(files["md"], "w") as f:
        f.write(markdown(summary))
    summary["files"] = files
    summary["run_id"] = _log_mlflow(p, summary)
    io.write_json(files["json"], summary)
    each = f" (each with training seeds {', '.join(seeds)})" if kind == "grid" else ""
    say(
        f"[experiment {p['name']}] across {AXES[kind]['what']} {', '.join(labels)}{each}: "
        f"{files['md']}"
    )
    return summary


def _log_mlflow(p: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    import mlflow

    from jobs.core.lake import Lake
    from jobs.core.tracking import experiment

    cfg = side_config(p, "champion")
    exp_id = experiment(Lake(p["lake"]), cfg, name=f"{cfg.mlflow.experiment}-experiments")
    kind = summary["kind"]
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{p['name']}-{kind}") as run:
        mlflow.set_tags(
            {
                "split_ds": p["split_ds"],
                "experiment_name": p["name"],
                "step": "experiment",
                "role": kind,
            }
        )
        mlflow.log_params(
            {
                "split_ds": p["split_ds"],
                "experiment_name": p["name"],
                "splits" if kind == "grid" else kind: ", ".join(summary["labels"]),
                **({"seeds": ", ".join(summary["seeds"])} if kind == "grid" else {}),
                "overrides": "; ".join(p["overrides"])[:6000],
                "parent_run_ids": ", ".join(summary["parent_run_ids"]),
            }
        )
        metrics: dict[str, float] = {}
        for r in summary["rows"]:
            for col in ("diff_mean", "diff_low", "diff_high", "champion_sd", "experiment_sd"):
                if finite(r[col]):
                    metrics[mlflow_key(f"{kind}.{col}.{r['metric']}")] = float(r[col])
        mlflow.log_metrics(metrics)
        for f in (summary["files"]["csv"], summary["files"]["md"]):
            mlflow.log_artifact(f)
        return run.info.run_id


__all__ = [
    "AXES",
    "beyond_noise",
    "format_replicates",
    "grid_rows",
    "markdown",
    "replicate_rows",
    "seed_means",
    "summarise",
    "unchanged",
]
