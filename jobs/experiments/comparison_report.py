"""An experiment's comparison as people read it: the Markdown report, the printed table, the
figures' formatting, and the MLflow runs (a parent run with the comparison, a child per side)."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.core.config import Config
from jobs.core.lake import Lake, shift_ds

log = logging.getLogger(__name__)


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_METRIC_BAD = re.compile(r"[^\w.\- :/]")


def mlflow_key(key: str) -> str:
    """A metric or param name MLflow accepts (`recall@10` -> `recall_at_10`)."""
    return _METRIC_BAD.sub("_", key.replace("@", "_at_"))


def _clip(v: Any, n: int = 6000) -> str:
    s = str(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def log_mlflow(
    p: Mapping[str, Any],
    cfg: Config,
    summary: Mapping[str, Any],
    table: Any,
    sides: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, str],
    plots: list[str],
) -> dict[str, str]:
    """The parent run (named after the experiment) with the comparison, and one nested run
    per side, in the experiment `<mlflow.experiment>-experiments` of the source lake."""
    import mlflow

    from jobs.core.tracking import experiment

    exp_name = f"{cfg.mlflow.experiment}-experiments"
    exp_id = experiment(Lake(p["lake"]), cfg, name=exp_name)
    test_window = summary["test_window"]
    # inclusive, as `homepage evaluate` logs it
    window = f"{test_window[0]}..{shift_ds(test_window[1], -1)}"
    common = {"split_ds": p["split_ds"], "test_window": window, "experiment_name": p["name"]}
    overrides = {
        f"override.{o.split('=', 1)[0]}": _clip(o.split("=", 1)[1]) for o in p["overrides"]
    }
    ids: dict[str, str] = {"experiment_id": str(exp_id), "mlflow_experiment": exp_name}
    run_name = p["name"] + (f"-seed{p['seed']}" if "seed" in p else "")
    if "replicate_split" in p:
        run_name += f"@{p['replicate_split']}"
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as parent:
        mlflow.set_tags({**common, "step": "experiment", "role": "comparison"})
        if "seed" in p:
            mlflow.set_tag("training_seed", str(p["seed"]))
        if "replicate_split" in p:
            mlflow.set_tag("replicate_split", p["replicate_split"])
        mlflow.log_params(
            {
                **common,
                "overrides": _clip("; ".join(p["overrides"])),
                "changed": _clip(
                    "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in p["changed"].items())
                ),
                "champion_config_hash": p["champion_hash"],
                "experiment_config_hash": p["experiment_hash"],
                "config_path": p["config_path"] or "default",
                "users": summary["users"],
                **overrides,
            }
        )
        mlflow.log_metrics(_comparison_metrics(table))
        for f in (files["csv"], files["md"], *plots):
            mlflow.log_artifact(f)
        mlflow.log_table(data=table, artifact_file="comparison_table.json")
        ids["parent_run_id"] = parent.info.run_id
        for side, info in sides.items():
            ids[f"{side}_run_id"] = _log_side_run(exp_id, side, info, common, overrides)
    return ids


def _comparison_metrics(table: Any) -> dict[str, float]:
    """The comparison's differences, lifts and lift intervals as MLflow metrics."""
    metrics: dict[str, float] = {}
    for r in table.to_dict(orient="records"):
        for col, prefix in (("difference", "diff"), ("lift", "lift")):
            if finite(r[col]):
                metrics[mlflow_key(f"{prefix}.{r['metric']}")] = float(r[col])
        for col in ("ci_low", "ci_high"):
            if finite(r[col]):
                metrics[mlflow_key(f"lift_{col}.{r['metric']}")] = float(r[col])
    return metrics


def _log_side_run(
    exp_id: Any,
    side: str,
    info: Mapping[str, Any],
    common: Mapping[str, Any],
    overrides: Mapping[str, str],
) -> str:
    """One side's nested run (its metrics, params, plots and report files); returns its id."""
    import mlflow

    from jobs.experiments.evaluation_report import flat_metrics

    res, rec = info["result"], info["record"]
    with mlflow.start_run(experiment_id=exp_id, run_name=side, nested=True) as child:
        mlflow.set_tags({**common, "step": "experiment", "role": side})
        params = {
            **common,
            "side": side,
            "config_hash": rec["config_hash"],
            "eval_lake": res["eval_lake"],
            "evaluated": rec.get("evaluated", ""),
            "overrides": _clip("; ".join(rec.get("overrides") or [])) or "(none)",
        }
        if side == "experiment":
            params |= overrides
        mlflow.log_params(params)
        flat = flat_metrics(res)
        mlflow.log_metrics({mlflow_key(k): v for k, v in flat.items()})
        for plot in res.get("plots") or []:
            if os.path.exists(plot):
                mlflow.log_artifact(plot, artifact_path="plots")
        for f in ("pages.csv", "lift.csv", "engagement.csv", "evaluate.json"):
            path = os.path.join(res.get("report") or "", f)
            if os.path.exists(path):
                mlflow.log_artifact(path, artifact_path="report")
        return child.info.run_id


def fmt_value(v: Any, pct: bool = False, sign: bool = False) -> str:
    if not finite(v):
        return "—"
    return f"{v:+.1%}" if pct else f"{v:+.4f}" if sign else f"{v:.4f}"


def metric_objective(r: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """`evaluation_report.repeated_objectives`' split for rows keyed by `metric`
    (`engagement.<objective>.<rest>`; the figures are every other field)."""
    parts = r["metric"].split(".", 2)
    if parts[0] != "engagement" or len(parts) < 3:
        return None
    return parts[1], parts[2], tuple(sorted((k, v) for k, v in r.items() if k != "metric"))


def shown_rows(
    rows: Sequence[Mapping[str, Any]], where: str
) -> tuple[list[Mapping[str, Any]], str]:
    """(the rows a printout shows, a note on what it left out): objectives that repeat
    another's figures on every row (one shared head) are shown once; `where` keeps them all."""
    from jobs.experiments.evaluation_report import repeated_note, repeated_objectives

    repeats = repeated_objectives(rows, metric_objective)
    keep = [r for r in rows if (metric_objective(r) or ("",))[0] not in repeats]
    return keep, repeated_note(repeats, where)


def _interval(r: Mapping[str, Any]) -> str:
    if not finite(r.get("lift")):
        return ""
    return f"{fmt_value(r['lift'], True)} [{fmt_value(r['ci_low'], True)}, {fmt_value(r['ci_high'], True)}]"


def markdown(summary: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    """The comparison as a Markdown document (the report's comparison.md)."""
    test_window = summary["test_window"]
    lines = [
        f"# Experiment `{summary['name']}` vs champion",
        "",
        f"Split {summary['split_ds']}, test window [{test_window[0]}, {test_window[1]}), "
        f"{summary['users']:,} evaluated users.",
        "",
        "Overrides: " + ", ".join(f"`{o}`" for o in summary["overrides"]),
        "",
        "Changed: " + ", ".join(f"`{k}` {a} → {b}" for k, (a, b) in summary["changed"].items()),
        "",
        "Lift = experiment / champion − 1 with a 95% bootstrap interval: page metrics paired per "
        "user on the same users, `ab.*` a simulated A/B test (champion = control).",
        "",
        "| metric | champion | experiment | difference | relative difference | lift [95% CI] |",
        "|---|---:|---:|---:|---:|---|",
    ]
    rows, note = shown_rows(rows, "comparison.csv")
    for r in rows:
        lines.append(
            f"| {r['metric']} | {fmt_value(r['champion'])} | {fmt_value(r['experiment'])} "
            f"| {fmt_value(r['difference'], sign=True)} | {fmt_value(r['relative_difference'], True)} "
            f"| {_interval(r)} |"
        )
    if note:
        lines += ["", f"`engagement.*`: {note}."]
    return "\n".join(lines) + "\n"


def format_comparison(result: Mapping[str, Any]) -> str:
    """The comparison as aligned text (what `homepage experiment` prints)."""
    test_window = result["test_window"]
    rows, note = shown_rows(result["comparison"], "comparison.csv")
    width = max([len("metric"), *(len(r["metric"]) for r in rows)]) + 2
    lines = [
        f"experiment {result['name']} vs champion: split {result['split_ds']}, test window "
        f"[{test_window[0]}, {test_window[1]}), {result['users']:,} users",
        "overrides: " + " ".join(result["overrides"]),
        "",
        f"{'metric':<{width}}{'champion':>10}{'experiment':>12}{'difference':>12}"
        f"{'rel.diff':>10}   lift [95% interval]",
    ]
    for r in rows:
        lines.append(
            f"{r['metric']:<{width}}{fmt_value(r['champion']):>10}{fmt_value(r['experiment']):>12}"
            f"{fmt_value(r['difference'], sign=True):>12}{fmt_value(r['relative_difference'], True):>10}   "
            f"{_interval(r)}"
        )
    lines += [
        "",
        "page.* lifts are paired per user (same users, same truth); ab.* is a simulated A/B test "
        "(champion = control).",
        *([f"engagement.*: {note}."] if note else []),
    ]
    return "\n".join(lines)
