"""A model bundle: everything the rank step needs from one training run, in one directory.

`warehouse/models/ds=<ds>/<config hash>/` (one bundle per ds and config) holds `mf_item.npz`, `mf_category.npz` (factors fitted on all
data before `ds`), `engagement/` (calibrated XGBoost heads, see models/ranking/engagement.py),
`holdout.parquet` (the held-out training examples the promotion gate compares models on) and
`MODEL.json` (versions, the chosen w and item mode, metrics). The MLflow registry points at
bundles: each registered version carries the bundle's path in its `bundle` tag, and the rank
step loads whichever version holds the `champion` alias.

On a remote lake (s3a://…) the train step builds the bundle locally and uploads it with a
`_COMPLETE` marker last (jobs/core/io.py); `read_bundle` refuses a bundle without it and loads the
files it needs from a temporary local copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from jobs.core import io, remote
from jobs.core.config import Config
from jobs.core.errors import RegistryError
from jobs.core.lake import Lake, join, local_path


class NoChampion(RegistryError):
    """No registered model version holds the alias the rank step needs."""


@dataclass(frozen=True)
class Bundle:
    path: str
    info: dict[str, Any]
    mf_item: Any  # models.ranking.mf.MFModel
    mf_cat: Any
    engagement: Any  # models.ranking.engagement_model.EngagementModel | None
    registry_version: str | None = None

    @property
    def model_version(self) -> str:
        return str(self.info["model_version"])

    @property
    def w(self) -> float:
        return float(self.info["w"])

    @property
    def item_mode(self) -> str:
        return str(self.info.get("item_mode", "fixed"))


def read_bundle(path: str, registry_version: str | None = None) -> Bundle:
    if io.is_remote(path):
        return _read_remote_bundle(path, registry_version)
    from models.ranking.engagement_model import EngagementModel
    from models.ranking.mf import MFModel

    info = io.read_json(join(path, "MODEL.json"))
    local = local_path(path)
    eng_dir = os.path.join(local, "engagement")
    engagement = EngagementModel.load(eng_dir) if os.path.isdir(eng_dir) else None
    return Bundle(
        path=path,
        info=info,
        mf_item=MFModel.load(os.path.join(local, "mf_item.npz")),
        mf_cat=MFModel.load(os.path.join(local, "mf_category.npz")),
        engagement=engagement,
        registry_version=registry_version,
    )


def _read_remote_bundle(path: str, registry_version: str | None) -> Bundle:
    """A bundle on an object store: complete (its `_COMPLETE` marker and every file it lists),
    its models loaded from a temporary local copy (they load fully into memory)."""
    import shutil

    from models.ranking.engagement_model import EngagementModel
    from models.ranking.mf import MFModel

    files = remote.check_complete(path, "model bundle")
    info = io.read_json(join(path, "MODEL.json"))
    has_engagement = any(n.startswith("engagement/") for n in files)
    tmp = remote.scratch_dir("bundle")
    try:
        remote.download(
            path,
            tmp,
            ["mf_item.npz", "mf_category.npz", *(["engagement"] if has_engagement else [])],
        )
        eng_dir = os.path.join(tmp, "engagement")
        return Bundle(
            path=path,
            info=info,
            mf_item=MFModel.load(os.path.join(tmp, "mf_item.npz")),
            mf_cat=MFModel.load(os.path.join(tmp, "mf_category.npz")),
            engagement=EngagementModel.load(eng_dir) if has_engagement else None,
            registry_version=registry_version,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_bundle(lake: Lake, cfg: Config, alias: str = "champion") -> Bundle:
    """The bundle of the registered version holding `alias`."""
    from jobs.daily.registry import version_for

    version = version_for(lake, cfg, alias)
    if version is None:
        raise NoChampion(
            f"no version of registered model {cfg.gate.model_name!r} has alias {alias!r}: "
            "run the train and promote steps first"
        )
    path = (version.tags or {}).get("bundle")
    if not path:
        raise NoChampion(
            f"{cfg.gate.model_name} version {version.version} has no 'bundle' tag: it was not "
            "registered by the train step"
        )
    return read_bundle(path, registry_version=str(version.version))


def load_version(lake: Lake, cfg: Config, version: str) -> Bundle:
    """The bundle of registered version `version` (e.g. the champion of a past day)."""
    from jobs.daily.registry import get_version

    mv = get_version(lake, cfg, version)
    path = (mv.tags or {}).get("bundle")
    if not path:
        raise NoChampion(
            f"{cfg.gate.model_name} version {mv.version} has no 'bundle' tag: it was not "
            "registered by the train step"
        )
    return read_bundle(path, registry_version=str(mv.version))


# MODEL.json fields that differ between two trainings of the same bundle: ids, durations, and
# whether the cutoff's feature tables were built by this run or found (same tables either way)
PER_RUN_FIELDS = ("run_id", "registry_version", "timings", "mf_fit_seconds", "cutoff_features")


def fingerprint(path: str) -> str:
    """sha256 of a bundle's content: its files' bytes, MODEL.json without its per-run fields.

    Training is deterministic (seeded, fixed thread counts), so re-training a day with the
    same data and config gives the same fingerprint: the train step then re-uses the version
    registered the first time instead of registering a copy (see jobs/daily/train.py).
    """
    import hashlib
    import json

    root = local_path(path)
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(d, name)
            rel = os.path.relpath(full, root)
            if rel == "MODEL.json":
                info = io.read_json(full)
                data = json.dumps(
                    {k: v for k, v in info.items() if k not in PER_RUN_FIELDS},
                    sort_keys=True,
                    default=str,
                ).encode()
            else:
                with open(full, "rb") as f:
                    data = f.read()
            h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()
