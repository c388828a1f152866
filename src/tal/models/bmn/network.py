"""BMN network: base module, optional LGTE / GCNeXt pre-processing, TEM boundary heads and the PEM over the fused
boundary-matching map."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import LGTE, GCNeXt
from .bm_layer import BoundaryMatching


def _conv1d_relu(c_in: int, c_out: int, kernel: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, groups=groups), nn.ReLU(inplace=True)
    )


def _boundary_head(dim: int) -> nn.Sequential:
    return nn.Sequential(_conv1d_relu(dim, dim, 3, groups=4), nn.Conv1d(dim, 1, 1), nn.Sigmoid())


class BMN(nn.Module):
    """Boundary-Matching Network.

    ``forward(feats (B, C_in, L), mask (B, L) | None)`` returns a dict with ``start``, ``end`` ``(B, L)`` boundary
    probabilities and ``conf_map`` ``(B, 2, D, L)`` (channel 0 IoU regression, channel 1 classification), where
    ``conf_map[..., d, t]`` scores the proposal ``[t, t + d + 1)`` in grid units.
    """

    def __init__(
        self,
        in_channels: int,
        max_duration: int,
        hidden_dim: int = 256,
        pem_dim: int = 128,
        bm_dim: int = 512,
        num_sample: int = 32,
        num_points: int = 3,
        boundary_ratio: float = 0.5,
        lgte: bool = False,
        gcnext: bool = False,
        dilations: tuple[int, ...] = (1,),
        num_gcnext_blocks: int = 1,
        lgte_window: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.max_duration = max_duration
        self.base = nn.Sequential(
            _conv1d_relu(in_channels, hidden_dim, 3, groups=4),
            _conv1d_relu(hidden_dim, hidden_dim, 3, groups=4),
        )
        blocks: list[nn.Module] = []
        if lgte:
            blocks.append(LGTE(hidden_dim, window=lgte_window, dropout=dropout))
        if gcnext:
            blocks += [GCNeXt(hidden_dim, dilations=tuple(dilations)) for _ in range(num_gcnext_blocks)]
        self.blocks = nn.ModuleList(blocks)
        self.start_head = _boundary_head(hidden_dim)
        self.end_head = _boundary_head(hidden_dim)
        self.pem_in = _conv1d_relu(hidden_dim, pem_dim, 3)
        self.bm = BoundaryMatching(pem_dim, bm_dim, num_sample, num_points, boundary_ratio)
        self.bm_reduce = nn.Sequential(
            nn.ReLU(inplace=True), nn.Conv2d(bm_dim, pem_dim, 1), nn.ReLU(inplace=True)
        )
        self.pem = nn.Sequential(
            nn.Conv2d(pem_dim, pem_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(pem_dim, pem_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(pem_dim, 2, 1),
            nn.Sigmoid(),
        )

    def _bm_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, pem_dim, T) -> (B, pem_dim, D, T)``: BM layer, ReLU, 1x1 reduction."""
        return self.bm_reduce(self.bm(x, self.max_duration))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.base(feats)
        for block in self.blocks:
            x = block(x, mask)
        bm_map = self._bm_map(self.pem_in(x))
        return {
            "start": self.start_head(x).squeeze(1),
            "end": self.end_head(x).squeeze(1),
            "conf_map": self.pem(bm_map),
        }
