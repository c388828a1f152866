"""BMN training targets from ground-truth segments in grid units (the batch contract: position ``p`` covers the
grid cell ``[p, p + 1)``; map cell ``[d, t]`` is the proposal ``[t, t + d + 1)``)."""

from __future__ import annotations

import torch

from tal.ops import segment_ioa, segment_iou


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
    if segments.numel() == 0:
        zeros = torch.zeros(length, device=segments.device)
        return zeros, zeros.clone()
    pos = torch.arange(length, dtype=torch.float32, device=segments.device)
    cells = torch.stack([pos, pos + 1], dim=1)  # (L, 2)
    out = []
    for bound in segments.float().unbind(1):  # starts, then ends; each (N,)
        regions = torch.stack([bound - region / 2, bound + region / 2], dim=1)  # (N, 2)
        out.append(segment_ioa(regions, cells).amax(0))  # covered fraction of each cell
    return out[0], out[1]


def iou_map_targets(segments: torch.Tensor, length: int, max_duration: int) -> torch.Tensor:
    """``(D, L)`` map: max tIoU of proposal ``[t, t+d+1)`` with any ground truth; 0 on invalid cells
    (``t + d + 1 > L``) and when there is no ground truth.

    Args:
        segments: ``(N, 2)`` float ``[start, end]`` in grid units.
    """
    device = segments.device
    if segments.numel() == 0:
        return torch.zeros(max_duration, length, device=device)
    d = torch.arange(max_duration, dtype=torch.float32, device=device)[:, None]
    t = torch.arange(length, dtype=torch.float32, device=device)[None, :]
    p_start, p_end = t.expand(max_duration, length), t + d + 1  # (D, L) each
    proposals = torch.stack([p_start, p_end], dim=-1).reshape(-1, 2)  # (D * L, 2)
    iou = segment_iou(proposals, segments.float()).amax(-1).view(max_duration, length)
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
