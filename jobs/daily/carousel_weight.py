"""The choice of the carousel weight w and of the item mode on validation pages: the grid
search over w (pages as of cutoff for held-out users, scored by NDCG_2D against the label
window), the carousel calibration φ -> P(engage) fitted at each w, and the item-mode choice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.core.config import Config
from jobs.daily.page_inputs import carousel_calibration, page_params


def carousel_labels(
    scored: Any, item_ids: np.ndarray, engaged: pd.DataFrame, per_carousel: int
) -> np.ndarray:
    """1 per candidate carousel whose first M items hold one the user engaged with in the
    label window (click, add-to-cart or purchase), else 0."""
    from models.ranking.candidates import PAD

    cu = np.asarray(scored.cands.user, dtype=np.int64)
    top = scored.items[:, :per_carousel]
    n = np.int64(len(item_ids) + 1)  # the last key value stands for PAD
    pairs = engaged[engaged["user_id"].isin(set(scored.users))]
    if not len(pairs) or not len(cu):
        return np.zeros(len(cu), dtype=np.int8)
    row_of = pd.Series(np.arange(len(scored.users)), index=scored.users)
    ids = pd.Series(np.arange(len(item_ids)), index=item_ids)
    it = ids.reindex(pairs["item_id"].to_numpy()).to_numpy()
    ok = ~np.isnan(it)
    keys = np.unique(
        row_of.reindex(pairs["user_id"].to_numpy()).to_numpy()[ok].astype(np.int64) * n
        + it[ok].astype(np.int64)
    )
    if not len(keys):
        return np.zeros(len(cu), dtype=np.int8)
    probe = cu[:, None] * n + np.where(top != PAD, top, n - 1)
    pos = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return ((keys[pos] == probe) & (top != PAD)).any(axis=1).astype(np.int8)


def fit_carousel_calibration(phi: np.ndarray, labels: np.ndarray) -> dict[str, list[float]] | None:
    """Isotonic map φ -> P(user engages with the carousel in the label window), or None when
    the labels hold a single class."""
    from sklearn.isotonic import IsotonicRegression

    if len(np.unique(labels)) < 2:
        return None
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(phi, labels)
    return {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


def _score_validation_users(
    inputs: Any, users: np.ndarray, engaged: pd.DataFrame, params: Any, modes: tuple[str, ...]
) -> tuple[dict[str, list[Any]], dict[str, list[np.ndarray]]]:
    """Each mode's scored batches of `users` and their carousel labels (`carousel_labels`)."""
    from models.ranking.batch_scoring import score_batch

    scored = {
        mode: [
            score_batch(
                inputs, users[s : s + 1024], inputs.user_matrices(users[s : s + 1024]), params, mode
            )
            for s in range(0, len(users), 1024)
        ]
        for mode in modes
    }
    labels = {
        mode: [
            carousel_labels(b, inputs.catalog.item_ids, engaged, params.items_per_carousel)
            for b in scored[mode]
        ]
        for mode in modes
    }
    return scored, labels


def w_grid_search(
    inputs: Any,
    users: np.ndarray,
    engaged: pd.DataFrame,
    cfg: Config,
    modes: tuple[str, ...],
    exam: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, float], Any], dict[tuple[str, float], pd.Series]]:
    """NDCG_2D of the pages of `users` (as of cutoff) for each w and item mode, the carousel
    calibration (φ -> engagement probability) fitted at each w, and each user's NDCG_2D at
    each (mode, w) (what `choose_item_mode` compares the modes on).

    The pages are built the way rank builds them (beam search over the calibrated q, page
    rules) without the randomised exploration.
    """
    from models.evaluation.holdout import page_ndcg_by_user
    from models.ranking.pages import pages
    from models.ranking.scoring import carousel_score

    params = page_params(cfg)
    rel = engaged.assign(rel=engaged[["click", "add_to_cart", "purchase"]].sum(axis=1))
    users = np.sort(users[inputs.warm(users)])
    if len(users) == 0:  # no held-out user known to the cutoff's MF: keep scoring.w
        return pd.DataFrame(columns=["mode", "w", "page_ndcg", "users"]), {}, {}
    coarse = np.linspace(0.0, 1.0, cfg.scoring.w_grid_steps)
    step = coarse[1] - coarse[0]
    scored, labels = _score_validation_users(inputs, users, engaged, params, modes)
    seen: dict[str, dict[float, float]] = {mode: {} for mode in modes}
    calibrations: dict[tuple[str, float], Any] = {}
    by_user: dict[tuple[str, float], pd.Series] = {}

    def evaluate(ws: np.ndarray) -> None:
        for mode in modes:
            for w in (round(float(x), 6) for x in ws):
                if w in seen[mode]:
                    continue
                phi = np.concatenate([carousel_score(b.alpha, b.gamma, w) for b in scored[mode]])
                cal = fit_carousel_calibration(phi, np.concatenate(labels[mode]))
                calibrations[(mode, w)] = cal
                fn = carousel_calibration({"carousel_calibration": cal})
                built = pd.concat(
                    [
                        pages(b, w, params, inputs.catalog.item_ids, exam=exam, calibration=fn)
                        for b in scored[mode]
                    ],
                    ignore_index=True,
                )
                scores = page_ndcg_by_user(built, rel, params.slots, params.items_per_carousel)
                by_user[(mode, w)] = scores
                seen[mode][w] = float(np.mean(scores.to_numpy())) if len(scores) else np.nan

    evaluate(coarse)
    # α and γ live on different scales, so the best w can sit between two coarse points:
    # refine once around each mode's coarse optimum (pages only; the scores are reused)
    for mode in modes:
        best = max(seen[mode], key=lambda w: np.nan_to_num(seen[mode][w], nan=-1.0))
        evaluate(np.linspace(max(0.0, best - step), min(1.0, best + step), 11))
    grid = pd.DataFrame(
        [
            {"mode": mode, "w": w, "page_ndcg": v, "users": len(users)}
            for mode in modes
            for w, v in sorted(seen[mode].items())
        ]
    )
    return grid, calibrations, by_user


MODE_RESAMPLES = 2000


def choose_item_mode(
    grid: pd.DataFrame,
    configured: str,
    choose_w: bool,
    w: float,
    by_user: dict[tuple[str, float], pd.Series] | None = None,
    evidence: dict[str, Any] | None = None,
) -> str:
    """The item mode to serve: the configured one, or for "auto" the mode whose validation page
    NDCG_2D is higher (at its best w when w is searched, else at the configured w). Ties and an
    empty grid give "fixed", the cheaper mode (no engagement predictions at rank time).

    With each user's scores (`by_user`, from `w_grid_search`), "rerank" must also be better
    beyond chance: the 5th percentile of a paired bootstrap of the mean per-user difference
    (rerank − fixed, users scored in both) must be above 0. Validation sets are small (tens of
    users on the real grocery datasets), and a higher mean there is often noise that costs
    page recall on the test split. `evidence` (if given) receives the comparison."""
    if configured != "auto":
        return configured
    best: dict[str, tuple[float, float]] = {}
    for mode in ("fixed", "rerank"):
        rows = grid[grid["mode"] == mode].dropna(subset=["page_ndcg"]) if len(grid) else grid
        if not choose_w and len(rows):
            rows = rows[np.isclose(rows["w"].astype(float), w)]
        if len(rows):
            top = rows.loc[rows["page_ndcg"].astype(float).idxmax()]
            best[mode] = (float(top["page_ndcg"]), float(top["w"]))
    if "rerank" not in best or best["rerank"][0] <= best.get("fixed", (-np.inf, 0.0))[0]:
        return "fixed"
    if "fixed" not in best or not by_user:
        return "rerank"
    fixed = by_user.get(("fixed", round(best["fixed"][1], 6)))
    rerank = by_user.get(("rerank", round(best["rerank"][1], 6)))
    if fixed is None or rerank is None:
        return "rerank"
    from models.evaluation.page_eval import lift

    # the paired bootstrap `homepage evaluate` uses; a 90% interval's low end is the 5th percentile
    cmp = lift(
        pd.DataFrame({"ndcg": rerank}),
        pd.DataFrame({"ndcg": fixed}),
        ["ndcg"],
        resamples=MODE_RESAMPLES,
        confidence=0.90,
    ).iloc[0]
    if cmp["users"] < 2:
        return "fixed"
    low = float(cmp["diff_low"])
    if evidence is not None:
        evidence.update(
            {"rerank_minus_fixed": float(cmp["diff"]), "p05": low, "users": int(cmp["users"])}
        )
    return "rerank" if low > 0 else "fixed"
