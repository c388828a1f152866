"""Cascade losses: per stage, smooth-L1 regression of both parametrisations on the stage's positives plus an
L2 tIoU regression with BMN's high / medium / low sampling; the total is the sum over stages. A stage (or a
batch) without positives contributes 0 regression, never NaN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .targets import stage_targets

__all__ = ["cascade_loss", "sampled_iou_loss", "stage_loss"]


def sampled_iou_loss(
    pred: Tensor,
    target: Tensor,
    valid: Tensor,
    high: float = 0.7,
    low: float = 0.3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L2 between predicted and true tIoU with BMN's sampling: every valid entry with ``tIoU > high``, and random
    entries of ``(low, high]`` and of ``[0, low]`` in the same expected number as the high ones (at least 1
    each, so a batch without high tIoU still trains the score). Unlike BMN's map, ``tIoU = 0`` is sampled: a
    background proposal must learn a low score. 0 when nothing is sampled.

    Args:
        pred, target: same shape, in ``[0, 1]``; valid: bool, same shape.
    """
    valid = valid.float()
    hi = (target > high).float() * valid
    mid = ((target > low) & (target <= high)).float() * valid
    lo = (target <= low).float() * valid
    n_ref = hi.sum().clamp(min=1)
    r_mid, r_lo = n_ref / mid.sum().clamp(min=1), n_ref / lo.sum().clamp(min=1)
    u = torch.rand(target.shape, generator=generator, device=target.device)
    weights = hi + mid * (u < r_mid).float() + lo * (u < r_lo).float()
    return 0.5 * (weights * (pred - target) ** 2).sum() / weights.sum().clamp(min=1)


def stage_loss(
    out: dict[str, Tensor],
    matched: Tensor,
    has_gt: Tensor,
    valid: Tensor,
    iou_threshold: float,
    k: float = 1.0,
    center: float = 0.1,
    width: float = 0.2,
    beta: float = 0.1,
    reg_weight: float = 1.0,
    iou_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One stage's loss.

    Args:
        out: the stage's ``proposals (B, K, 2)`` (its input), ``boundary``, ``segment`` ``(B, K, 2)`` and
            ``iou_logit (B, K)`` (:class:`~tal.models.cascade.network.CascadeRefiner`).
        matched: ``(B, K, 2)`` each proposal's ground truth; has_gt: ``(B, K)`` bool (real proposal with a
            matched ground truth); valid: ``(B, K)`` bool (real proposal).
        iou_threshold: regression positives have ``tIoU >= iou_threshold`` (recomputed on this stage's input).
        beta: smooth-L1 transition point.
    Returns:
        ``loss``, ``boundary``, ``segment``, ``iou`` scalars; ``num_pos`` and ``mean_tiou`` (over ``has_gt``).
    """
    t = stage_targets(out["proposals"], matched, has_gt, iou_threshold, k, center, width)
    pos = t["positive"]
    n_pos = pos.sum()
    denom = n_pos.clamp(min=1).to(out["boundary"].dtype)
    boundary = F.smooth_l1_loss(out["boundary"][pos], t["boundary"][pos], reduction="sum", beta=beta) / denom
    segment = F.smooth_l1_loss(out["segment"][pos], t["segment"][pos], reduction="sum", beta=beta) / denom
    iou = sampled_iou_loss(torch.sigmoid(out["iou_logit"]), t["iou"], valid, generator=generator)
    n_gt = has_gt.sum().clamp(min=1)
    return {
        "loss": reg_weight * (boundary + segment) + iou_weight * iou,
        "boundary": boundary,
        "segment": segment,
        "iou": iou,
        "num_pos": n_pos,
        "mean_tiou": t["iou"].sum() / n_gt,
    }


def cascade_loss(
    outs: list[dict[str, Tensor]],
    matched: Tensor,
    has_gt: Tensor,
    valid: Tensor,
    iou_thresholds: list[float],
    **kwargs,
) -> dict[str, Tensor]:
    """Sum of :func:`stage_loss` over the stages, stage ``i`` with ``iou_thresholds[i]``, all against the same
    matched ground truth. Returns ``loss`` and each stage's parts as ``s{i}/<part>``."""
    if len(iou_thresholds) < len(outs):
        raise ValueError(f"{len(outs)} stages but only {len(iou_thresholds)} IoU thresholds {iou_thresholds}")
    total, parts = 0.0, {}
    for i, (out, thr) in enumerate(zip(outs, iou_thresholds)):
        losses = stage_loss(out, matched, has_gt, valid, thr, **kwargs)
        total = total + losses["loss"]
        parts.update({f"s{i + 1}/{name}": value for name, value in losses.items()})
    return {"loss": total, **parts}
