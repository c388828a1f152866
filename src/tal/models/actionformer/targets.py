"""ActionFormer target assignment: points of the feature pyramid and their class / regression targets.

A point is one position of one pyramid level: ``(pos, range_lo, range_hi, stride)`` where ``pos = i * stride``
is in units of the input T axis and the regression range ``[lo, hi]`` is in the same units: input-grid positions,
**not** multiplied by the stride (ActionFormer's convention, so the official configs copy over as they are).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: ActionFormer's regression ranges per level, in input-grid positions, both ends inclusive.
DEFAULT_REGRESS_RANGES = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))

#: segments whose lengths differ by at most this (positions) tie for a point: each adds its label (official 1e-3)
LENGTH_TIE_TOLERANCE = 1e-3


def make_points(
    level_lengths: list[int], strides: list[int], regress_ranges=DEFAULT_REGRESS_RANGES, device=None
) -> torch.Tensor:
    """All points of a pyramid, level after level: ``(P, 4)`` float ``[pos, lo, hi, stride]``, ``P = Σ T_l``.

    ``regress_ranges[l] = (lo, hi)`` is in input-grid positions (the units of ``pos``), as ActionFormer's configs
    write them: level ``l`` owns the segments whose larger distance to the point is in ``[lo, hi]``.
    """
    if len(regress_ranges) < len(level_lengths):
        raise ValueError(f"{len(regress_ranges)} regression ranges for {len(level_lengths)} pyramid levels")
    rows = []
    for length, stride, (lo, hi) in zip(level_lengths, strides, regress_ranges):
        pos = torch.arange(length, dtype=torch.float32, device=device) * stride
        rng = torch.tensor([lo, hi, stride], dtype=torch.float32, device=device)
        rows.append(torch.cat([pos[:, None], rng.expand(length, 3)], dim=1))
    return torch.cat(rows)


def assign_targets(
    points: torch.Tensor,
    segments: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    center_radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of one video.

    points ``(P, 4)`` from :func:`make_points`; segments ``(N, 2)`` ``[start, end]`` in T-axis positions;
    labels ``(N,)`` long. Returns ``cls (P, K)`` float multi-hot and ``reg (P, 2)`` distances
    ``[pos - start, end - pos]`` divided by the point's stride (zero where the point is negative).

    A point is positive for a segment when it lies inside the segment and strictly inside the centre region
    ``centre ± center_radius * stride`` (``center_radius <= 0``: anywhere inside), and the larger of its two
    distances (in positions) falls in the level's range ``[lo, hi]`` (both ends inclusive). When several segments
    qualify the shortest wins; segments within :data:`LENGTH_TIE_TOLERANCE` of the shortest length all add their
    label (a segment annotated with two classes), the regression target is the first shortest one's.
    """
    num_points = points.shape[0]
    if segments.numel() == 0:
        return points.new_zeros(num_points, num_classes), points.new_zeros(num_points, 2)
    pos, lo, hi, stride = (points[:, i : i + 1] for i in range(4))  # (P, 1) each
    start, end = segments[:, 0][None], segments[:, 1][None]  # (1, N)
    left, right = pos - start, end - pos  # (P, N)
    inner_start, inner_end = start, end
    if center_radius > 0:
        centre = 0.5 * (start + end)
        inner_start = torch.maximum(start, centre - center_radius * stride)
        inner_end = torch.minimum(end, centre + center_radius * stride)
    inside = torch.minimum(pos - inner_start, inner_end - pos) > 0
    reach = torch.maximum(left, right)
    ok = inside & (reach >= lo) & (reach <= hi)
    lengths = (end - start).expand(num_points, -1).masked_fill(~ok, math.inf)  # (P, N)
    min_len, best = lengths.min(dim=1)  # (P,)
    positive = torch.isfinite(min_len)
    winners = (lengths <= min_len[:, None] + LENGTH_TIE_TOLERANCE) & positive[:, None]  # (P, N)
    cls = (winners.float() @ F.one_hot(labels, num_classes).float()).clamp_(max=1.0)
    reg = torch.stack([left, right], dim=-1).gather(1, best[:, None, None].expand(-1, 1, 2))[:, 0]
    reg = reg / stride * positive[:, None]
    return cls, reg
