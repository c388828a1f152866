"""BMN post-processing: boundary candidates, proposal scores from the map, Soft-NMS, top-k, seconds."""

from __future__ import annotations

import torch

from tal.ops import soft_nms
from tal.ops.timeaxis import positions_to_sec


def boundary_candidates(
    scores: torch.Tensor, keep_first: bool = True, keep_last: bool = False
) -> torch.Tensor:
    """Public BMN's boundary candidates: a local peak or a score above half the maximum.

    Args:
        scores: ``(L,)`` boundary probabilities.
        keep_first / keep_last: also mark position 0 (starts) / ``L - 1`` (ends).
    Returns:
        ``(L,)`` bool.
    """
    is_peak = torch.zeros_like(scores, dtype=torch.bool)
    is_peak[1:-1] = (scores[1:-1] > scores[2:]) & (scores[1:-1] > scores[:-2])
    keep = is_peak | (scores > 0.5 * scores.max())
    if keep_first:
        keep[0] = True
    if keep_last:
        keep[-1] = True
    return keep


def bmn_candidates(
    start: torch.Tensor, end: torch.Tensor, conf_map: torch.Tensor, valid_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored proposals of one video, in grid units, before NMS.

    A cell ``[d, t]`` (proposal ``[t, t + d + 1)``) is kept when its start cell ``t`` and end cell ``t + d`` are
    boundary candidates and it lies inside the first ``valid_len`` positions; its score is
    ``start[t] * end[t + d] * cls[d, t] * reg[d, t]``.

    Args:
        start, end: ``(L,)``; conf_map: ``(2, D, L)`` (IoU regression, classification).
    Returns:
        ``segments (K, 2)`` float grid units and ``scores (K,)``.
    """
    n = start.shape[0] if valid_len is None else int(valid_len)
    start, end, conf_map = start[:n], end[:n], conf_map[:, :, :n]
    max_duration = conf_map.shape[1]
    start_ok = boundary_candidates(start, keep_first=True)
    end_ok = boundary_candidates(end, keep_first=False, keep_last=True)
    d, t = torch.meshgrid(
        torch.arange(max_duration, device=start.device), torch.arange(n, device=start.device), indexing="ij"
    )
    end_idx = t + d
    inside = end_idx < n
    end_idx = end_idx.clamp(max=n - 1)
    keep = inside & start_ok[t] & end_ok[end_idx]
    score = start[t] * end[end_idx] * conf_map[0] * conf_map[1]
    segments = torch.stack([t[keep], end_idx[keep] + 1], dim=1).float()
    return segments, score[keep]


def bmn_proposals(
    start: torch.Tensor,
    end: torch.Tensor,
    conf_map: torch.Tensor,
    sec_per_unit: float,
    offset_sec: float = 0.0,
    duration_sec: float | None = None,
    valid_len: int | None = None,
    nms_sigma: float | None = 0.4,
    max_proposals: int = 100,
    pre_nms_topk: int = 3000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals of one video in seconds: candidates → best ``pre_nms_topk`` → Gaussian Soft-NMS → top
    ``max_proposals``; positions become seconds with :func:`tal.ops.timeaxis.positions_to_sec` (float64,
    clamped to ``[0, duration_sec]`` when given). ``nms_sigma=None`` skips the Soft-NMS: the best
    ``max_proposals`` candidates by score (the dense input of the cascade refiner, which applies its own NMS).

    Returns:
        ``segments_sec (K, 2)`` float64 and ``scores (K,)``, score descending.
    """
    segments, scores = bmn_candidates(start, end, conf_map, valid_len)
    if scores.numel() > pre_nms_topk:
        scores, order = scores.topk(pre_nms_topk)
        segments = segments[order]
    if nms_sigma is None:
        scores, order = scores.sort(descending=True, stable=True)
        segments, scores = segments[order[:max_proposals]], scores[:max_proposals]
        return positions_to_sec(segments, sec_per_unit, offset_sec, duration_sec), scores
    segments, scores, _ = soft_nms(
        segments,
        scores,
        method="gaussian",
        sigma=nms_sigma,
        min_score=0.0,
        max_segments=max_proposals,
        class_agnostic=True,
    )
    return positions_to_sec(segments, sec_per_unit, offset_sec, duration_sec), scores
