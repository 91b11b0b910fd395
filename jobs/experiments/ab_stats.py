"""Statistics of a simulated A/B test: the stable 50/50 split of users into arms, per-arm
totals and metrics, and the lift of each metric with a bootstrap interval."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

ARMS = ("control", "treatment")


def arm_summary(
    counts: dict[str, np.ndarray], arm: np.ndarray, *, resamples: int, seed: int
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Per arm totals and metrics of the users with >= 1 visit (`counts`: per truth user,
    visits and each event type), and the treatment / control - 1 lift of each metric with a
    95% bootstrap interval (visitors resampled within each arm, `resamples` times)."""
    cols_used = ("impression", "click", "add_to_cart", "purchase")
    per_arm: dict[str, Any] = {}
    values: list[np.ndarray] = []
    for a, name in enumerate(ARMS):
        who = np.flatnonzero((counts["visits"] > 0) & (arm == a))
        if who.size == 0:
            raise ValueError(f"the {name} arm has no visitors; simulate more users or days")
        x = np.stack([counts[c][who] for c in cols_used], axis=1).astype(np.float64)
        values.append(x)
        metrics = _metrics(x.sum(0, keepdims=True), who.size)
        per_arm[name] = {
            "visitors": int(who.size),
            "visits": int(counts["visits"][who].sum()),
            "impressions": int(x[:, 0].sum()),
            "clicks": int(x[:, 1].sum()),
            "add_to_carts": int(x[:, 2].sum()),
            "purchases": int(x[:, 3].sum()),
            **{m: float(v[0]) for m, v in metrics.items()},
        }

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xAB]))
    boot = [_bootstrap_sums(x, resamples, rng) for x in values]
    c_boot = _metrics(boot[0], values[0].shape[0])
    t_boot = _metrics(boot[1], values[1].shape[0])
    lift: dict[str, dict[str, float]] = {}
    for m in c_boot:
        c, t = per_arm["control"][m], per_arm["treatment"][m]
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = t_boot[m] / c_boot[m] - 1.0
        dist = dist[np.isfinite(dist)]
        lo, hi = np.percentile(dist, [2.5, 97.5]) if dist.size else (np.nan, np.nan)
        lift[m] = {
            "lift": float(t / c - 1.0) if c > 0 else float("nan"),
            "ci_low": float(lo),
            "ci_high": float(hi),
        }
    return per_arm, lift


def split_arms(user_ids: Any, salt: str = "") -> np.ndarray:
    """Stable 50/50 arm of each user id (0 = control, 1 = treatment): a keyed SipHash of the id,
    the key derived from `salt`. Independent of PYTHONHASHSEED, order and the other ids."""
    key = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()  # 16 characters
    ids = np.asarray(user_ids).astype(str).astype(object)
    return (pd.util.hash_array(ids, hash_key=key, categorize=False) & 1).astype(np.int8)


def _metrics(sums: np.ndarray, visitors: int) -> dict[str, np.ndarray]:
    """Arm metrics from summed [impressions, clicks, add_to_carts, purchases] rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ctr = sums[:, 1] / sums[:, 0]
    return {
        "ctr": ctr,
        "add_to_carts_per_visitor": sums[:, 2] / visitors,
        "purchases_per_visitor": sums[:, 3] / visitors,
    }


def _bootstrap_sums(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums of `resamples` bootstrap resamples of the rows of x: (resamples, columns)."""
    n = x.shape[0]
    out = np.empty((resamples, x.shape[1]))
    chunk = max(1, 4_000_000 // n)
    for lo in range(0, resamples, chunk):  # chunks bound memory to ~chunk * n counts
        b = min(chunk, resamples - lo)
        idx = rng.integers(0, n, (b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        out[lo : lo + b] = counts @ x
    return out
