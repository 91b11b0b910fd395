"""The daily rank's per-user page state: what an intra-day refresh needs to rebuild a page.

`warehouse/pages/ds=<ds>/state/` (written by the rank step next to `pages.parquet`) holds, per
warm user, the stored score components of every candidate carousel:

    carousel code   index into the vocabulary (carousel_id, title, family, reason, fixed order)
    rel_sum         Σ_l r̂_{u,i_l} / log(1 + l) over the first M items: α = λ · rel_sum
    gamma           γ, the discovery term (independent of λ)
    items, scores   the carousel's item pool in its final order (W items, PAD = -1) and the
                    score shown per item (the calibrated engagement score, or r̂)
and the user's best new items for exploration (pool and r̂). Files:

    blobs.bin      one zstd-compressed record per user, appended in rank order
    index.parquet  user_id (sorted), offset, length: a user's record is one read
    arrays.npz     the catalogue order the item indices refer to, the daily stock flags, item
                   factors, categories and brands (carousel similarity), the examination curve
    meta.json      written last (its presence marks a complete state): the carousel vocabulary,
                   w, the carousel calibration, the day's random seed, the page parameters,
                   the carousel-level Beta priors and the model version

Nothing here depends on λ, so a refresh that updates the Beta priors rebuilds exactly the page a
full rank with those priors would build (`models.ranking.scored_batch.scored_from_state`) without the models.
Records are little-endian numpy structs. (One LMDB value per user would cost a 4 KiB overflow
page each: a flat file and an index are about half the size.)
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.errors import RankError

STATE_DIR = "state"
BLOBS, INDEX, ARRAYS, META = "blobs.bin", "index.parquet", "arrays.npz", "meta.json"
FORMAT = 1
_HEAD = struct.Struct("<4sIHHH")  # magic, raw size, candidates, pool width W, new-item pool P
_MAGIC = b"HPS1"


def _record(width: int) -> np.dtype:
    return np.dtype(
        [
            ("code", "<i4"),
            ("rel_sum", "<f8"),
            ("gamma", "<f8"),
            ("items", "<i4", (width,)),
            ("scores", "<f4", (width,)),  # the shown score only: float32 is enough
        ]
    )


class StateError(RankError):
    """A page state is missing, incomplete, from another format, or corrupt."""


@dataclass
class UserStates:
    """The stored state of a set of users, as arrays aligned like a rank batch."""

    users: np.ndarray  # object (B,)
    cand_user: np.ndarray  # int64 (n_c,) row in `users`, sorted
    code: np.ndarray  # int64 (n_c,) index into the vocabulary
    rel_sum: np.ndarray  # float64 (n_c,)
    gamma: np.ndarray  # float64 (n_c,)
    items: np.ndarray  # int64 (n_c, W)
    scores: np.ndarray  # float64 (n_c, W)
    new_pool: np.ndarray  # int64 (B, P)
    new_score: np.ndarray  # float64 (B, P)


class StateWriter:
    """Streams ScoredBatches (warm users, in batch order) into a state directory built aside;
    `close(meta, arrays)` completes it and moves it into place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = f"{path}.tmp-{os.getpid()}"
        for stale in glob.glob(f"{glob.escape(path)}.tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(self.tmp)
        # appended to batch by batch until close(): a context manager cannot span the calls
        self.blobs = open(os.path.join(self.tmp, BLOBS), "wb")  # noqa: SIM115
        self.users: list[str] = []
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.pos = 0
        self.vocab: dict[tuple[str, str, str, str, bool], int] = {}

    def add(self, scored: Any) -> None:
        """Store every user of a ScoredBatch (vocabulary codes are assigned in call order)."""
        cands = scored.cands
        keys = zip(
            cands.carousel_id.tolist(),
            cands.title.tolist(),
            cands.family.tolist(),
            cands.reason.tolist(),
            cands.fixed_order.tolist(),
            strict=True,
        )
        codes = np.fromiter(
            (self.vocab.setdefault(k, len(self.vocab)) for k in keys), np.int32, len(cands)
        )
        width = scored.items.shape[1]
        rec = np.empty(len(codes), dtype=_record(width))
        rec["code"] = codes
        rec["rel_sum"] = scored.rel_sum
        rec["gamma"] = scored.gamma
        rec["items"] = scored.items
        rec["scores"] = scored.item_scores
        bounds = np.searchsorted(np.asarray(cands.user), np.arange(len(scored.users) + 1))
        pool = np.asarray(scored.new_pool, dtype="<i4")
        pscore = np.asarray(scored.new_score, dtype="<f8")
        for u, user in enumerate(scored.users.tolist()):
            lo, hi = int(bounds[u]), int(bounds[u + 1])
            body = rec[lo:hi].tobytes() + pool[u].tobytes() + pscore[u].tobytes()
            head = _HEAD.pack(_MAGIC, len(body), hi - lo, width, pool.shape[1])
            blob = head + pa.compress(body, codec="zstd", asbytes=True)
            self.blobs.write(blob)
            self.users.append(str(user))
            self.offsets.append(self.pos)
            self.lengths.append(len(blob))
            self.pos += len(blob)

    def close(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """Write the index, `arrays` and (last) `meta` with the vocabulary; move into place."""
        self.blobs.close()
        order = np.argsort(np.array(self.users, dtype=object), kind="stable")
        index = pa.table(
            {
                "user_id": pa.array(np.array(self.users, dtype=object)[order], pa.string()),
                "offset": pa.array(np.array(self.offsets, dtype=np.int64)[order]),
                "length": pa.array(np.array(self.lengths, dtype=np.int64)[order]),
            }
        )
        pq.write_table(index, os.path.join(self.tmp, INDEX), compression="zstd")
        with open(os.path.join(self.tmp, ARRAYS), "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        vocab = [list(k) for k, _ in sorted(self.vocab.items(), key=lambda kv: kv[1])]
        info = {**meta, "format": FORMAT, "users": len(self.users), "vocab": vocab}
        with open(os.path.join(self.tmp, META), "w") as f:
            json.dump(info, f)
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.tmp, self.path)
        return {"users": len(self.users), "bytes": self.pos}

    def abort(self) -> None:
        self.blobs.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class StateReader:
    """Read-only access to one day's page state."""

    def __init__(self, path: str) -> None:
        meta_path = os.path.join(path, META)
        if not os.path.exists(meta_path):
            raise StateError(
                f"no complete page state at {path}: the daily rank of that day predates "
                "intra-day refreshes or did not finish; re-run its rank step"
            )
        with open(meta_path) as f:
            self.meta: dict[str, Any] = json.load(f)
        if self.meta.get("format") != FORMAT:
            raise StateError(f"{path} has state format {self.meta.get('format')}, need {FORMAT}")
        with np.load(os.path.join(path, ARRAYS), allow_pickle=False) as npz:
            self.arrays = {k: npz[k] for k in npz.files}
        index = pq.read_table(os.path.join(path, INDEX))
        self.index_users = index["user_id"].to_numpy(zero_copy_only=False).astype(object)
        self.offsets = index["offset"].to_numpy()
        self.lengths = index["length"].to_numpy()
        self.blobs = np.memmap(os.path.join(path, BLOBS), dtype=np.uint8, mode="r")
        if len(self.index_users) != self.meta["users"]:
            raise StateError(
                f"{path}: the index lists {len(self.index_users)} users, meta says "
                f"{self.meta['users']}"
            )
        vocab = self.meta["vocab"]
        self.carousel_id = np.array([v[0] for v in vocab], dtype=object)
        self.title = np.array([v[1] for v in vocab], dtype=object)
        self.family = np.array([v[2] for v in vocab], dtype=object)
        self.reason = np.array([v[3] for v in vocab], dtype=object)
        self.fixed_order = np.array([bool(v[4]) for v in vocab], dtype=bool)

    def has(self, user: str) -> bool:
        i = int(np.searchsorted(self.index_users, user))
        return i < len(self.index_users) and self.index_users[i] == user

    def read(self, users: Iterable[str]) -> UserStates:
        """The states of `users` that have one (sorted by user id; the others are left out)."""
        wanted = np.array(sorted({str(u) for u in users}), dtype=object)
        pos = np.searchsorted(self.index_users, wanted)
        pos = np.minimum(pos, max(len(self.index_users) - 1, 0))
        hit = self.index_users[pos] == wanted if len(self.index_users) else np.zeros(0, bool)
        found, pos = wanted[hit], pos[hit]
        width, p = int(self.meta["width"]), int(self.meta["new_pool"])
        dtype = _record(width)
        recs, pools, pscores, counts = [], [], [], []
        for o, n in zip(self.offsets[pos].tolist(), self.lengths[pos].tolist(), strict=True):
            blob = self.blobs[o : o + n].tobytes()
            magic, size, n_c, rec_width, pw = _HEAD.unpack_from(blob)
            if magic != _MAGIC or rec_width != width or pw != p:
                raise StateError("a page state record has an unexpected layout (corrupt file?)")
            body = pa.decompress(blob[_HEAD.size :], size, codec="zstd", asbytes=True)
            cut = n_c * dtype.itemsize
            recs.append(np.frombuffer(body, dtype=dtype, count=n_c))
            pools.append(np.frombuffer(body, dtype="<i4", count=p, offset=cut))
            pscores.append(np.frombuffer(body, dtype="<f8", count=p, offset=cut + 4 * p))
            counts.append(n_c)
        rec = np.concatenate(recs) if recs else np.empty(0, dtype=dtype)
        return UserStates(
            users=found,
            cand_user=np.repeat(np.arange(len(found)), counts).astype(np.int64),
            code=rec["code"].astype(np.int64),
            rel_sum=rec["rel_sum"].astype(np.float64),
            gamma=rec["gamma"].astype(np.float64),
            items=rec["items"].astype(np.int64).reshape(len(rec), width),
            scores=rec["scores"].astype(np.float64).reshape(len(rec), width),
            new_pool=(np.stack(pools) if pools else np.empty((0, p))).astype(np.int64),
            new_score=(np.stack(pscores) if pscores else np.empty((0, p))).astype(np.float64),
        )
