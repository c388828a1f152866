"""Proposal features by sampling: three regions per proposal, read from each video's feature map in one
``grid_sample`` call for the whole batch (each video's map is read in place; nothing is copied per proposal).

Positions follow the batch contract of the native / cap regimes: feature ``i`` sits at position ``i``, and a
fractional position interpolates linearly between its two neighbours. Past the video (before feature 0, after
feature ``T - 1``) the map is zero, so a point at ``-0.5`` reads half of feature 0 and a point at ``<= -1``
reads 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["region_positions", "sample_at", "sample_regions"]


def _region(lo: Tensor, hi: Tensor, n: int) -> Tensor:
    """``n`` points at the bin centres of ``[lo, hi]``: ``lo + (j + 0.5) (hi - lo) / n``; ``lo, hi (..., 1)``."""
    frac = (torch.arange(n, dtype=lo.dtype, device=lo.device) + 0.5) / n
    return lo + (hi - lo) * frac


def region_positions(
    proposals: Tensor, num_start: int = 32, num_action: int = 64, num_end: int = 32
) -> Tensor:
    """Sample positions of the start, action and end regions of each proposal.

    For ``[s, e]`` with ``l = e - s``: ``num_start`` points over ``[s - l/2, s]``, ``num_action`` over ``[s, e]``,
    ``num_end`` over ``[e, e + l/2]``, each region split into equal bins sampled at their centres (so the three
    regions tile ``[s - l/2, e + l/2]`` without a repeated point).

    Args:
        proposals: ``(..., 2)`` ``[start, end]`` in positions.
    Returns:
        ``(..., num_start + num_action + num_end)`` positions, in that order.
    """
    s, e = proposals[..., :1], proposals[..., 1:]
    half = 0.5 * (e - s)
    return torch.cat(
        [_region(s - half, s, num_start), _region(s, e, num_action), _region(e, e + half, num_end)], dim=-1
    )


def sample_at(feats: Tensor, positions: Tensor) -> Tensor:
    """Linear interpolation of each video's features at fractional positions (zero outside the video).

    One ``F.grid_sample`` call: the map is viewed as a ``(B, C, 1, T)`` image and every video's ``K x N`` points
    form its ``(K, N)`` grid, so memory is ``O(B C T + B C K N)``, never ``O(B K C T)``.

    Args:
        feats: ``(B, C, T)``; feature ``i`` sits at position ``i`` (zero at padded positions).
        positions: ``(B, K, N)`` positions on the ``T`` axis (no gradient flows to them).
    Returns:
        ``(B, C, K, N)``.
    """
    if feats.shape[-1] == 1:  # align_corners needs two columns; the second is the zero past the video
        feats = F.pad(feats, (0, 1))
    length = feats.shape[-1]
    x = positions.detach().to(feats.dtype) * (2.0 / (length - 1)) - 1.0
    grid = torch.stack([x, torch.zeros_like(x)], dim=-1)  # (B, K, N, 2): (x, y), y = the only row
    return F.grid_sample(
        feats[:, :, None, :], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )


def sample_regions(
    feats: Tensor, proposals: Tensor, num_start: int = 32, num_action: int = 64, num_end: int = 32
) -> Tensor:
    """The start / action / end region features of every proposal: ``feats (B, C, T)``, ``proposals (B, K, 2)``
    -> ``(B, C, K, num_start + num_action + num_end)`` (:func:`region_positions`, :func:`sample_at`)."""
    return sample_at(feats, region_positions(proposals, num_start, num_action, num_end))
