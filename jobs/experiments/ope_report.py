"""Text report of the OPE job: aligned tables of a `jobs.experiments.ope.run` result."""

from __future__ import annotations

from typing import Any

from models.evaluation.ope import ESTIMATORS


def _fmt(x: float | None, digits: int = 5) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(width) if i == 0 else c.rjust(width)
            for i, (c, width) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def _estimator_rows(
    sec: dict, observed: dict | None = None, comparison: dict | None = None
) -> list[str]:
    head = ["estimator", "estimate", "95% CI", "se"]
    if comparison:
        head += ["obs in CI", "rel. error"]
    rows = [head]
    for name in ESTIMATORS:
        e = sec["estimators"][name]
        row = [
            name.upper() if name != "snips" else "SNIPS",
            _fmt(e["estimate"]),
            f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]",
            _fmt(e["se"]),
        ]
        if comparison:
            c = comparison[name]
            rel = c["relative_error"]
            row += ["yes" if c["observed_in_ci"] else "no", "-" if rel is None else f"{rel:+.1%}"]
        rows.append(row)
    lg = sec["logging"]
    rows.append(
        [
            "logging (observed)",
            _fmt(lg["estimate"]),
            f"[{_fmt(lg['ci_low'])}, {_fmt(lg['ci_high'])}]",
            _fmt(lg["se"]),
            *([""] * (len(head) - 4)),
        ]
    )
    if observed:
        rows.append(
            [
                "target observed",
                _fmt(observed["estimate"]),
                f"[{_fmt(observed['ci_low'])}, {_fmt(observed['ci_high'])}]",
                _fmt(observed["se"]),
                *([""] * (len(head) - 4)),
            ]
        )
    info = f"rounds {sec['rounds']:,}  match share {sec['match_share']:.3f}  ESS {sec['ess']:,.0f}  mean weight {sec['mean_weight']:.3f}"
    return [info, *_table(rows)]


def format_report(result: dict[str, Any]) -> str:
    """Aligned text tables of a `run` result."""
    lines = [
        f"OPE {result.get('lake', '')} split {result.get('split_ds', '')} ({result.get('kind', '')}, events from {result.get('events_source', '')})"
    ]
    chk = result.get("obd_check")
    if chk:
        lines += [
            "",
            f"OBD check: BTS click rate estimated from the random log ({chk['bts_distribution']} distribution)",
        ]
        for name, sec in [("overall", chk["overall"]), *chk["campaigns"].items()]:
            lines += ["", f"[{name}]", *_estimator_rows(sec, sec["observed"], sec["comparison"])]
    lp = result.get("learned_policy")
    if lp:
        lines += ["", f"Learned policy ({lp['kind']}): round = {lp['round']}"]
        if lp["kind"] == "obd":
            for part in ("random", "bts"):
                sec = lp.get(part)
                if sec and sec.get("rounds"):
                    lines += [
                        "",
                        f"[{part} rounds] skipped {sec['skipped_rounds']}, target source {sec['target_source']}",
                        *_estimator_rows(sec),
                    ]
        else:
            lines += [
                f"target tiers {lp['target_tiers']}",
                f"examination: {lp['examination']['source']}",
                "",
                *_estimator_rows(lp),
            ]
            pu = lp["per_unit"]
            rows = [["per impression", "estimate", "95% CI"]]
            for name in (*ESTIMATORS, "logging"):
                e = pu[name]
                rows.append(
                    [name, _fmt(e["estimate"]), f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"]
                )
            lines += ["", *_table(rows)]
        rows = [["policy (window)", "clicks/impression", "95% CI", "impressions"]]
        for pol, o in lp["observed_by_policy"].items():
            rows.append(
                [
                    pol,
                    _fmt(o["estimate"]),
                    f"[{_fmt(o['ci_low'])}, {_fmt(o['ci_high'])}]",
                    f"{o['n']:,}",
                ]
            )
        lines += ["", *_table(rows)]
    return "\n".join(lines)
