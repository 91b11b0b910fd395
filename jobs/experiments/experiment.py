"""Experiment job (`homepage experiment`, DAG `homepage_experiment`): config overrides against
the champion config, evaluated on the same time split and compared in one MLflow experiment.

1. Plan (`plan`): the champion config is the config file alone (`--config`, else
   `conf/default.yaml` and `$HOMEPAGE_CONF`); the experiment config is the same plus the
   overrides. Refused, with the reason, when the overrides are empty, unknown or badly typed
   (`ConfigError`), change nothing, change only settings that cannot move a metric (`spark.*`,
   `serve.*`, `export.*`), set `scoring.w` while `scoring.choose_w` is true (the grid search
   would replace it), or touch `eval.*` / `mlflow.*` (those define how and where both sides are
   scored and logged: set them in the config file so both sides share them).
2. Evaluate (`evaluate_side`): each side runs `jobs.experiments.evaluate.run` (train before the split,
   pages as of it, scores on `[split, split + test_days)`) in its own evaluation lake:
       champion    <lake>/_eval/<split>-<champion hash[:8]>   (shared with `homepage evaluate`
                                                               and every experiment on it)
       experiment  <lake>/_experiments/<name>/experiment
   A side is not re-run when its record (`_experiment_eval.json` in its evaluation lake) says it
   was evaluated with the same config, split, test window, source-lake input files (paths, sizes,
   modification times) and code (`rerun=True` / `--rerun` forces it). An exclusive file lock per
   evaluation lake keeps concurrent runs (CLI and DAG) from writing one lake at once; an
   experiment lake last evaluated with another config (a reused name) is emptied first. The
   champion goes first: a new experiment lake starts from copies of its accepted events and
   feature tables when the overrides leave `ingest.*` and `features.*` alone
   (`seed_lake`), which saves the ingest and the training cutoff's features.
3. Compare (`compare`): the page metrics are recomputed per user for both sides against the
   champion side's truth (`jobs.experiments.evaluate.page_frames`), so each page metric gets the paired
   bootstrap lift of experiment over champion (`models.evaluation.page_eval.lift`). On generated lakes a
   simulated A/B test puts the champion's pages (control) against the experiment's (treatment).
   Engagement metrics and off-policy estimates are compared as they are. Written to
   `warehouse/reports/ds=<split>/experiments/<name>/comparison.{csv,md,json}` and `lift.png`,
   and logged to the MLflow experiment `<mlflow.experiment>-experiments` of the source lake: a
   parent run named after the experiment (overrides, config hashes, the comparison table as
   artifacts and as an MLflow table, differences and lifts as metrics) with two nested runs,
   `champion` and `experiment` (each side's metrics, params and plots).
4. Replicate (`seeds` or `splits`): each seed adds a replicate plan (`plan(...)["replicates"]`)
   in which both sides are trained again with `mf.seed` and `engagement.seed` set to it (a
   replicate's champion lake starts from the first champion lake's tables); each split date
   adds one of the same experiment on that split. `evaluate_all` and `compare_all` do steps 2-3
   for the plan and then each replicate, and `jobs.experiments.replicates` summarises the
   differences across the replicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from jobs.core.config import Config, ConfigError, load_config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, is_local, join, local_path, parse_ds, shift_ds

log = logging.getLogger(__name__)

SIDES = ("champion", "experiment")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RECORD = "_experiment_eval.json"
# overrides under these sections would make the two sides incomparable or log elsewhere
REFUSED_SECTIONS = {
    "eval": "eval.* decides how both sides are scored",
    "mlflow": "mlflow.* decides where both sides are logged",
}
# a new experiment lake starts from copies of the champion lake's ingested events and features
# (`seed_lake`) unless the overrides touch what ingest and the features depend on
SEED_TABLES = ("events", "quarantine", "items", "quarantine_items", "features")
SEED_BLOCKERS = ("ingest", "features")
# the training seeds a replicate (`seeds`) sets on both sides: the MF factors' initialisation and
# the engagement heads' user split, negative sample and tree subsampling
TRAINING_SEED_KEYS = ("mf.seed", "engagement.seed")
# settings that cannot change a metric: an experiment changing only these is refused
NO_EFFECT_SECTIONS = ("spark", "serve", "export")
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


# ---------------------------------------------------------------- overrides and the plan


def _value_str(value: Any) -> str:
    """A value as it is written after `key=` (read back by the config loader's YAML parsing)."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def flat_overrides(overrides: list[str] | tuple[str, ...] | Mapping[str, Any] | None) -> dict:
    """`["k=v", ...]` or `{"k": v}` -> `{"k": parsed value}` (YAML scalars, as `--set` reads
    them). A key given twice is an error."""
    import yaml

    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return {str(k).strip(): v for k, v in overrides.items()}
    out: dict[str, Any] = {}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. mf.factors=64)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key in out:
            raise ConfigError(f"override {key} is given twice")
        out[key] = yaml.safe_load(raw) if raw else ""
    return out


def overrides_from_params(
    params: Mapping[str, Any], known: Collection[str] | None = None
) -> list[str]:
    """The override list of a `homepage_experiment` DAG run: every param whose name is a dotted
    config key and is not null (null = keep the config's value): the typed params
    (`scoring.w`, `mf.factors`, ...) and any dotted key of the run conf, then the
    `extra_overrides` strings. A key set both ways is an error, and so is a run-conf key that
    is neither dotted nor in `known` (the DAG's params): a typo must not go unnoticed."""
    if known is not None:
        unknown = sorted(k for k in params if "." not in k and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown param(s) {', '.join(unknown)}: config overrides are dotted keys "
                "(e.g. mf.factors) or extra_overrides entries"
            )
    out: dict[str, str] = {}
    for key, value in params.items():
        if "." in key and value is not None:
            out[key] = f"{key}={_value_str(value)}"
    for item in params.get("extra_overrides") or []:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(
                f"extra_overrides entry {item!r} must look like key=value (e.g. mf.iterations=20)"
            )
        key = item.split("=", 1)[0].strip()
        if key in out:
            raise ConfigError(f"{key} is set twice: as a param and in extra_overrides")
        out[key] = item.strip()
    return list(out.values())


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k != "extra":  # spark.extra is one value
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def changed_keys(champion: Config, experiment: Config) -> dict[str, list[Any]]:
    """`{dotted key: [champion value, experiment value]}` for every value the two differ in."""
    a, b = _flatten(champion.to_dict()), _flatten(experiment.to_dict())
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def plan(
    lake: Lake | str,
    split_ds: str,
    overrides: list[str] | tuple[str, ...] | Mapping[str, Any] | None,
    *,
    name: str | None = None,
    config_path: str | None = None,
    test_days: int | None = None,
    seeds: Sequence[int] = (),
    splits: Sequence[str] = (),
) -> dict[str, Any]:
    """Check the experiment and fix its configs, test window and paths (a JSON-able dict: the
    DAG passes it between tasks). Raises ValueError (ConfigError) naming what is wrong.

    `seeds`: more training seeds. Each adds a replicate (`replicates`: plans of the same shape)
    in which both sides are trained again with `mf.seed` and `engagement.seed` set to it.
    `splits`: more split dates. Each adds a replicate of the same experiment on that split
    (its own test window of `test_days`). Both: the grid of every split (the experiment's and
    `splits`) with every training seed (the config's and `seeds`), split by split."""
    from jobs.experiments.evaluate import window_end

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    if not is_local(lake.root):
        raise ValueError(f"experiments need a lake on local disk, got {lake.root}")
    parse_ds(split_ds)
    flat = flat_overrides(overrides)
    if not flat:
        raise ValueError(
            "no overrides: an experiment needs at least one key=value that changes the config "
            "(e.g. --set page.beam_width=1)"
        )
    refused = sorted(k for k in flat if k.split(".", 1)[0] in REFUSED_SECTIONS)
    if refused:
        why = "; ".join(sorted({REFUSED_SECTIONS[k.split(".", 1)[0]] for k in refused}))
        raise ConfigError(
            f"cannot override {', '.join(refused)} in an experiment ({why}): set them in the "
            "config file (--config) so the champion and the experiment share them"
        )
    champion = load_config(config_path)
    experiment = load_config(config_path, flat)
    changed = changed_keys(champion, experiment)
    if champion.hash() == experiment.hash() or not changed:
        raise ValueError(
            "the overrides change nothing: "
            + ", ".join(f"{k}={_value_str(v)}" for k, v in flat.items())
            + " already hold in the champion config"
        )
    if all(k.split(".", 1)[0] in NO_EFFECT_SECTIONS for k in changed):
        raise ValueError(
            f"the overrides change only {', '.join(changed)}, which cannot change any metric "
            f"({', '.join(s + '.*' for s in NO_EFFECT_SECTIONS)}): nothing to compare"
        )
    if "scoring.w" in changed and experiment.scoring.choose_w:
        raise ValueError(
            "scoring.w has no effect while scoring.choose_w is true (the grid search picks w): "
            "also set scoring.choose_w=false"
        )
    name = name or f"exp-{experiment.hash()[:8]}"
    if not NAME_RE.match(name):
        raise ValueError(
            f"experiment name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    days = test_days if test_days is not None else champion.eval.test_days
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"test_days must be an integer >= 1, got {test_days!r}")
    end = window_end(lake, split_ds, days)
    root = local_path(lake.root)
    seeds = _check_seeds(seeds, flat, champion)
    splits = _check_splits(splits, split_ds)
    p = {
        "lake": lake.root,
        "split_ds": split_ds,
        "test_days": days,
        "test_end": end,
        "name": name,
        "overrides": [f"{k}={_value_str(v)}" for k, v in flat.items()],
        "changed": changed,
        "config_path": os.path.abspath(config_path) if config_path else None,
        "champion_hash": champion.hash(),
        "experiment_hash": experiment.hash(),
        "champion_dir": os.path.join(root, "_eval", f"{split_ds}-{champion.hash()[:8]}"),
        "experiment_dir": os.path.join(root, "_experiments", name, "experiment"),
        "report_dir": local_path(join(lake.reports(split_ds), "experiments", name)),
        "seeds": seeds,
        "splits": splits,
    }
    p["replicates"] = [_replicate(p, seed, flat) for seed in seeds]
    for split in splits:
        at = _split_replicate(p, lake, split)
        p["replicates"] += [at, *(_replicate(at, seed, flat) for seed in seeds)]
    return p


def _check_splits(splits: Sequence[str], split_ds: str) -> list[str]:
    splits = list(splits or [])
    for s in splits:
        if not isinstance(s, str):
            raise ValueError(f"splits must be dates (YYYY-MM-DD), got {s!r}")
        parse_ds(s)
    if len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct, got {splits}")
    if split_ds in splits:
        raise ValueError(f"split {split_ds} is the experiment's own split: give other dates")
    return splits


def _split_replicate(p: Mapping[str, Any], lake: Lake, split: str) -> dict[str, Any]:
    """The plan of the same experiment on another split date: the same configs, its own test
    window, champion lake (`homepage evaluate`'s for that split), experiment lake and report."""
    from jobs.experiments.evaluate import window_end

    try:
        end = window_end(lake, split, p["test_days"])
    except ValueError as exc:
        raise ValueError(f"split {split}: {exc}") from exc
    root = local_path(p["lake"])
    return {
        **{k: p[k] for k in ("lake", "test_days", "name", "overrides", "changed", "config_path")},
        **{k: p[k] for k in ("champion_hash", "experiment_hash")},
        "split_ds": split,
        "test_end": end,
        "replicate_split": split,
        "champion_dir": os.path.join(root, "_eval", f"{split}-{p['champion_hash'][:8]}"),
        "experiment_dir": os.path.join(root, "_experiments", p["name"], f"experiment-{split}"),
        "report_dir": local_path(join(lake.reports(split), "experiments", p["name"])),
    }


def _check_seeds(seeds: Sequence[int], flat: Mapping[str, Any], champion: Config) -> list[int]:
    seeds = list(seeds or [])
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be integers >= 0, got {bad}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if not seeds:
        return seeds
    clash = sorted(k for k in flat if k in TRAINING_SEED_KEYS)
    if clash:
        raise ValueError(
            f"{', '.join(clash)} cannot be overridden together with seeds: each replicate sets "
            f"{' and '.join(TRAINING_SEED_KEYS)} on both sides"
        )
    dup = [s for s in seeds if champion.mf.seed == s == champion.engagement.seed]
    if dup:
        raise ValueError(
            f"seed {dup[0]} is the config's own training seed (mf.seed and engagement.seed), "
            "which the experiment itself is trained with: give other seeds"
        )
    return seeds


def _replicate(p: Mapping[str, Any], seed: int, flat: Mapping[str, Any]) -> dict[str, Any]:
    """The plan `p` (the experiment, or a split replicate) trained again with training seed
    `seed` on both sides: its own champion lake (the champion config with the seed is a config
    of its own), experiment lake and report; its champion lake starts from `p`'s champion
    lake's tables."""
    base = [f"{k}={seed}" for k in TRAINING_SEED_KEYS]
    champion = load_config(p["config_path"], base)
    experiment = load_config(
        p["config_path"], [*base, *(f"{k}={_value_str(v)}" for k, v in flat.items())]
    )
    root = local_path(p["lake"])
    at = {"replicate_split": p["replicate_split"]} if "replicate_split" in p else {}
    lake_name = f"experiment-{p['replicate_split']}-seed{seed}" if at else f"experiment-seed{seed}"
    return {
        **{k: p[k] for k in ("lake", "split_ds", "test_days", "test_end", "name", "overrides")},
        "changed": p["changed"],
        "config_path": p["config_path"],
        **at,
        "seed": seed,
        "base": base,
        "champion_hash": champion.hash(),
        "experiment_hash": experiment.hash(),
        "champion_dir": os.path.join(root, "_eval", f"{p['split_ds']}-{champion.hash()[:8]}"),
        "experiment_dir": os.path.join(root, "_experiments", p["name"], lake_name),
        "report_dir": os.path.join(p["report_dir"], f"seed-{seed}"),
        "seed_source": {"dir": p["champion_dir"], "hash": p["champion_hash"]},
        "experiment_seed_source": {"dir": p["experiment_dir"], "hash": p["experiment_hash"]},
    }


def side_config(p: Mapping[str, Any], side: str) -> Config:
    """The config of one side of a plan (checked against the hash the plan recorded)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    overrides = [*p.get("base", []), *(p["overrides"] if side == "experiment" else [])]
    cfg = load_config(p["config_path"], overrides or None)
    if cfg.hash() != p[f"{side}_hash"]:
        raise RuntimeError(
            f"the {side} config changed since the experiment was planned ({p[f'{side}_hash']} -> "
            f"{cfg.hash()}): was the config file or $HOMEPAGE_CONF edited? Start it again"
        )
    return cfg


# ---------------------------------------------------------------- evaluating one side


def _input_fingerprint(lake_root: str) -> str:
    """Paths, sizes and modification times of the source lake's input files."""
    from jobs.experiments.evaluate import INPUT_TABLES

    h = hashlib.sha256()
    for table in INPUT_TABLES:
        top = os.path.join(lake_root, table)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for fn in sorted(filenames):
                st = os.stat(os.path.join(dirpath, fn))
                rel = os.path.relpath(os.path.join(dirpath, fn), lake_root)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(p: Mapping[str, Any], side: str) -> str:
    """What an evaluation of one side depends on: config, split, test window, inputs, code."""
    return _fingerprint(p, p[f"{side}_hash"])


def _fingerprint(p: Mapping[str, Any], config_hash: str) -> str:
    from jobs.experiments.evaluate import code_fingerprint

    blob = json.dumps(
        {
            "config": config_hash,
            "split_ds": p["split_ds"],
            "test_days": p["test_days"],
            "test_end": p["test_end"],
            "inputs": _input_fingerprint(local_path(p["lake"])),
            "code": code_fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _reusable(record_path: str, fp: str) -> dict[str, Any] | None:
    if not os.path.exists(record_path):
        return None
    try:
        with open(record_path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    res = rec.get("result") or {}
    pages = os.path.join(str(res.get("eval_lake", "")), "warehouse", "pages")
    if rec.get("fingerprint") != fp or not os.path.isdir(pages):
        return None
    return rec


def _empty_experiment_lake(work: str, lake_root: str) -> None:
    """Remove an experiment lake's outputs (keep the links to the source's input tables)."""
    base = os.path.join(local_path(lake_root), "_experiments") + os.sep
    if not os.path.abspath(work).startswith(base):  # never anything but an experiment lake
        raise RuntimeError(f"refusing to empty {work}: not under {base}")
    for entry in os.listdir(work):
        path = os.path.join(work, entry)
        if os.path.islink(path):
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def evaluate_side(
    p: Mapping[str, Any],
    side: str,
    *,
    rerun: bool = False,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Evaluate one side of a plan in its evaluation lake (or reuse an up-to-date evaluation).
    Returns small facts for XCom: the record's path, the evaluation lake, whether reused."""
    from jobs.core import io
    from jobs.experiments import evaluate

    cfg = side_config(p, side)
    lake = Lake(p["lake"])
    work = p[f"{side}_dir"]
    record_path = os.path.join(work, RECORD)
    label = (
        f"champion-{p['champion_hash'][:8]}" if side == "champion" else f"experiment-{p['name']}"
    )
    if side == "experiment" and "seed" in p:
        label += f"-seed{p['seed']}"  # (a split replicate reports under its own split)
    t0 = time.perf_counter()
    with evaluate.locked(work, say=say):
        fp = fingerprint(p, side)
        rec = None if rerun else _reusable(record_path, fp)
        if rec is not None:
            say(f"[experiment {p['name']}] {side}: reusing the evaluation in {work}")
            return {"record": record_path, "eval_lake": work, "reused": True, "seeded": []}
        old = _read_record_hash(record_path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(record_path)  # a run that dies half-way leaves no record claiming the lake
        if side == "experiment" and os.path.isdir(work) and old != p["experiment_hash"]:
            say(f"[experiment {p['name']}] emptying {work} (last evaluated config: {old})")
            _empty_experiment_lake(work, lake.root)
        seeded = seed_lake(p, side, say=say)
        if seeded:
            say(f"[experiment {p['name']}] the {side} starts from the tables {', '.join(seeded)}")
        say(f"[experiment {p['name']}] evaluating the {side} in {work}")
        result = evaluate.run(
            lake,
            p["split_ds"],
            cfg,
            p["test_days"],
            work_dir=work,
            label=label,
            log_mlflow=False,
            lock=False,  # this side holds the lake's lock already
            say=say,
        )
        seconds = round(time.perf_counter() - t0, 1)
        io.write_json(
            record_path,
            {
                "fingerprint": fp,
                "side": side,
                "config_hash": cfg.hash(),
                "overrides": p["overrides"] if side == "experiment" else [],
                "seconds": seconds,
                "seeded": seeded,
                "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "result": result,
            },
        )
    say(f"[experiment {p['name']}] {side} evaluated in {seconds:.0f}s")
    return {
        "record": record_path,
        "eval_lake": work,
        "reused": False,
        "seeded": seeded,
        "seconds": seconds,
    }


def seed_lake(p: Mapping[str, Any], side: str, *, say: Callable[[str], None] = log.info) -> list:
    """Start a new evaluation lake from copies of an up-to-date evaluation lake's accepted
    events and feature tables, where what ingest and the features depend on is the same: the
    experiment lake from the champion lake when the overrides leave `ingest.*` and `features.*`
    alone, and a replicate's lakes (another training seed) from the first champion lake, or,
    where the overrides do touch ingest or the features, its experiment lake from the first
    experiment lake. The new lake then skips re-ingesting and rebuilding the training cutoff's
    features. (The evaluation still rebuilds the split's features.) Returns the tables copied."""
    from jobs.experiments import evaluate

    if side == "experiment":
        if not any(k.split(".", 1)[0] in SEED_BLOCKERS for k in p["changed"]):
            src_dir, src_hash = p["champion_dir"], p["champion_hash"]
        elif p.get("experiment_seed_source"):  # a replicate: the same ingest and features
            src_dir, src_hash = (p["experiment_seed_source"][k] for k in ("dir", "hash"))
        else:
            return []
    elif p.get("seed_source"):
        src_dir, src_hash = p["seed_source"]["dir"], p["seed_source"]["hash"]
    else:
        return []
    work = p[f"{side}_dir"]
    dst = os.path.join(work, "warehouse")
    if os.path.exists(dst):
        return []  # not a new lake: it keeps its own outputs
    src = os.path.join(src_dir, "warehouse")
    copied = []
    with evaluate.locked(src_dir, shared=True, say=say):
        if _reusable(os.path.join(src_dir, RECORD), _fingerprint(p, src_hash)) is None:
            return []
        for table in SEED_TABLES:
            if os.path.isdir(os.path.join(src, table)):
                shutil.copytree(os.path.join(src, table), os.path.join(dst, table))
                copied.append(table)
    if copied:  # the source's evaluation is up to date: the current code wrote these
        evaluate.stamp_code(work)
    return copied


def _read_record_hash(record_path: str) -> str | None:
    try:
        with open(record_path) as f:
            return json.load(f).get("config_hash")
    except (OSError, ValueError):
        return None


def _load_record(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- comparing


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    from jobs.experiments.evaluate import flat_metrics

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


def compare(
    p: Mapping[str, Any],
    champion_record: str,
    experiment_record: str,
    *,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Paired comparison of the two evaluated sides; writes the report and logs the MLflow
    parent run with its two child runs. Returns the whole comparison (see `run`)."""
    import pandas as pd

    from jobs.core import io
    from jobs.experiments import evaluate
    from models.evaluation.page_eval import USER_METRICS, evaluate_pages, lift
    from models.evaluation.plots import lift_plot

    cfg_c = side_config(p, "champion")
    rec_c, rec_e = _load_record(champion_record), _load_record(experiment_record)
    res_c, res_e = rec_c["result"], rec_e["result"]
    for rec, side in ((rec_c, "champion"), (rec_e, "experiment")):
        if rec.get("config_hash") != p[f"{side}_hash"]:
            raise RuntimeError(f"{side} record {rec.get('config_hash')} is not this plan's config")
    if res_c["test_window"] != res_e["test_window"]:
        raise RuntimeError(
            f"the sides were scored on different windows: {res_c['test_window']} vs "
            f"{res_e['test_window']}"
        )
    split, end, name = p["split_ds"], p["test_end"], p["name"]
    ec = cfg_c.eval

    say(f"[experiment {name}] per-user page metrics of both sides against the same truth")
    with (
        evaluate.locked(p["champion_dir"], shared=True, say=say),
        evaluate.locked(p["experiment_dir"], shared=True, say=say),
    ):
        pages, truth, history, items, _ = evaluate.page_frames(
            Lake(res_c["eval_lake"]), split, end, cfg_c
        )
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

    out = p["report_dir"]
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
    summary = {
        "name": name,
        "split_ds": split,
        "test_window": res_c["test_window"],
        "users": int(len(users)),
        "overrides": list(p["overrides"]),
        "changed": dict(p["changed"]),
        "config_path": p["config_path"],
    }
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
    from jobs.experiments.evaluate import flat_metrics

    exp_name = f"{cfg.mlflow.experiment}-experiments"
    exp_id = experiment(Lake(p["lake"]), cfg, name=exp_name)
    w = summary["test_window"]
    window = f"{w[0]}..{shift_ds(w[1], -1)}"  # inclusive, as `homepage evaluate` logs it
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
        metrics: dict[str, float] = {}
        for r in table.to_dict(orient="records"):
            for col, prefix in (("difference", "diff"), ("lift", "lift")):
                if finite(r[col]):
                    metrics[mlflow_key(f"{prefix}.{r['metric']}")] = float(r[col])
            for col in ("ci_low", "ci_high"):
                if finite(r[col]):
                    metrics[mlflow_key(f"lift_{col}.{r['metric']}")] = float(r[col])
        mlflow.log_metrics(metrics)
        for f in (files["csv"], files["md"], *plots):
            mlflow.log_artifact(f)
        mlflow.log_table(data=table, artifact_file="comparison_table.json")
        ids["parent_run_id"] = parent.info.run_id
        for side, info in sides.items():
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
                ids[f"{side}_run_id"] = child.info.run_id
    return ids


# ---------------------------------------------------------------- reports


def fmt_value(v: Any, pct: bool = False, sign: bool = False) -> str:
    if not finite(v):
        return "—"
    return f"{v:+.1%}" if pct else f"{v:+.4f}" if sign else f"{v:.4f}"


def metric_objective(r: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """`evaluate.repeated_objectives`' split for rows keyed by `metric`
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
    from jobs.experiments.evaluate import repeated_note, repeated_objectives

    repeats = repeated_objectives(rows, metric_objective)
    keep = [r for r in rows if (metric_objective(r) or ("",))[0] not in repeats]
    return keep, repeated_note(repeats, where)


def _interval(r: Mapping[str, Any]) -> str:
    if not finite(r.get("lift")):
        return ""
    return f"{fmt_value(r['lift'], True)} [{fmt_value(r['ci_low'], True)}, {fmt_value(r['ci_high'], True)}]"


def markdown(summary: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    """The comparison as a Markdown document (the report's comparison.md)."""
    w = summary["test_window"]
    lines = [
        f"# Experiment `{summary['name']}` vs champion",
        "",
        f"Split {summary['split_ds']}, test window [{w[0]}, {w[1]}), {summary['users']:,} "
        "evaluated users.",
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
    w = result["test_window"]
    rows, note = shown_rows(result["comparison"], "comparison.csv")
    width = max([len("metric"), *(len(r["metric"]) for r in rows)]) + 2
    lines = [
        f"experiment {result['name']} vs champion: split {result['split_ds']}, test window "
        f"[{w[0]}, {w[1]}), {result['users']:,} users",
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


# ---------------------------------------------------------------- the job


def run(
    lake: Lake | str,
    split_ds: str,
    overrides: list[str] | tuple[str, ...] | Mapping[str, Any] | None,
    *,
    name: str | None = None,
    config_path: str | None = None,
    test_days: int | None = None,
    rerun: bool = False,
    seeds: Sequence[int] = (),
    splits: Sequence[str] = (),
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Plan, evaluate the champion and the experiment, compare and log (module doc). Returns
    the comparison: both sides' `jobs.experiments.evaluate.run` results (`champion`, `experiment`), the rows
    (`comparison`), the simulated A/B (`ab_test`), files, plots, MLflow run ids (`mlflow`),
    whether each side's evaluation was reused (`reused`), the champion tables a new experiment
    lake started from (`seeded`) and the plan (`plan`); with `seeds` or `splits`, also each
    replicate's comparison (`replicates`) and the summary across them (`seeds` or `splits`, see
    `jobs.experiments.replicates.summarise`)."""
    p = plan(
        lake,
        split_ds,
        overrides,
        name=name,
        config_path=config_path,
        test_days=test_days,
        seeds=seeds,
        splits=splits,
    )
    say(
        f"[experiment {p['name']}] split {split_ds}, test window [{split_ds}, {p['test_end']}), "
        f"changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in p["changed"].items())
    )
    done = {side: evaluate_all(p, side, rerun=rerun, say=say) for side in SIDES}
    result = compare_all(p, done["champion"], done["experiment"], say=say)
    result["reused"] = {side: done[side]["reused"] for side in SIDES}
    result["seeded"] = done["experiment"]["seeded"]
    result["plan"] = dict(p)
    return result


def evaluate_all(
    p: Mapping[str, Any],
    side: str,
    *,
    rerun: bool = False,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """`evaluate_side` for the plan and then for each of its replicates (other training seeds;
    their facts in `replicates`, in the plan's order)."""
    out = evaluate_side(p, side, rerun=rerun, say=say)
    reps = []
    for rp in p.get("replicates") or []:
        what = ", ".join(
            ([f"split {rp['split_ds']}"] if "replicate_split" in rp else [])
            + ([f"training seed {rp['seed']}"] if "seed" in rp else [])
        )
        say(f"[experiment {p['name']}] {side}, {what}")
        reps.append(evaluate_side(rp, side, rerun=rerun, say=say))
    return {**out, "replicates": reps} if reps else out


def compare_all(
    p: Mapping[str, Any],
    champion: Mapping[str, Any],
    experiment: Mapping[str, Any],
    *,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """`compare` the plan's sides (the facts `evaluate_all` returned) and each replicate's; with
    replicates, also the differences across them (`seeds` or `splits`,
    `jobs.experiments.replicates`)."""
    from jobs.experiments import replicates as experiment_replicates

    result = compare(p, champion["record"], experiment["record"], say=say)
    reps = p.get("replicates") or []
    if not reps:
        return result
    if len(champion.get("replicates") or []) != len(reps) or len(
        experiment.get("replicates") or []
    ) != len(reps):
        raise RuntimeError("each replicate needs both sides evaluated: evaluate them first")
    replicates = [
        compare(rp, c["record"], e["record"], say=say)
        for rp, c, e in zip(reps, champion["replicates"], experiment["replicates"], strict=True)
    ]
    result["replicates"] = replicates
    summary = experiment_replicates.summarise(p, result, replicates, say=say)
    result[summary["kind"]] = summary
    return result


__all__ = [
    "changed_keys",
    "compare",
    "compare_all",
    "comparison_rows",
    "evaluate_all",
    "evaluate_side",
    "flat_overrides",
    "format_comparison",
    "markdown",
    "overrides_from_params",
    "plan",
    "run",
    "side_config",
]
