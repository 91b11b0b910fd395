"""Synthetic lake generator (`homepage generate`): a grocery shop with a carousel homepage.

`generate_lake` samples a ground-truth user model (`jobs.inputs.truth.GroundTruth`), simulates `days`
days of traffic from it one day at a time (vectorised with numpy; the only Python loops are over
days, carousel roles and digit positions) and writes the input tables of `jobs.core.lake`:

    items/part-0.parquet        ITEM_SCHEMA; ~20 top categories with leaves ("c03_07"), brands
                                (a few big ones per category, long tail), lognormal prices,
                                ~5% without image, ~5% out of stock at the end, ~8% new items
                                (first_seen inside the window); a few titles hold `<b>` or `&`
    users/part-0.parquet        user_id, region, device (preferred), signup_date
    carousels/part-0.parquet    CAROUSEL_SCHEMA; five operator-curated carousels
    events/ds=YYYY-MM-DD/part-0.parquet
                                EVENT_SCHEMA columns in order, plus `logging_policy`
    _truth/truth.npz, truth.json
                                the user model and every generator parameter

Behaviour. Users have Dirichlet tastes over top categories, favourite brands, latent factors,
a heavy-tailed activity level, a preferred device and an hour-of-day habit (evening peak).
Half the users are grocery regulars with 2-5 staple items: every 5-14 days (their own period)
they make a trip and buy each staple with its own probability, through search (carousel_id
null). A visit day has 1-3 sessions (weekends get more visits); sessions are >= 45 minutes
apart, events inside one are seconds to minutes apart and a session lasts < 50 minutes.
A session starts on the homepage (share depends on the device) or in search.

Homepage. A visit shows S slots (default 6, 1 = top) of P items (default 6, 1 = left): one
`impression` per placement. Each visit has K = 11 candidate carousels, each with up to
N = 10 candidate items (`candidate_items`):

    trending                 top items by decayed recent engagement
    curated:deals            promo, immutable operator order
    curated:seasonal         promo
    curated:new_arrivals     rule "new": newest items (first_seen in the last 30 days)
    curated:top_rated        editorial
    curated:weekly_essentials  editorial
    buy_again                the user's remembered purchases (the site also knows regulars'
                             staples from before the window); a third `category:` carousel
                             instead when it knows fewer than 3 distinct items
    category:<leaf> x2       the user's top leaf categories as the site knows them
    discover                 a leaf from a top category the user rarely likes
    brand:<brand>            the user's favourite brand

Logging policy. With probability 1 - random_share (default 0.95) a page is built by the
"default" policy: a fixed carousel order (one of three orders, by user segment) filled with the
user's personal carousels, items ordered by popularity (deals keep the operator's order). With
probability random_share the page is "random": a uniformly random permutation of the K
candidates fills the S slots and, in each carousel, a uniformly random permutation of its n
candidate items fills the positions (n < P leaves positions empty).

`propensity` (on impressions and on every event attributed to a homepage placement):
    random pages:  1 / (K * n)                   -- P(placement | the random component):
                                                    P(carousel at slot s) = 1/K and
                                                    P(item at position l) = 1/n
    default pages: (1 - random_share) + random_share / (K * n)
                                                 -- exact P(placement) under the mixture
where n is the carousel's number of candidate items that day (N unless fewer exist). (The
marginal probability of a random page's placement under the mixture is random_share / (K * n),
plus 1 - random_share when the default page would have made the same placement.)
`logging_policy` is "default"/"random" on those events and null on the others. The logging
policy does not de-duplicate: an item may appear in two carousels of one logged page.

Funnel. Clicks follow the truth's position-based model; a click (page "home", same carousel,
slot, position, propensity) is followed by a `view` (page "item") and maybe an `add_to_cart`
(page "item"); cart lines are bought at checkout at the end of the session (page "checkout").
Views, carts and purchases after a homepage click keep the carousel, slot, position,
propensity and policy of the placement. Search journeys log a `search` (page "search", item
null, query = a leaf or brand word), then a `view`, `add_to_cart` and `purchase` with
carousel_id null. Items out of stock can be viewed but not bought; items appear only from their
first_seen day; the logging policy shows only items available that day.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.lake import (
    CAROUSEL_SCHEMA,
    EVENT_SCHEMA,
    EVENT_TYPES,
    ITEM_SCHEMA,
    Lake,
    fmt_ds,
    is_local,
    parse_ds,
)
from jobs.inputs.truth import DEVICES, GroundTruth, GroupSampler, categorical_rows, dedupe_rows

__all__ = ["GENERATED_EVENT_SCHEMA", "SimParams", "generate_lake", "load_truth"]

GENERATED_EVENT_SCHEMA = pa.schema([*EVENT_SCHEMA, pa.field("logging_policy", pa.string())])
USER_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("region", pa.string()),
        ("device", pa.string()),
        ("signup_date", pa.date32()),
    ]
)
PAGES = ("home", "item", "search", "checkout")
POLICIES = ("default", "random")
REGIONS = ("north", "south", "east", "west", "central")
EVENT_CODE = {name: k for k, name in enumerate(EVENT_TYPES)}
_PAGE = {name: k for k, name in enumerate(PAGES)}
_HOME, _SEARCH, _STAPLE = 0, 1, 2  # journey kinds
MICROS = 1_000_000  # microseconds per second
_PLACEMENT = ("carousel", "slot", "position", "propensity", "policy")  # a homepage placement

# One line per top category: "name: leaf nouns"; a category's leaves take its first nouns.
_CATEGORY_TEXT = """
dairy: milk, oat milk, yogurt, cheddar, butter, cream, kefir, feta
bakery: sourdough, bagels, croissants, rye bread, muffins, tortillas, pita, brioche
produce: apples, bananas, spinach, tomatoes, avocados, carrots, berries, onions
meat: chicken breast, ground beef, bacon, sausages, pork chops, turkey, lamb, steak
seafood: salmon, shrimp, tuna steak, cod, mussels, sardines, crab, tilapia
frozen: pizza, ice cream, frozen peas, fish sticks, dumplings, waffles, fries, sorbet
pantry: pasta, rice, olive oil, flour, lentils, tomato sauce, honey, peanut butter
snacks: crisps, pretzels, popcorn, granola bars, crackers, trail mix, chocolate, cookies
beverages: coffee, green tea, orange juice, sparkling water, cola, kombucha, lemonade, iced tea
breakfast: cereal, porridge oats, pancake mix, jam, maple syrup, muesli, granola, hazelnut spread
household: dish soap, laundry pods, paper towels, bin bags, sponges, bleach, foil, candles
personal care: shampoo, toothpaste, body wash, deodorant, razors, lotion, sunscreen, floss
baby: diapers, baby wipes, formula, baby food, teethers, baby lotion, bibs, rash cream
pet: dog food, cat food, cat litter, dog treats, bird seed, chew toys, fish flakes, pet shampoo
deli: hummus, olives, salami, smoked ham, coleslaw, pesto, sushi, quiche
canned goods: chickpeas, black beans, sweetcorn, canned tuna, soup, coconut milk, peaches, passata
international: soy sauce, curry paste, ramen, salsa, kimchi, tahini, miso, harissa
drinks: red wine, lager, cider, prosecco, gin, white wine, stout, rosé
health: vitamins, protein powder, pain relief, plasters, cough drops, probiotics, electrolytes, zinc
organic: organic eggs, organic kale, organic quinoa, organic milk, organic apples, organic oats, organic coffee, organic honey
"""
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (name, tuple(nouns.split(", ")))
    for name, nouns in (line.split(": ") for line in _CATEGORY_TEXT.strip().splitlines())
)
# Words of titles and invented brand names ("Norvale", "Marenwick").
_WORD_TEXT = """
sizes: 250g 500g 1kg 1L 2L 330ml 750ml 6-pack 12-pack 400g
variants: classic light original extra mini spicy unsweetened
onsets: Bel Cor Dan El Fen Gra Hol Is Jun Kel Lin Mar Nor Ol Pel Quin Ros Sil Tor Ul Ver Wyn Yar Zan
middles: a e i o u ar en il or um
endings: va dor mont ford ly na ton ra vale wick ia co stead field bury ine ette holm by gate
"""
_WORDS = {k: tuple(v.split()) for k, v in (x.split(": ") for x in _WORD_TEXT.strip().splitlines())}
_SIZES = _WORDS["sizes"]
_VARIANTS = ("", "", "", *(f"{v} " for v in _WORDS["variants"]))  # most titles have none
_ONSETS, _MIDDLES, _ENDINGS = _WORDS["onsets"], _WORDS["middles"], _WORDS["endings"]

# Candidate carousel roles of a homepage visit (K = len(ROLES)) and the default policy's slot
# orders (one per user segment; only the first `slots` matter).
ROLES: tuple[str, ...] = (
    "trending",
    "curated:deals",
    "curated:seasonal",
    "curated:new_arrivals",
    "curated:top_rated",
    "curated:weekly_essentials",
    "buy_again",
    "category_1",
    "category_2",
    "discover",
    "brand",
)
_ORDERS_TEXT = """
trending category_1 curated:deals buy_again curated:new_arrivals brand category_2 curated:seasonal curated:top_rated discover curated:weekly_essentials
curated:deals trending buy_again category_1 brand curated:seasonal curated:new_arrivals category_2 curated:weekly_essentials curated:top_rated discover
buy_again category_1 trending curated:new_arrivals category_2 curated:deals brand curated:top_rated curated:seasonal discover curated:weekly_essentials
"""
DEFAULT_ORDERS: tuple[tuple[str, ...], ...] = tuple(
    tuple(line.split()) for line in _ORDERS_TEXT.strip().splitlines()
)
# carousel_id, title, family, rule, immutable
CURATED: tuple[tuple[str, str, str, str | None, bool], ...] = (
    ("curated:deals", "Deals of the week", "promo", None, True),
    ("curated:seasonal", "Seasonal picks", "promo", None, False),
    ("curated:new_arrivals", "New arrivals", "new", "new", False),
    ("curated:top_rated", "Top rated", "editorial", None, False),
    ("curated:weekly_essentials", "Weekly essentials & more", "editorial", None, False),
)
_FIXED_CAROUSELS = (*(c[0] for c in CURATED), "buy_again", "trending", "discover")


@dataclass(frozen=True)
class SimParams:
    """Page layout, logging policy and session behaviour (saved in truth.json under meta)."""

    slots: int = 6
    positions: int = 6
    candidate_items: int = 10
    random_share: float = 0.05
    min_buy_again: int = 3  # distinct past purchases before the site shows "buy again"
    history: int = 12  # past purchases the site remembers per user
    weekend_boost: float = 1.3
    extra_session_p: float = 0.2  # a visit day has 1 + Binomial(2, p) sessions
    session_spacing_min: float = 95.0
    session_spacing_jitter_min: float = 60.0
    hour_jitter_min: float = 75.0
    device_loyalty: float = 0.85  # share of sessions on the preferred device
    home_share: tuple[float, ...] = (0.7, 0.6, 0.8)  # P(session starts on home) per device
    home_share_trip: float = 0.5
    trip_show: float = 0.8  # P(a regular makes the trip on a trip day)
    search_journeys_search: float = 0.8  # extra (Poisson) search journeys in a search session
    search_journeys_home: float = 0.2  # search journeys in a homepage session
    search_candidates: int = 4  # items a search shows; the user views the most attractive
    brand_query_share: float = 0.25
    quantity_extra: float = 0.3  # quantity = 1 + Poisson(.)
    staple_quantity_extra: float = 0.8
    pop_half_life_days: float = 14.0
    trend_half_life_days: float = 3.0
    new_window_days: int = 30
    curated_length: int = 20
    discover_categories: int = 10  # the user's least-liked top categories feed "discover"


def load_truth(lake_root: str) -> GroundTruth:
    """The ground-truth user model of a generated lake."""
    return GroundTruth.load(Lake(lake_root).truth)


def generate_lake(
    lake_root: str,
    *,
    users: int,
    items: int,
    days: int,
    seed: int,
    start: str = "2026-01-01",
    progress: Callable[[str], None] | None = None,
    slots: int = 6,
    positions: int = 6,
    random_share: float = 0.05,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic lake under `lake_root` and return generation stats.

    Stats: lake, events, seconds, events_per_s, users, items, days, seed, start, end and one
    count per event type (keys "impression", "view", ...). Deterministic: the same arguments
    give byte-identical files. Raises ValueError on bad arguments, or when the lake already
    holds input tables and `overwrite` is false (then the generator's own tables are replaced).
    """
    sim = SimParams(slots=slots, positions=positions, random_share=random_share)
    first_day = _validate(lake_root, users, items, days, seed, start, sim)
    lake = Lake(lake_root)
    _prepare_dirs(lake, overwrite)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()

    # One seed sequence: independent streams for the world and for each day.
    world_seq, *day_seqs = np.random.SeedSequence(seed).spawn(days + 1)
    rng = np.random.default_rng(world_seq)
    say(f"sampling {users:,} users and {items:,} items")
    meta = {"seed": seed, "users": users, "items": items, "days": days, "start": start}
    truth = GroundTruth.sample(rng, users=users, items=items, days=days, meta=meta)
    world = _World.build(truth, sim, first_day, rng)
    truth.meta.update(world.describe())
    truth.save(lake.truth)
    _write(world.items_table(), os.path.join(lake.items, "part-0.parquet"))
    _write(world.users_table(rng), os.path.join(lake.users, "part-0.parquet"))
    _write(world.carousels_table(), os.path.join(lake.carousels, "part-0.parquet"))

    counts = dict.fromkeys(EVENT_TYPES, 0)
    # Parquet encoding releases the GIL: write day d in a thread while day d + 1 is simulated
    # (at most one write in flight, so at most two days are in memory).
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future[None] | None = None
        for d in range(days):
            table, day_counts = _simulate_day(world, d, np.random.default_rng(day_seqs[d]))
            ds = fmt_ds(first_day + dt.timedelta(days=d))
            if pending is not None:
                pending.result()
            pending = writer.submit(
                _write, table, os.path.join(lake.raw_events_ds(ds), "part-0.parquet")
            )
            for name, c in zip(EVENT_TYPES, day_counts, strict=True):
                counts[name] += int(c)
            say(f"day {d + 1}/{days} {ds}: {table.num_rows:,} events")
        if pending is not None:
            pending.result()

    seconds = time.perf_counter() - t0
    total = sum(counts.values())
    return {
        "lake": lake.root,
        "events": total,
        "seconds": round(seconds, 3),
        "events_per_s": round(total / seconds, 1) if seconds > 0 else float("inf"),
        "users": users,
        "items": items,
        "days": days,
        "seed": seed,
        "start": start,
        "end": fmt_ds(first_day + dt.timedelta(days=days - 1)),
        **counts,
    }


# ---- arguments and files -------------------------------------------------------------------


def _validate(
    lake_root: str, users: int, items: int, days: int, seed: int, start: str, sim: SimParams
) -> dt.date:
    for name, value in (("users", users), ("items", items), ("days", days)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if days > 3650:
        raise ValueError(f"days must be at most 3650, got {days}")
    if sim.slots < 1 or sim.positions < 1:
        raise ValueError("slots and positions must be >= 1")
    if sim.slots > len(ROLES) or sim.positions > sim.candidate_items:
        raise ValueError(
            f"a page has at most {len(ROLES)} slots and {sim.candidate_items} positions, "
            f"got slots={sim.slots}, positions={sim.positions}"
        )
    if not 0.0 <= sim.random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {sim.random_share}")
    if not lake_root or not is_local(lake_root):
        raise ValueError(f"the generator writes to a local directory, got {lake_root!r}")
    try:
        return parse_ds(start)
    except ValueError as exc:
        raise ValueError(f"start: {exc}") from exc


def _prepare_dirs(lake: Lake, overwrite: bool) -> None:
    owned = [lake.raw_events, lake.items, lake.users, lake.carousels, lake.truth]
    existing = [p for p in owned if os.path.isdir(p) and os.listdir(p)]
    if existing and not overwrite:
        raise ValueError(
            f"{lake.root} already holds input tables ({', '.join(os.path.basename(p) for p in existing)}); "
            "pass overwrite=True (--overwrite) to replace them"
        )
    for path in existing:
        shutil.rmtree(path)


def _write(table: pa.Table, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, compression="snappy")


# ---- Arrow helpers -------------------------------------------------------------------------


def id_array(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Fixed-width string ids `prefix` + zero-padded numbers, built straight into Arrow buffers."""
    n = int(numbers.size)
    head = np.frombuffer(prefix.encode(), np.uint8)
    w = head.size + width
    buf = np.empty((n, w), np.uint8)
    buf[:, : head.size] = head
    x = numbers.astype(np.int64)
    for k in range(w - 1, head.size - 1, -1):  # one pass per digit position
        buf[:, k] = 48 + x % 10
        x //= 10
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(w)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def fixed_width_strings(ids: np.ndarray) -> pa.Array:
    """An Arrow string array from equal-length ASCII numpy strings (ids), without a Python loop."""
    width = ids.dtype.itemsize // 4
    raw = ids.astype(f"S{width}")
    offsets = np.arange(ids.size + 1, dtype=np.int32) * np.int32(width)
    return pa.StringArray.from_buffers(ids.size, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes()))


def string_array(values: list[str] | tuple[str, ...]) -> pa.Array:
    """An Arrow string array from a list of str, built from buffers."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    data = pa.py_buffer(b"".join(encoded))
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), data)


def take(vocab: pa.Array, idx: np.ndarray) -> pa.Array:
    """vocab[idx] with null where idx < 0."""
    null = idx < 0
    return vocab.take(pa.array(np.where(null, 0, idx), mask=null))


def nullable(values: np.ndarray, null: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.array(values, mask=null, type=typ)


# ---- the world: catalogue strings, the site's logging policy --------------------------------


@dataclass
class _World:
    truth: GroundTruth
    sim: SimParams
    first_day: dt.date
    leaf_ids: list[str]
    leaf_nouns: list[str]
    brand_names: list[str]
    titles: list[str]
    curated_lists: list[np.ndarray | None]
    policy: _LoggingPolicy
    user_vocab: pa.Array
    item_vocab: pa.Array
    carousel_vocab: pa.Array
    query_vocab: pa.Array

    @classmethod
    def build(
        cls, truth: GroundTruth, sim: SimParams, first_day: dt.date, rng: np.random.Generator
    ) -> _World:
        leaf_ids, leaf_nouns = _leaf_names(truth)
        brand_names = _brand_names(truth.brand_category.size, rng)
        titles = _titles(truth, leaf_nouns, brand_names, rng)
        curated = _curated_lists(truth, sim, rng)
        carousel_ids = [
            *_FIXED_CAROUSELS,
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
            policy=_LoggingPolicy(truth, sim, curated, rng),
            user_vocab=fixed_width_strings(truth.user_ids),
            item_vocab=fixed_width_strings(truth.item_ids),
            carousel_vocab=string_array(carousel_ids),
            query_vocab=string_array(queries),
        )

    def carousel_index(
        self, role: str, users: np.ndarray, leaf: np.ndarray | None = None
    ) -> np.ndarray:
        """Index into carousel_vocab of a role's carousel for each visit."""
        n_fixed, n_leaves = len(_FIXED_CAROUSELS), len(self.leaf_ids)
        if role in _FIXED_CAROUSELS:
            return np.full(users.size, _FIXED_CAROUSELS.index(role), np.int32)
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
                pa.array(t.out_of_stock_day >= t.days, pa.bool_()),
                pa.array(t.has_image, pa.bool_()),
                pa.array(first_seen, pa.date32()),
            ],
            schema=ITEM_SCHEMA,
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
            ],
            schema=CAROUSEL_SCHEMA,
        )


def _leaf_names(truth: GroundTruth) -> tuple[list[str], list[str]]:
    cats = truth.leaf_category.astype(np.int64)
    within = np.arange(cats.size) - np.searchsorted(cats, cats)
    ids = [f"c{c + 1:02d}_{j + 1:02d}" for c, j in zip(cats, within, strict=True)]
    nouns = [CATEGORIES[c][1][j] for c, j in zip(cats, within, strict=True)]
    return ids, nouns


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    """Unique invented brand names; about 1 in 60 is a "X & Y" pair (HTML escaping matters)."""
    pool = [a + e for a in _ONSETS for e in _ENDINGS]
    pool += [a + m + e for a in _ONSETS for m in _MIDDLES for e in _ENDINGS]
    picked = [pool[k] for k in rng.permutation(len(pool))[: min(n, len(pool))]]
    picked += [f"{pool[k % len(pool)]} {k // len(pool) + 2}" for k in range(n - len(picked))]
    pairs = np.flatnonzero(rng.random(n) < 1 / 60)
    for k in pairs:  # over a handful of brands
        picked[k] = f"{picked[k]} & {_ONSETS[k % len(_ONSETS)]}{_ENDINGS[(k // 7) % len(_ENDINGS)]}"
    return picked


def _titles(
    truth: GroundTruth, leaf_nouns: list[str], brands: list[str], rng: np.random.Generator
) -> list[str]:
    """ "Brand light oat milk 1L"-style titles; a few carry `<b>` or `&` for escaping checks."""
    n = truth.n_items
    variant = rng.integers(0, len(_VARIANTS), n)
    size = rng.integers(0, len(_SIZES), n)
    titles = [
        f"{brands[b]} {_VARIANTS[v]}{leaf_nouns[leaf]} {_SIZES[s]}"
        for b, v, leaf, s in zip(truth.item_brand, variant, truth.item_leaf, size, strict=True)
    ]
    marked = rng.permutation(n)[: max(2, n // 100)]
    for j, k in enumerate(marked):  # ~1% of items, a loop over a small sample
        titles[k] += " <b>bestseller</b>" if j % 2 == 0 else " (buy 2 & save)"
    return titles


def _curated_lists(
    truth: GroundTruth, sim: SimParams, rng: np.random.Generator
) -> list[np.ndarray | None]:
    """Operator item lists of the curated carousels (None for rule-based ones)."""
    listed = truth.first_seen_day < 0
    pop = np.exp(truth.popularity.astype(np.float64))
    seasonal_cats = rng.choice(truth.params.categories, size=2, replace=False)

    def pick(eligible: np.ndarray, weight: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(eligible & (weight > 0))
        k = min(sim.curated_length, idx.size)
        return rng.choice(idx, size=k, replace=False, p=weight[idx] / weight[idx].sum()).astype(
            np.int32
        )

    by_quality = np.flatnonzero(listed & truth.has_image)
    by_quality = by_quality[np.argsort(-truth.quality[by_quality], kind="stable")]
    out: list[np.ndarray | None] = []
    for carousel_id, *_ in CURATED:
        if carousel_id == "curated:deals":
            out.append(pick(listed & (truth.price_level < 0), pop))
        elif carousel_id == "curated:seasonal":
            out.append(pick(listed & np.isin(truth.item_category, seasonal_cats), pop))
        elif carousel_id == "curated:top_rated":
            out.append(by_quality[: sim.curated_length].astype(np.int32))
        elif carousel_id == "curated:weekly_essentials":
            out.append(pick(listed, pop**2))
        else:
            out.append(None)
    return out


def _top_by_group(
    group: np.ndarray, score: np.ndarray, mask: np.ndarray, n_groups: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the (up to) n masked members with the highest score: (table[G, n], count[G])."""
    idx = np.flatnonzero(mask)
    order = idx[np.lexsort((-score[idx], group[idx]))]
    g = group[order].astype(np.int64)
    rank = np.arange(order.size) - np.searchsorted(g, g)
    keep = rank < n
    table = np.full((n_groups, n), -1, np.int32)
    table[g[keep], rank[keep]] = order[keep]
    return table, np.minimum(np.bincount(g, minlength=n_groups), n).astype(np.int32)


@dataclass
class _DayTables:
    """Candidate item lists the site computes once a day (item indices, -1 padded)."""

    available: np.ndarray
    leaf: tuple[np.ndarray, np.ndarray]
    brand: tuple[np.ndarray, np.ndarray]
    fixed: dict[str, tuple[np.ndarray, np.ndarray]]  # trending and curated carousels


class _LoggingPolicy:
    """What the site's current recommender knows and does: popularity counts, each user's top
    leaf categories (noisy: sampled from their taste), favourite brand and purchase history."""

    def __init__(
        self,
        truth: GroundTruth,
        sim: SimParams,
        curated: list[np.ndarray | None],
        rng: np.random.Generator,
    ) -> None:
        self.truth, self.sim, self.curated = truth, sim, curated
        prior = np.exp(truth.popularity.astype(np.float64))  # pseudo-counts before the window
        self.pop = 5.0 * prior
        self.trend = 1.0 * prior
        self.top_leaves = _user_top_leaves(truth, rng, 3)
        self.brand = truth.fav_brands[:, 0]
        self.discover_cats = np.argsort(truth.taste, axis=1)[:, : sim.discover_categories].astype(
            np.int16
        )
        self.segment = rng.integers(0, len(DEFAULT_ORDERS), truth.n_users).astype(np.int8)
        self.orders = np.array(
            [[ROLES.index(r) for r in order] for order in DEFAULT_ORDERS], np.int64
        )
        leaf_size = np.bincount(truth.item_leaf, minlength=truth.leaf_category.size).astype(
            np.float64
        )
        self.leaf_sampler = GroupSampler(truth.leaf_category, leaf_size, truth.params.categories)
        # The shop existed before the window: the site already remembers regulars' staples.
        size = max(sim.history, sim.candidate_items, truth.staples.shape[1])
        self.history = np.full((truth.n_users, size), -1, np.int32)
        self.history[:, : truth.staples.shape[1]] = truth.staples
        self.history_next = np.full(truth.n_users, truth.staples.shape[1], np.int64)

    def day_tables(self, d: int) -> _DayTables:
        t, n = self.truth, self.sim.candidate_items
        available = t.available(np.arange(t.n_items), d)
        fixed = {
            "trending": _top_by_group(np.zeros(t.n_items, np.int64), self.trend, available, 1, n)
        }
        # "new" rule: newest first (first_seen), ties broken by popularity
        newness = t.first_seen_day + 0.5 * self.pop / (self.pop.max() + 1.0)
        recent = available & (t.first_seen_day > d - self.sim.new_window_days)
        for (carousel_id, _, _, rule, immutable), lst in zip(CURATED, self.curated, strict=True):
            if rule == "new" or lst is None:
                fixed[carousel_id] = _top_by_group(
                    np.zeros(t.n_items, np.int64), newness, recent, 1, n
                )
                continue
            lst = lst[available[lst]]
            if not immutable:
                lst = lst[np.argsort(-self.pop[lst], kind="stable")]
            row = np.full((1, n), -1, np.int32)
            row[0, : min(n, lst.size)] = lst[:n]
            fixed[carousel_id] = (row, np.array([min(n, lst.size)], np.int32))
        return _DayTables(
            available=available,
            leaf=_top_by_group(t.item_leaf, self.pop, available, t.leaf_category.size, n),
            brand=_top_by_group(t.item_brand, self.pop, available, t.brand_category.size, n),
            fixed=fixed,
        )

    def buy_again(self, users: np.ndarray, available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct remembered purchases, most popular first: (items[V, N], count[V])."""
        n = self.sim.candidate_items
        hist = dedupe_rows(self.history[users])
        ok = (hist >= 0) & available[np.maximum(hist, 0)]
        key = np.where(ok, -self.pop[np.maximum(hist, 0)], np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :n]
        count = np.minimum(ok.sum(1), n).astype(np.int32)
        out = np.take_along_axis(np.where(ok, hist, -1), order, 1)
        return np.where(np.arange(n) < count[:, None], out, -1), count

    def record(
        self, engaged_items: np.ndarray, weights: np.ndarray, buyers: np.ndarray, bought: np.ndarray
    ) -> None:
        """End of day: decay and add engagement counts; remember each buyer's last purchases."""
        counts = np.bincount(engaged_items, weights=weights, minlength=self.truth.n_items)
        self.pop = self.pop * 0.5 ** (1.0 / self.sim.pop_half_life_days) + counts
        self.trend = self.trend * 0.5 ** (1.0 / self.sim.trend_half_life_days) + counts
        if buyers.size == 0:
            return
        size = self.history.shape[1]
        order = np.argsort(buyers, kind="stable")  # purchases arrive in time order
        u, it = buyers[order], bought[order]
        first = np.searchsorted(u, u)
        rank = np.arange(u.size) - first
        per_user = np.bincount(u, minlength=self.truth.n_users)
        keep = rank >= per_user[u] - size  # only the last `size` purchases of the day matter
        pos = (self.history_next[u] + rank) % size
        self.history[u[keep], pos[keep]] = it[keep]
        self.history_next += per_user


def _user_top_leaves(truth: GroundTruth, rng: np.random.Generator, k: int) -> np.ndarray:
    """k distinct leaves per user, drawn without replacement ∝ taste × leaf size (Gumbel top-k)."""
    leaf_size = np.bincount(truth.item_leaf, minlength=truth.leaf_category.size).astype(np.float64)
    cat_size = np.bincount(
        truth.leaf_category, weights=leaf_size, minlength=truth.params.categories
    )
    share = leaf_size / np.maximum(cat_size[truth.leaf_category], 1.0)
    log_share = np.where(share > 0, np.log(np.maximum(share, 1e-300)), -np.inf)
    out = np.empty((truth.n_users, k), np.int32)
    chunk = 16384
    for lo in range(0, truth.n_users, chunk):  # chunks bound memory to chunk × leaves
        taste = truth.taste[lo : lo + chunk][:, truth.leaf_category].astype(np.float64)
        keys = np.log(taste + 1e-30) + log_share + rng.gumbel(size=taste.shape)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # the k best, unordered
        order = np.argsort(-np.take_along_axis(keys, top, 1), axis=1, kind="stable")
        out[lo : lo + chunk] = np.take_along_axis(top, order, 1)
    return out


# ---- one day of traffic --------------------------------------------------------------------


@dataclass
class _Sessions:
    user: np.ndarray  # user index
    start: np.ndarray  # µs since epoch
    device: np.ndarray  # index into DEVICES
    home: np.ndarray  # starts with a homepage visit
    trip: np.ndarray  # grocery trip: due staples are bought in it


def _sessions(world: _World, d: int, day_start: int, rng: np.random.Generator) -> _Sessions:
    t, sim = world.truth, world.sim
    weekend = (world.first_day + dt.timedelta(days=d)).weekday() >= 5
    p_visit = np.minimum(t.activity * (sim.weekend_boost if weekend else 1.0), 0.95)
    active = rng.random(t.n_users) < p_visit
    due = (t.staples[:, 0] >= 0) & ((d + t.trip_phase.astype(np.int64)) % t.trip_period == 0)
    trip = due & (rng.random(t.n_users) < sim.trip_show)
    users = np.flatnonzero(active | trip)
    n = 1 + np.where(active[users], rng.binomial(2, sim.extra_session_p, users.size), 0)
    first = np.cumsum(n) - n
    user = np.repeat(users, n)
    j = np.arange(user.size) - np.repeat(first, n)

    # Sessions of a user-day form a block around their habit hour, >= 95 min apart, and a
    # session lasts < 50 min: so the 30-minute sessionisation recovers them exactly.
    spacing = np.where(
        j > 0, sim.session_spacing_min + sim.session_spacing_jitter_min * rng.random(user.size), 0.0
    )
    offset = np.cumsum(spacing)
    offset -= np.repeat(offset[first], n)
    block = offset[first + n - 1] + 55.0
    center = t.habit_hour[users] * 60.0 + rng.normal(0.0, sim.hour_jitter_min, users.size)
    block_start = np.clip(center - block / 2, 0.0, 1440.0 - block - 1.0)
    start = day_start + ((np.repeat(block_start, n) + offset) * 60 * MICROS).astype(np.int64)

    pref = t.device[user].astype(np.int64)
    switch = rng.random(user.size) > sim.device_loyalty
    device = np.where(
        switch, (pref + rng.integers(1, len(DEVICES), user.size)) % len(DEVICES), pref
    )
    trip_s = np.repeat(trip[users], n) & (j == 0)
    p_home = np.where(trip_s, sim.home_share_trip, np.asarray(sim.home_share)[device])
    home = rng.random(user.size) < p_home
    return _Sessions(user=user.astype(np.int64), start=start, device=device, home=home, trip=trip_s)


@dataclass
class _Placements:
    """Shown items of homepage visits, one row per impression."""

    session: np.ndarray
    item: np.ndarray
    carousel: np.ndarray
    slot: np.ndarray  # 1-based
    position: np.ndarray  # 1-based
    propensity: np.ndarray
    policy: np.ndarray  # index into POLICIES

    def placement(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _PLACEMENT}


def _home_pages(
    world: _World, tables: _DayTables, sess: _Sessions, rng: np.random.Generator
) -> _Placements:
    sim, policy = world.sim, world.policy
    visits = np.flatnonzero(sess.home)
    users = sess.user[visits]
    h, k, n_cand = visits.size, len(ROLES), sim.candidate_items
    cand = np.full((h, k, n_cand), -1, np.int32)
    count = np.zeros((h, k), np.int32)
    car = np.zeros((h, k), np.int32)
    leaf_table, leaf_count = tables.leaf
    for r, role in enumerate(ROLES):  # fill each candidate role for all visits at once
        if role in tables.fixed:
            row, c = tables.fixed[role]
            cand[:, r], count[:, r] = row[0], c[0]
            car[:, r] = world.carousel_index(role, users)
        elif role == "brand":
            b = policy.brand[users]
            cand[:, r], count[:, r] = tables.brand[0][b], tables.brand[1][b]
            car[:, r] = world.carousel_index(role, users)
        elif role == "buy_again":
            items, c = policy.buy_again(users, tables.available)
            has = c >= sim.min_buy_again
            leaf = policy.top_leaves[users, 2]  # fallback: a third favourite category
            cand[:, r] = np.where(has[:, None], items, leaf_table[leaf])
            count[:, r] = np.where(has, c, leaf_count[leaf])
            car[:, r] = np.where(
                has,
                world.carousel_index(role, users),
                world.carousel_index("category", users, leaf),
            )
        else:
            if role == "discover":
                cats = policy.discover_cats[users, rng.integers(0, sim.discover_categories, h)]
                leaf = policy.leaf_sampler.sample(rng, cats)
                car[:, r] = world.carousel_index(role, users)
            else:
                leaf = policy.top_leaves[users, int(role[-1]) - 1]
                car[:, r] = world.carousel_index("category", users, leaf)
            ok = leaf >= 0
            leaf = np.maximum(leaf, 0)
            cand[:, r] = np.where(ok[:, None], leaf_table[leaf], -1)
            count[:, r] = np.where(ok, leaf_count[leaf], 0)

    # Which role fills each slot, and which candidate fills each position.
    s_, p_ = sim.slots, sim.positions
    random_page = rng.random(h) < sim.random_share
    role_at = np.where(
        random_page[:, None],
        np.argsort(rng.random((h, k)), axis=1)[:, :s_],
        policy.orders[policy.segment[users]][:, :s_],
    )
    n_at = np.take_along_axis(count, role_at, 1)
    keys = np.where(np.arange(n_cand) < n_at[..., None], rng.random((h, s_, n_cand)), 2.0)
    pick = np.where(random_page[:, None, None], np.argsort(keys, axis=2)[:, :, :p_], np.arange(p_))
    items = np.take_along_axis(np.take_along_axis(cand, role_at[..., None], 1), pick, 2)
    shown = np.arange(p_) < n_at[..., None]

    uniform = 1.0 / (k * np.maximum(n_at, 1))
    rho = sim.random_share
    prop = np.where(random_page[:, None], uniform, (1.0 - rho) + rho * uniform)
    grid = np.broadcast_to
    shape = (h, s_, p_)
    return _Placements(
        session=grid(visits[:, None, None], shape)[shown],
        item=items[shown].astype(np.int64),
        carousel=grid(np.take_along_axis(car, role_at, 1)[..., None], shape)[shown],
        slot=grid(np.arange(1, s_ + 1)[None, :, None], shape)[shown],
        position=grid(np.arange(1, p_ + 1)[None, None, :], shape)[shown],
        propensity=grid(prop[..., None], shape)[shown],
        policy=grid(random_page.astype(np.int8)[:, None, None], shape)[shown],
    )


@dataclass
class _Journeys:
    """One item each: a homepage click, or a search (or staple search) and the viewed item."""

    session: np.ndarray
    item: np.ndarray
    kind: np.ndarray  # _HOME, _SEARCH, _STAPLE
    carousel: np.ndarray
    slot: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    policy: np.ndarray
    query: np.ndarray

    def placement(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _PLACEMENT}

    def take(self, idx: np.ndarray) -> _Journeys:
        return _Journeys(**{k: v[idx] for k, v in vars(self).items()})


def _concat_journeys(parts: list[_Journeys]) -> _Journeys:
    return _Journeys(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def _plain_journeys(
    session: np.ndarray, item: np.ndarray, kind: int, query: np.ndarray
) -> _Journeys:
    n = session.size
    return _Journeys(
        session=session,
        item=item,
        kind=np.full(n, kind, np.int8),
        carousel=np.full(n, -1, np.int32),
        slot=np.zeros(n, np.int64),
        position=np.zeros(n, np.int64),
        propensity=np.full(n, np.nan),
        policy=np.full(n, -1, np.int8),
        query=query,
    )


def _journeys(
    world: _World, d: int, sess: _Sessions, shown: _Placements, rng: np.random.Generator
) -> _Journeys:
    t, sim = world.truth, world.sim
    user = sess.user[shown.session]
    clicked = rng.random(user.size) < t.click_probability(
        user, shown.item, shown.slot, shown.position
    )
    c = np.flatnonzero(clicked)
    home = _Journeys(
        session=shown.session[c],
        item=shown.item[c],
        kind=np.full(c.size, _HOME, np.int8),
        carousel=shown.carousel[c],
        slot=shown.slot[c],
        position=shown.position[c],
        propensity=shown.propensity[c],
        policy=shown.policy[c],
        query=np.full(c.size, -1, np.int32),
    )

    # Search journeys: a category from the user's taste, a few popular existing items of it as
    # results; the user views the most attractive one (Gumbel-max: a choice ∝ attractiveness).
    lam = np.where(sess.home, sim.search_journeys_home, sim.search_journeys_search)
    n = rng.poisson(lam) + ~sess.home
    s_idx = np.repeat(np.arange(sess.user.size), n)
    u = sess.user[s_idx]
    cats = categorical_rows(rng, t.taste[u], 1)[:, 0]
    exists = t.first_seen_day <= d
    sampler = GroupSampler(
        t.item_category, np.exp(t.popularity.astype(np.float64)) * exists, t.params.categories
    )
    cand = sampler.sample(rng, np.repeat(cats, sim.search_candidates)).reshape(
        -1, sim.search_candidates
    )
    score = np.log(t.attractiveness(u[:, None], np.maximum(cand, 0))) + rng.gumbel(size=cand.shape)
    choice = np.argmax(np.where(cand >= 0, score, -np.inf), axis=1)
    best = cand[np.arange(cand.shape[0]), choice]
    ok = best >= 0
    search = _plain_journeys(
        s_idx[ok], best[ok].astype(np.int64), _SEARCH, _queries(world, best[ok], rng)
    )

    # Staples due on a grocery trip, each bought with its own probability.
    trips = np.flatnonzero(sess.trip)
    st = t.staples[sess.user[trips]]
    due = (st >= 0) & (rng.random(st.shape) < t.staple_prob[sess.user[trips]])
    rows, cols = np.nonzero(due)
    staple_items = st[rows, cols].astype(np.int64)
    staple = _plain_journeys(trips[rows], staple_items, _STAPLE, _queries(world, staple_items, rng))
    return _concat_journeys([home, search, staple])


def _queries(world: _World, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A search word for each item: its leaf noun, or sometimes its brand."""
    brand_query = rng.random(items.size) < world.sim.brand_query_share
    n_leaves = len(world.leaf_nouns)
    return np.where(
        brand_query, n_leaves + world.truth.item_brand[items], world.truth.item_leaf[items]
    ).astype(np.int32)


class EventColumns:
    """Columns of one day's events, collected from several parts (integer codes, -1/0/nan = null)."""

    FILL = {
        "item": -1,
        "carousel": -1,
        "slot": 0,
        "position": 0,
        "propensity": np.nan,
        "query": -1,
        "quantity": 0,
        "price": np.nan,
        "policy": -1,
    }

    def __init__(self, sess: _Sessions) -> None:
        self.sess = sess
        self.parts: list[dict[str, np.ndarray]] = []

    def add(
        self, etype: str, page: str, ts: np.ndarray, session: np.ndarray, **cols: np.ndarray
    ) -> None:
        n = ts.size
        part = {
            "ts": ts,
            "session": session,
            "user": self.sess.user[session],
            "device": self.sess.device[session],
            "etype": np.full(n, EVENT_CODE[etype], np.int8),
            "page": np.full(n, _PAGE[page], np.int8),
        }
        for name, fill in self.FILL.items():
            part[name] = cols.get(name, np.full(n, fill))
        self.parts.append(part)

    def columns(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}


def _simulate_day(world: _World, d: int, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """All events of day d (index from the first day), sorted by ts, and counts per event type."""
    day = world.first_day + dt.timedelta(days=d)
    day_start = (day - dt.date(1970, 1, 1)).days * 86400 * MICROS
    sess = _sessions(world, d, day_start, rng)
    shown = _home_pages(world, world.policy.day_tables(d), sess, rng)
    ev = EventColumns(sess)
    # The page renders top to bottom, left to right, within the first ~12 seconds.
    imp_ts = (
        sess.start[shown.session]
        + (shown.slot - 1) * 2 * MICROS
        + (shown.position - 1) * MICROS // 4
    )
    ev.add("impression", "home", imp_ts, shown.session, item=shown.item, **shown.placement())

    j = _journeys(world, d, sess, shown, rng)
    j = j.take(np.lexsort((rng.random(j.session.size), j.kind != _HOME, j.session)))
    _funnel(world, d, sess, j, ev, rng)
    cols = ev.columns()
    counts = np.bincount(cols["etype"], minlength=len(EVENT_TYPES))
    return _to_arrow(world, cols, day.strftime("%Y%m%d")), counts


def schedule_visits(
    sess: _Sessions, session: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Start time of each journey (sorted by session) and each session's checkout time.

    Journeys follow each other 45 s + Exp(90 s) apart, compressed so that the last starts at most
    45 minutes into the session; checkout is 1-4 minutes after the last journey's start, later
    than any of its add-to-carts (<= 40 s after a start). A session so lasts < 50 minutes.
    """
    gaps = 45.0 + rng.exponential(90.0, session.size)
    cum = np.cumsum(gaps)
    first = np.searchsorted(session, session)
    offset = cum - cum[first] + gaps[first]
    total = np.bincount(session, weights=gaps, minlength=sess.user.size)
    offset *= np.minimum(1.0, 2700.0 / np.maximum(total, 1.0))[session]
    start = sess.start[session] + ((20.0 + offset) * MICROS).astype(np.int64)
    last = np.zeros(sess.user.size, np.int64)
    np.maximum.at(last, session, start)
    wait = 60.0 + np.minimum(rng.exponential(60.0, last.size), 180.0)
    return start, last + (wait * MICROS).astype(np.int64)


def _funnel(
    world: _World,
    d: int,
    sess: _Sessions,
    j: _Journeys,
    ev: EventColumns,
    rng: np.random.Generator,
) -> None:
    """Events of the journeys (click or search, view, add to cart, purchase at checkout), and
    the logging policy's end-of-day update from them."""
    t, sim = world.truth, world.sim
    start, checkout = schedule_visits(sess, j.session, rng)
    view_ts = start + (rng.uniform(3.0, 20.0, start.size) * MICROS).astype(np.int64)
    atc_ts = start + (rng.uniform(25.0, 40.0, start.size) * MICROS).astype(np.int64)
    user, dev = sess.user[j.session], sess.device[j.session]
    from_search = j.kind != _HOME
    atc = rng.random(user.size) < t.add_to_cart_probability(user, j.item, dev, d, from_search)
    bought = atc & (rng.random(user.size) < t.purchase_probability(user, j.item, dev, d))
    extra = np.where(j.kind == _STAPLE, sim.staple_quantity_extra, sim.quantity_extra)
    cart = {"quantity": (1 + rng.poisson(extra)).astype(np.int32), "price": t.price[j.item]}

    def cols(idx: np.ndarray, **more: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in {**j.placement(), "item": j.item, **more}.items()}

    home, srch = np.flatnonzero(~from_search), np.flatnonzero(from_search)
    a, b = np.flatnonzero(atc), np.flatnonzero(bought)
    ev.add("click", "home", start[home], j.session[home], **cols(home))
    ev.add("search", "search", start[srch], j.session[srch], query=j.query[srch])
    ev.add("view", "item", view_ts, j.session, **cols(np.arange(j.session.size)))
    ev.add("add_to_cart", "item", atc_ts[a], j.session[a], **cols(a, **cart))
    ev.add("purchase", "checkout", checkout[j.session[b]], j.session[b], **cols(b, **cart))

    engaged = np.concatenate([j.item[home], j.item[a], j.item[b]])
    weights = np.concatenate([np.ones(home.size), np.full(a.size, 3.0), np.full(b.size, 5.0)])
    world.policy.record(engaged, weights, user[b], j.item[b])


def _to_arrow(world: _World, c: dict[str, np.ndarray], compact_day: str) -> pa.Table:
    order = np.argsort(c["ts"], kind="stable")
    c = {k: v[order] for k, v in c.items()}
    n = order.size
    arrays = [
        id_array(f"e{compact_day}", np.arange(n), 9),
        pa.array(c["ts"], pa.timestamp("us", tz="UTC")),
        world.user_vocab.take(pa.array(c["user"])),
        id_array(f"s{compact_day}", c["session"], 8),
        string_array(EVENT_TYPES).take(pa.array(c["etype"])),
        take(world.item_vocab, c["item"]),
        take(world.carousel_vocab, c["carousel"]),
        nullable(c["slot"].astype(np.int32), c["slot"] == 0, pa.int32()),
        nullable(c["position"].astype(np.int32), c["position"] == 0, pa.int32()),
        nullable(c["propensity"], np.isnan(c["propensity"]), pa.float64()),
        string_array(PAGES).take(pa.array(c["page"])),
        string_array(DEVICES).take(pa.array(c["device"])),
        take(world.query_vocab, c["query"]),
        nullable(c["quantity"].astype(np.int32), c["quantity"] == 0, pa.int32()),
        nullable(c["price"], np.isnan(c["price"]), pa.float64()),
        take(string_array(POLICIES), c["policy"]),
    ]
    return pa.Table.from_arrays(arrays, schema=GENERATED_EVENT_SCHEMA)
