"""The carousel labels and the isotonic φ -> P(engage | carousel) map the train step fits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from jobs.daily.carousel_weight import carousel_labels, fit_carousel_calibration
from models.ranking.candidates import PAD

ITEM_IDS = np.array([f"i{i}" for i in range(10)], dtype=object)


def _scored():
    return SimpleNamespace(
        users=np.array(["a", "b"], dtype=object),
        cands=SimpleNamespace(user=np.array([0, 0, 1, 1])),
        items=np.array([[0, 1, 2], [9, 3, PAD], [0, 1, 2], [4, 5, 9]]),
    )


def test_a_carousel_is_positive_when_one_of_its_first_m_items_was_engaged_with():
    engaged = pd.DataFrame({"user_id": ["a", "b", "b", "zz"], "item_id": ["i3", "i9", "i2", "i0"]})
    # a engaged with i3 (carousel 1); b with i9 (carousel 3, third item) and i2 (carousel 2)
    assert carousel_labels(_scored(), ITEM_IDS, engaged, 3).tolist() == [0, 1, 1, 1]
    # only the first 2 items count: b's i9 and i2 are third in their rows
    assert carousel_labels(_scored(), ITEM_IDS, engaged, 2).tolist() == [0, 1, 0, 0]
    # an engaged item beyond the candidates' largest index never reads as the next user's item
    low = _scored()
    low.items = np.array([[0, 1, 2], [4, 3, PAD], [0, 1, 2], [4, 5, PAD]])
    a_only = pd.DataFrame({"user_id": ["a"], "item_id": ["i7"]})
    assert carousel_labels(low, ITEM_IDS, a_only, 3).tolist() == [0, 0, 0, 0]


def test_no_engagement_or_unknown_items_give_zeros():
    none = pd.DataFrame({"user_id": ["a"], "item_id": ["nope"]})
    assert carousel_labels(_scored(), ITEM_IDS, none, 3).tolist() == [0, 0, 0, 0]
    empty = pd.DataFrame({"user_id": [], "item_id": []})
    assert carousel_labels(_scored(), ITEM_IDS, empty, 3).tolist() == [0, 0, 0, 0]


def test_the_calibration_is_monotone_in_phi_and_none_for_one_class():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * phi))).astype(int)
    cal = fit_carousel_calibration(phi, y)
    assert np.all(np.diff(cal["y"]) >= 0) and 0 <= cal["y"][0] < cal["y"][-1] <= 1
    assert fit_carousel_calibration(phi, np.zeros(2000, dtype=int)) is None
