"""Known answers for the offline metrics, each computed by hand in the comment beside it."""

import math

import numpy as np
import pytest

from models.evaluation import metrics as m

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_auc_counts_ordered_pairs():
    # pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert m.auc(Y, P) == pytest.approx(0.75)
    # a tie counts one half
    assert m.auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    # weight 2 on the negative at 0.4: correct pair weight 1 + 1 + 2 = 4 of (1 + 1) * (1 + 2) = 6
    assert m.auc(Y, P, np.array([1, 2, 1, 1])) == pytest.approx(4 / 6)


def test_pr_auc_is_average_precision():
    # ranked: 0.8 (pos) P=1 R=.5; 0.4 (neg); 0.35 (pos) P=2/3 R=1 -> .5*1 + .5*2/3
    assert m.pr_auc(Y, P) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert m.pr_auc(Y, np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(1.0)


def test_log_loss_and_clipping():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert m.log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(expected)
    # weights 3:1 -> (3 * -ln .8 + 1 * -ln .6) / 4
    w_expected = (3 * -math.log(0.8) - math.log(0.6)) / 4
    assert m.log_loss(np.array([1, 0]), np.array([0.8, 0.4]), np.array([3, 1])) == pytest.approx(
        w_expected
    )
    # a confident mistake is finite: p = 1 is clipped to 1 - 1e-15, so the loss is -ln(1e-15)
    clipped = -math.log1p(-(1 - 1e-15))  # 1 - (1 - 1e-15) is 1.11e-15 in floating point
    assert m.log_loss(np.array([0]), np.array([1.0])) == pytest.approx(clipped)
    assert clipped == pytest.approx(-math.log(1e-15), rel=1e-4)


def test_expected_calibration_error():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.9])
    # bin [0, .5): mean p .15, rate .5 -> .35; bin [.5, 1]: mean p .8, rate 1 -> .2; mass 1/2 each
    assert m.expected_calibration_error(y, p, bins=2) == pytest.approx(0.275)
    # weight 3 on the first row: bin 0 mass 4/6, mean p (.3+.2)/4=.125, rate 1/4 -> .125;
    # bin 1 mass 2/6 -> .2; ECE = 4/6 * .125 + 2/6 * .2
    w = np.array([3, 1, 1, 1])
    assert m.expected_calibration_error(y, p, bins=2, sample_weight=w) == pytest.approx(
        4 / 6 * 0.125 + 2 / 6 * 0.2
    )
    # p = 1 falls in the last bin; a perfectly calibrated constant has ECE 0
    assert m.expected_calibration_error(np.array([1, 1]), np.array([1.0, 1.0])) == 0.0
    assert m.expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5])) == 0.0


def test_reliability_curve_skips_empty_bins():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.9])
    mean_p, rate, count = m.reliability_curve(y, p, bins=4)
    # bins [0,.25) and [.5,.75), [.75,1]; [.25,.5) is empty
    np.testing.assert_allclose(mean_p, [0.15, 0.7, 0.9])
    np.testing.assert_allclose(rate, [0.5, 1.0, 1.0])
    np.testing.assert_array_equal(count, [2, 1, 1])


def test_ndcg_at_k():
    # Wikipedia's example: DCG_6 = 6.861, IDCG_6 = 7.141 (ideal 3,3,2,2,1,0)
    rel = np.array([3, 2, 3, 0, 1, 2])
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel))
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate([3, 3, 2, 2, 1, 0]))
    assert dcg == pytest.approx(6.861, abs=1e-3)
    assert m.ndcg_at_k(rel, 6) == pytest.approx(dcg / idcg)
    assert m.ndcg_at_k(rel, 6) == pytest.approx(0.961, abs=1e-3)
    # @1: 3 / 3; @2: (3 + 2/log2 3) / (3 + 3/log2 3)
    assert m.ndcg_at_k(rel, 1) == pytest.approx(1.0)
    l3 = math.log2(3)
    assert m.ndcg_at_k(rel, 2) == pytest.approx((3 + 2 / l3) / (3 + 3 / l3))
    # the ideal uses the whole list: the one relevant item at rank 2 gives 1/log2(3)
    assert m.ndcg_at_k(np.array([0, 1]), 2) == pytest.approx(1 / l3)
    assert m.ndcg_at_k(np.array([0, 1]), 1) == 0.0
    assert m.ndcg_at_k(np.zeros(3), 3) == 0.0
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.ndcg_at_k(rel, 0)


def test_ndcg_2d():
    l3 = math.log2(3)
    # discounts log2(s + l): (1,1) 1, (1,2) and (2,1) log2 3, (2,2) 2
    grid = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert m.ndcg_2d(grid) == pytest.approx((2 / l3) / (1 + 1 / l3))
    assert m.ndcg_2d(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(1.0)
    # gains 2 at (2,2) and 1 at (1,1): DCG 1 + 2/2 = 2; ideal 2 at (1,1), 1 at (1,2): 2 + 1/log2 3
    assert m.ndcg_2d(np.array([[1.0, 0.0], [0.0, 2.0]])) == pytest.approx(2 / (2 + 1 / l3))
    # a shorter second carousel: NaN cells are not on the page, not even in the ideal
    ragged = np.array([[0.0, 0.0, 1.0], [1.0, np.nan, np.nan]])
    assert m.ndcg_2d(ragged) == pytest.approx((1 / 2 + 1 / l3) / (1 + 1 / l3))
    assert m.ndcg_2d(np.zeros((2, 3))) == 0.0
    with pytest.raises(ValueError, match="2-D"):
        m.ndcg_2d(np.zeros(3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: m.auc(np.array([1, 1]), np.array([0.2, 0.3])), "both positives and negatives"),
        (lambda: m.auc(np.array([0, 2]), np.array([0.2, 0.3])), r"lie in \[0, 1\]"),
        (lambda: m.auc(np.array([0, 0.5]), np.array([0.2, 0.3])), "binary"),
        (lambda: m.log_loss(np.array([0, 1]), np.array([0.2])), "same length"),
        (lambda: m.log_loss(np.array([0, 1]), np.array([0.2, 1.3])), r"lie in \[0, 1\]"),
        (lambda: m.log_loss(np.array([0, 1]), np.array([0.2, np.nan])), "finite"),
        (lambda: m.log_loss(np.array([0, 1]), np.array([0.2, 0.3]), np.array([0, 0])), "not all 0"),
        (lambda: m.expected_calibration_error(np.array([0]), np.array([0.1]), bins=0), "bins"),
        (lambda: m.ndcg_at_k(np.array([1.0, -1.0]), 2), ">= 0"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
