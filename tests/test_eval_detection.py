import numpy as np
import pytest
import torch

from reference_eval import (
    actionformer_filter,
    detection_ap_reference,
    ground_truth_from_rows,
    interpolated_prec_rec,
    predictions_from_rows,
    random_case,
)
from tal.eval import TIOU_PRESETS, evaluate_detection, interpolated_average_precision, resolve_tiou_thresholds
from tal.formats.results import ResultsError
from tal.ops import paired_segment_iou


def _evaluate(gt_rows, pred_rows, tiou, label_names=None, extra_gt_videos=(), protocol="official"):
    label_names = label_names or sorted({r[1] for r in gt_rows})
    gt = ground_truth_from_rows(gt_rows, label_names, extra_videos=extra_gt_videos)
    return evaluate_detection(gt, predictions_from_rows(pred_rows), tiou, protocol=protocol)


def test_presets_are_the_linspace_floats():
    anet = resolve_tiou_thresholds("anet")
    assert np.array_equal(anet, np.linspace(0.5, 0.95, 10)) and anet[8] == 0.8999999999999999
    assert np.array_equal(resolve_tiou_thresholds("thumos"), np.linspace(0.3, 0.7, 5))
    assert resolve_tiou_thresholds("0.5,0.75").tolist() == [0.5, 0.75]
    assert resolve_tiou_thresholds([0.3]).tolist() == [0.3]
    with pytest.raises(ValueError, match="tIoU thresholds"):
        resolve_tiou_thresholds("coco")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve_tiou_thresholds([1.5])


def test_interpolated_ap_hand_case():
    # hits [1, 0, 1] of 2 positives: precision [1, .5, 2/3], recall [.5, .5, 1] -> .5 * 1 + .5 * 2/3
    tp = np.array([[True, False, True]])
    assert interpolated_average_precision(tp, 2)[0] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)
    # a 4th positive never found: recall caps at .75
    assert interpolated_average_precision(tp, 4)[0] == pytest.approx(0.25 + 0.25 * 2 / 3, abs=1e-15)
    assert interpolated_average_precision(np.zeros((3, 0), bool), 5).tolist() == [0, 0, 0]
    rng = np.random.default_rng(0)
    hits = rng.uniform(size=(4, 60)) < 0.4
    for t in range(4):
        prec = np.cumsum(hits[t]) / np.arange(1, 61)
        rec = np.cumsum(hits[t]) / 30
        assert interpolated_average_precision(hits[t : t + 1], 30)[0] == interpolated_prec_rec(prec, rec)


def test_hand_case_duplicate_and_exact_threshold():
    gt = [("v", "a", 0.0, 10.0), ("v", "a", 20.0, 30.0)]
    preds = [
        ("v", "a", 0.0, 10.0, 0.9),  # tIoU 1 with the first GT
        ("v", "a", 1.0, 10.0, 0.8),  # tIoU .9 with the same GT, already matched -> FP
        ("v", "a", 20.0, 25.0, 0.7),  # tIoU exactly .5 with the second GT
    ]
    result = _evaluate(gt, preds, [0.5, 0.55])
    # at .5: hits [1,0,1] -> 1/2 + 1/2 * 2/3 ; at .55: hits [1,0,0] -> 1/2
    np.testing.assert_allclose(result.ap[:, 0], [0.5 + 0.5 * 2 / 3, 0.5], rtol=0, atol=1e-15)
    assert result.metrics()["mAP@0.50"] == pytest.approx(5 / 6)
    assert result.metrics()["mAP"] == pytest.approx((5 / 6 + 0.5) / 2)


def test_threshold_float_from_linspace_matters():
    """tIoU just below 0.9 is a hit at linspace's 0.8999999999999999 but not at a literal 0.9."""
    thr = np.linspace(0.5, 0.95, 10)[8]
    end = 0.8999999999999999  # pred [0, end] vs GT [0, 1]
    iou = float(paired_segment_iou(torch.tensor([0.0, end], dtype=torch.float64), torch.tensor([0.0, 1.0])))
    assert iou == thr < 0.9
    rows = [("v", "a", 0.0, 1.0)], [("v", "a", 0.0, end, 1.0)]
    assert _evaluate(*rows, "anet").ap[8, 0] == 1.0
    assert _evaluate(*rows, [0.9]).ap[0, 0] == 0.0


def test_score_ties_later_prediction_first():
    """The official argsort()[::-1]: among equal scores the later row of the file is ranked first."""
    gt = [("v", "a", 0.0, 10.0)]
    hit, miss = ("v", "a", 0.0, 10.0, 0.5), ("v", "a", 50.0, 60.0, 0.5)
    assert _evaluate(gt, [hit, miss], [0.5]).ap[0, 0] == 0.5  # ranked miss, hit
    assert _evaluate(gt, [miss, hit], [0.5]).ap[0, 0] == 1.0  # ranked hit, miss
    for rows in ([hit, miss], [miss, hit]):
        assert _evaluate(gt, rows, [0.5]).ap[0, 0] == detection_ap_reference(gt, rows, [0.5])["a"][0]


def test_equal_tiou_ground_truths_later_first():
    # the prediction [5,15] has tIoU 1/3 with both GTs and takes the later one; [0,10] then finds its GT free
    gt = [("v", "a", 0.0, 10.0), ("v", "a", 10.0, 20.0)]
    preds = [("v", "a", 5.0, 15.0, 0.9), ("v", "a", 0.0, 10.0, 0.8)]
    np.testing.assert_allclose(_evaluate(gt, preds, [0.3]).ap[:, 0], [1.0])
    # reversed ground truth: [5,15] takes [0,10] (now later), so the second prediction is a false positive
    np.testing.assert_allclose(_evaluate(gt[::-1], preds, [0.3]).ap[:, 0], [0.5])
    assert detection_ap_reference(gt[::-1], preds, [0.3])["a"][0] == 0.5


def test_large_tie_groups_keep_the_rule():
    """40 predictions of equal score (beyond numpy's 16): tal keeps "later first", like the reference."""
    gt = [("v", "a", float(10 * k), float(10 * k + 5)) for k in range(20)]
    preds = [("v", "a", float(10 * k), float(10 * k + 5) + (0 if k % 2 else 30), 0.5) for k in range(40)]
    result = _evaluate(gt, preds, [0.5])
    assert result.ap[0, 0] == detection_ap_reference(gt, preds, [0.5])["a"][0]
    ranked_hits = [k % 2 == 1 and k < 20 for k in reversed(range(40))]
    assert result.ap[0, 0] == pytest.approx(interpolated_prec_rec(*_prec_rec(ranked_hits, 20)))


def _prec_rec(hits, npos):
    tp = np.cumsum(hits)
    return tp / np.arange(1, len(hits) + 1), tp / npos


def test_class_without_predictions_counts_as_zero():
    gt = [("v", "a", 0.0, 10.0), ("v", "b", 20.0, 30.0), ("w", "b", 0.0, 5.0)]
    result = _evaluate(gt, [("v", "a", 0.0, 10.0, 0.9)], "anet", label_names=["a", "b", "c"])
    assert result.class_names == ["a", "b"]  # "c" has no ground truth: not averaged
    np.testing.assert_array_equal(result.ap, np.c_[np.ones(10), np.zeros(10)])
    assert result.average_map == 0.5


def test_videos_without_ground_truth_are_false_positives():
    gt = [("v", "a", 0.0, 10.0)]
    preds = [("other", "a", 0.0, 10.0, 0.9), ("empty", "a", 0.0, 10.0, 0.85), ("v", "a", 0.0, 10.0, 0.8)]
    result = _evaluate(gt, preds, [0.5], extra_gt_videos=["empty"])
    assert result.ap[0, 0] == pytest.approx(1 / 3)


def test_predictions_outside_the_subset_are_false_positives():
    from tal.formats.annotations import AnnotationSet, VideoAnnotation

    videos = {
        "val": VideoAnnotation("val", "validation", 60.0, np.array([[0.0, 10.0]]), ["a"]),
        "train": VideoAnnotation("train", "training", 60.0, np.array([[0.0, 10.0]]), ["a"]),
    }
    gt = AnnotationSet(videos, ["a"]).subset("validation")
    preds = predictions_from_rows([("train", "a", 0.0, 10.0, 0.9), ("val", "a", 0.0, 10.0, 0.8)])
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == 0.5


def test_unknown_labels_are_ignored():
    gt = [("v", "a", 0.0, 10.0), ("v", "b", 20.0, 30.0)]
    preds = [
        ("v", "zebra", 0.0, 10.0, 0.99),
        ("v", "zebra", 20.0, 30.0, 0.98),
        ("v", "a", 0.0, 10.0, 0.5),
        ("v", "b", 20.0, 30.0, 0.4),
    ]
    result = _evaluate(gt, preds, "thumos")
    np.testing.assert_array_equal(result.ap, np.ones((5, 2)))
    assert result.num_ignored == 2


DEGENERATE_GT = [("v", "a", 5.0, 5.0), ("v", "a", 0.0, 10.0), ("w", "a", 10.0, 0.0), ("x", "a", 0.0, 4.0)]
DEGENERATE_PREDS = [
    ("v", "a", 5.0, 5.0, 0.9),  # zero-length on zero-length GT: union 0 -> NaN (official: a hit)
    ("v", "a", 8.0, 2.0, 0.8),  # inverted inside [0,10]: intersection 0 over a positive union -> 0
    ("w", "a", 10.0, 0.0, 0.7),  # inverted on the inverted GT: union -20 -> -0.0, a miss
    ("x", "a", 6.0, 2.0, 0.65),  # length -4 cancels the GT's 4: union 0 -> NaN (official: a hit)
    ("v", "a", 0.0, 10.0, 0.6),  # a real hit
]


@pytest.mark.parametrize(
    "protocol,expected",
    [
        # hits [1,0,0,1,1] of 4: P = 1, .5, .33, .5, .6 at R = .25, .25, .25, .5, .75 -> .25 + .15 + .15
        ("official", 0.55),
        # hits [0,0,0,0,1] of 4: precision 1/5 at recall 1/4
        ("strict", 0.05),
        # GT [5,5] and [10,0] dropped (shorter than 1e-3 s): hits [0,0,0,1,1] of 2 -> .5 * .4 + .5 * .4
        ("actionformer", 0.4),
    ],
)
def test_degenerate_segments_under_each_protocol(protocol, expected):
    result = _evaluate(DEGENERATE_GT, DEGENERATE_PREDS, "anet", protocol=protocol)
    np.testing.assert_allclose(result.ap[:, 0], np.full(10, expected), rtol=0, atol=1e-15)
    if protocol != "actionformer":
        ref = detection_ap_reference(
            DEGENERATE_GT, DEGENERATE_PREDS, TIOU_PRESETS["anet"], protocol == "strict"
        )
        np.testing.assert_array_equal(result.ap[:, 0], ref["a"])


def test_actionformer_protocol_drops_duplicates_by_name():
    gt = [("v", "a", 0.0, 10.0), ("v", "a", 0.0005, 10.0009), ("v", "b", 0.0, 10.0), ("v", "a", 0.0, 10.002)]
    preds = [("v", "a", 0.0, 10.0, 0.9), ("v", "b", 0.0, 10.0, 0.8)]
    kept = actionformer_filter(gt)
    assert kept == [gt[0], gt[2], gt[3]]  # the near copy of the same label goes; another label or 2 ms stays
    result = _evaluate(gt, preds, [0.5], protocol="actionformer")
    ref = detection_ap_reference(kept, preds, [0.5])
    np.testing.assert_array_equal(result.ap[0], [ref["a"][0], ref["b"][0]])
    assert result.ap[0].tolist() == [0.5, 1.0]


def test_no_predictions_and_no_ground_truth():
    gt = [("v", "a", 0.0, 10.0)]
    assert _evaluate(gt, [], "anet").average_map == 0.0
    empty_gt = ground_truth_from_rows([], ["a"], extra_videos=["v"])
    result = evaluate_detection(empty_gt, predictions_from_rows([("v", "a", 0.0, 1.0, 0.5)]), "anet")
    assert result.ap.shape == (10, 0) and result.average_map == 0.0


def test_proposals_are_rejected_for_detection():
    gt = ground_truth_from_rows([("v", "a", 0.0, 10.0)], ["a"])
    with pytest.raises(ResultsError, match="label"):
        evaluate_detection(gt, predictions_from_rows([("v", "a", 0.0, 1.0, 0.5)], with_labels=False))


@pytest.mark.parametrize(
    "seed,num_videos,num_classes,preds_per_video,score_decimals,tiou",
    [
        (0, 3, 2, 4, None, "anet"),
        (1, 12, 3, 10, 1, "thumos"),
        (2, 40, 6, 15, 2, "anet"),
        (3, 120, 12, 12, None, "anet"),
        (4, 60, 4, 40, 1, [0.1, 0.5, 0.9]),
    ],
)
def test_random_cases_equal_reference(seed, num_videos, num_classes, preds_per_video, score_decimals, tiou):
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows, names = random_case(
        rng, num_videos, num_classes, preds_per_video=preds_per_video, score_decimals=score_decimals
    )
    gt = ground_truth_from_rows(gt_rows, names)
    result = evaluate_detection(gt, predictions_from_rows(pred_rows), tiou)
    ref = detection_ap_reference(gt_rows, pred_rows, resolve_tiou_thresholds(tiou))
    assert result.class_names == list(ref)
    np.testing.assert_array_equal(result.ap, np.stack([ref[c] for c in result.class_names], axis=1))
    assert result.average_map > 0.05  # the case is not trivially empty


def test_memory_stays_bounded_with_many_instances_in_one_video():
    """6k ground truths x 6k predictions in one video and class: 3.6e7 pairs, enumerated in bounded chunks
    (all at once: about 1.4 GiB of indices and tIoU). numpy reports its allocations to tracemalloc."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n = 6_000
    starts = np.sort(rng.uniform(0, 1e5, n))
    gt_rows = [("v", "a", s, s + 1.0) for s in starts]
    jitter = rng.normal(0, 0.05, n)
    pred_rows = [
        ("v", "a", s + j, s + 1.0 + j, float(p)) for s, j, p in zip(starts, jitter, rng.uniform(size=n))
    ]
    gt, preds = ground_truth_from_rows(gt_rows, ["a"]), predictions_from_rows(pred_rows)
    tracemalloc.start()
    result = evaluate_detection(gt, preds, "anet")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert result.ap[0, 0] > 0.9  # most jittered copies match
