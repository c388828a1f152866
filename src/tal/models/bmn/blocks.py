"""Pre-processing blocks on the BMN base features: LGTE (TCANet) and GCNeXt (G-TAD) with the dilated temporal
branches of the FineAction 2021 winning system. All take and return ``(B, C, T)``; ``mask (B, T)`` is True at valid positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def local_global_attention_mask(
    length: int, num_heads: int, num_local_heads: int, window: int
) -> torch.Tensor:
    """``(H, T, T)`` bool, True where query ``i`` may attend key ``j``: heads ``< num_local_heads`` see
    ``|i - j| <= window``, the other heads see everything."""
    pos = torch.arange(length)
    local = (pos[:, None] - pos[None, :]).abs() <= window
    heads = torch.arange(num_heads)[:, None, None] < num_local_heads
    return local[None] | ~heads


class LGTE(nn.Module):
    """Local-global temporal encoder: a post-norm transformer layer whose first heads attend a ±``window``
    neighbourhood and the others the whole sequence."""

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        num_local_heads: int = 4,
        window: int = 4,
        ffn_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_local_heads, self.window = num_heads, num_local_heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, int(dim * ffn_ratio)),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(int(dim * ffn_ratio), dim),
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, dim, length = x.shape
        tokens = x.transpose(1, 2)  # (B, T, C)
        q, k, v = self.qkv(tokens).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = local_global_attention_mask(length, self.num_heads, self.num_local_heads, self.window)
        attn_mask = attn_mask.to(x.device)[None]  # (1, H, T, T)
        if (
            mask is not None
        ):  # padded keys are never attended; a padded query keeps itself (no empty row → NaN)
            eye = torch.eye(length, dtype=torch.bool, device=x.device)
            attn_mask = (attn_mask & mask[:, None, None, :]) | eye
        p = self.dropout.p if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        attn = attn.transpose(1, 2).reshape(batch, length, dim)
        tokens = self.norm1(tokens + self.dropout(self.proj(attn)))
        tokens = self.norm2(tokens + self.dropout(self.ffn(tokens)))
        return tokens.transpose(1, 2)


def knn_indices(x: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """k nearest neighbours in feature space (Euclidean), self included.

    Args:
        x: ``(B, C, T)``; mask ``(B, T)`` True at valid positions (padded ones are never neighbours).
    Returns:
        ``(B, T, k)`` long indices into the T axis.
    """
    sq = (x * x).sum(1)  # (B, T)
    neg_dist = 2 * torch.einsum("bci,bcj->bij", x, x) - sq[:, :, None] - sq[:, None, :]  # -||xi - xj||^2
    if mask is not None:
        neg_dist = neg_dist.masked_fill(~mask[:, None, :], float("-inf"))
    return neg_dist.topk(min(k, x.shape[-1]), dim=-1).indices


def edge_features(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``cat(x_j, x_i)`` for each neighbour ``j`` of ``i``: ``(B, C, T), (B, T, k) -> (B, 2C, T, k)``."""
    batch, channels, length = x.shape
    k = idx.shape[-1]
    neighbours = torch.gather(
        x[:, :, None, :].expand(-1, -1, length, -1), 3, idx[:, None].expand(-1, channels, -1, -1)
    )  # (B, C, T, k): neighbours[b, c, i, m] = x[b, c, idx[b, i, m]]
    return torch.cat([neighbours, x[..., None].expand(-1, -1, -1, k)], dim=1)


class GCNeXt(nn.Module):
    """G-TAD's GCNeXt block with parallel dilated temporal branches.

    temporal (one branch per dilation, summed): ``1x1(C→W) → grouped 3-tap conv (groups) → 1x1(W→C)``;
    semantic: k-NN graph recomputed from the input, ``cat(x_j, x_i) → 1x1(2C→W) → grouped 1x1 → 1x1(W→C)``,
    max over neighbours. Output ``ReLU(temporal + x + semantic)``.
    """

    def __init__(
        self,
        dim: int = 256,
        width: int = 128,
        groups: int = 32,
        k: int = 3,
        dilations: tuple[int, ...] = (1,),
    ) -> None:
        super().__init__()
        self.k = k
        self.temporal = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(dim, width, 1),
                nn.ReLU(inplace=True),
                nn.Conv1d(width, width, 3, padding=dil, dilation=dil, groups=groups),
                nn.ReLU(inplace=True),
                nn.Conv1d(width, dim, 1),
            )
            for dil in dilations
        )
        self.semantic = nn.Sequential(
            nn.Conv2d(2 * dim, width, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, dim, 1),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        temporal = sum(branch(x) for branch in self.temporal)
        semantic = self.semantic(edge_features(x, knn_indices(x, self.k, mask))).amax(-1)
        return F.relu(temporal + x + semantic)
