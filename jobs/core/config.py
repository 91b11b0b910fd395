"""One typed configuration, loaded from `conf/*.yaml` and overridden by DAG params or CLI flags.

Overrides are dotted keys (`mf.factors=64`, `page.slots=8`); values are parsed as YAML scalars
and checked against the field's type. Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.core.config_sections import (
    EngagementConfig,
    EvalConfig,
    ExportConfig,
    FeatureConfig,
    GateConfig,
    IngestConfig,
    MFConfig,
    MLflowConfig,
    PageConfig,
    RefreshConfig,
    ScoringConfig,
    ServeConfig,
    SparkConfig,
    TrainingConfig,
)
from jobs.core.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    mf: MFConfig = field(default_factory=MFConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    engagement: EngagementConfig = field(default_factory=EngagementConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    page: PageConfig = field(default_factory=PageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of every value, logged with runs and written to manifests."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{key} must be an integer, got {value!r}") from exc
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key} must be a number, got {value!r}") from exc
    if typ is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _flat_mapping(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(typ)
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def _flat_mapping(value: dict[Any, Any], prefix: str = "") -> dict[str, str]:
    """A mapping of dotted names to strings: `--set spark.extra.spark.sql.ansi.enabled=false`
    arrives nested ({"spark": {"sql": ...}}) and is flattened back to `spark.sql.ansi.enabled`;
    booleans are written as Spark and YAML spell them (true/false)."""
    out: dict[str, str] = {}
    for k, v in value.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_mapping(v, f"{name}."))
        elif isinstance(v, bool):
            out[name] = "true" if v else "false"
        else:
            out[name] = str(v)
    return out


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(prefix + u for u in unknown)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            sub = data[f.name] or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"{prefix}{f.name} must be a mapping")
            kwargs[f.name] = _build(typ, sub, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], typ, prefix + f.name)
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(pairs: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`["mf.factors=64", "scoring.w=0.5"]` or `{"mf.factors": 64}` -> nested dict."""
    if not pairs:
        return {}
    items: list[tuple[str, Any]]
    if isinstance(pairs, dict):
        items = list(pairs.items())
    else:
        items = []
        for p in pairs:
            if "=" not in p:
                raise ConfigError(f"override {p!r} must look like key=value (e.g. mf.factors=64)")
            k, v = p.split("=", 1)
            items.append((k.strip(), yaml.safe_load(v) if v.strip() else ""))
    nested: dict[str, Any] = {}
    for key, value in items:
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override key {key!r} is malformed")
        cur = nested
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return nested


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Defaults <- conf/default.yaml <- `path` (else the HOMEPAGE_CONF file) <- overrides.

    A config file is an overlay: it holds only what differs from conf/default.yaml (e.g.
    conf/cluster.yaml). `path` must exist; HOMEPAGE_CONF is skipped when `path` is given."""
    data: dict[str, Any] = {}
    files = [CONF_DIR / "default.yaml"]
    env_file = os.environ.get("HOMEPAGE_CONF")
    if path:
        if not Path(path).exists():
            raise ConfigError(f"config file {path} does not exist")
        files.append(Path(path))
    elif env_file:
        files.append(Path(env_file))
    for f in files:
        if not f.exists():
            continue
        loaded = yaml.safe_load(f.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {f} must hold a mapping")
        data = _deep_merge(data, loaded)
    data = _deep_merge(data, parse_overrides(overrides))
    return _build(Config, data, "")
