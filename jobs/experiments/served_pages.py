"""The pages a simulation serves: one exported page table per arm as placement arrays grouped
by page (arm, user), with each truth user's page per arm (`ServedPages`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.core.lake import DEFAULT_PAGE_KEY
from jobs.inputs.truth import GroundTruth

_PAGE_COLUMNS = ("user_id", "slot", "carousel_id", "item_rank", "item_id")


@dataclass
class ServedPages:
    """The shown placements of one page table per arm, one row per placement, grouped by page
    (arm, user) in slot, position order. Rows of users unknown to the truth are dropped."""

    item: np.ndarray  # index into item_vocab
    truth_item: np.ndarray  # truth item index, -1 when unknown to the truth
    carousel: np.ndarray  # index into carousel_vocab (-1: null)
    slot: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    start: np.ndarray  # per page: first row
    length: np.ndarray  # per page: number of shown placements
    page_of: np.ndarray  # (arms, truth users): page index, the arm's default page or -1
    item_vocab: pa.Array
    carousel_vocab: pa.Array

    @classmethod
    def build(
        cls,
        truth: GroundTruth,
        frames: Sequence[pd.DataFrame],
        slots: int | None,
        positions: int | None,
    ) -> ServedPages:
        s_max = int(truth.meta.get("slots", 6) if slots is None else slots)
        p_max = int(truth.meta.get("positions", 6) if positions is None else positions)
        if s_max < 1 or p_max < 1:
            raise ValueError(f"slots and positions must be >= 1, got {s_max}, {p_max}")
        n_users = truth.n_users
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("key", "slot", "position", "propensity", "item", "carousel")
        }
        vocabs: dict[str, list[np.ndarray]] = {"item": [], "carousel": []}
        for a, df in enumerate(frames):  # over arms
            missing = [c for c in _PAGE_COLUMNS if c not in df.columns]
            if missing:
                raise ValueError(f"the page table lacks column(s) {missing}")
            slot = df["slot"].to_numpy(np.int64)
            rank = df["item_rank"].to_numpy(np.int64)
            user = truth.user_index(df["user_id"].to_numpy(object))
            other = np.flatnonzero(user < 0)
            default = df["user_id"].to_numpy(object)[other] == DEFAULT_PAGE_KEY
            user[other[default]] = n_users  # the default page sorts last
            item_code, item_vocab = pd.factorize(df["item_id"].to_numpy(object))
            keep = (user >= 0) & (slot >= 1) & (slot <= s_max) & (rank >= 1) & (rank <= p_max)
            keep &= item_code >= 0  # a placement without an item shows nothing
            if "propensity" in df.columns:
                prop = df["propensity"].to_numpy(np.float64, na_value=np.nan)[keep]
                prop[np.isnan(prop)] = 1.0  # older exports: a deterministic placement
                if ((prop <= 0) | (prop > 1)).any():
                    raise ValueError("page propensities must lie in (0, 1]")
            else:
                prop = np.ones(int(keep.sum()))
            cols["key"].append(a * (n_users + 1) + user[keep])
            cols["slot"].append(slot[keep])
            cols["position"].append(rank[keep])
            cols["propensity"].append(prop)
            carousel = pd.factorize(df["carousel_id"].to_numpy(object))
            for name, (code, vocab) in (("item", (item_code, item_vocab)), ("carousel", carousel)):
                # codes over the arms' concatenated vocabularies (unified below)
                base = sum(v.size for v in vocabs[name])
                cols[name].append(np.where(code >= 0, code + base, -1)[keep])
                vocabs[name].append(np.asarray(vocab, dtype=object))
        c = {k: np.concatenate(v) for k, v in cols.items()}
        vocab_of: dict[str, np.ndarray] = {}
        for name, parts in vocabs.items():
            code, vocab = pd.factorize(np.concatenate(parts))
            c[name] = np.r_[code, -1][c[name]]  # -1 (null) stays -1
            vocab_of[name] = np.asarray(vocab, dtype=object)
        # one row per placement in (arm, user, slot, position) order; exports are sorted already
        order_key = (c["key"] * (s_max + 1) + c["slot"]) * (p_max + 1) + c["position"]
        if (np.diff(order_key) < 0).any():
            order = np.argsort(order_key, kind="stable")
            c = {k: v[order] for k, v in c.items()}
        start, length, page_of = _page_index(c["key"], len(frames), n_users)
        ivocab = vocab_of["item"]
        truth_item = np.r_[truth.item_index(ivocab.astype(str)), -1].astype(np.int64)
        return cls(
            item=c["item"],
            truth_item=truth_item[c["item"]],
            carousel=c["carousel"],
            slot=c["slot"],
            position=c["position"],
            propensity=c["propensity"],
            start=start.astype(np.int64),
            length=length.astype(np.int64),
            page_of=page_of,
            item_vocab=pa.array(ivocab, pa.string()),
            carousel_vocab=pa.array(vocab_of["carousel"], pa.string()),
        )

    def rows(self, page: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of each page in `page` (in order) and, per row, its index into `page`."""
        n = self.length[page]
        owner = np.repeat(np.arange(page.size), n)
        first = np.cumsum(n) - n
        return np.arange(owner.size) + np.repeat(self.start[page] - first, n), owner


def _page_index(
    key: np.ndarray, n_arms: int, n_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pages of placements sorted by `key` (arm * (n_users + 1) + user, the default page last):
    each page's first row and length, and each arm's page of each user (its default page or -1)."""
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key[:0]
    length = np.diff(np.r_[start, key.size])
    page_arm, page_user = np.divmod(key[start], n_users + 1)
    page_of = np.full((n_arms, n_users), -1, np.int64)
    for a in range(n_arms):  # over arms
        default = np.flatnonzero((page_arm == a) & (page_user == n_users))
        if default.size:
            page_of[a] = default[0]
        mine = np.flatnonzero((page_arm == a) & (page_user < n_users))
        page_of[a, page_user[mine]] = mine
    return start, length, page_of
