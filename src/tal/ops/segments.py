"""Segment operations in pure PyTorch: temporal IoU, NMS, Soft-NMS and segment voting.

A segment is a ``[start, end]`` row; times may be seconds or feature positions (the ops do not care).
No compiled extension: the greedy selection of (Soft-)NMS loops over *selected* segments only, and each step is
a handful of vectorised tensor ops over all candidates.

Conventions shared by every function here:

* tIoU is ``inter / (len_a + len_b - inter)`` with ``inter = max(0, min(end) - max(start))`` and no clipping;
  when the union is not positive (two zero-length or inverted segments) the tIoU is defined as 0 instead of NaN.
* Suppression / decay thresholds are inclusive (``iou >= iou_threshold``), as in ActionFormer's ``nms_cpu``.
* Score ties are broken by the lower input index (ActionFormer's C++ order is an artefact of its in-place swaps).
* ActionFormer adds ``1e-6`` to every length inside its C++ NMS to avoid ``0/0``; here the tIoU is exact and a
  non-positive union gives 0, so results differ from it only by that epsilon's rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "paired_segment_iou",
    "segment_iou",
    "segment_ioa",
    "nms",
    "soft_nms",
    "segment_voting",
]

SOFT_NMS_METHODS = ("gaussian", "linear", "hard")


def paired_segment_iou(a: Tensor, b: Tensor) -> Tensor:
    """tIoU of broadcastable segment tensors ``a (..., 2)`` and ``b (..., 2)`` -> ``(...)``.

    The union is computed as ``(len_a + len_b) - inter`` (the order of the official ActivityNet code, so the
    float result is bit-identical to it); a non-positive union gives 0.
    """
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def segment_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise tIoU: ``a (N, 2)``, ``b (M, 2)`` -> ``(N, M)``."""
    return paired_segment_iou(a[:, None, :], b[None, :, :])


def segment_ioa(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection over the length of ``b``: ``a (N, 2)``, ``b (M, 2)`` -> ``(N, M)``.

    A non-positive length of ``b`` gives 0.
    """
    inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(
        min=0
    )
    len_b = (b[:, 1] - b[:, 0])[None, :].expand_as(inter)
    return torch.where(len_b > 0, inter / len_b, torch.zeros_like(inter))


def _check_inputs(segments: Tensor, scores: Tensor, labels: Tensor | None) -> None:
    if segments.ndim != 2 or segments.shape[-1] != 2:
        raise ValueError(f"segments must be (N, 2), got {tuple(segments.shape)}")
    if scores.shape != segments.shape[:1]:
        raise ValueError(f"scores must be (N,) = ({segments.shape[0]},), got {tuple(scores.shape)}")
    if labels is not None and labels.shape != scores.shape:
        raise ValueError(f"labels must be (N,) = ({segments.shape[0]},), got {tuple(labels.shape)}")


def nms(
    segments: Tensor,
    scores: Tensor,
    iou_threshold: float,
    labels: Tensor | None = None,
    max_segments: int | None = None,
) -> Tensor:
    """Greedy hard NMS.

    Args:
        segments: ``(N, 2)`` float.
        scores: ``(N,)`` float.
        iou_threshold: a segment is suppressed by a kept one when their tIoU is ``>= iou_threshold``.
        labels: ``(N,)`` long; when given, segments of different labels never suppress each other.
        max_segments: stop after this many kept segments (``None``: no limit).

    Returns:
        ``(K,)`` long indices of the kept segments, sorted by score descending (ties: lower index first).
    """
    _check_inputs(segments, scores, labels)
    keep, _ = _greedy_select(
        segments, scores, labels, "hard", 1.0, iou_threshold, -math.inf, max_segments, drop_suppressed=True
    )
    return keep


def soft_nms(
    segments: Tensor,
    scores: Tensor,
    labels: Tensor | None = None,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    min_score: float = 1e-3,
    max_segments: int | None = 100,
    class_agnostic: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS with ActionFormer's ``softnms`` semantics (per class unless ``class_agnostic``).

    Repeatedly select the highest remaining score; decay the scores of the remaining segments of the same class
    by ``exp(-iou^2 / sigma)`` (``gaussian``), ``1 - iou`` where ``iou >= iou_threshold`` (``linear``) or 0
    where ``iou >= iou_threshold`` (``hard``); drop a segment as soon as its decayed score is ``< min_score``.
    The selected segment itself is never checked against ``min_score`` (as in the C++ code, so each class keeps
    at least its best segment). Classes are processed in one global greedy loop: a class's decays only touch
    that class, so the result equals per-class Soft-NMS followed by a global sort and top-``max_segments`` cut.

    Args:
        segments: ``(N, 2)`` float.
        scores: ``(N,)`` float.
        labels: ``(N,)`` long or ``None`` (one class).

    Returns:
        ``segments (K, 2)``, decayed ``scores (K,)``, ``labels (K,)`` long, sorted by score descending
        (labels are zeros when ``labels`` is ``None``).
    """
    _check_inputs(segments, scores, labels)
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"soft_nms method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if labels is None:
        labels = torch.zeros(scores.shape, dtype=torch.long, device=scores.device)
    group = None if class_agnostic else labels
    keep, kept_scores = _greedy_select(
        segments, scores, group, method, sigma, iou_threshold, min_score, max_segments
    )
    return segments[keep], kept_scores, labels[keep].long()


def _greedy_select(
    segments: Tensor,
    scores: Tensor,
    group: Tensor | None,
    method: str,
    sigma: float,
    iou_threshold: float,
    min_score: float,
    max_segments: int | None,
    drop_suppressed: bool = False,
) -> tuple[Tensor, Tensor]:
    """The greedy loop shared by :func:`nms` and :func:`soft_nms`: ``(keep (K,) long, kept_scores (K,))``.

    One iteration per selected segment: argmax over the alive scores, then one row of tIoU against all
    candidates, then a vectorised decay and drop. Cost ``O(K * N)`` with ``K`` selected segments.
    """
    n = scores.shape[0]
    limit = n if max_segments is None else min(int(max_segments), n)
    starts, ends = segments[:, 0].contiguous(), segments[:, 1].contiguous()
    lengths = ends - starts
    tiny = torch.finfo(lengths.dtype).tiny if lengths.is_floating_point() else 1
    current = scores.clone()
    alive = torch.ones(n, dtype=torch.bool, device=scores.device)
    group_list = None if group is None else group.tolist()
    group_masks: dict[int, Tensor] = {}
    keep: list[int] = []
    kept_scores: list[Tensor] = []
    neg_inf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
    for _ in range(limit):
        idx = int(torch.argmax(torch.where(alive, current, neg_inf)))  # ties: the lower input index
        if not alive[idx]:
            break
        keep.append(idx)
        kept_scores.append(current[idx])
        alive[idx] = False
        if group_list is None:
            touched = alive
        else:
            same = group_masks.get(group_list[idx])
            if same is None:
                same = group_masks[group_list[idx]] = group == group_list[idx]
            touched = alive & same
        # tIoU row of the selected segment; a non-positive union implies inter == 0, so clamping gives tIoU 0
        start, end = float(starts[idx]), float(ends[idx])
        inter = (torch.clamp(ends, max=end) - torch.clamp(starts, min=start)).clamp_(min=0)
        iou = inter / (lengths + (end - start) - inter).clamp_(min=tiny)
        if method == "gaussian":
            current = torch.where(touched, current * torch.exp(iou.square().div_(-sigma)), current)
        else:
            hit = touched & (iou >= iou_threshold)
            current = torch.where(hit, current * (1 - iou) if method == "linear" else 0.0, current)
            if drop_suppressed:
                alive ^= hit
                touched = touched ^ hit
        alive ^= touched & (current < min_score)
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=scores.device), scores.new_zeros(0)
    return torch.tensor(keep, dtype=torch.long, device=scores.device), torch.stack(kept_scores)


def segment_voting(
    kept_segments: Tensor,
    all_segments: Tensor,
    all_scores: Tensor,
    iou_threshold: float,
) -> Tensor:
    """Refine kept segments by a ``score * iou`` weighted average of the candidates overlapping them.

    ActionFormer's segment voting: candidate ``j`` votes for kept segment ``i`` with weight
    ``all_scores[j] * iou(i, j)`` when ``iou(i, j) >= iou_threshold``. A kept segment without votes (only
    possible when it is not among the candidates) is returned unchanged.

    Args:
        kept_segments: ``(K, 2)``.
        all_segments: ``(N, 2)``; all_scores: ``(N,)`` candidates before NMS.

    Returns:
        ``(K, 2)`` refined segments.
    """
    iou = segment_iou(kept_segments, all_segments)
    weights = torch.where(iou >= iou_threshold, iou * all_scores[None, :], torch.zeros_like(iou))
    total = weights.sum(dim=1, keepdim=True)
    refined = (weights @ all_segments) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, refined, kept_segments)
