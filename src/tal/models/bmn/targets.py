"""BMN training targets from ground-truth segments in grid units (the batch contract: position ``p`` covers the
grid cell ``[p, p + 1)``; map cell ``[d, t]`` is the proposal ``[t, t + d + 1)``)."""

from __future__ import annotations

import torch


def _overlap(
    a_start: torch.Tensor, a_end: torch.Tensor, b_start: torch.Tensor, b_end: torch.Tensor
) -> torch.Tensor:
    return (torch.minimum(a_end, b_end) - torch.maximum(a_start, b_start)).clamp(min=0)


def boundary_targets(
    segments: torch.Tensor, length: int, region: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start / end targets: for each cell ``[p, p+1)`` the largest fraction of it covered by a boundary region
    ``[b - region/2, b + region/2]`` of a ground-truth start (end) ``b`` (public BMN: IoA, region 3 cells).

    Args:
        segments: ``(N, 2)`` float ``[start, end]`` in grid units.
    Returns:
        ``start, end`` each ``(L,)`` in ``[0, 1]``.
    """
    cell = torch.arange(length, dtype=torch.float32, device=segments.device)[:, None]  # (L, 1)
    if segments.numel() == 0:
        zeros = torch.zeros(length, device=segments.device)
        return zeros, zeros.clone()
    out = []
    for bound in segments.float().unbind(1):  # starts, then ends; each (N,)
        ioa = _overlap(cell, cell + 1, bound - region / 2, bound + region / 2)  # (L, N) / cell length 1
        out.append(ioa.amax(1))
    return out[0], out[1]


def iou_map_targets(segments: torch.Tensor, length: int, max_duration: int) -> torch.Tensor:
    """``(D, L)`` map: max tIoU of proposal ``[t, t+d+1)`` with any ground truth; 0 on invalid cells
    (``t + d + 1 > L``) and when there is no ground truth.

    Args:
        segments: ``(N, 2)`` float ``[start, end]`` in grid units.
    """
    device = segments.device
    d = torch.arange(max_duration, dtype=torch.float32, device=device)[:, None]
    t = torch.arange(length, dtype=torch.float32, device=device)[None, :]
    p_start, p_end = t, t + d + 1  # (1, L), (D, L)
    if segments.numel() == 0:
        return torch.zeros(max_duration, length, device=device)
    g_start, g_end = segments.float()[:, 0], segments.float()[:, 1]  # (N,)
    inter = _overlap(p_start[..., None], p_end[..., None], g_start, g_end)  # (D, L, N)
    union = (p_end - p_start)[..., None] + (g_end - g_start) - inter
    iou = (inter / union.clamp(min=1e-8)).amax(-1)
    return torch.where(p_end <= length, iou, torch.zeros_like(iou))


def bmn_targets(
    segments: list[torch.Tensor], length: int, max_duration: int, region: float = 3.0
) -> dict[str, torch.Tensor]:
    """Batched targets: ``start, end (B, L)`` and ``iou_map (B, D, L)``."""
    starts, ends, maps = [], [], []
    for seg in segments:
        s, e = boundary_targets(seg, length, region)
        starts.append(s)
        ends.append(e)
        maps.append(iou_map_targets(seg, length, max_duration))
    return {"start": torch.stack(starts), "end": torch.stack(ends), "iou_map": torch.stack(maps)}


def valid_map_mask(valid_len: torch.Tensor, length: int, max_duration: int) -> torch.Tensor:
    """``(B, D, L)`` bool: cell ``[d, t]`` lies inside the valid part of the sequence (``t + d + 1 <= len_b``).

    Args:
        valid_len: ``(B,)`` number of valid (non-padded) positions per video.
    """
    d = torch.arange(max_duration, device=valid_len.device)[:, None]
    t = torch.arange(length, device=valid_len.device)[None, :]
    return (t + d + 1)[None] <= valid_len[:, None, None]
