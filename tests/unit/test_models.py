import numpy as np
import pytest
from oracles.page import assemble_page
from oracles.scoring import carousel_scores

from models.ranking.catalog import PAD
from models.ranking.item_lists import top_k_rows
from models.ranking.mf import MFParams, fit_mf
from models.ranking.scoring import position_discount


def _checkerboard(n_users=40, n_items=20):
    """Even users like even items, odd users like odd items: the right answer is obvious."""
    users, items = [], []
    for u in range(n_users):
        for i in range(n_items):
            if (u + i) % 2 == 0 and (u * 7 + i) % 5 != 0:  # hold some liked cells out
                users.append(f"u{u:02d}")
                items.append(f"i{i:02d}")
    return np.array(users, dtype=object), np.array(items, dtype=object)


@pytest.mark.parametrize(
    ("algorithm", "regularization", "iterations"), [("als", 1.0, 30), ("bpr", 0.01, 300)]
)
def test_mf_recovers_the_checkerboard(algorithm, regularization, iterations):
    users, items = _checkerboard()
    params = MFParams(
        algorithm=algorithm, factors=2, regularization=regularization, iterations=iterations, seed=3
    )
    model = fit_mf(users, items, np.ones(len(users)), params)
    scores = model.user_factors @ model.item_factors.T
    for u in range(40):
        row = model.user_index(np.array([f"u{u:02d}"], dtype=object))[0]
        liked = model.item_index(
            np.array([f"i{i:02d}" for i in range(20) if (u + i) % 2 == 0], dtype=object)
        )
        other = model.item_index(
            np.array([f"i{i:02d}" for i in range(20) if (u + i) % 2 == 1], dtype=object)
        )
        # held-out liked cells must still outrank every cell of the other colour
        assert scores[row, liked].min() > scores[row, other].max(), f"user {u}"


# determinism, named errors on bad interactions and unknown ids: the trainer contract that
# fit_mf shares with its Spark twin (tests/spark/test_trainer_contracts.py)


def test_mf_params_name_the_allowed_algorithms():
    with pytest.raises(ValueError, match="algorithm must be"):
        MFParams(algorithm="svd")


def test_carousel_score_matches_the_formula_by_hand():
    # one user, two items per carousel; categories: item0 -> c0, item1 -> c1, item2 -> c0
    r = np.array([[0.8, 0.4, 0.2]])
    g = np.array([[0.5, 0.1]])
    item_cat = np.array([0, 1, 0])
    items = np.array([[0, 1], [2, PAD]])
    lam = np.array([0.3, 0.6])
    page = dict(
        items=items, users=np.array([0, 0]), item_scores=r, discovery=g, item_cat=item_cat, lam=lam
    )
    phi, alpha, gamma = carousel_scores(**page, w=0.7)
    d1, d2 = 1 / np.log(2), 1 / np.log(3)
    assert alpha[0] == pytest.approx(0.3 * (0.8 * d1 + 0.4 * d2))
    assert gamma[0] == pytest.approx(0.5 * d1 + 0.1 * d2)
    assert alpha[1] == pytest.approx(0.6 * 0.2 * d1)  # padding adds nothing
    assert gamma[1] == pytest.approx(0.5 * d1)
    assert phi[0] == pytest.approx(0.7 * alpha[0] + 0.3 * gamma[0])
    np.testing.assert_allclose(position_discount(2), [d1, d2])
    with pytest.raises(ValueError, match="w must be in"):
        carousel_scores(**page, w=2)


def test_top_k_rows_orders_and_skips_forbidden():
    s = np.array([[0.1, 0.9, -np.inf, 0.5]])
    assert top_k_rows(s, 2).tolist() == [[1, 3]]
    assert top_k_rows(s, 4).tolist() == [[1, 3, 0, PAD]]


def test_page_never_repeats_items_or_adjacent_families():
    items = np.array(
        [
            [1, 2, 3, 4],  # 0 family a
            [5, 6, 7, 8],  # 1 family a  (must not sit under 0)
            [1, 2, 9, 10],  # 2 family b  (shares 1, 2 with carousel 0)
            [11, 12, PAD, PAD],  # 3 family c (too short for min_items=3)
        ]
    )
    families = ["a", "a", "b", "c"]
    page = assemble_page(
        order=np.array([0, 1, 2, 3]),
        families=families,
        items=items,
        slots=5,
        per_carousel=4,
        min_items=2,
    )
    assert [p.candidate for p in page] == [0, 2, 1, 3]
    assert page[1].items.tolist() == [9, 10]  # 1 and 2 were already shown higher up
    shown = np.concatenate([p.items for p in page])
    assert len(shown) == len(set(shown.tolist()))
    fams = [families[p.candidate] for p in page]
    assert all(x != y for x, y in zip(fams, fams[1:], strict=False))
    short = assemble_page(
        order=np.array([0, 2, 3]),
        families=families,
        items=items,
        slots=5,
        per_carousel=4,
        min_items=3,
    )
    assert [p.candidate for p in short] == [0]  # 2 has only 2 fresh items, 3 has 2 items
