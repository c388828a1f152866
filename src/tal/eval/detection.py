"""Detection mAP with the official ActivityNet protocol, vectorised and bit-identical to the official code.

Protocol (``compute_average_precision_detection`` of the ActivityNet ``Evaluation`` code):

* For each class present in the ground truth, its predictions are ranked by score and matched greedily,
  independently per tIoU threshold: a prediction tries the unmatched ground truths of its class in its video in
  decreasing tIoU order and is a true positive when the best of them has ``tIoU >= threshold``.
* AP is the VOC-2011 all-points interpolated AP: recall padded with 0 and 1, precision with 0 and 0, precision
  envelope, sum of precision times recall steps. A class with ground truth and no prediction has AP 0.
* mAP is the mean over the classes present in the ground truth, per threshold; "average mAP" averages those.
* Predictions on a video without ground truth (or outside the evaluated subset) are false positives of their
  class. Predictions whose label is not a ground-truth class are ignored (they cannot count for any class).

Three protocols (``protocol=``; :data:`PROTOCOLS`):

* ``"official"`` (default): the official numbers, quirks included. **Ties**: the official code ranks with
  ``argsort()[::-1]``; numpy sorts runs of up to 16 equal values stably, so reversed, *the later item comes
  first* -- for predictions of equal score (later in the file first), proposals of equal score, and ground
  truths of equal tIoU to a prediction (later in the file first). Python 2.7, numpy 1.23 and ActionFormer's
  ``metrics.py`` agree on this for such small tie groups; for larger groups numpy's order is not portable and
  tal keeps the same rule. **Degenerate segments**: ``tIoU = inter / union`` with no guard, so a zero union
  (two zero-length segments, or an inverted prediction whose negative length cancels the ground truth's) gives
  NaN, which the detection loop counts as a hit at every threshold (``NaN < thr`` is False and argsort puts NaN
  first); a negative union gives a negative tIoU (a miss). Nothing is clipped.
* ``"strict"``: as official, but tIoU is 0 when the union is not positive (degenerate segments never match).
* ``"actionformer"``: the evaluator of ActionFormer's ``metrics.py``, which papers built on ActionFormer report:
  as official, after dropping ground truths shorter than 1e-3 s and same-label duplicates whose start and end
  lie within 1e-3 s of an earlier kept instance (labels compared by name, so without its label-id collision).

Vectorisation: matching is independent between (video, class) blocks, and only (prediction, ground truth)
pairs with ``tIoU >= min(thresholds)`` (or NaN) can ever match. The pairs are enumerated block-wise in bounded
chunks, then the greedy loop runs over the *rank of a prediction inside its block*: round ``r`` handles the
``r``-th candidate of every block and every threshold at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tal.formats.annotations import AnnotationSet
from tal.formats.results import Predictions, ResultsError

__all__ = [
    "PROTOCOLS",
    "TIOU_PRESETS",
    "DetectionResult",
    "evaluate_detection",
    "greedy_match",
    "interpolated_average_precision",
    "paired_tiou",
    "prepare_ground_truth",
    "ranking_order",
    "resolve_tiou_thresholds",
]

TIOU_PRESETS = {
    "anet": np.linspace(0.5, 0.95, 10),
    "thumos": np.linspace(0.3, 0.7, 5),
}
PROTOCOLS = ("official", "strict", "actionformer")
#: (prediction, ground truth) pairs enumerated at once; bounds memory whatever the number per video
MAX_PAIRS_PER_CHUNK = 1 << 22
#: ActionFormer's tolerance for too-short and duplicated ground truths (seconds)
ACTIONFORMER_TOL_SEC = 1e-3


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    return protocol


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


def paired_tiou(a: np.ndarray, b: np.ndarray, protocol: str = "official") -> np.ndarray:
    """tIoU of row-aligned ``a (K, 2)`` and ``b (K, 2)`` -> ``(K,)`` float64, as the official ``segment_iou``:
    ``inter = max(0, min(ends) - max(starts))``, ``union = (len_a + len_b) - inter``, ``inter / union``.

    ``official`` / ``actionformer``: unguarded (NaN for a zero union, negative for a negative one);
    ``strict``: 0 where the union is not positive.
    """
    inter = np.clip(np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    if protocol == "strict":
        iou = np.where(union > 0, iou, 0.0)
    return iou


def ranking_order(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores (N,)`` best first, ties broken as the official ``argsort()[::-1]``: later first."""
    return np.argsort(scores, kind="stable")[::-1]


def prepare_ground_truth(ground_truth: AnnotationSet, protocol: str = "official") -> AnnotationSet:
    """The ground truth a protocol scores against: as given, or (``actionformer``) without instances shorter
    than 1e-3 s and without same-label duplicates of an earlier kept instance (start and end within 1e-3 s)."""
    if check_protocol(protocol) != "actionformer":
        return ground_truth
    from tal.formats.annotations import copy_video

    tol = ACTIONFORMER_TOL_SEC
    videos = []
    for v in ground_truth:
        kept: list[int] = []
        for i, ((s, e), lab) in enumerate(zip(v.segments_sec.tolist(), v.labels)):
            if not e - s >= tol:
                continue
            dup = any(
                abs(s - v.segments_sec[k, 0]) <= tol
                and abs(e - v.segments_sec[k, 1]) <= tol
                and lab == v.labels[k]
                for k in kept
            )
            if not dup:
                kept.append(i)
        videos.append(copy_video(v, segments_sec=v.segments_sec[kept], labels=[v.labels[k] for k in kept]))
    return ground_truth.with_videos(videos)


def pair_chunks(counts: np.ndarray, max_pairs: int = MAX_PAIRS_PER_CHUNK) -> Iterator[tuple[int, int]]:
    """Consecutive ranges ``[lo, hi)`` of items whose ``counts`` sum to at most ``max_pairs`` (a single item
    over the bound forms a range of its own)."""
    ends = np.cumsum(counts)
    lo = 0
    while lo < len(counts):
        base = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, base + max_pairs, side="right")), lo + 1)
        yield lo, hi
        lo = hi


def _block_pairs(
    pred_block: np.ndarray, gt_block: np.ndarray, preds: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction, ground truth) pairs sharing a block id.

    Args:
        pred_block: ``(P,)`` int64 block id per prediction.
        gt_block: ``(G,)`` int64 block id per ground truth.
        preds: the prediction indices to pair (default: all).

    Returns:
        ``pair_pred (K,)``, ``pair_gt (K,)`` int64; pairs come ordered by prediction, then ground-truth index.
    """
    if len(gt_block) == 0 or len(pred_block) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    preds = np.arange(len(pred_block)) if preds is None else preds
    gt_order = np.argsort(gt_block, kind="stable")
    sorted_block = gt_block[gt_order]
    gt_start = np.flatnonzero(np.r_[True, sorted_block[1:] != sorted_block[:-1]])
    blocks, gt_count = sorted_block[gt_start], np.diff(np.r_[gt_start, len(sorted_block)])
    pos = np.minimum(np.searchsorted(blocks, pred_block[preds]), len(blocks) - 1)
    same = blocks[pos] == pred_block[preds]
    preds, pos = preds[same], pos[same]
    counts = gt_count[pos]
    pair_pred = np.repeat(preds, counts)
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(len(pair_pred)) - run_start
    pair_gt = gt_order[np.repeat(gt_start[pos], counts) + within]
    return pair_pred, pair_gt


def candidate_pairs(
    pred_block: np.ndarray,
    pred_segments: np.ndarray,
    gt_block: np.ndarray,
    gt_segments: np.ndarray,
    min_threshold: float,
    protocol: str = "official",
    max_pairs: int = MAX_PAIRS_PER_CHUNK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (prediction, ground truth) pairs of a block that can match: ``tIoU >= min_threshold`` or NaN.

    Pairs are enumerated in chunks of at most ``max_pairs`` (plus one prediction's), so memory stays bounded
    whatever the number of predictions and ground truths per video. Returns ``pair_pred (K,)``, ``pair_gt
    (K,)`` and ``iou (K,)``, ordered by prediction, then ground-truth index.
    """
    gt_count = np.bincount(gt_block - gt_block.min(), minlength=1) if len(gt_block) else np.zeros(1, np.int64)
    rel = pred_block - (gt_block.min() if len(gt_block) else 0)
    inside = (rel >= 0) & (rel < len(gt_count))
    per_pred = np.where(inside, gt_count[np.clip(rel, 0, len(gt_count) - 1)], 0)
    parts = []
    for lo, hi in pair_chunks(per_pred, max_pairs):
        pair_pred, pair_gt = _block_pairs(pred_block, gt_block, np.arange(lo, hi))
        iou = paired_tiou(pred_segments[pair_pred], gt_segments[pair_gt], protocol)
        useful = (iou >= min_threshold) | np.isnan(iou)
        parts.append((pair_pred[useful], pair_gt[useful], iou[useful]))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(x) for x in zip(*parts))


def greedy_match(
    pred_block: np.ndarray,
    pred_segments: np.ndarray,
    gt_block: np.ndarray,
    gt_segments: np.ndarray,
    tiou_thresholds: np.ndarray,
    protocol: str = "official",
) -> np.ndarray:
    """Greedy matching of ranked predictions to ground truth, for all thresholds at once.

    Args:
        pred_block: ``(P,)`` int64 block id (one per (video, class)); rows are in ranked (processing) order.
        pred_segments: ``(P, 2)`` float64.
        gt_block: ``(G,)`` int64 block id of each ground truth.
        gt_segments: ``(G, 2)`` float64.
        tiou_thresholds: ``(T,)`` float64.
        protocol: tIoU of degenerate pairs (see the module docstring).

    Returns:
        ``(P, T)`` bool, True where the prediction is a true positive at that threshold. A prediction tries
        its block's ground truths by decreasing tIoU (NaN first, equal tIoU: later ground truth first).
    """
    num_pred, num_thr = len(pred_block), len(tiou_thresholds)
    hit = np.zeros((num_pred, num_thr), dtype=bool)
    pair_pred, pair_gt, iou = candidate_pairs(
        pred_block, pred_segments, gt_block, gt_segments, tiou_thresholds.min(), protocol
    )
    if len(pair_pred) == 0:
        return hit
    is_nan = np.isnan(iou)

    # rank of each candidate prediction inside its block (in processing order)
    cand = pair_pred[np.r_[True, pair_pred[1:] != pair_pred[:-1]]]  # pairs are sorted by prediction
    by_block = np.lexsort((cand, pred_block[cand]))
    cand_sorted = cand[by_block]
    block_sorted = pred_block[cand_sorted]
    first = np.r_[True, block_sorted[1:] != block_sorted[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(cand_sorted)), 0))
    rank_of = np.empty(num_pred, dtype=np.int64)
    rank_of[cand_sorted] = np.arange(len(cand_sorted)) - start

    # pairs by (rank, prediction, tIoU descending with NaN first, later ground truth first)
    pair_rank = rank_of[pair_pred]
    order = np.lexsort((-pair_gt, -np.where(is_nan, np.inf, iou), pair_pred, pair_rank))
    pair_pred, pair_gt, iou, pair_rank = pair_pred[order], pair_gt[order], iou[order], pair_rank[order]
    is_nan = is_nan[order]
    bounds = np.searchsorted(pair_rank, np.arange(pair_rank[-1] + 2))

    locked = np.zeros((len(gt_block), num_thr), dtype=bool)
    for r in range(len(bounds) - 1):
        lo, hi = bounds[r], bounds[r + 1]
        preds, gts = pair_pred[lo:hi], pair_gt[lo:hi]
        ok = ((iou[lo:hi, None] >= tiou_thresholds[None, :]) | is_nan[lo:hi, None]) & ~locked[gts]
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
    protocol: str = "official",
) -> DetectionResult:
    """ActivityNet detection mAP of ``predictions`` against ``ground_truth`` (already restricted to a subset),
    under ``protocol`` (``official``, ``strict`` or ``actionformer``; see the module docstring).

    Predictions' labels are matched to ground-truth classes by name.
    """
    if not predictions.has_labels:
        raise ResultsError("detection evaluation needs a 'label' on every prediction (got proposals)")
    thresholds = resolve_tiou_thresholds(tiou_thresholds)
    ground_truth = prepare_ground_truth(ground_truth, protocol)

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
    order = np.flatnonzero(known)[ranking_order(predictions.scores[known])]
    pred_class, pred_video = pred_class[order], pred_video[order]

    # block id per (video, class); predictions on videos without ground truth get a block no GT has
    pred_block = np.where(pred_video >= 0, pred_video * num_classes + pred_class, -1 - np.arange(len(order)))
    gt_block = gt_video * num_classes + class_of_label[gt_label]
    hit = greedy_match(
        pred_block, predictions.segments_sec[order], gt_block, gt_segments, thresholds, protocol
    )

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
