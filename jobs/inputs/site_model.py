"""How the generated shop's site and its visitors behave: `SimParams` (page layout, logging
policy, sessions), the homepage's candidate carousel roles, the default policy's slot orders and
the operator-curated carousels."""

from __future__ import annotations

from dataclasses import dataclass

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
FIXED_CAROUSELS = (*(c[0] for c in CURATED), "buy_again", "trending", "discover")


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
