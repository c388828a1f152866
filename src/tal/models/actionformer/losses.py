"""ActionFormer losses: sigmoid focal loss on every valid point + 1-D DIoU on positive points."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Distance-IoU loss of segments given as distances from a common point.

    pred, target: ``(N, 2)`` non-negative ``[left, right]`` (segment = ``[p - left, p + right]``).
    Returns ``(N,)`` ``1 - IoU + (centre distance / enclosing length)²``.
    """
    pl, pr = pred.unbind(-1)
    tl, tr = target.unbind(-1)
    inter = torch.minimum(pl, tl) + torch.minimum(pr, tr)
    union = pl + pr + tl + tr - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(pl, tl) + torch.maximum(pr, tr)
    centre_dist = 0.5 * ((pr - pl) - (tr - tl))
    return 1.0 - iou + (centre_dist / enclosing.clamp(min=eps)) ** 2


def actionformer_loss(
    cls_logits: torch.Tensor,
    offsets: torch.Tensor,
    valid: torch.Tensor,
    cls_targets: torch.Tensor,
    reg_targets: torch.Tensor,
    normalizer: float,
    reg_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Summed focal loss over valid points and DIoU over positive points, both divided by ``normalizer``.

    cls_logits ``(B, P, K)``, offsets ``(B, P, 2)``, valid ``(B, P)`` bool, cls_targets ``(B, P, K)``,
    reg_targets ``(B, P, 2)``. Computed in float32 (safe under bf16 autocast).
    Returns ``{"loss", "cls_loss", "reg_loss"}``.
    """
    positive = valid & (cls_targets.sum(-1) > 0)
    cls_loss = sigmoid_focal_loss(
        cls_logits[valid].float(), cls_targets[valid].float(), alpha=alpha, gamma=gamma, reduction="sum"
    )
    if positive.any():
        reg_loss = diou_loss_1d(offsets[positive].float(), reg_targets[positive].float()).sum()
    else:
        reg_loss = offsets.sum() * 0.0  # keeps the graph connected, no NaN on a batch without positives
    cls_loss, reg_loss = cls_loss / normalizer, reg_loss / normalizer
    return {
        "loss": cls_loss + reg_weight * reg_loss,
        "cls_loss": cls_loss,
        "reg_loss": reg_loss,
    }


class PositiveCountEMA(nn.Module):
    """Moving average of the number of positive points, the loss normaliser (ActionFormer: init 100, m 0.9)."""

    def __init__(self, init: float = 100.0, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.tensor(float(init)))

    @torch.no_grad()
    def update(self, num_pos: torch.Tensor | int) -> float:
        """Fold in this batch's positive count (at least 1) and return the new normaliser."""
        num_pos = torch.as_tensor(num_pos, dtype=self.value.dtype, device=self.value.device).clamp(min=1)
        self.value.mul_(self.momentum).add_((1 - self.momentum) * num_pos)
        return float(self.value)
