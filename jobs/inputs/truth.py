"""Ground-truth user model of a generated lake.

`homepage generate` samples one `GroundTruth` (`jobs.inputs.population.sample_truth`) and
simulates every logged event from it; a later simulated A/B test calls
`GroundTruth.engage_probability` to score the pages a policy would show. Nothing here depends
on a pipeline model, so the truth stays an independent referee.

Click model (position-based, as in the eBay paper):

    P(click | u, i, slot s, position l) = exam_slot(s) · exam_pos(l) · attr(u, i)
    exam_slot(s) = s ** -slot_power,  exam_pos(l) = l ** -position_power   (both 1 at top-left)
    attr(u, i)   = sigmoid(b0 + w_cat · clip(log(C · taste[u, cat(i)]), -4, 3)
                           + w_brand · [brand(i) in fav_brands(u)] + w_pop · popularity(i)
                           + w_quality · quality(i) + x_u · y_i + w_staple · [i in staples(u)]
                           + w_no_image · [no image])

Funnel after a click (or a view reached from search):

    P(add_to_cart | click) = sigmoid(a0 + a_quality · quality + a_staple · staple
                                     + a_price · price_level + a_search · from_search
                                     + a_device[device]) · available(i, day)
    P(purchase | add_to_cart) = sigmoid(p0 + p_staple · staple + p_device[device]) · available(i, day)

`available(i, day)` is 1 when the item exists (first_seen_day <= day) and is in stock
(day < out_of_stock_day). Days are indices from the lake's first day (0); `day=None` means the
day after the window, i.e. the catalogue state the items table reports.

Files (in `<lake>/_truth/`): `truth.npz` (arrays named as the dataclass fields) and `truth.json`
(`params` = `ModelParams`, `days`, `meta` = generator parameters, and the examination curves).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEVICES: tuple[str, ...] = ("mobile", "desktop", "app")
NEVER = int(np.iinfo(np.int32).max)  # out_of_stock_day of items that never go out of stock
CURVE_LENGTH = 20  # examination curves are saved for slots/positions 1..20 (formula beyond)
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # npz members get a fixed date: byte-identical files


@dataclass(frozen=True)
class ModelParams:
    """Coefficients of the true behaviour model (saved in truth.json)."""

    categories: int = 20
    factors: int = 8
    factor_scale: float = 0.45
    taste_concentration: float = (
        0.3  # Dirichlet alpha: small = tastes concentrated on few categories
    )
    # examination (position bias)
    slot_power: float = 0.7
    position_power: float = 0.5
    # attractiveness
    click_intercept: float = -3.5
    click_category: float = 0.6
    click_brand: float = 0.7
    click_popularity: float = 0.35
    click_quality: float = 0.3
    click_staple: float = 2.0
    click_no_image: float = -0.5
    # add to cart after a click / search view
    atc_intercept: float = -1.5
    atc_quality: float = 0.3
    atc_staple: float = 1.5
    atc_price: float = -0.5
    atc_search: float = 0.5
    device_atc: tuple[float, ...] = (-0.2, 0.0, 0.35)  # mobile, desktop, app
    # purchase of a cart line
    purchase_intercept: float = 0.7
    purchase_staple: float = 1.0
    device_purchase: tuple[float, ...] = (-0.25, 0.0, 0.3)
    # catalogue
    items_per_brand: int = 15
    new_item_share: float = 0.08
    out_of_stock_share: float = 0.05
    no_image_share: float = 0.05
    # users
    device_share: tuple[float, ...] = (0.5, 0.2, 0.3)
    mean_activity: float = 0.010  # mean P(a browsing visit on a given day)
    activity_shape: float = 0.6  # gamma shape: heavy-tailed activity
    regular_share: float = 0.5  # users with staples (grocery regulars)
    staples_max: int = 5
    trip_period_min: int = 5
    trip_period_max: int = 14


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(eq=False)
class GroundTruth:
    """The generator's user model. Arrays are indexed by user index / item index."""

    params: ModelParams
    days: int
    meta: dict[str, Any]
    # users
    user_ids: np.ndarray  # str
    taste: np.ndarray  # (U, C) float32: Dirichlet taste over top categories
    user_factors: np.ndarray  # (U, F) float32
    fav_brands: np.ndarray  # (U, 3) int32 brand indices
    staples: np.ndarray  # (U, M) int32 item indices, -1 padded
    staple_prob: np.ndarray  # (U, M) float32: P(buy the staple on a grocery trip)
    trip_period: np.ndarray  # (U,) int16 days between grocery trips
    trip_phase: np.ndarray  # (U,) int16: trip days are those with (day + phase) % period == 0
    activity: np.ndarray  # (U,) float32: P(a browsing visit on a weekday)
    device: np.ndarray  # (U,) int8 index into DEVICES: preferred device
    habit_hour: np.ndarray  # (U,) float32 usual hour of day of visits (UTC)
    # items
    item_ids: np.ndarray  # str
    item_category: np.ndarray  # (I,) int16 top category
    item_leaf: np.ndarray  # (I,) int32 leaf category
    leaf_category: np.ndarray  # (L,) int16 top category of each leaf
    item_brand: np.ndarray  # (I,) int32
    brand_category: np.ndarray  # (B,) int16 top category of each brand
    brand_weight: np.ndarray  # (B,) float32 share weight of the brand inside its category
    item_factors: np.ndarray  # (I, F) float32
    popularity: np.ndarray  # (I,) float32 log-popularity (standardised)
    quality: np.ndarray  # (I,) float32
    has_image: np.ndarray  # (I,) bool
    price: np.ndarray  # (I,) float64
    price_level: np.ndarray  # (I,) float32 log price minus the category's mean log price
    first_seen_day: np.ndarray  # (I,) int32 day index (negative: before the window)
    out_of_stock_day: np.ndarray  # (I,) int32 first day out of stock (NEVER if it stays)
    _index_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- sizes and examination ---------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def exam_slot(self, slot: np.ndarray) -> np.ndarray:
        """True examination probability of a slot (1 = top), relative to slot 1."""
        return np.asarray(slot, dtype=np.float64) ** -self.params.slot_power

    def exam_position(self, position: np.ndarray) -> np.ndarray:
        """True examination probability of a position (1 = left), relative to position 1."""
        return np.asarray(position, dtype=np.float64) ** -self.params.position_power

    # ---- id mapping --------------------------------------------------------------------------
    def user_index(self, user_ids: Any) -> np.ndarray:
        """Indices of user id strings (-1 for unknown ids)."""
        return self._indexer("users", self.user_ids).get_indexer(np.asarray(user_ids))

    def item_index(self, item_ids: Any) -> np.ndarray:
        """Indices of item id strings (-1 for unknown ids)."""
        return self._indexer("items", self.item_ids).get_indexer(np.asarray(item_ids))

    def _indexer(self, key: str, ids: np.ndarray) -> Any:
        import pandas as pd  # only needed for id look-ups

        if key not in self._index_cache:
            self._index_cache[key] = pd.Index(ids)
        return self._index_cache[key]

    # ---- behaviour ---------------------------------------------------------------------------
    def is_staple(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        return (self.staples[user_idx] == np.asarray(item_idx)[..., None]).any(-1)

    def available(self, item_idx: np.ndarray, day: int | np.ndarray | None = None) -> np.ndarray:
        """The item exists and is in stock on `day` (None: after the window)."""
        d = self.days if day is None else np.asarray(day)
        return (self.first_seen_day[item_idx] <= d) & (d < self.out_of_stock_day[item_idx])

    def attractiveness(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(click | the user examines the item), independent of where it is shown."""
        p = self.params
        u, i = np.broadcast_arrays(np.asarray(user_idx), np.asarray(item_idx))
        taste = self.taste[u, self.item_category[i]].astype(np.float64)
        logit = p.click_intercept + p.click_category * np.clip(
            np.log(taste * p.categories + 1e-12), -4.0, 3.0
        )
        logit += p.click_brand * (self.fav_brands[u] == self.item_brand[i][..., None]).any(-1)
        logit += p.click_popularity * self.popularity[i] + p.click_quality * self.quality[i]
        logit += np.einsum("...f,...f->...", self.user_factors[u], self.item_factors[i])
        logit += p.click_staple * self.is_staple(u, i) + p.click_no_image * ~self.has_image[i]
        return sigmoid(logit)

    def click_probability(
        self, user_idx: np.ndarray, item_idx: np.ndarray, slot: np.ndarray, position: np.ndarray
    ) -> np.ndarray:
        """Position-based click model: exam_slot(s) · exam_pos(l) · attractiveness(u, i)."""
        return (
            self.exam_slot(slot)
            * self.exam_position(position)
            * self.attractiveness(user_idx, item_idx)
        )

    def add_to_cart_probability(
        self,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        device: np.ndarray,
        day: int | None = None,
        from_search: np.ndarray | bool = False,
    ) -> np.ndarray:
        """P(add_to_cart | the user clicked / viewed the item)."""
        p = self.params
        staple = self.is_staple(user_idx, item_idx)
        logit = (
            p.atc_intercept
            + p.atc_quality * self.quality[item_idx]
            + p.atc_staple * staple
            + p.atc_price * self.price_level[item_idx]
            + p.atc_search * np.asarray(from_search, dtype=np.float64)
            + np.asarray(p.device_atc)[device]
        )
        return sigmoid(logit) * self.available(item_idx, day)

    def purchase_probability(
        self, user_idx: np.ndarray, item_idx: np.ndarray, device: np.ndarray, day: int | None = None
    ) -> np.ndarray:
        """P(purchase | the item is in the cart)."""
        p = self.params
        staple = self.is_staple(user_idx, item_idx)
        logit = (
            p.purchase_intercept
            + p.purchase_staple * staple
            + np.asarray(p.device_purchase)[device]
        )
        return sigmoid(logit) * self.available(item_idx, day)

    def engage_probability(
        self,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        slot: np.ndarray,
        position: np.ndarray,
        *,
        device: np.ndarray | None = None,
        day: int | None = None,
    ) -> dict[str, np.ndarray]:
        """P(click), P(add_to_cart), P(purchase) of showing item i to user u at (slot, position).

        All three are unconditional per placement: P(add_to_cart) = P(click) · P(atc | click),
        P(purchase) = P(add_to_cart) · P(purchase | atc). Slots and positions are 1-based and
        may exceed the generator's page size (the curves are power laws). `device` (indices into
        DEVICES or names) defaults to each user's preferred device; `day` (day index) defaults
        to the catalogue state after the window (new items exist, out-of-stock items can't be
        bought). Items that don't exist yet on `day` get 0.
        """
        u, i, s, pos = np.broadcast_arrays(
            np.asarray(user_idx, dtype=np.int64),
            np.asarray(item_idx, dtype=np.int64),
            np.asarray(slot),
            np.asarray(position),
        )
        if (s < 1).any() or (pos < 1).any():
            raise ValueError("slot and position are 1-based; got a value below 1")
        dev = self.device[u] if device is None else self._device_codes(device, u.shape)
        d = self.days if day is None else day
        exists = self.first_seen_day[i] <= d
        click = self.click_probability(u, i, s, pos) * exists
        atc = click * self.add_to_cart_probability(u, i, dev, d)
        purchase = atc * self.purchase_probability(u, i, dev, d)
        return {"click": click, "add_to_cart": atc, "purchase": purchase}

    @staticmethod
    def _device_codes(device: Any, shape: tuple[int, ...]) -> np.ndarray:
        arr = np.asarray(device)
        if arr.dtype.kind in "US":
            lookup = {name: k for k, name in enumerate(DEVICES)}
            try:
                arr = np.vectorize(lookup.__getitem__, otypes=[np.int8])(arr)
            except KeyError as exc:
                raise ValueError(
                    f"unknown device {exc.args[0]!r}; expected one of {DEVICES}"
                ) from exc
        return np.broadcast_to(arr.astype(np.int64), shape)

    # ---- persistence -------------------------------------------------------------------------
    def array_fields(self) -> dict[str, np.ndarray]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("params", "days", "meta", "_index_cache")
        }

    def save(self, directory: str) -> None:
        """Write truth.npz and truth.json into `directory` (byte-identical for the same truth)."""
        os.makedirs(directory, exist_ok=True)
        arrays = dict(self.array_fields())
        curve = np.arange(1, CURVE_LENGTH + 1)
        arrays["exam_slot_curve"] = self.exam_slot(curve)
        arrays["exam_position_curve"] = self.exam_position(curve)
        with zipfile.ZipFile(os.path.join(directory, "truth.npz"), "w") as zf:
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
                zf.writestr(
                    zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME), buf.getvalue()
                )
        doc = {
            "params": dataclasses.asdict(self.params),
            "days": self.days,
            "meta": self.meta,
            "devices": list(DEVICES),
            "exam_slot": [float(x) for x in arrays["exam_slot_curve"]],
            "exam_position": [float(x) for x in arrays["exam_position_curve"]],
            "exam_formula": "exam_slot(s) = s ** -slot_power; exam_position(l) = l ** -position_power",
        }
        with open(os.path.join(directory, "truth.json"), "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")

    @classmethod
    def load(cls, directory: str) -> GroundTruth:
        """Read a truth written by `save`."""
        json_path = os.path.join(directory, "truth.json")
        npz_path = os.path.join(directory, "truth.npz")
        for path in (json_path, npz_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} not found: is this a generated lake?")
        with open(json_path, encoding="utf-8") as fh:
            doc = json.load(fh)
        raw = doc["params"]
        params = ModelParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        names = {f.name for f in dataclasses.fields(cls)} - {
            "params",
            "days",
            "meta",
            "_index_cache",
        }
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in names}
        return cls(params=params, days=int(doc["days"]), meta=doc.get("meta", {}), **arrays)
