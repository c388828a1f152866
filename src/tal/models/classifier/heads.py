"""Video classification heads over a whole feature sequence ``x (B, C, T)`` with a validity ``mask (B, T)``.

Each head is a pure function holding the math plus a thin ``nn.Module`` (timm's ``layers/`` style); every head
maps ``(x, mask) -> logits (B, num_classes)`` and ignores padded positions, so a video gives the same logits
whatever it is padded to.

* :class:`TSNHead`: TSN's segmental consensus (Wang et al. 2016): the valid sequence cut into ``num_segments``
  equal parts, one shared MLP + linear classifier per part, the parts' logits averaged (or max-pooled).
* :class:`NeXtVLADHead`: NeXtVLAD (Lin et al. 2018): expansion, groups with attention, soft cluster assignment,
  VLAD residuals, intra-normalisation, a hidden projection and (SE) context gating.
* :class:`AttentionHead`: a small transformer encoder of timm ``Block`` s over the sequence, pooled by a class
  token or by timm's latent-query ``AttentionPoolLatent``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import AttentionPoolLatent, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

__all__ = [
    "HEADS",
    "AttentionHead",
    "ContextGating",
    "NeXtVLADHead",
    "TSNHead",
    "build_head",
    "context_gating",
    "masked_mean",
    "nextvlad_aggregate",
    "segment_means",
    "valid_lengths",
]


def valid_lengths(mask: Tensor) -> Tensor:
    """``(B,)`` number of valid positions of each row of ``mask (B, T)``; the valid positions must be a prefix
    (as ``tal.data.collate_batch`` pads) and at least one."""
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, mask.bool()) or bool((lengths == 0).any()):
        raise ValueError(
            "mask must mark a non-empty prefix of valid positions in every row (padding at the end)"
        )
    return lengths


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid positions: ``x (B, C, T)``, ``mask (B, T)`` -> ``(B, C)``."""
    m = mask.to(x.dtype)[:, None, :]
    return (x * m).sum(-1) / m.sum(-1).clamp_min(1)


def segment_means(x: Tensor, mask: Tensor, num_segments: int) -> Tensor:
    """Means of ``num_segments`` equal consecutive parts of each row's valid positions (TSN's segments).

    Segment ``k`` of a row with ``n`` valid positions covers ``[floor(k n / K), max(floor((k+1) n / K),
    floor(k n / K) + 1))``: every segment holds at least one position (segments overlap when ``n < K``).

    Args:
        x: ``(B, C, T)``; mask: ``(B, T)``, valid positions a prefix (see :func:`valid_lengths`).

    Returns:
        ``(B, C, K)``.
    """
    n = valid_lengths(mask).to(torch.long)[:, None]  # (B, 1)
    k = torch.arange(num_segments, device=x.device)[None, :]
    start = torch.div(k * n, num_segments, rounding_mode="floor")
    end = torch.maximum(torch.div((k + 1) * n, num_segments, rounding_mode="floor"), start + 1)
    t = torch.arange(x.shape[-1], device=x.device)[None, None, :]
    w = ((t >= start[..., None]) & (t < end[..., None])).to(x.dtype)  # (B, K, T)
    w = w / w.sum(-1, keepdim=True)
    return torch.einsum("bct,bkt->bck", x, w)


class TSNHead(nn.Module):
    """TSN segmental consensus over ``num_segments`` parts of the sequence.

    The snippet network ``Linear(C, hidden_dim) -> ReLU -> Dropout -> Linear(hidden_dim, num_classes)`` scores
    every position (a snippet feature); a segment's score is the mean of its positions' scores
    (:func:`segment_means`), and the consensus is the mean of the segment scores (``consensus="avg"``, TSN's
    choice) or their maximum (``"max"``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_segments: int = 8,
        hidden_dim: int = 256,
        dropout: float = 0.5,
        consensus: str = "avg",
    ) -> None:
        super().__init__()
        if consensus not in ("avg", "max"):
            raise ValueError(f"TSN consensus must be 'avg' or 'max', got {consensus!r}")
        self.num_segments, self.consensus = int(num_segments), consensus
        self.snippet = nn.Sequential(
            nn.Conv1d(in_channels, hidden_dim, 1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(hidden_dim, num_classes, 1),
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        scores = segment_means(self.snippet(x), mask, self.num_segments)  # (B, classes, K)
        return scores.mean(-1) if self.consensus == "avg" else scores.amax(-1)


def nextvlad_aggregate(
    x_groups: Tensor, group_attn: Tensor, assign: Tensor, centers: Tensor, mask: Tensor
) -> Tensor:
    """NeXtVLAD's aggregation: attention-weighted residuals of group features to the cluster centres.

    ``v[b, k, d] = sum_t sum_g mask[b, t] * group_attn[b, t, g] * assign[b, t, g, k] * (x_groups[b, t, g, d] -
    centers[k, d])``

    Args:
        x_groups: ``(B, T, G, D)`` expanded features split into ``G`` groups of ``D`` channels.
        group_attn: ``(B, T, G)`` attention of each group (sigmoid, in ``[0, 1]``).
        assign: ``(B, T, G, K)`` soft assignment of each group feature to the ``K`` clusters (softmax over ``K``).
        centers: ``(K, D)`` cluster centres.
        mask: ``(B, T)`` valid positions.

    Returns:
        ``(B, K, D)``, not normalised.
    """
    w = assign * group_attn[..., None] * mask.to(assign.dtype)[:, :, None, None]  # (B, T, G, K)
    return torch.einsum("btgk,btgd->bkd", w, x_groups) - w.sum((1, 2))[..., None] * centers


def context_gating(x: Tensor, gate_logits: Tensor) -> Tensor:
    """Context gating: ``x * sigmoid(gate_logits)`` (same shapes)."""
    return x * torch.sigmoid(gate_logits)


class ContextGating(nn.Module):
    """SE context gating of NeXtVLAD: ``y = x * sigmoid(W2 relu(W1 x) + b2)``, ``W1`` reducing ``dim`` by
    ``reduction`` (no bias), ``x (..., dim)``."""

    def __init__(self, dim: int, reduction: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, max(1, dim // reduction), bias=False)
        self.fc2 = nn.Linear(max(1, dim // reduction), dim)

    def forward(self, x: Tensor) -> Tensor:
        return context_gating(x, self.fc2(F.relu(self.fc1(x))))


class NeXtVLADHead(nn.Module):
    """NeXtVLAD (Lin et al. 2018) over the valid positions of the sequence.

    ``x (B, C, T)`` -> expansion ``Conv1d(C, expansion * C, kernel_size)`` (the paper's linear expansion when
    ``kernel_size = 1``; 3 lets each position see its neighbours) -> ``groups`` groups of
    ``D = expansion * C / groups`` channels, each with a sigmoid attention and a softmax assignment to
    ``clusters`` centres -> VLAD residuals ``(B, clusters, D)`` (:func:`nextvlad_aggregate`), L2-normalised per
    cluster -> ``Dropout -> Linear(clusters * D, hidden_dim) -> LayerNorm`` -> :class:`ContextGating` ->
    ``Linear(hidden_dim, num_classes)``. (The paper uses batch norm after the hidden projection; layer norm
    keeps a batch of one valid, which the last training batch can be.)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        expansion: int = 2,
        groups: int = 8,
        clusters: int = 32,
        hidden_dim: int = 256,
        gating_reduction: int = 8,
        dropout: float = 0.5,
        kernel_size: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"NeXtVLAD: kernel_size must be odd, got {kernel_size}")
        width = expansion * in_channels
        if width % groups:
            raise ValueError(
                f"NeXtVLAD: expansion * in_channels = {width} must be divisible by groups = {groups}"
            )
        self.groups, self.clusters, self.group_dim = groups, clusters, width // groups
        self.expand = nn.Conv1d(in_channels, width, kernel_size, padding=kernel_size // 2)
        self.group_attention = nn.Linear(width, groups)
        self.assignment = nn.Linear(width, groups * clusters)
        self.centers = nn.Parameter(torch.randn(clusters, self.group_dim) * 0.01)
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(clusters * self.group_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.gating = ContextGating(hidden_dim, gating_reduction)
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def vlad(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, clusters, D)`` intra-normalised VLAD descriptor of ``x (B, C, T)``."""
        m = mask.to(x.dtype)[:, None, :]
        h = self.expand(x * m).transpose(1, 2)  # (B, T, width)
        B, T, _ = h.shape
        attn = torch.sigmoid(self.group_attention(h))  # (B, T, G)
        assign = self.assignment(h).reshape(B, T, self.groups, self.clusters).softmax(-1)
        v = nextvlad_aggregate(h.reshape(B, T, self.groups, self.group_dim), attn, assign, self.centers, mask)
        return F.normalize(v, dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        v = self.dropout(self.vlad(x, mask).flatten(1))
        return self.classifier(self.gating(self.norm(self.hidden(v))))


class AttentionHead(nn.Module):
    """A small transformer encoder over the sequence, then a class token (``pool="cls"``) or a learned-query
    attention pooling (``pool="attn"``, timm's ``AttentionPoolLatent``), then ``Dropout -> Linear``.

    Input embedding: a masked ``Conv1d(C, embed_dim, 3)`` (local context, and the only position information:
    video classification here treats the sequence as a set of local snippets). Padded positions are excluded
    from every attention by an additive ``-inf`` mask.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        pool: str = "cls",
        dropout: float = 0.1,
        attn_drop: float = 0.0,
        path_drop: float = 0.1,
    ) -> None:
        super().__init__()
        if pool not in ("cls", "attn"):
            raise ValueError(f"attention head pool must be 'cls' or 'attn', got {pool!r}")
        self.pool = pool
        self.embed = nn.Conv1d(in_channels, embed_dim, 3, padding=1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "cls" else None
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        rates = torch.linspace(0, path_drop, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                proj_drop=dropout,
                attn_drop=attn_drop,
                drop_path=r,
            )
            for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.attn_pool = (
            AttentionPoolLatent(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, norm_layer=nn.LayerNorm)
            if pool == "attn"
            else None
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        valid = mask.bool()
        m = valid.to(x.dtype)[:, None, :]
        h = (self.embed(x * m) * m).transpose(1, 2)  # (B, T, D)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(len(h), -1, -1), h], dim=1)
            valid = torch.cat([valid.new_ones(len(h), 1), valid], dim=1)
        bias = torch.zeros(valid.shape, dtype=h.dtype, device=h.device).masked_fill(~valid, float("-inf"))
        bias = bias[:, None, None, :]  # (B, 1, 1, N): every query, every head
        for block in self.blocks:
            h = block(h, attn_mask=bias)
        h = self.norm(h)
        pooled = h[:, 0] if self.attn_pool is None else self.attn_pool(h, attn_mask=bias)
        return self.classifier(pooled)


HEADS = {"tsn": TSNHead, "nextvlad": NeXtVLADHead, "attention": AttentionHead}


def build_head(in_channels: int, num_classes: int, head: str = "nextvlad", **per_head: dict) -> nn.Module:
    """The head named ``head`` (one of :data:`HEADS`) built with the keyword arguments ``per_head[head]``
    (the config nests one block per head: ``network.head`` switches, the other blocks are ignored)."""
    if head not in HEADS:
        raise ValueError(f"model.network.head must be one of {sorted(HEADS)}, got {head!r}")
    unknown = sorted(set(per_head) - set(HEADS))
    if unknown:
        raise ValueError(f"model.network: unknown keys {unknown}; expected 'head' and blocks {sorted(HEADS)}")
    return HEADS[head](in_channels, num_classes, **dict(per_head.get(head) or {}))
