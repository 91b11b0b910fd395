"""Diagnostic plots for engagement models, written as PNG files (for MLflow artifacts or reports).

matplotlib is imported inside each function and drawn through the Agg canvas on a bare
`Figure`: no pyplot, so no global backend switch and no figure kept alive after the call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.evaluation.metrics import expected_calibration_error, reliability_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def reliability_diagram(
    y: np.ndarray,
    p_raw: np.ndarray,
    p_cal: np.ndarray,
    path: str | Path,
    *,
    title: str,
    bins: int = 10,
) -> Path:
    """Observed rate against mean prediction per equal-width bin, before and after calibration,
    with the diagonal (perfect calibration) and, below, a histogram of both predictions."""
    fig = _figure(6.0, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for name, p, colour in (("raw", p_raw, "tab:red"), ("calibrated", p_cal, "tab:blue")):
        mean_p, rate, _ = reliability_curve(y, p, bins=bins)
        ece = expected_calibration_error(y, p, bins=bins)
        top.plot(mean_p, rate, marker="o", color=colour, label=f"{name} (ECE {ece:.4f})")
        bottom.hist(np.asarray(p), bins=50, range=(0, 1), histtype="step", color=colour, label=name)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed rate")
    top.set_title(title)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("rows")
    return _save(fig, path)


def feature_importance_plot(
    df: pd.DataFrame, path: str | Path, *, value: str | None = None, top: int = 20
) -> Path:
    """One horizontal bar chart per objective of each feature's share of that objective's
    importance (`value`: "total_gain" when the frame has it, else "gain")."""
    value = value or ("total_gain" if "total_gain" in df.columns else "gain")
    missing = [c for c in ("objective", "feature", value) if c not in df.columns]
    if missing:
        raise ValueError(f"importance frame is missing columns: {missing}")
    objectives = list(dict.fromkeys(df["objective"]))
    if not objectives:
        raise ValueError("importance frame is empty")
    n_feat = min(top, int(df.groupby("objective").size().max()))
    fig = _figure(4.0 * len(objectives), 1.0 + 0.3 * n_feat)
    axes = np.atleast_1d(fig.subplots(1, len(objectives), squeeze=False)[0])
    for ax, obj in zip(axes, objectives, strict=True):
        sub = df[df["objective"] == obj].nlargest(top, value)
        total = float(df.loc[df["objective"] == obj, value].sum())
        share = sub[value].to_numpy(np.float64) / total if total > 0 else np.zeros(len(sub))
        ax.barh(sub["feature"].astype(str).to_numpy()[::-1], share[::-1], color="tab:blue")
        ax.set_title(obj)
        ax.set_xlabel(f"share of {value}")
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def metric_vs_parameter(
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray | Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
) -> Path:
    """A metric against a parameter (e.g. validation AUC against w, or NDCG against λ); `ys` may
    map labels to one series each."""
    series = dict(ys) if isinstance(ys, Mapping) else {ylabel: ys}
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    for label, values in series.items():
        if len(values) != len(xs):
            raise ValueError(f"series {label!r} has {len(values)} values for {len(xs)} xs")
        ax.plot(xs, values, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def lift_plot(
    lifts: pd.DataFrame,
    path: str | Path,
    *,
    title: str | None = None,
    xlabel: str = "relative lift of the pipeline, % (95% bootstrap interval)",
) -> Path:
    """Relative lift per metric with its interval, one panel row per baseline (columns
    baseline, metric, lift, ci_low, ci_high); a vertical line at 0 (no change)."""
    rows = lifts.dropna(subset=["lift"]).reset_index(drop=True)
    fig = _figure(7.0, 0.9 + 0.32 * max(1, len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    colours = dict(zip(rows["baseline"].unique(), ("tab:blue", "tab:orange", "tab:green",
                                                     "tab:purple", "tab:red"), strict=False))  # fmt: skip
    for yi, r in zip(y, rows.itertuples(), strict=True):
        lo = r.lift - r.ci_low if np.isfinite(r.ci_low) else 0.0
        hi = r.ci_high - r.lift if np.isfinite(r.ci_high) else 0.0
        ax.errorbar(
            100 * r.lift, yi, xerr=[[100 * lo], [100 * hi]], fmt="o", capsize=3,
            color=colours.get(r.baseline, "tab:grey"),
        )  # fmt: skip
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, [f"{r.baseline}: {r.metric}" for r in rows.itertuples()])
    ax.set_xlabel(xlabel)
    ax.set_title(title or "Pipeline vs baselines")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def examination_plot(curve: pd.DataFrame, path: str | Path) -> Path:
    """Estimated examination propensity by slot and by position (relative to the first), with
    intervals (columns kind, index, propensity, ci_low, ci_high), against 1/log2(1 + k)."""
    fig = _figure(9.0, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, ("slot", "position"), strict=True):
        c = curve[curve["kind"] == kind].sort_values("index")
        if c.empty:
            ax.set_title(f"{kind}: no randomised traffic")
            continue
        k = c["index"].to_numpy(np.float64)
        p = c["propensity"].to_numpy(np.float64)
        err = [
            np.clip(p - c["ci_low"].to_numpy(), 0, None),
            np.clip(c["ci_high"].to_numpy() - p, 0, None),
        ]
        ax.errorbar(k, p, yerr=err, fmt="o-", capsize=3, label="estimated")
        ax.plot(k, 1.0 / np.log2(1.0 + k), linestyle="--", color="grey", label="1/log2(1+k)")
        ax.set_xlabel(kind)
        ax.set_title(f"examination by {kind} (relative to {kind} 1)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("P(examine) / P(examine at 1)")
    axes[0].legend()
    return _save(fig, path)


def frontier_plot(
    front: pd.DataFrame,
    points: Mapping[str, tuple[float, float]],
    path: str | Path,
    *,
    title: str | None = None,
    bar: tuple[float, float] | None = None,
) -> Path:
    """Explore recall against page recall: the baselines' mixing curve (columns history_cells,
    page_recall, explore_recall; each point labelled with its history cells), one marker per
    page set in `points` (name -> (page recall, explore recall)) and, with `bar` = (page
    recall, explore recall), the region that beats both (shaded, dashed edges)."""
    fig = _figure(6.5, 4.8)
    ax = fig.subplots()
    if bar is not None and all(np.isfinite(bar)):
        ax.axvline(bar[0], color="tab:green", linestyle=":", linewidth=1)
        ax.axhline(bar[1], color="tab:green", linestyle=":", linewidth=1)
        ax.fill_between([bar[0], 1.0], bar[1], 1.0, color="tab:green", alpha=0.08,
                        label="beats both baselines on both recalls")  # fmt: skip
    f = front.sort_values("history_cells")
    ax.plot(
        f["page_recall"], f["explore_recall"], marker=".", color="grey",
        label="k most-bought items + popular never-bought",
    )  # fmt: skip
    for r in f.itertuples():
        ax.annotate(f"k={r.history_cells}", (r.page_recall, r.explore_recall), fontsize=7,
                    textcoords="offset points", xytext=(3, 3), color="grey")  # fmt: skip
    markers = ("*", "s", "^", "D", "v", "P")
    for (name, (x, y)), mk in zip(points.items(), markers * len(points), strict=False):
        if np.isfinite(x) and np.isfinite(y):
            ax.scatter([x], [y], marker=mk, s=90 if mk == "*" else 45, label=name, zorder=3)
    xs = [*front["page_recall"], *(x for x, _ in points.values())]
    ys = [*front["explore_recall"], *(y for _, y in points.values())]
    if bar is not None and all(np.isfinite(bar)):
        xs, ys = [*xs, bar[0]], [*ys, bar[1]]
    xs, ys = [v for v in xs if np.isfinite(v)], [v for v in ys if np.isfinite(v)]
    if xs and ys:  # the shaded region reaches 1.0: keep the view on the points
        pad_x, pad_y = 0.05 * (max(xs) - min(xs) or 1.0), 0.08 * (max(ys) - min(ys) or 1.0)
        ax.set_xlim(min(xs) - pad_x, max(xs) + 2 * pad_x)
        ax.set_ylim(min(ys) - pad_y, max(ys) + 2 * pad_y)
    ax.set_xlabel("page recall")
    ax.set_ylabel("explore recall (items never bought before)")
    ax.set_title(title or "Recall frontier of the baselines mixed")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)
