"""Detection mAP with the official ActivityNet protocol, vectorised.

Protocol (``compute_average_precision_detection`` of the ActivityNet ``Evaluation`` code):

* For each class present in the ground truth, its predictions are sorted by score descending and matched
  greedily, independently per tIoU threshold: a prediction tries the unmatched ground truths of its class in
  its video in decreasing tIoU order and is a true positive when the best of them has ``tIoU >= threshold``.
* AP is the VOC-2011 all-points interpolated AP: recall padded with 0 and 1, precision with 0 and 0, precision
  envelope, sum of precision times recall steps. A class with ground truth and no prediction has AP 0.
* mAP is the mean over the classes present in the ground truth, per threshold; "average mAP" averages those.
* Predictions on a video without ground truth (or outside the evaluated subset) are false positives of their
  class. Predictions whose label is not a ground-truth class are ignored (they cannot count for any class).

Tie rule (the official code uses numpy's unstable argsort, so it has no portable order): predictions with equal
scores are taken in input order (earlier row first; a stable sort by descending score); ground truths with equal
tIoU to a prediction are tried in ground-truth order (earlier first). tIoU is 0 when the union is not positive
(two zero-length or inverted segments; the official code yields NaN there and then matches, which is a bug).

Vectorisation: matching is independent between (video, class) blocks, and only (prediction, ground truth)
pairs with ``tIoU >= min(thresholds)`` can ever match. The pairs are enumerated block-wise, then the greedy
loop runs over the *rank of a prediction inside its block*: round ``r`` handles the ``r``-th candidate of every
block and every threshold at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tal.formats.annotations import AnnotationSet
from tal.formats.results import Predictions, ResultsError
from tal.ops.segments import paired_segment_iou

__all__ = [
    "TIOU_PRESETS",
    "DetectionResult",
    "resolve_tiou_thresholds",
    "interpolated_average_precision",
    "greedy_match",
    "paired_tiou",
    "evaluate_detection",
]

TIOU_PRESETS = {
    "anet": np.linspace(0.5, 0.95, 10),
    "thumos": np.linspace(0.3, 0.7, 5),
}


def resolve_tiou_thresholds(tiou: str | float | list[float] | np.ndarray) -> np.ndarray:
    """``"anet"`` / ``"thumos"`` presets (the exact ``np.linspace`` floats), a ``"0.5,0.7"`` string, a number
    or a list -> ``(T,)`` float64 array of thresholds in ``[0, 1]``."""
    if isinstance(tiou, str):
        if tiou in TIOU_PRESETS:
            return TIOU_PRESETS[tiou].copy()
        try:
            tiou = [float(x) for x in tiou.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                f"tIoU thresholds {tiou!r}: expected {sorted(TIOU_PRESETS)} or numbers like '0.5,0.7'"
            ) from None
    out = np.atleast_1d(np.asarray(tiou, dtype=np.float64))
    if out.ndim != 1 or len(out) == 0 or not np.all((out >= 0) & (out <= 1)):
        raise ValueError(f"tIoU thresholds must be a non-empty list of numbers in [0, 1], got {tiou!r}")
    return out


def interpolated_average_precision(tp: np.ndarray, num_positives: int) -> np.ndarray:
    """VOC-2011 all-points interpolated AP of ranked hit flags.

    Args:
        tp: ``(T, P)`` bool, hit flags of the predictions of one class in ranked order, one row per threshold.
        num_positives: number of ground-truth instances of the class (> 0).

    Returns:
        ``(T,)`` float64 AP. Float operations follow the official code step by step, so results are
        bit-identical to it.
    """
    num_thr, num_pred = tp.shape
    ap = np.zeros(num_thr)
    if num_pred == 0:
        return ap
    tp_cumsum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_cumsum = np.cumsum(~tp, axis=1).astype(np.float64)
    recall = tp_cumsum / num_positives
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    zeros, ones = np.zeros((num_thr, 1)), np.ones((num_thr, 1))
    mprec = np.hstack([zeros, precision, zeros])
    mrec = np.hstack([zeros, recall, ones])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    for t in range(num_thr):
        idx = np.flatnonzero(mrec[t, 1:] != mrec[t, :-1]) + 1
        ap[t] = np.sum((mrec[t, idx] - mrec[t, idx - 1]) * mprec[t, idx])
    return ap


def paired_tiou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU of row-aligned ``a (K, 2)`` and ``b (K, 2)`` -> ``(K,)`` float64 (:func:`tal.ops.paired_segment_iou`)."""
    return paired_segment_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _block_pairs(pred_block: np.ndarray, gt_block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction, ground truth) pairs sharing a block id.

    Args:
        pred_block: ``(P,)`` int64 block id per prediction.
        gt_block: ``(G,)`` int64 block id per ground truth.

    Returns:
        ``pair_pred (K,)``, ``pair_gt (K,)`` int64; pairs come ordered by prediction, then ground-truth index.
    """
    if len(gt_block) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    gt_order = np.argsort(gt_block, kind="stable")
    sorted_block = gt_block[gt_order]
    gt_start = np.flatnonzero(np.r_[True, sorted_block[1:] != sorted_block[:-1]])
    blocks, gt_count = sorted_block[gt_start], np.diff(np.r_[gt_start, len(sorted_block)])
    pos = np.minimum(np.searchsorted(blocks, pred_block), len(blocks) - 1)
    preds = np.flatnonzero(blocks[pos] == pred_block)
    counts = gt_count[pos[preds]]
    pair_pred = np.repeat(preds, counts)
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(len(pair_pred)) - run_start
    pair_gt = gt_order[np.repeat(gt_start[pos[preds]], counts) + within]
    return pair_pred, pair_gt


def greedy_match(
    pred_block: np.ndarray,
    pred_segments: np.ndarray,
    gt_block: np.ndarray,
    gt_segments: np.ndarray,
    tiou_thresholds: np.ndarray,
) -> np.ndarray:
    """Greedy matching of ranked predictions to ground truth, for all thresholds at once.

    Args:
        pred_block: ``(P,)`` int64 block id (one per (video, class)); rows are in ranked (processing) order.
        pred_segments: ``(P, 2)`` float64.
        gt_block: ``(G,)`` int64 block id of each ground truth.
        gt_segments: ``(G, 2)`` float64.
        tiou_thresholds: ``(T,)`` float64.

    Returns:
        ``(P, T)`` bool, True where the prediction is a true positive at that threshold.
    """
    num_pred, num_thr = len(pred_block), len(tiou_thresholds)
    hit = np.zeros((num_pred, num_thr), dtype=bool)
    pair_pred, pair_gt = _block_pairs(pred_block, gt_block)
    iou = paired_tiou(pred_segments[pair_pred], gt_segments[pair_gt])
    useful = iou >= tiou_thresholds.min()
    pair_pred, pair_gt, iou = pair_pred[useful], pair_gt[useful], iou[useful]
    if len(pair_pred) == 0:
        return hit

    # rank of each candidate prediction inside its block (in processing order)
    cand = pair_pred[np.r_[True, pair_pred[1:] != pair_pred[:-1]]]  # pairs are sorted by prediction
    by_block = np.lexsort((cand, pred_block[cand]))
    cand_sorted = cand[by_block]
    block_sorted = pred_block[cand_sorted]
    first = np.r_[True, block_sorted[1:] != block_sorted[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(cand_sorted)), 0))
    rank_of = np.empty(num_pred, dtype=np.int64)
    rank_of[cand_sorted] = np.arange(len(cand_sorted)) - start

    # pairs by (rank, prediction, tIoU descending, ground-truth index)
    pair_rank = rank_of[pair_pred]
    order = np.lexsort((pair_gt, -iou, pair_pred, pair_rank))
    pair_pred, pair_gt, iou, pair_rank = pair_pred[order], pair_gt[order], iou[order], pair_rank[order]
    bounds = np.searchsorted(pair_rank, np.arange(pair_rank[-1] + 2))

    locked = np.zeros((len(gt_block), num_thr), dtype=bool)
    for r in range(len(bounds) - 1):
        lo, hi = bounds[r], bounds[r + 1]
        preds, gts = pair_pred[lo:hi], pair_gt[lo:hi]
        ok = (iou[lo:hi, None] >= tiou_thresholds[None, :]) & ~locked[gts]
        n = hi - lo
        starts = np.flatnonzero(np.r_[True, preds[1:] != preds[:-1]])
        first_ok = np.minimum.reduceat(np.where(ok, np.arange(n)[:, None], n), starts, axis=0)  # (R_r, T)
        matched = first_ok < n
        rows, thr = np.nonzero(matched)
        locked[gts[first_ok[rows, thr]], thr] = True
        hit[preds[starts][rows], thr] = True
    return hit


@dataclass
class DetectionResult:
    """Per-class AP and mAP. ``ap`` is ``(T, C)`` over the ``class_names`` present in the ground truth."""

    tiou_thresholds: np.ndarray
    class_names: list[str]
    ap: np.ndarray
    num_positives: np.ndarray
    num_predictions: np.ndarray
    num_ignored: int = 0

    @property
    def map_per_threshold(self) -> np.ndarray:
        """``(T,)`` mAP at each threshold (mean over classes)."""
        if self.ap.shape[1] == 0:
            return np.zeros(len(self.tiou_thresholds))
        return self.ap.mean(axis=1)

    @property
    def average_map(self) -> float:
        return float(self.map_per_threshold.mean())

    def metrics(self) -> dict[str, float]:
        """``{"mAP": average, "mAP@0.50": ..., ...}`` (threshold keys formatted with 2 decimals)."""
        out = {"mAP": self.average_map}
        for thr, value in zip(self.tiou_thresholds, self.map_per_threshold):
            out[f"mAP@{thr:.2f}"] = float(value)
        return out

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics(),
            "tiou_thresholds": self.tiou_thresholds.tolist(),
            "per_class": {
                name: {
                    "ap": self.ap[:, c].tolist(),
                    "average_ap": float(self.ap[:, c].mean()),
                    "num_positives": int(self.num_positives[c]),
                    "num_predictions": int(self.num_predictions[c]),
                }
                for c, name in enumerate(self.class_names)
            },
            "num_ignored_predictions": self.num_ignored,
        }


def evaluate_detection(
    ground_truth: AnnotationSet,
    predictions: Predictions,
    tiou_thresholds: str | list[float] | np.ndarray = "anet",
) -> DetectionResult:
    """ActivityNet detection mAP of ``predictions`` against ``ground_truth`` (already restricted to a subset).

    Predictions' labels are matched to ground-truth classes by name.
    """
    if not predictions.has_labels:
        raise ResultsError("detection evaluation needs a 'label' on every prediction (got proposals)")
    thresholds = resolve_tiou_thresholds(tiou_thresholds)

    videos = [v for v in ground_truth if v.num_instances]
    video_index = {v.video_id: i for i, v in enumerate(videos)}
    gt_video = np.repeat(np.arange(len(videos)), [v.num_instances for v in videos])
    gt_segments = np.concatenate([v.segments_sec for v in videos]) if videos else np.zeros((0, 2))
    gt_label = (
        np.concatenate([ground_truth.label_ids(v) for v in videos]) if videos else np.zeros(0, np.int64)
    )
    classes = np.unique(gt_label)  # the evaluated classes, by label id
    class_of_label = np.full(ground_truth.num_classes, -1, dtype=np.int64)
    class_of_label[classes] = np.arange(len(classes))
    num_classes = len(classes)

    # predictions -> evaluated class (or -1) and video (-1 when the video has no ground truth)
    gt_label_id = {name: i for i, name in enumerate(ground_truth.label_names)}
    label_to_class = np.array(
        [class_of_label[gt_label_id[n]] if n in gt_label_id else -1 for n in predictions.label_names],
        dtype=np.int64,
    )
    pred_class = label_to_class[predictions.label_idx] if len(predictions) else np.zeros(0, np.int64)
    video_map = np.array([video_index.get(v, -1) for v in predictions.video_ids], dtype=np.int64)
    pred_video = video_map[predictions.video_idx] if len(predictions) else np.zeros(0, np.int64)
    known = pred_class >= 0
    order = np.flatnonzero(known)[np.argsort(-predictions.scores[known], kind="stable")]
    pred_class, pred_video = pred_class[order], pred_video[order]

    # block id per (video, class); predictions on videos without ground truth get a block no GT has
    pred_block = np.where(pred_video >= 0, pred_video * num_classes + pred_class, -1 - np.arange(len(order)))
    gt_block = gt_video * num_classes + class_of_label[gt_label]
    hit = greedy_match(pred_block, predictions.segments_sec[order], gt_block, gt_segments, thresholds)

    num_positives = np.bincount(class_of_label[gt_label], minlength=num_classes)
    num_predictions = np.bincount(pred_class, minlength=num_classes)
    class_order = np.argsort(pred_class, kind="stable")  # keeps the ranked order inside each class
    class_start = np.r_[0, np.cumsum(num_predictions)]
    ap = np.zeros((len(thresholds), num_classes))
    for c in range(num_classes):
        rows = class_order[class_start[c] : class_start[c + 1]]
        ap[:, c] = interpolated_average_precision(hit[rows].T, int(num_positives[c]))
    return DetectionResult(
        tiou_thresholds=thresholds,
        class_names=[ground_truth.label_names[i] for i in classes],
        ap=ap,
        num_positives=num_positives,
        num_predictions=num_predictions,
        num_ignored=int((~known).sum()),
    )
