"""Comparing the two evaluated sides of an experiment: per-user page metrics against the
champion's truth with paired bootstrap lifts, the simulated A/B test, engagement heads and
off-policy estimates, as one table (`comparison.{csv,md,json}`, `lift.png`, MLflow)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from jobs.core.config import Config
from jobs.core.errors import EvaluationError
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from jobs.experiments.comparison_report import finite, log_mlflow, markdown
from jobs.experiments.plan import side_config
from jobs.experiments.sides import load_record

log = logging.getLogger(__name__)


COLUMNS = (
    "metric",
    "champion",
    "experiment",
    "difference",
    "relative_difference",
    "lift",
    "ci_low",
    "ci_high",
    "diff_low",
    "diff_high",
    "users",
)


def _row(metric: str, a: Any, b: Any, **interval: Any) -> dict[str, Any]:
    """One comparison row: champion a, experiment b, their difference and relative difference."""
    a = float(a) if finite(a) else None
    b = float(b) if finite(b) else None
    diff = b - a if a is not None and b is not None else None
    rel = diff / abs(a) if diff is not None and a not in (None, 0.0) else None
    row = {c: None for c in COLUMNS}
    row.update(metric=metric, champion=a, experiment=b, difference=diff, relative_difference=rel)
    for k, v in interval.items():
        row[k] = float(v) if finite(v) else None
    return row


def comparison_rows(
    champion: Mapping[str, Any],
    experiment: Mapping[str, Any],
    pages_c: Mapping[str, float],
    pages_e: Mapping[str, float],
    page_lifts: Any,
    ab: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """Page metrics (per-user ones with the paired lift of experiment over champion and its
    interval), the simulated A/B test, engagement heads and off-policy estimates."""
    from jobs.experiments.evaluation_report import flat_metrics

    rows = []
    lifts = {r["metric"]: r for r in page_lifts.to_dict(orient="records")}
    order = [m for m in lifts if m in pages_c] + [m for m in pages_c if m not in lifts]
    for m in order:
        iv = {}
        if m in lifts:
            r = lifts[m]
            iv = {k: r[k] for k in ("lift", "ci_low", "ci_high", "diff_low", "diff_high", "users")}
        rows.append(_row(f"page.{m}", pages_c.get(m), pages_e.get(m), **iv))
    if ab:
        arms = ab["arms"]
        for m, v in ab["lift"].items():
            iv = {"lift": v.get("lift"), "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high")}
            iv["users"] = arms["control"]["visitors"] + arms["treatment"]["visitors"]
            rows.append(_row(f"ab.{m}", arms["control"][m], arms["treatment"][m], **iv))
    fc, fe = flat_metrics(dict(champion)), flat_metrics(dict(experiment))
    for k in sorted(k for k in set(fc) | set(fe) if k.startswith("engagement.")):
        rows.append(_row(k, fc.get(k), fe.get(k)))
    oc, oe = _ope_values(champion.get("ope")), _ope_values(experiment.get("ope"))
    for k in sorted(set(oc) | set(oe)):
        rows.append(_row(k, oc.get(k), oe.get(k)))
    return rows


def _ope_values(ope: Mapping[str, Any] | None) -> dict[str, float]:
    """Per-unit off-policy value estimates of a side's pages (`ope.<estimator>.per_unit`;
    not the logging policy's own value, which both sides share)."""
    per_unit = ((ope or {}).get("learned_policy") or {}).get("per_unit") or {}
    return {
        f"ope.{est}.per_unit": v["estimate"]
        for est, v in per_unit.items()
        if est != "logging" and isinstance(v, Mapping) and finite(v.get("estimate"))
    }


def _read_pages(elake_root: str, split_ds: str, users: Any = None) -> Any:
    import pandas as pd

    path = os.path.join(elake_root, "warehouse", "pages", f"ds={split_ds}", "pages.parquet")
    pages = pd.read_parquet(path)
    if users is None:
        return pages
    keep = pages["user_id"].isin(users) | (pages["user_id"] == DEFAULT_PAGE_KEY)
    return pages[keep].reset_index(drop=True)


def _check_records(
    p: Mapping[str, Any], rec_c: Mapping[str, Any], rec_e: Mapping[str, Any]
) -> None:
    """Both records are of this plan's configs and were scored on the same test window."""
    res_c, res_e = rec_c["result"], rec_e["result"]
    for rec, side in ((rec_c, "champion"), (rec_e, "experiment")):
        if rec.get("config_hash") != p[f"{side}_hash"]:
            raise EvaluationError(
                f"{side} record {rec.get('config_hash')} is not this plan's config"
            )
    if res_c["test_window"] != res_e["test_window"]:
        raise EvaluationError(
            f"the sides were scored on different windows: {res_c['test_window']} vs "
            f"{res_e['test_window']}"
        )


def _paired_rows(
    p: Mapping[str, Any],
    cfg_c: Config,
    res_c: Mapping[str, Any],
    res_e: Mapping[str, Any],
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], Any, dict[str, Any] | None]:
    """(the comparison rows, the evaluated users, the simulated A/B test or None): both sides'
    pages scored per user against the champion side's truth, with paired lifts."""
    from jobs.experiments import evaluate
    from jobs.experiments.evaluation_lake import locked
    from jobs.experiments.evaluation_pages import page_frames
    from models.evaluation.page_eval import USER_METRICS, evaluate_pages, lift

    split, end, name = p["split_ds"], p["test_end"], p["name"]
    ec = cfg_c.eval

    say(f"[experiment {name}] per-user page metrics of both sides against the same truth")
    with (
        locked(p["champion_dir"], shared=True, say=say),
        locked(p["experiment_dir"], shared=True, say=say),
    ):
        pages, truth, history, items, _ = page_frames(Lake(res_c["eval_lake"]), split, end, cfg_c)
        users = truth["user_id"].unique()
        pages_e = _read_pages(res_e["eval_lake"], split, users)
        ab = None
        if os.path.exists(os.path.join(res_c["eval_lake"], "_truth", "truth.npz")):
            say(f"[experiment {name}] simulated A/B: champion (control) vs experiment")
            ab = evaluate.ab_evaluation(
                Lake(res_c["eval_lake"]),
                {
                    "static": _read_pages(res_c["eval_lake"], split),
                    "pipeline": _read_pages(res_e["eval_lake"], split),
                },
                split,
                cfg_c,
            )
    kw = {"split_ds": split, "ks": ec.recall_k, "new_days": ec.new_days}
    ev_c = evaluate_pages(pages["pipeline"], truth, history, items, **kw)
    ev_e = evaluate_pages(pages_e, truth, history, items, **kw)
    metrics = [*USER_METRICS, *(f"recall@{k}" for k in ec.recall_k)]
    metrics = [m for m in metrics if m in ev_c.per_user.columns]
    lifts = lift(ev_e.per_user, ev_c.per_user, metrics, resamples=ec.resamples, seed=ec.seed)
    rows = comparison_rows(res_c, res_e, ev_c.summary, ev_e.summary, lifts, ab)
    return rows, users, ab


def _write_report(
    out: str, summary: Mapping[str, Any], rows: list[dict[str, Any]]
) -> tuple[Any, dict[str, str], list[str]]:
    """(the comparison table, its files, the lift plot if any lift): comparison.csv,
    comparison.md and lift.png in `out`."""
    import pandas as pd

    from models.evaluation.plots import lift_plot

    name, split = summary["name"], summary["split_ds"]
    os.makedirs(out, exist_ok=True)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in COLUMNS[1:]:
        table[c] = pd.to_numeric(table[c]).astype("float64")  # None -> NaN
    files = {
        "csv": os.path.join(out, "comparison.csv"),
        "md": os.path.join(out, "comparison.md"),
        "json": os.path.join(out, "comparison.json"),
    }
    table.to_csv(files["csv"], index=False)
    with open(files["md"], "w") as f:
        f.write(markdown(summary, rows))
    plot_rows = table[table["lift"].notna()].assign(
        baseline=lambda t: t["metric"].map(lambda m: "A/B" if m.startswith("ab.") else "per user")
    )
    plots = []
    if len(plot_rows):
        plots.append(
            str(
                lift_plot(
                    plot_rows,
                    os.path.join(out, "lift.png"),
                    title=f"experiment {name} vs champion, split {split}",
                    xlabel="relative lift of the experiment over the champion, % (95% interval)",
                )
            )
        )
    return table, files, plots


def compare(
    p: Mapping[str, Any],
    champion_record: str,
    experiment_record: str,
    *,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Paired comparison of the two evaluated sides; writes the report and logs the MLflow
    parent run with its two child runs. Returns the whole comparison (see `run`)."""
    from jobs.core import io

    cfg_c = side_config(p, "champion")
    rec_c, rec_e = load_record(champion_record), load_record(experiment_record)
    res_c, res_e = rec_c["result"], rec_e["result"]
    _check_records(p, rec_c, rec_e)
    name = p["name"]
    rows, users, ab = _paired_rows(p, cfg_c, res_c, res_e, say)

    out = p["report_dir"]
    summary = {
        "name": name,
        "split_ds": p["split_ds"],
        "test_window": res_c["test_window"],
        "users": int(len(users)),
        "overrides": list(p["overrides"]),
        "changed": dict(p["changed"]),
        "config_path": p["config_path"],
    }
    table, files, plots = _write_report(out, summary, rows)

    sides = {
        "champion": {"record": rec_c, "result": res_c},
        "experiment": {"record": rec_e, "result": res_e},
    }
    run_ids = log_mlflow(p, cfg_c, summary, table, sides, files, plots)
    result: dict[str, Any] = {
        **summary,
        "champion": res_c,
        "experiment": res_e,
        "comparison": rows,
        "ab_test": ab,
        "report_dir": out,
        "files": files,
        "plots": plots,
        "mlflow": run_ids,
    }
    io.write_json(
        files["json"],
        {
            **summary,
            "comparison": rows,
            "ab_test": ab,
            "mlflow": run_ids,
            "champion": {k: res_c.get(k) for k in ("config_hash", "eval_lake", "report")},
            "experiment": {k: res_e.get(k) for k in ("config_hash", "eval_lake", "report")},
        },
    )
    say(f"[experiment {name}] comparison in {out} (MLflow run {run_ids['parent_run_id']})")
    return result
