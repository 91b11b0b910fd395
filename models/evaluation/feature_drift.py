"""How far the features of the same rows move between two computations of them (the features a
model was trained on and those it is served): per feature the mean, median and 90th percentile
of |Δ|, |Δ| relative to the training spread, the Spearman rank correlation, and the shift of the
distribution (means, standard deviations, the two-sample Kolmogorov–Smirnov statistic)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DRIFT_COLUMNS: tuple[str, ...] = (
    "feature",
    "rows",
    "mean_abs_diff",
    "median_abs_diff",
    "p90_abs_diff",
    "rel_abs_diff",
    "spearman",
    "train_mean",
    "serve_mean",
    "train_sd",
    "serve_sd",
    "ks",
)


def drift_table(train: pd.DataFrame, serve: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """One row per feature of `DRIFT_COLUMNS`, over the rows where both frames have a finite
    value (`train` and `serve` are aligned row by row: the same (user, item) pair each).
    `rel_abs_diff` is the mean |Δ| over the training standard deviation."""
    from scipy.stats import ks_2samp, spearmanr

    if len(train) != len(serve):
        raise ValueError(f"train has {len(train)} rows and serve {len(serve)}: align them first")
    rows = []
    for f in features:
        a = train[f].to_numpy(np.float64)
        b = serve[f].to_numpy(np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        if len(a) < 2:
            rows.append({"feature": f, "rows": int(len(a))})
            continue
        d = np.abs(b - a)
        sd = float(np.std(a))
        rows.append(
            {
                "feature": f,
                "rows": int(len(a)),
                "mean_abs_diff": float(d.mean()),
                "median_abs_diff": float(np.median(d)),
                "p90_abs_diff": float(np.quantile(d, 0.9)),
                "rel_abs_diff": float(d.mean() / sd) if sd > 0 else np.nan,
                "spearman": float(spearmanr(a, b).statistic) if np.ptp(a) and np.ptp(b) else np.nan,
                "train_mean": float(a.mean()),
                "serve_mean": float(b.mean()),
                "train_sd": sd,
                "serve_sd": float(np.std(b)),
                "ks": float(ks_2samp(a, b).statistic),
            }
        )
    return pd.DataFrame(rows).reindex(columns=list(DRIFT_COLUMNS))
