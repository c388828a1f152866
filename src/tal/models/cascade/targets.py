"""Cascade targets and decoding (proposals and ground truth in positions of the batch's time axis).

Two parametrisations of a proposal ``[s, e]`` (length ``l = e - s``, centre ``c``) relative to its matched ground
truth ``[gs, ge]`` (centre ``gc``, length ``gw``), each with the decoding that inverts it:

* boundaries (TCANet's boundary branch): ``((gs - s) / (k l), (ge - e) / (k l))``, decoded
  ``s' = s + k Δs l``, ``e' = e + k Δe l``;
* centre / width (the segment branch, R-CNN style): ``((gc - c) / (a l), log(gw / l) / b)`` with ``a = 0.1``,
  ``b = 0.2``, decoded ``c' = c + a Δc l``, ``w' = l exp(b Δw)``.

The constants divide the targets as well (R-CNN's delta weights), so ``decode(p, encode(p, g)) == g`` and the
regression sees targets of about unit scale. The next stage's proposal is the mean of the two decodings, put in
order and clamped to the video.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tal.ops import paired_segment_iou, segment_iou

__all__ = [
    "decode_boundaries",
    "decode_center_width",
    "encode_boundaries",
    "encode_center_width",
    "match_ground_truth",
    "refine_proposals",
    "stage_targets",
]

EPS = 1e-6
#: largest width change of one decoding step, ``|b Δw| <= log(1000 / 16)`` (detectron2's clamp)
MAX_LOG_SCALE = math.log(1000.0 / 16)
#: shortest proposal a refinement step returns, in positions
MIN_LENGTH = 1e-2


def _length(p: Tensor) -> Tensor:
    return (p[..., 1] - p[..., 0]).clamp(min=EPS)


def encode_boundaries(proposals: Tensor, gt: Tensor, k: float = 1.0) -> Tensor:
    """``(..., 2)`` proposals and matched ground truth -> ``(..., 2)`` targets ``(Δs, Δe)``."""
    scale = k * _length(proposals)
    return torch.stack(
        [(gt[..., 0] - proposals[..., 0]) / scale, (gt[..., 1] - proposals[..., 1]) / scale], dim=-1
    )


def decode_boundaries(proposals: Tensor, deltas: Tensor, k: float = 1.0) -> Tensor:
    """``(..., 2)`` proposals and ``(Δs, Δe)`` -> ``(..., 2)`` ``[s + k Δs l, e + k Δe l]``."""
    scale = k * _length(proposals)
    return torch.stack(
        [proposals[..., 0] + deltas[..., 0] * scale, proposals[..., 1] + deltas[..., 1] * scale], dim=-1
    )


def encode_center_width(proposals: Tensor, gt: Tensor, center: float = 0.1, width: float = 0.2) -> Tensor:
    """``(..., 2)`` proposals and matched ground truth -> ``(..., 2)`` targets ``(Δc, Δw)``."""
    length = _length(proposals)
    c, gc = proposals.mean(-1), gt.mean(-1)
    return torch.stack([(gc - c) / (center * length), torch.log(_length(gt) / length) / width], dim=-1)


def decode_center_width(proposals: Tensor, deltas: Tensor, center: float = 0.1, width: float = 0.2) -> Tensor:
    """``(..., 2)`` proposals and ``(Δc, Δw)`` -> ``(..., 2)`` ``[c' - w'/2, c' + w'/2]``."""
    length = _length(proposals)
    c = proposals.mean(-1) + center * deltas[..., 0] * length
    half = 0.5 * length * torch.exp((width * deltas[..., 1]).clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE))
    return torch.stack([c - half, c + half], dim=-1)


def refine_proposals(
    proposals: Tensor,
    boundary: Tensor,
    segment: Tensor,
    bounds: Tensor,
    k: float = 1.0,
    center: float = 0.1,
    width: float = 0.2,
) -> Tensor:
    """The next stage's proposals: mean of the boundary and centre/width decodings, in order, clamped to the
    video and at least :data:`MIN_LENGTH` long.

    Args:
        proposals, boundary, segment: ``(B, K, 2)``.
        bounds: ``(B, 2)`` the video's ``[first, last]`` position (time 0 and the duration on this axis).
    Returns:
        ``(B, K, 2)``.
    """
    both = 0.5 * (
        decode_boundaries(proposals, boundary, k) + decode_center_width(proposals, segment, center, width)
    )
    lo, hi = bounds[:, None, 0:1].to(both.dtype), bounds[:, None, 1:2].to(both.dtype)
    ordered = both.sort(dim=-1).values
    clamped = torch.minimum(torch.maximum(ordered, lo), hi)
    start = torch.minimum(clamped[..., 0], hi[..., 0] - MIN_LENGTH)
    end = torch.maximum(clamped[..., 1], start + MIN_LENGTH)
    return torch.stack([start, end], dim=-1)


def match_ground_truth(proposals: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Each proposal's ground truth of highest tIoU (the first on ties).

    Args:
        proposals: ``(K, 2)``; gt: ``(N, 2)``.
    Returns:
        ``matched (K, 2)`` (the proposal itself when ``N == 0``) and ``has_gt (K,)`` bool.
    """
    if gt.numel() == 0:
        return proposals.clone(), torch.zeros(len(proposals), dtype=torch.bool, device=proposals.device)
    best = segment_iou(proposals, gt.to(proposals.dtype)).argmax(dim=1)
    return gt.to(proposals.dtype)[best], torch.ones(len(proposals), dtype=torch.bool, device=proposals.device)


def stage_targets(
    proposals: Tensor,
    matched: Tensor,
    has_gt: Tensor,
    iou_threshold: float,
    k: float = 1.0,
    center: float = 0.1,
    width: float = 0.2,
) -> dict[str, Tensor]:
    """One stage's targets for its input proposals against their matched ground truth.

    Args:
        proposals, matched: ``(B, K, 2)``.
        has_gt: ``(B, K)`` bool, a real proposal with a matched ground truth (False on padding and in videos
            without ground truth: their tIoU target is 0).
        iou_threshold: the stage's threshold; positives (trained in regression) have ``tIoU >= iou_threshold``.
    Returns:
        ``iou (B, K)``, ``positive (B, K)`` bool, ``boundary (B, K, 2)``, ``segment (B, K, 2)``.
    """
    iou = torch.where(has_gt, paired_segment_iou(proposals, matched), torch.zeros_like(proposals[..., 0]))
    return {
        "iou": iou,
        "positive": has_gt & (iou >= iou_threshold),
        "boundary": encode_boundaries(proposals, matched, k),
        "segment": encode_center_width(proposals, matched, center, width),
    }
