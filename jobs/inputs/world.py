"""The generated shop as a day of traffic sees it (`World`): the truth, the site's parameters,
catalogue strings, Arrow vocabularies and the logging policy; and the items, item changes,
users and carousels tables the generator writes from it."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from jobs.core.lake import CAROUSEL_SCHEMA, ITEM_CHANGE_SCHEMA, ITEM_SCHEMA
from jobs.inputs.catalogue import curated_item_lists, invent_brand_names, item_titles, leaf_names
from jobs.inputs.eventlog import fixed_width_strings, string_array, take
from jobs.inputs.logging_policy import LoggingPolicy
from jobs.inputs.site_model import CURATED, DEFAULT_ORDERS, FIXED_CAROUSELS, ROLES, SimParams
from jobs.inputs.truth import DEVICES, GroundTruth

USER_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("region", pa.string()),
        ("device", pa.string()),
        ("signup_date", pa.date32()),
    ]
)
REGIONS = ("north", "south", "east", "west", "central")


@dataclass
class World:
    """The truth, the site's parameters, catalogue strings, vocabularies and logging policy."""

    truth: GroundTruth
    sim: SimParams
    first_day: dt.date
    leaf_ids: list[str]
    leaf_nouns: list[str]
    brand_names: list[str]
    titles: list[str]
    curated_lists: list[np.ndarray | None]
    policy: LoggingPolicy
    user_vocab: pa.Array
    item_vocab: pa.Array
    carousel_vocab: pa.Array
    query_vocab: pa.Array

    @classmethod
    def build(
        cls, truth: GroundTruth, sim: SimParams, first_day: dt.date, rng: np.random.Generator
    ) -> World:
        leaf_ids, leaf_nouns = leaf_names(truth)
        brand_names = invent_brand_names(truth.brand_category.size, rng)
        titles = item_titles(truth, leaf_nouns, brand_names, rng)
        curated = curated_item_lists(truth, sim, rng)
        carousel_ids = [
            *FIXED_CAROUSELS,
            *(f"category:{x}" for x in leaf_ids),
            *(f"brand:{b}" for b in brand_names),
        ]
        queries = [*leaf_nouns, *(b.lower() for b in brand_names)]
        return cls(
            truth=truth,
            sim=sim,
            first_day=first_day,
            leaf_ids=leaf_ids,
            leaf_nouns=leaf_nouns,
            brand_names=brand_names,
            titles=titles,
            curated_lists=curated,
            policy=LoggingPolicy(truth, sim, curated, rng),
            user_vocab=fixed_width_strings(truth.user_ids),
            item_vocab=fixed_width_strings(truth.item_ids),
            carousel_vocab=string_array(carousel_ids),
            query_vocab=string_array(queries),
        )

    def carousel_index(
        self, role: str, users: np.ndarray, leaf: np.ndarray | None = None
    ) -> np.ndarray:
        """Index into carousel_vocab of a role's carousel for each visit."""
        n_fixed, n_leaves = len(FIXED_CAROUSELS), len(self.leaf_ids)
        if role in FIXED_CAROUSELS:
            return np.full(users.size, FIXED_CAROUSELS.index(role), np.int32)
        if role == "brand":
            return (n_fixed + n_leaves + self.policy.brand[users]).astype(np.int32)
        assert leaf is not None
        return (n_fixed + leaf).astype(np.int32)

    def describe(self) -> dict:
        sim = self.sim
        return {
            "slots": sim.slots,
            "positions": sim.positions,
            "candidate_items": sim.candidate_items,
            "candidate_carousels": len(ROLES),
            "random_share": sim.random_share,
            "roles": list(ROLES),
            "default_orders": [list(o) for o in DEFAULT_ORDERS],
            "propensity": {
                "random": "1 / (candidate_carousels * n)",
                "default": "(1 - random_share) + random_share / (candidate_carousels * n)",
                "n": "number of candidate items of the carousel in that visit (<= candidate_items)",
            },
            "category_ids": self.leaf_ids,
            "brand_names": self.brand_names,
            "simulation": asdict(sim),
        }

    def items_table(self) -> pa.Table:
        t = self.truth
        leaf = pa.array(t.item_leaf)
        paths = string_array([f"{x[:3]}/{x}" for x in self.leaf_ids])
        first_seen = np.datetime64(self.first_day, "D") + t.first_seen_day.astype("timedelta64[D]")
        return pa.Table.from_arrays(
            [
                self.item_vocab,
                string_array(self.titles),
                string_array(self.leaf_ids).take(leaf),
                paths.take(leaf),
                string_array(self.brand_names).take(pa.array(t.item_brand)),
                pa.array(t.price, pa.float64()),
                # the status at listing (or on the first day): every item is listed in stock;
                # going out of stock is a dated change (`item_changes_table`)
                pa.array(np.ones(t.n_items, dtype=bool), pa.bool_()),
                pa.array(t.has_image, pa.bool_()),
                pa.array(first_seen, pa.date32()),
            ],
            schema=ITEM_SCHEMA,
        )

    def item_changes_table(self) -> pa.Table:
        """ITEM_CHANGE_SCHEMA: one row per item that goes out of stock inside the window, dated
        the first day it is out of stock (prices never change in the simulation)."""
        t = self.truth
        idx = np.flatnonzero(t.out_of_stock_day < t.days)
        idx = idx[np.lexsort((idx, t.out_of_stock_day[idx]))]  # by day, then item
        day = np.datetime64(self.first_day, "D") + t.out_of_stock_day[idx].astype("timedelta64[D]")
        return pa.Table.from_arrays(
            [
                self.item_vocab.take(pa.array(idx, pa.int64())),
                pa.array(day, pa.date32()),
                pa.nulls(idx.size, pa.float64()),
                pa.array(np.zeros(idx.size, dtype=bool), pa.bool_()),
            ],
            schema=ITEM_CHANGE_SCHEMA,
        )

    def users_table(self, rng: np.random.Generator) -> pa.Table:
        n = self.truth.n_users
        region = rng.choice(len(REGIONS), size=n, p=[0.25, 0.2, 0.2, 0.15, 0.2])
        signup = np.datetime64(self.first_day, "D") - rng.integers(1, 1500, n).astype(
            "timedelta64[D]"
        )
        return pa.Table.from_arrays(
            [
                self.user_vocab,
                string_array(REGIONS).take(pa.array(region)),
                string_array(DEVICES).take(pa.array(self.truth.device.astype(np.int32))),
                pa.array(signup, pa.date32()),
            ],
            schema=USER_SCHEMA,
        )

    def carousels_table(self) -> pa.Table:
        lists = [np.zeros(0, np.int32) if lst is None else lst for lst in self.curated_lists]
        offsets = np.concatenate([[0], np.cumsum([lst.size for lst in lists])]).astype(np.int32)
        flat = self.item_vocab.take(pa.array(np.concatenate(lists)))
        rule_based = np.array([lst is None for lst in self.curated_lists])
        item_ids = pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(rule_based))
        rules = np.array([-1 if c[3] is None else k for k, c in enumerate(CURATED)])
        return pa.Table.from_arrays(
            [
                string_array([c[0] for c in CURATED]),
                string_array([c[1] for c in CURATED]),
                string_array([c[2] for c in CURATED]),
                item_ids,
                take(string_array([c[3] or "" for c in CURATED]), rules),
                pa.array(np.array([c[4] for c in CURATED])),
                pa.nulls(len(CURATED), pa.date32()),  # valid_from: not time-limited
                pa.nulls(len(CURATED), pa.date32()),  # valid_to
            ],
            schema=CAROUSEL_SCHEMA,
        )
