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

from models.metrics import expected_calibration_error, reliability_curve

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
