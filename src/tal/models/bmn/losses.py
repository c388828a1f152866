"""BMN loss ``L_tem + 10 L_reg + L_cls`` (Lin et al. 2019), with guards so a batch without positives gives a
finite loss (public BMN divides by the positive count and goes NaN)."""

from __future__ import annotations

import torch

EPS = 1e-6


def weighted_logistic_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Class-balanced binary logistic loss over valid entries (TEM: threshold 0.5, PEM cls: 0.9).

    Positives are ``target > threshold``; with ratio ``r = n_valid / n_pos`` positives weigh ``r/2`` and negatives
    ``r / (2(r-1))``. ``n_pos`` is clamped to ``[1, n_valid - 1]`` so the weights stay finite when a batch has no
    positives (or only positives).

    Args:
        pred, target: same shape, ``pred`` in (0, 1); valid: bool, same shape.
    Returns:
        scalar: ``-sum(weighted log-likelihood) / n_valid``.
    """
    valid = valid.float()
    pos = (target > threshold).float() * valid
    neg = valid - pos
    n_valid = valid.sum().clamp(min=2)
    n_pos = pos.sum().clamp(min=1, max=float(n_valid) - 1)
    ratio = n_valid / n_pos
    w_pos, w_neg = 0.5 * ratio, 0.5 * ratio / (ratio - 1)
    loglik = w_pos * pos * torch.log(pred + EPS) + w_neg * neg * torch.log(1 - pred + EPS)
    return -loglik.sum() / n_valid


def iou_regression_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """L2 regression of the IoU map with public BMN's sampling: every cell with IoU > 0.7, and random cells with
    IoU in (0.3, 0.7] and in (0, 0.3] in the same expected number as the high ones. 0 when nothing is sampled.

    Args:
        pred, target: ``(B, D, L)``; valid ``(B, D, L)`` bool.
    """
    valid = valid.float()
    high = (target > 0.7).float() * valid
    mid = ((target > 0.3) & (target <= 0.7)).float() * valid
    low = ((target > 0.0) & (target <= 0.3)).float() * valid
    n_high = high.sum()
    r_mid = n_high / mid.sum().clamp(min=1)
    r_low = n_high / low.sum().clamp(min=1)
    u = torch.rand(target.shape, generator=generator, device=target.device)
    weights = high + mid * (u > 1 - r_mid).float() + low * (u > 1 - r_low).float()
    return 0.5 * (weights * (pred - target) ** 2).sum() / weights.sum().clamp(min=1)


def bmn_loss(
    pred: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    seq_valid: torch.Tensor,
    map_valid: torch.Tensor,
    reg_weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Total BMN loss and its parts.

    Args:
        pred: ``start, end (B, L)``, ``conf_map (B, 2, D, L)``; target: ``start, end (B, L)``, ``iou_map (B, D, L)``.
        seq_valid: ``(B, L)`` bool (non-padded positions); map_valid: ``(B, D, L)`` bool.
    Returns:
        dict with ``loss``, ``tem``, ``reg``, ``cls`` scalars.
    """
    tem = weighted_logistic_loss(pred["start"], target["start"], seq_valid) + weighted_logistic_loss(
        pred["end"], target["end"], seq_valid
    )
    reg = iou_regression_loss(pred["conf_map"][:, 0], target["iou_map"], map_valid, generator)
    cls = weighted_logistic_loss(pred["conf_map"][:, 1], target["iou_map"], map_valid, threshold=0.9)
    return {"loss": tem + reg_weight * reg + cls, "tem": tem, "reg": reg, "cls": cls}
