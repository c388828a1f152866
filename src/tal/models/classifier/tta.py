"""Test-time augmentation over temporal crops: the class probabilities of ``num_clips`` crops, averaged.

``num_clips = 1`` is the whole sequence (no augmentation); ``num_clips = n > 1`` takes ``n`` crops of
``crop_ratio`` of each video's valid length, their starts evenly spaced from the first to the last possible
position (the seed's Table 3 sweeps ``num_clips`` from 3 to 10).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .heads import valid_lengths

__all__ = ["crop_batch", "temporal_crops", "tta_probs"]


def temporal_crops(length: int, num_clips: int, crop_ratio: float) -> Tensor:
    """``(num_clips, 2)`` long ``[start_idx, end_idx)`` of the test crops of a sequence of ``length`` positions.

    Each crop is ``max(1, round(crop_ratio * length))`` long; starts are ``round(linspace(0, length - crop_len,
    num_clips))`` (round half to even). ``num_clips = 1`` gives ``[[0, length]]``.
    """
    if num_clips < 1 or not 0 < crop_ratio <= 1:
        raise ValueError(f"TTA needs num_clips >= 1 and 0 < crop_ratio <= 1, got {num_clips}, {crop_ratio}")
    if num_clips == 1:
        return torch.tensor([[0, length]])
    crop_len = max(1, round(crop_ratio * length))
    starts = torch.linspace(0, length - crop_len, num_clips, dtype=torch.float64).round().long()
    return torch.stack([starts, starts + crop_len], dim=1)


def crop_batch(x: Tensor, windows: Tensor) -> tuple[Tensor, Tensor]:
    """Cut window ``b`` out of row ``b``: ``x (B, C, T)``, ``windows (B, 2)`` ``[start, end)`` -> the crops
    left-aligned and zero-padded to the longest, ``(B, C, T')`` and their ``mask (B, T')``."""
    lengths = windows[:, 1] - windows[:, 0]
    longest = int(lengths.max())
    out = x.new_zeros(x.shape[0], x.shape[1], longest)
    mask = torch.zeros(x.shape[0], longest, dtype=torch.bool, device=x.device)
    for b, (s, e) in enumerate(windows.tolist()):
        out[b, :, : e - s] = x[b, :, s:e]
        mask[b, : e - s] = True
    return out, mask


def tta_probs(
    probs_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    mask: Tensor,
    num_clips: int = 1,
    crop_ratio: float = 0.8,
) -> Tensor:
    """Mean of ``probs_fn(crop, crop_mask) -> (B, classes)`` over the :func:`temporal_crops` of every video.

    Args:
        probs_fn: class probabilities of a batch of sequences.
        x: ``(B, C, T)``; mask: ``(B, T)``, each row's valid positions a prefix.

    Returns:
        ``(B, classes)``. With ``num_clips = 1``: ``probs_fn(x, mask)`` itself.
    """
    if num_clips == 1:
        return probs_fn(x, mask)
    lengths = valid_lengths(mask).tolist()
    windows = torch.stack([temporal_crops(n, num_clips, crop_ratio) for n in lengths])  # (B, clips, 2)
    total = None
    for j in range(num_clips):
        p = probs_fn(*crop_batch(x, windows[:, j]))
        total = p if total is None else total + p
    return total / num_clips
