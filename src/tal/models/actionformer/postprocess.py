"""ActionFormer inference: per-level candidate selection, decoding, Soft-NMS, conversion to seconds."""

from __future__ import annotations

import torch

from tal.ops.segments import segment_voting, soft_nms
from tal.ops.timeaxis import positions_to_sec


def select_candidates(
    cls_logits: torch.Tensor,
    offsets: torch.Tensor,
    points: torch.Tensor,
    valid: torch.Tensor,
    score_threshold: float = 1e-3,
    pre_nms_topk: int = 2000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of one level of one video, decoded.

    cls_logits ``(T, K)``, offsets ``(T, 2)`` in stride units, points ``(T, 4)`` ``[pos, lo, hi, stride]``,
    valid ``(T,)`` bool. Padded points are dropped before anything else, so they never yield a detection.
    Returns segments ``(M, 2)`` in T-axis positions, scores ``(M,)`` and labels ``(M,)`` long, ``M <=
    pre_nms_topk``: the (point, class) pairs scoring above ``score_threshold``, best first.
    """
    cls_logits, offsets, points = cls_logits[valid], offsets[valid], points[valid]
    num_classes = cls_logits.shape[-1]
    scores = cls_logits.float().sigmoid().flatten()
    keep = (scores > score_threshold).nonzero()[:, 0]
    top = scores[keep].topk(min(pre_nms_topk, keep.numel())).indices
    flat_idx = keep[top]
    point_idx, labels = flat_idx // num_classes, flat_idx % num_classes
    pos, stride = points[point_idx, 0], points[point_idx, 3]
    off = offsets[point_idx].float()
    segments = torch.stack([pos - off[:, 0] * stride, pos + off[:, 1] * stride], dim=-1)
    return segments, scores[flat_idx], labels


def detect_video(
    cls_logits: list[torch.Tensor],
    offsets: list[torch.Tensor],
    points: list[torch.Tensor],
    valid: list[torch.Tensor],
    sec_per_unit: float,
    offset_sec: float,
    duration_sec: float,
    score_threshold: float = 1e-3,
    pre_nms_topk: int = 2000,
    min_length: float = 0.05,
    nms_method: str = "gaussian",
    nms_sigma: float = 0.5,
    nms_iou_threshold: float = 0.1,
    max_segments: int = 100,
    class_agnostic: bool = False,
    voting_iou_threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections of one video from the per-level outputs (lists over levels, shapes as in
    :func:`select_candidates`).

    Candidates of every level shorter than ``min_length`` positions are dropped, the rest go through Soft-NMS
    (per class unless ``class_agnostic``), optionally refined by segment voting against the candidates of the
    same class (``voting_iou_threshold``, ActionFormer uses 0.7 on THUMOS14), then segments are converted to
    seconds with :func:`tal.ops.timeaxis.positions_to_sec` (float64, clamped to ``[0, duration_sec]``); segments
    empty after clipping are dropped. Returns segments_sec ``(K, 2)`` float64, scores ``(K,)``, labels ``(K,)``,
    best first.
    """
    cands = [
        select_candidates(c, o, p, v, score_threshold, pre_nms_topk)
        for c, o, p, v in zip(cls_logits, offsets, points, valid)
    ]
    segments, scores, labels = (torch.cat(parts) for parts in zip(*cands))
    long_enough = segments[:, 1] - segments[:, 0] > min_length
    segments, scores, labels = segments[long_enough], scores[long_enough], labels[long_enough]
    cands_all = (segments, scores, labels)
    segments, scores, labels = soft_nms(
        segments,
        scores,
        labels,
        method=nms_method,
        sigma=nms_sigma,
        iou_threshold=nms_iou_threshold,
        min_score=score_threshold,
        max_segments=max_segments,
        class_agnostic=class_agnostic,
    )
    if voting_iou_threshold:
        segments = vote_per_class(segments, labels, *cands_all, voting_iou_threshold, class_agnostic)
    segments_sec = positions_to_sec(segments, sec_per_unit, offset_sec, duration_sec)
    nonempty = segments_sec[:, 1] > segments_sec[:, 0]
    return segments_sec[nonempty], scores[nonempty], labels[nonempty]


def vote_per_class(
    kept: torch.Tensor,
    kept_labels: torch.Tensor,
    candidates: torch.Tensor,
    cand_scores: torch.Tensor,
    cand_labels: torch.Tensor,
    iou_threshold: float,
    class_agnostic: bool = False,
) -> torch.Tensor:
    """:func:`tal.ops.segment_voting` of kept segments ``(K, 2)`` against the candidates ``(N, 2)`` of their own
    class (all candidates when ``class_agnostic``). Returns the refined ``(K, 2)``."""
    if class_agnostic:
        return segment_voting(kept, candidates, cand_scores, iou_threshold)
    refined = kept.clone()
    for c in kept_labels.unique().tolist():
        k, n = kept_labels == c, cand_labels == c
        refined[k] = segment_voting(kept[k], candidates[n], cand_scores[n], iou_threshold)
    return refined
