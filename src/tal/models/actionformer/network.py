"""ActionFormer network (Zhang et al. 2022): conv embedding, transformer backbone, identity neck, shared heads.

``feats (B, C_in, T)`` and ``mask (B, T)`` go in; per pyramid level ``l`` (stride ``2**l``) come out class
logits ``(B, T_l, K)``, regression offsets ``(B, T_l, 2)`` (distances to start / end in units of the level
stride, non-negative) and the level mask ``(B, T_l)``.

Length constraint: the backbone halves the sequence ``num_levels - 1`` times, so ``T`` must be a multiple of
``2 ** (num_levels - 1)`` (32 with the default 6 levels) for every level to hold whole points at positions
``i * stride``. The banded attention masks its padded blocks itself, so (unlike ActionFormer's chunked
attention) there is no extra window-size factor. Training batches are padded to ``max_seq_len``, which
the LightningModule checks; any other length (inference runs each video at its own length) is padded here to
the next multiple, which changes nothing at valid positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import MaskedConv1d, Scale, TransformerBlock


def pad_to_multiple(
    feats: torch.Tensor, mask: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``feats (B, C, T)`` with zeros and ``mask (B, T)`` with False to a multiple of ``multiple``."""
    extra = -feats.shape[-1] % multiple
    if extra == 0:
        return feats, mask
    return F.pad(feats, (0, extra)), F.pad(mask, (0, extra), value=False)


def relu_pass_through(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)`` forward (bit-exact), identity backward: the gradient also reaches pre-activations below zero.

    The regression offsets are ``relu(scale * conv(h))`` with ``h >= 0`` (the head's last hidden layer is a
    ReLU), so an output channel whose weights make ``conv(h) <= 0`` at every positive point gets no gradient
    from a plain ReLU and never trains: the official code's seed 2 at the parity budget starts that way (its
    right-offset channel is dead at initialisation; the DIoU loss stays at 0.6, the average mAP at 34). With
    the gradient passed through, such a channel is pushed up (every target offset is positive) and comes back.
    """
    return x + (x.clamp(min=0) - x).detach()


def level_window_sizes(window_size: int | list[int], num_levels: int, num_global_levels: int) -> list[int]:
    """Window size per level; the last ``num_global_levels`` levels use global attention (0)."""
    sizes = list(window_size) if isinstance(window_size, list | tuple) else [int(window_size)] * num_levels
    if len(sizes) != num_levels:
        raise ValueError(f"window_size has {len(sizes)} entries for {num_levels} pyramid levels")
    for l in range(num_levels - num_global_levels, num_levels):
        sizes[l] = 0
    return sizes


class ConvHead(nn.Module):
    """``num_layers`` masked convs (k=3) shared across levels: (conv, LayerNorm, ReLU) × (n−1), then conv → out.

    The convs followed by a LayerNorm have no bias (as ActionFormer's heads)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, kernel_size: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.convs = nn.ModuleList(
            MaskedConv1d(a, b, kernel_size, bias=False) for a, b in zip(dims[:-1], dims[1:])
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims[1:])
        self.out = MaskedConv1d(dims[-1], out_dim, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), mask (B, T) -> (B, T, out_dim), zero at padded positions."""
        keep = mask[..., None].to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x, mask)[0])) * keep
        return self.out(x, mask)[0]


class ActionFormerNet(nn.Module):
    """Embedding (2 masked convs + LN + ReLU) → stem blocks → down-sampling branch blocks → per-level LN → heads.

    Initialised as ActionFormer: default PyTorch weights, every conv / linear bias at zero, the class bias at
    the prior ``prior_prob``; modules draw their initial weights in the official order, so after the same
    ``torch.manual_seed`` the initial weights are the official ones (the parity harness checks it).
    ``layer_scale_init``, ``separate_qkv_convs`` and ``attention`` (``"banded"``: O(T·w) windows; ``"dense"``:
    the O(T²) masked reference, same function) go to every :class:`TransformerBlock`. ``revive_offsets``:
    the offsets' ReLU passes its gradient below zero (:func:`relu_pass_through`; same outputs), so a dead
    offset channel still learns; ``False``: the plain ReLU of the official code.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int = 512,
        head_dim: int = 512,
        num_heads: int = 4,
        window_size: int | list[int] = 19,
        num_global_levels: int = 0,
        num_levels: int = 6,
        num_stem_blocks: int = 2,
        mlp_ratio: int = 4,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        path_drop: float = 0.1,
        head_layers: int = 3,
        prior_prob: float = 0.01,
        layer_scale_init: float | None = 1e-4,
        separate_qkv_convs: bool = True,
        revive_offsets: bool = True,
        attention: str = "banded",
    ):
        super().__init__()
        self.num_levels = num_levels
        self.offset_relu = relu_pass_through if revive_offsets else F.relu
        self.strides = [2**l for l in range(num_levels)]
        windows = level_window_sizes(window_size, num_levels, num_global_levels)
        self.embed = nn.ModuleList(
            [
                MaskedConv1d(in_channels, embed_dim, 3, bias=False),
                MaskedConv1d(embed_dim, embed_dim, 3, bias=False),
            ]
        )
        self.embed_norms = nn.ModuleList([nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)])
        block = dict(
            mlp_ratio=mlp_ratio,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            path_drop=path_drop,
            layer_scale_init=layer_scale_init,
            separate_qkv_convs=separate_qkv_convs,
            attention=attention,
        )
        self.stem = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, windows[0], **block) for _ in range(num_stem_blocks)
        )
        self.branch = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, windows[l], stride=2, **block)
            for l in range(1, num_levels)
        )
        self.neck = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(num_levels))
        self.cls_head = ConvHead(embed_dim, head_dim, num_classes, head_layers)
        self.reg_head = ConvHead(embed_dim, head_dim, 2, head_layers)
        self.reg_scales = nn.ModuleList(Scale() for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv1d) and m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_head.out.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def max_stride(self) -> int:
        return self.strides[-1]

    def forward(
        self, feats: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """feats (B, C_in, T), mask (B, T) -> per level: cls logits (B, T_l, K), offsets (B, T_l, 2), mask (B, T_l).

        ``T`` is padded to a multiple of ``max_stride`` first, so ``T_0 = ceil(T / max_stride) * max_stride``.
        Inside, sequences are channels last, ``(B, T, C)`` (see :mod:`.blocks`).
        """
        x, mask = pad_to_multiple(feats, mask, self.max_stride)
        keep = mask[..., None].to(x.dtype)
        x = x.transpose(1, 2) * keep  # (B, T, C_in), a view: the first conv reads it as it is
        for conv, norm in zip(self.embed, self.embed_norms):
            x = F.relu(norm(conv(x, mask)[0])) * keep
        for blk in self.stem:
            x, mask = blk(x, mask)
        levels = [(x, mask)]
        for blk in self.branch:
            levels.append(blk(*levels[-1]))
        cls_logits, offsets, masks = [], [], []
        for (x, m), norm, scale in zip(levels, self.neck, self.reg_scales):
            x = norm(x) * m[..., None].to(x.dtype)
            cls_logits.append(self.cls_head(x, m))
            offsets.append(self.offset_relu(scale(self.reg_head(x, m))))
            masks.append(m)
        return cls_logits, offsets, masks
