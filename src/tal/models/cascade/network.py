"""The refinement stage and the cascade of stages (seed 000 §3.3, after TCANet's temporal boundary regressor
and Cascade R-CNN).

A stage reads the video's features through its own two temporal convolutions, samples the start / action / end
regions of every proposal from them (:func:`~tal.models.cascade.sampling.sample_regions`, one ``grid_sample``
call per batch), averages each run of ``pool`` samples into a bin, and predicts:

* boundary branch, from the start and end regions: ``(Δs, Δe)``;
* segment branch, from all the samples: ``(Δc, Δw)`` and the logit of the proposal's tIoU.

The cascade chains the stages: stage ``i + 1`` refines the (detached) output of stage ``i``
(:func:`~tal.models.cascade.targets.refine_proposals`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import sampling
from .targets import refine_proposals

__all__ = ["CascadeRefiner", "RefineStage"]


class RefineStage(nn.Module):
    """One refinement stage.

    Args:
        in_channels: feature channels ``C``.
        hidden_dim: width ``H`` of the stage's features and heads.
        num_start, num_action, num_end: samples per region (32, 64, 32); each a multiple of ``pool``.
        pool: samples averaged into one bin before the linear encoders.
        dropout: in the heads.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_dim: int = 256,
        num_start: int = 32,
        num_action: int = 64,
        num_end: int = 32,
        pool: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        counts = (num_start, num_action, num_end)
        if any(n % pool for n in counts):
            raise ValueError(f"region sample counts {counts} must be multiples of pool={pool}")
        self.counts, self.pool = counts, pool
        self.bins = tuple(n // pool for n in counts)
        h = hidden_dim
        self.conv1 = nn.Conv1d(in_channels, h, 3, padding=1)
        self.conv2 = nn.Conv1d(h, h, 3, padding=1)
        self.start_enc = nn.Linear(h * self.bins[0], h)
        self.end_enc = nn.Linear(h * self.bins[2], h)
        self.boundary_head = nn.Sequential(
            nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 2)
        )
        self.segment_head = nn.Sequential(
            nn.Linear(h * sum(self.bins), h),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, 3),
        )

    def forward(self, feats: Tensor, mask: Tensor, proposals: Tensor) -> dict[str, Tensor]:
        """``feats (B, C, T)``, ``mask (B, T)`` bool, ``proposals (B, K, 2)`` in positions ->
        ``boundary (B, K, 2)``, ``segment (B, K, 2)``, ``iou_logit (B, K)``."""
        m = mask[:, None, :].to(feats.dtype)  # zero past each video after every conv: a video's outputs do
        x = torch.relu(self.conv1(feats * m)) * m  # not depend on how far its batch is padded
        x = torch.relu(self.conv2(x)) * m
        samples = sampling.sample_regions(x, proposals, *self.counts)  # (B, H, K, N)
        B, H, K, N = samples.shape
        bins = samples.view(B, H, K, N // self.pool, self.pool).mean(-1).permute(0, 2, 1, 3)  # (B, K, H, n)
        n_start, n_action, _ = self.bins
        start = self.start_enc(bins[..., :n_start].flatten(2))
        end = self.end_enc(bins[..., n_start + n_action :].flatten(2))
        boundary = self.boundary_head(torch.cat([start, end], dim=-1))
        segment = self.segment_head(bins.flatten(2))
        return {"boundary": boundary, "segment": segment[..., :2], "iou_logit": segment[..., 2]}


class CascadeRefiner(nn.Module):
    """``num_stages`` :class:`RefineStage` s with separate weights; ``stage_kwargs`` go to each."""

    def __init__(self, in_channels: int, num_stages: int = 3, **stage_kwargs) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {num_stages}")
        self.stages = nn.ModuleList(RefineStage(in_channels, **stage_kwargs) for _ in range(num_stages))

    def forward(
        self,
        feats: Tensor,
        mask: Tensor,
        proposals: Tensor,
        bounds: Tensor,
        k: float = 1.0,
        center: float = 0.1,
        width: float = 0.2,
    ) -> list[dict[str, Tensor]]:
        """Run every stage, each on the previous one's refined proposals.

        Args:
            feats: ``(B, C, T)``; mask: ``(B, T)`` bool; proposals: ``(B, K, 2)`` positions;
            bounds: ``(B, 2)`` each video's first and last position; k, center, width: decoding constants.
        Returns:
            one dict per stage: the stage's outputs plus ``proposals`` (its input) and ``refined`` (its output,
            detached), all ``(B, K, ...)``.
        """
        outs = []
        for stage in self.stages:
            out = stage(feats, mask, proposals)
            refined = refine_proposals(
                proposals, out["boundary"].detach(), out["segment"].detach(), bounds, k, center, width
            )
            outs.append({**out, "proposals": proposals, "refined": refined})
            proposals = refined
        return outs
