"""An evaluation's result as tables and text: JSON-able records, the flat metrics MLflow logs,
the printed report (`format_table`), and objectives that share one head shown once."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobs.experiments.evaluation_pages import RANKED_LIST_METRICS

log = logging.getLogger(__name__)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`page.<policy>.<metric>`, `lift.<baseline>.<metric>`, `engagement.*`, `frontier.*`,
    `ranked_list.*`, `ab.*` as floats."""
    out: dict[str, float] = {}
    for policy, metrics in result["pages"].items():
        for m, v in metrics.items():
            out[f"page.{policy}.{m}"] = v
    for r in result["lift"]:
        out[f"lift.{r['baseline']}.{r['metric']}"] = r["lift"]
    for r in result["engagement"]:
        for m in ("auc", "pr_auc", "log_loss", "ece"):
            out[f"engagement.{r['objective']}.{r['stage']}.{m}"] = r[m]
    for r in result.get("by_item_kind") or []:
        kind = "repeat" if r["items"] == "bought before" else "explore"
        for m in ("auc", "pr_auc"):
            out[f"engagement.{r['objective']}.{kind}.{r['scorer']}.{m}"] = r[m]
    fr = result.get("frontier")
    if fr:
        for r in fr["frontier"]:
            for m in ("page_recall", "explore_recall"):
                out[f"frontier.k{r['history_cells']}.{m}"] = r[m]
        out["frontier.explore_at_pipeline"] = fr["frontier_explore_at_pipeline"]
        out["frontier.margin_over_frontier"] = fr["margin_over_frontier"]
        out["frontier.bar_met"] = float(fr["bar"]["met"])
    rl = result.get("ranked_list")
    if rl and rl.get("users"):
        for policy, metrics in rl["pages"].items():
            for m, v in metrics.items():
                out[f"ranked_list.{policy}.{m}"] = v
        out["ranked_list.users"] = rl["users"]
        out["ranked_list.bar_met"] = float(rl["bar"]["met"])
    ab = result.get("ab_test")
    if ab:
        for m, v in ab["lift"].items():
            out[f"ab.lift.{m}"] = v["lift"]
        for arm, vals in ab["arms"].items():
            for m in ("ctr", "add_to_carts_per_visitor"):
                out[f"ab.{arm}.{m}"] = vals[m]
    if result.get("ope"):
        _flatten("ope", result["ope"], out)
    return {  # MLflow metric names take no "@"
        k.replace("@", "_at_"): float(v) for k, v in out.items() if v is not None and np.isfinite(v)
    }


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    """Numeric leaves of nested dicts as `prefix.key.key...` (estimates, intervals, counts)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{re.sub(r'[^A-Za-z0-9_.:/ -]', '_', str(k))}", v, out)
    elif isinstance(obj, int | float | np.number) and not isinstance(obj, bool):
        out[prefix] = obj


def format_table(result: dict[str, Any]) -> str:
    """The page metrics per policy, the lifts with intervals and the engagement heads."""
    pages = pd.DataFrame(result["pages"])
    lines = [
        f"split {result['split_ds']}: {result['users']:,} users with "
        f"{'/'.join(result['relevant_events'])} in [{result['test_window'][0]}, "
        f"{result['test_window'][1]})",
        "",
        f"{'metric':<30}" + "".join(f"{c:>12}" for c in pages.columns),
    ]
    for m, row in pages.iterrows():
        lines.append(
            f"{m:<30}"
            + "".join(f"{'—':>12}" if v is None or pd.isna(v) else f"{v:12.4f}" for v in row)
        )
    lines += ["", "pipeline vs baseline: relative lift [95% bootstrap interval]"]
    for r in result["lift"]:
        if r["lift"] is None:
            continue
        lines.append(
            f"  {r['baseline']:<11} {r['metric']:<15} {r['lift']:+8.1%} "
            f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]  ({r['a']:.4f} vs {r['b']:.4f}, "
            f"{r['users']:,} users)"
        )
    if result["engagement"]:
        lines += _engagement_lines(result["engagement"])
    if result.get("frontier"):
        lines += ["", *format_frontier(result["frontier"])]
    if (result.get("ranked_list") or {}).get("users"):
        lines += ["", *format_ranked_list(result["ranked_list"])]
    if result.get("cell_yield"):
        lines += _cell_yield_lines(result["cell_yield"])
    if result.get("by_item_kind"):
        lines += _item_kind_lines(result["by_item_kind"])
    ab = result.get("ab_test")
    if ab:
        lines += _ab_lines(ab)
    if result.get("ope"):
        from jobs.experiments import ope

        lines += ["", ope.format_report(result["ope"])]
    return "\n".join(lines)


def _engagement_lines(engagement: Sequence[Mapping[str, Any]]) -> list[str]:
    """The heads' AUC, PR-AUC, log loss and ECE, raw and calibrated (shared heads once)."""
    repeats = repeated_objectives(engagement, lambda r: _objective_rows(r, "stage"))
    lines = ["", f"{'objective':<12} {'stage':<11} {'AUC':>7} {'PR-AUC':>7} {'logloss':>8} "
             f"{'ECE':>7}"]  # fmt: skip
    for r in engagement:
        if r["objective"] in repeats:
            continue
        lines.append(
            f"{r['objective']:<12} {r['stage']:<11} {_num(r['auc'])} {_num(r['pr_auc'])} "
            f"{_num(r['log_loss'], 8)} {_num(r['ece'])}"
        )
    if repeats:
        lines.append(repeated_note(repeats, "engagement.csv"))
    return lines


def _cell_yield_lines(cell_yield: Sequence[Mapping[str, Any]]) -> list[str]:
    """The pipeline's hits per cell by carousel kind."""
    lines = [
        "",
        "the pipeline's cells by carousel kind: hits per cell (repeat: bought before)",
    ]
    lines.append(f"  {'carousel':<20} {'items':<8} {'cells/page':>10} {'hits':>7} {'per cell':>9}")
    for r in cell_yield:
        lines.append(
            f"  {r['kind']:<20} {r['item']:<8} {r['cells_per_page']:10.2f} {r['hits']:7d} "
            f"{r['hit_rate']:9.2%}"
        )
    return lines


def _item_kind_lines(by_item_kind: Sequence[Mapping[str, Any]]) -> list[str]:
    """The calibrated heads against popularity (and frequency) by item kind."""
    lines = [
        "",
        "calibrated heads vs 30-day popularity on the test window's rows, by item kind",
    ]
    repeats = repeated_objectives(by_item_kind, lambda r: _objective_rows(r, "items", "scorer"))
    lines.append(f"  {'objective':<12} {'items':<14} {'scorer':<11} {'rows':>9} {'pos':>6} "
                 f"{'AUC':>7} {'PR-AUC':>7}")  # fmt: skip
    for r in by_item_kind:
        if r["objective"] in repeats:
            continue
        lines.append(
            f"  {r['objective']:<12} {r['items']:<14} {r['scorer']:<11} {r['rows']:9d} "
            f"{r['positives']:6d} {_num(r['auc'])} {_num(r['pr_auc'])}"
        )
    if repeats:
        lines.append("  " + repeated_note(repeats, "evaluate.json"))
    return lines


def _ab_lines(ab: Mapping[str, Any]) -> list[str]:
    """The simulated A/B test: static page (control) against the pipeline (treatment)."""
    c, t = ab["arms"]["control"], ab["arms"]["treatment"]
    return [
        "",
        f"simulated A/B ({ab['days']} days from {ab['start']}): static page (control) vs "
        "pipeline (treatment)",
        f"  add-to-carts per visitor {c['add_to_carts_per_visitor']:.4f} -> "
        f"{t['add_to_carts_per_visitor']:.4f}: "
        + _lift_str(ab["lift"]["add_to_carts_per_visitor"]),
        f"  click-through rate       {c['ctr']:.4f} -> {t['ctr']:.4f}: "
        + _lift_str(ab["lift"]["ctr"]),
    ]


def format_frontier(fr: dict[str, Any]) -> list[str]:
    """The frontier table, the pipeline against it, and the bar's verdict."""
    rows = fr["frontier"]
    lines = [
        "recall frontier of the baselines mixed (k most-bought items, then the most popular "
        "never-bought; the pipeline's cells)",
        f"  {'history cells k':<16}" + "".join(f"{r['history_cells']:>7}" for r in rows),
        f"  {'page recall':<16}" + "".join(f"{r['page_recall']:7.3f}" for r in rows),
        f"  {'explore recall':<16}" + "".join(f"{r['explore_recall']:7.3f}" for r in rows),
    ]
    p, at = fr["pipeline"], fr["frontier_explore_at_pipeline"]
    top = max((r["page_recall"] for r in rows), default=float("nan"))
    if at is not None and np.isfinite(at):
        where = f"the frontier there has {at:.4f} ({fr['margin_over_frontier']:+.4f})"
    elif p["page_recall"] > top:
        where = f"page recall beyond the frontier's end (top frequency, {top:.4f})"
    else:
        where = "below the frontier's page recall range"
    lines.append(
        f"  pipeline: page recall {p['page_recall']:.4f}, explore recall "
        f"{p['explore_recall']:.4f}; {where}"
    )
    lines.append(
        f"  beats top_freq and popularity on page and explore recall: {_verdict(fr['bar'])}"
    )
    return lines


def _verdict(bar: dict[str, Any]) -> str:
    """`models.evaluation.frontier.dominance`'s answer in words, naming each shortfall."""
    short = [f"{s['metric']} {s['policy']:.4f} <= {s['baseline']} {s['value']:.4f}"
             for s in bar["short"]]  # fmt: skip
    return "met" if bar["met"] else "not met: " + "; ".join(short)


def format_ranked_list(rl: dict[str, Any]) -> list[str]:
    """The heads' own ranked list next to the pipeline and the baselines, and its verdict."""
    lines = [
        "the engagement heads' own ranked list on the pipeline's cells, no carousels "
        f"({rl['users']:,} users with test-window examples)",
        f"  {'policy':<13}" + "".join(f"{m:>16}" for m in RANKED_LIST_METRICS),
    ]
    for policy, metrics in rl["pages"].items():
        lines.append(
            f"  {policy:<13}" + "".join(f"{metrics[m]:16.4f}" for m in RANKED_LIST_METRICS)
        )
    lines.append(f"  the ranked list beats top_freq and popularity on page and explore recall: "
                 f"{_verdict(rl['bar'])}")  # fmt: skip
    return lines


def _lift_str(v: dict[str, float]) -> str:
    return f"{v['lift']:+.1%} [{_pct(v['ci_low'])}, {_pct(v['ci_high'])}]"


def _pct(v: float | None) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:+.1%}"


def _num(v: float | None, width: int = 7) -> str:
    return f"{'—':>{width}}" if v is None or not np.isfinite(v) else f"{v:{width}.4f}"


# ---------------------------------------------------------------- shared heads in printouts

RowSplit = Callable[[Mapping[str, Any]], "tuple[str, Any, Any] | None"]


def _plain(v: Any) -> Any:
    """A figure made comparable: non-finite floats are None (NaN never equals itself)."""
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def repeated_objectives(rows: Sequence[Mapping[str, Any]], split: RowSplit) -> dict[str, str]:
    """{objective: the objective whose figures it repeats} among engagement rows.

    Objectives whose labels are equal on every row share one head (on purchase-only logs a
    purchase is also the click and the add-to-cart), so every figure of theirs is the same and
    a printout needs them once. `split(row)` gives (objective, the row's key within the
    objective, its figures), or None for a row of no objective. An objective repeats another
    when it has the same keys with the same figures; the one kept is the last in
    `OBJECTIVES` order (purchase, the label the shared head is about). Display only: files and
    MLflow keep every objective."""
    from jobs.daily.training_data import OBJECTIVES

    groups: dict[str, dict[Any, Any]] = {}
    for r in rows:
        s = split(r)
        if s is not None:
            objective, key, figures = s
            groups.setdefault(objective, {})[key] = _plain(figures)
    rank = {o: i for i, o in enumerate(OBJECTIVES)}
    kept: list[str] = []
    out: dict[str, str] = {}
    for o in sorted(groups, key=lambda o: (rank.get(o, len(rank)), o), reverse=True):
        twin = next((k for k in kept if groups[k] == groups[o]), None)
        if twin is None:
            kept.append(o)
        else:
            out[o] = twin
    return out


def repeated_note(repeats: Mapping[str, str], where: str) -> str:
    """'click and add_to_cart repeat purchase's figures ...' for `repeated_objectives`' result
    ('' when nothing repeats)."""
    by_twin: dict[str, list[str]] = {}
    for o, twin in repeats.items():
        by_twin.setdefault(twin, []).append(o)
    parts = [
        f"{' and '.join(sorted(os_))} repeat {twin}'s figures (labels equal on every row: one "
        "shared head)"
        for twin, os_ in sorted(by_twin.items())
    ]
    return f"{'; '.join(parts)}: left out here, {where} keeps them" if parts else ""


def _objective_rows(r: Mapping[str, Any], *key: str) -> tuple[str, Any, Any]:
    """`repeated_objectives`' split for rows with an `objective` field keyed by `key`."""
    rest = {k: v for k, v in r.items() if k != "objective" and k not in key}
    return r["objective"], tuple(r[k] for k in key), tuple(sorted(rest.items()))
