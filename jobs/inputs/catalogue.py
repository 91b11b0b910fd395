"""The generated catalogue's strings and curated lists: leaf category ids and nouns, invented
brand names, item titles, and the operator item lists of the curated carousels."""

from __future__ import annotations

import numpy as np

from jobs.inputs.site_model import CURATED, SimParams
from jobs.inputs.truth import GroundTruth

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


def leaf_names(truth: GroundTruth) -> tuple[list[str], list[str]]:
    cats = truth.leaf_category.astype(np.int64)
    within = np.arange(cats.size) - np.searchsorted(cats, cats)
    ids = [f"c{c + 1:02d}_{j + 1:02d}" for c, j in zip(cats, within, strict=True)]
    nouns = [CATEGORIES[c][1][j] for c, j in zip(cats, within, strict=True)]
    return ids, nouns


def invent_brand_names(n: int, rng: np.random.Generator) -> list[str]:
    """Unique invented brand names; about 1 in 60 is a "X & Y" pair (HTML escaping matters)."""
    pool = [a + e for a in _ONSETS for e in _ENDINGS]
    pool += [a + m + e for a in _ONSETS for m in _MIDDLES for e in _ENDINGS]
    picked = [pool[k] for k in rng.permutation(len(pool))[: min(n, len(pool))]]
    picked += [f"{pool[k % len(pool)]} {k // len(pool) + 2}" for k in range(n - len(picked))]
    pairs = np.flatnonzero(rng.random(n) < 1 / 60)
    for k in pairs:  # over a handful of brands
        picked[k] = f"{picked[k]} & {_ONSETS[k % len(_ONSETS)]}{_ENDINGS[(k // 7) % len(_ENDINGS)]}"
    return picked


def item_titles(
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


def curated_item_lists(
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
