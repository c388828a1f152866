import numpy as np
import pytest

from reference_eval import (
    average_recall_vs_avg_nr_proposals,
    ground_truth_from_rows,
    predictions_from_rows,
    random_case,
)
from tal.eval import TIOU_PRESETS, evaluate_proposals


def _proposals(rows):
    return predictions_from_rows([(v, "", s, e, p) for v, s, e, p in rows], with_labels=False)


def test_hand_case_rank_five_hit():
    """One GT; 100 proposals of which only rank 4 (0-based) overlaps: recalled from 5 proposals on."""
    gt = ground_truth_from_rows([("v", "a", 0.0, 10.0)], ["a"])
    rows = [("v", 100.0 + i, 101.0 + i, 1.0 - i / 100) for i in range(100)]
    rows[4] = ("v", 0.0, 10.0, rows[4][3])
    result = evaluate_proposals(gt, _proposals(rows), 100)
    m = result.metrics()
    assert m["AR@1"] == 0.0 and m["AR@5"] == 1.0 and m["AR@10"] == 1.0 and m["AR@100"] == 1.0
    np.testing.assert_allclose(result.proposals_per_video, np.arange(1, 101), rtol=1e-12)
    # trapezoid over AN 1..100 of a step from 0 (AN 4) to 1 (AN 5): 0.5 + 95 -> AUC 95.5 %
    assert m["AUC"] == pytest.approx(95.5, abs=1e-9)


def test_hand_case_budget_ratio():
    """Two proposals for one video at AN 2: ratio 1; budgets int(2 * j / 100) -> the hit (rank 1) only at j=100."""
    gt = ground_truth_from_rows([("v", "a", 0.0, 10.0)], ["a"])
    result = evaluate_proposals(gt, _proposals([("v", 50.0, 60.0, 0.9), ("v", 0.0, 10.0, 0.8)]), 2)
    expected = np.zeros(100)
    expected[99] = 1.0
    np.testing.assert_array_equal(result.avg_recall, expected)
    assert result.auc == pytest.approx(100 * 0.5 * (2 / 100) / 2)
    assert set(result.metrics()) == {"AR@1", "AUC"}


def test_videos_without_proposals_or_ground_truth():
    gt = ground_truth_from_rows([("v", "a", 0.0, 10.0), ("w", "a", 0.0, 10.0)], ["a"], extra_videos=["e"])
    # "w" has no proposal (recalls nothing), "x" has no GT (its proposals only enter the ratio)
    rows = [("v", 0.0, 10.0, 0.9)] + [("x", 0.0, 1.0, 0.5)] * 3
    result = evaluate_proposals(gt, _proposals(rows), 100)
    assert result.metrics()["AR@100"] == 0.5
    assert evaluate_proposals(gt, _proposals([]), 100).metrics()["AUC"] == 0.0


@pytest.mark.parametrize(
    "seed,num_videos,preds_per_video,max_avg",
    [(0, 4, 5, 100), (1, 15, 30, 10), (2, 40, 60, 100), (3, 30, 40, 7), (4, 25, 150, 100)],
)
def test_random_cases_equal_reference(seed, num_videos, preds_per_video, max_avg):
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows, names = random_case(
        rng, num_videos, 3, preds_per_video=preds_per_video, score_decimals=2
    )
    gt = ground_truth_from_rows(gt_rows, names)
    rows = [(v, s, e, p) for v, _, s, e, p in pred_rows]
    result = evaluate_proposals(gt, _proposals(rows), max_avg)
    recall, avg_recall, ppv = average_recall_vs_avg_nr_proposals(
        [(v, s, e) for v, _, s, e in gt_rows], rows, max_avg, TIOU_PRESETS["anet"]
    )
    np.testing.assert_array_equal(result.recall, recall)
    np.testing.assert_array_equal(result.avg_recall, avg_recall)
    np.testing.assert_array_equal(result.proposals_per_video, ppv)
    assert result.auc == 100.0 * float(np.trapezoid(avg_recall, ppv)) / ppv[-1]
    assert result.avg_recall[-1] > 0.1


def test_equal_scores_later_proposal_first():
    """Budget of one proposal (AN 1, two proposals): the later of two equal scores is the one kept."""
    gt = ground_truth_from_rows([("v", "a", 0.0, 10.0)], ["a"])
    hit, miss = ("v", 0.0, 10.0, 0.5), ("v", 50.0, 60.0, 0.5)
    assert evaluate_proposals(gt, _proposals([hit, miss]), 1).avg_recall[-1] == 0.0
    assert evaluate_proposals(gt, _proposals([miss, hit]), 1).avg_recall[-1] == 1.0


@pytest.mark.parametrize("protocol,recalled_at_zero", [("official", 0.0), ("strict", 1.0)])
def test_degenerate_pairs_never_recall_officially(protocol, recalled_at_zero):
    """NaN tIoU (zero union) fails ``>= thr`` even at threshold 0; strict makes it 0, which passes 0."""
    gt_rows = [("v", 5.0, 5.0), ("w", 0.0, 4.0)]
    rows = [("v", 5.0, 5.0, 0.9), ("w", 6.0, 2.0, 0.9)]  # zero-length pair, and a length cancelling the GT's
    gt = ground_truth_from_rows([(v, "a", s, e) for v, s, e in gt_rows], ["a"])
    result = evaluate_proposals(gt, _proposals(rows), 1, [0.0, 0.5], protocol=protocol)
    assert result.recall[:, -1].tolist() == [recalled_at_zero, 0.0]
    recall, _, _ = average_recall_vs_avg_nr_proposals(gt_rows, rows, 1, [0.0, 0.5], protocol == "strict")
    np.testing.assert_array_equal(result.recall, recall)


def test_max_avg_proposals_must_be_positive():
    gt = ground_truth_from_rows([("v", "a", 0.0, 10.0)], ["a"])
    with pytest.raises(ValueError, match="max_avg_proposals"):
        evaluate_proposals(gt, _proposals([("v", 0.0, 1.0, 0.5)]), 0)
