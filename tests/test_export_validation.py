"""The export's GX suite rejects pages that break the output contract, naming the rule."""

import numpy as np
import pandas as pd
import pytest

from validation.export import validate_pages
from validation.gx import ValidationFailed


def page(rows):
    cols = [
        "user_id",
        "slot",
        "carousel_id",
        "family",
        "item_rank",
        "item_id",
        "carousel_score",
        "item_score",
    ]
    df = pd.DataFrame(rows, columns=cols)
    return df.assign(reason="r", model_version="v1")


GOOD = [
    ("u1", 1, "c1", "x", 1, "a", 1.0, 0.5),
    ("u1", 1, "c1", "x", 2, "b", 1.0, 0.4),
    ("u1", 2, "c2", "y", 1, "c", 0.9, 0.3),
    ("__default__", 1, "c1", "x", 1, "a", 1.0, 0.5),
]


def test_a_good_page_passes():
    assert validate_pages(page(GOOD), ["u1", "__default__"], slots=2, per_carousel=2)["success"]


@pytest.mark.parametrize(
    ("rows", "known", "needle"),
    [
        (
            GOOD[:2] + [("u1", 2, "c2", "x", 1, "c", 0.9, 0.3)] + GOOD[3:],
            ["u1"],
            "_adjacent_family",
        ),
        (
            GOOD[:2] + [("u1", 2, "c2", "y", 1, "a", 0.9, 0.3)] + GOOD[3:],
            ["u1"],
            "expect_compound_columns_to_be_unique",
        ),
        (GOOD[:2] + [("u1", 2, "c2", "y", 1, "c", np.nan, 0.3)] + GOOD[3:], ["u1"], "_finite"),
        (GOOD[:2] + [("u1", 3, "c2", "y", 1, "c", 0.9, 0.3)] + GOOD[3:], ["u1"], "'slot'"),
        (GOOD, ["u1", "u2"], "1 known user(s) have no page, e.g. ['u2']"),
    ],
)
def test_bad_pages_are_refused_with_the_rule_named(rows, known, needle):
    with pytest.raises(ValidationFailed) as err:
        validate_pages(page(rows), known, slots=2, per_carousel=2)
    assert needle in str(err.value)
