"""An experiment's plan: the overrides (from `--set` or the DAG's params), the checks that
refuse an experiment that cannot be run or compared, the configs of both sides, their
evaluation lakes and report folders, and the replicates (other training seeds, other splits)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from jobs.core.config import Config, ConfigError, load_config
from jobs.core.errors import EvaluationError
from jobs.core.lake import Lake, is_local, join, local_path, parse_ds

log = logging.getLogger(__name__)


SIDES = ("champion", "experiment")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# overrides under these sections would make the two sides incomparable or log elsewhere
REFUSED_SECTIONS = {
    "eval": "eval.* decides how both sides are scored",
    "mlflow": "mlflow.* decides where both sides are logged",
}
# the training seeds a replicate (`seeds`) sets on both sides: the MF factors' initialisation and
# the engagement heads' user split, negative sample and tree subsampling
TRAINING_SEED_KEYS = ("mf.seed", "engagement.seed")
# settings that cannot change a metric: an experiment changing only these is refused
NO_EFFECT_SECTIONS = ("spark", "serve", "export")


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
    from jobs.experiments.evaluation_lake import window_end

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    if not is_local(lake.root):
        raise ValueError(f"experiments need a lake on local disk, got {lake.root}")
    parse_ds(split_ds)
    flat = flat_overrides(overrides)
    _check_override_keys(flat)
    champion = load_config(config_path)
    experiment = load_config(config_path, flat)
    changed = _checked_changes(flat, champion, experiment)
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


def _check_override_keys(flat: Mapping[str, Any]) -> None:
    """At least one override, and none under a section both sides must share."""
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


def _checked_changes(
    flat: Mapping[str, Any], champion: Config, experiment: Config
) -> dict[str, list[Any]]:
    """`changed_keys` of the two configs, refused when the overrides change nothing, only
    settings that cannot move a metric, or `scoring.w` while the grid search picks it."""
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
    return changed


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
    from jobs.experiments.evaluation_lake import window_end

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
        raise EvaluationError(
            f"the {side} config changed since the experiment was planned ({p[f'{side}_hash']} -> "
            f"{cfg.hash()}): was the config file or $HOMEPAGE_CONF edited? Start it again"
        )
    return cfg
