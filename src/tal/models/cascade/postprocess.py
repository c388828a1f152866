"""Before and after the cascade: the choice of input proposals (NMS or not, top-K) and the output proposals
(score = input score x final IoU, Soft-NMS, top-k, seconds)."""

from __future__ import annotations

import torch
from torch import Tensor

from tal.ops import nms, soft_nms
from tal.ops.timeaxis import positions_to_sec

__all__ = ["NMS_METHODS", "refined_proposals", "select_inputs"]

NMS_METHODS = ("gaussian", "linear", "hard")


def select_inputs(
    segments: Tensor,
    scores: Tensor,
    top_k: int = 128,
    nms_on: bool = True,
    nms_method: str = "gaussian",
    nms_sigma: float = 0.4,
    nms_iou_threshold: float = 0.7,
) -> tuple[Tensor, Tensor]:
    """A video's input proposals: NMS (when ``nms_on``) then the best ``top_k``; without NMS the best ``top_k``
    by score (ties: file order).

    ``nms_method``: ``gaussian`` / ``linear`` Soft-NMS (scores decay, ``sigma`` / ``iou_threshold``), or ``hard``
    NMS (drops every proposal with ``tIoU >= nms_iou_threshold`` to a better one).

    Args:
        segments: ``(N, 2)`` (any unit); scores: ``(N,)``.
    Returns:
        ``segments (K, 2)``, ``scores (K,)`` best first, ``K <= top_k`` (decayed scores after Soft-NMS).
    """
    if nms_method not in NMS_METHODS:
        raise ValueError(f"input nms_method must be one of {NMS_METHODS}, got {nms_method!r}")
    if not nms_on:
        order = torch.sort(scores, descending=True, stable=True).indices[:top_k]
        return segments[order], scores[order]
    if nms_method == "hard":
        keep = nms(segments, scores, nms_iou_threshold, max_segments=top_k)
        return segments[keep], scores[keep]
    kept, decayed, _ = soft_nms(
        segments,
        scores,
        method=nms_method,
        sigma=nms_sigma,
        iou_threshold=nms_iou_threshold,
        min_score=0.0,
        max_segments=top_k,
        class_agnostic=True,
    )
    return kept, decayed


def refined_proposals(
    proposals: Tensor,
    input_scores: Tensor,
    iou: Tensor,
    sec_per_unit: float,
    offset_sec: float = 0.0,
    duration_sec: float | None = None,
    nms_sigma: float | None = 0.4,
    max_proposals: int = 100,
) -> tuple[Tensor, Tensor]:
    """One video's output: score ``input_score x iou``, Gaussian Soft-NMS (``nms_sigma=None``: none), the best
    ``max_proposals``, positions -> seconds (:func:`tal.ops.timeaxis.positions_to_sec`, float64, clamped).

    Args:
        proposals: ``(K, 2)`` refined proposals in positions; input_scores, iou: ``(K,)``.
    Returns:
        ``segments_sec (M, 2)`` float64 and ``scores (M,)`` float64, best first.
    """
    scores = input_scores.double() * iou.double()
    if nms_sigma is None:
        order = torch.sort(scores, descending=True, stable=True).indices[:max_proposals]
        segments, scores = proposals[order], scores[order]
    else:
        segments, scores, _ = soft_nms(
            proposals.double(),
            scores,
            method="gaussian",
            sigma=nms_sigma,
            min_score=0.0,
            max_segments=max_proposals,
            class_agnostic=True,
        )
    return positions_to_sec(segments, sec_per_unit, offset_sec, duration_sec), scores
