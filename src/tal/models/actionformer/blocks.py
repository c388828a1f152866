"""Building blocks of ActionFormer: masked conv, local window attention, transformer block.

Sequences are ``(B, T, C)`` (channels last) with a boolean ``mask (B, T)`` that is True at valid positions.
Channels last is the layout LayerNorm, the linear projections and attention want; the convolutions run it
through oneDNN's channels-last kernels (:func:`conv1d_btc`), so no block transposes a sequence in memory (the
channels-first network spent 14% of a training step copying around its LayerNorms). Every block returns zeros
at padded positions and never lets a padded position reach a valid one, so the outputs at valid positions do
not depend on how much padding follows (the tests check this). A block with ``stride=2`` halves ``T``; its
output mask is ``mask[:, ::2]`` (what nearest-neighbour down-sampling of the mask gives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn


def downsample_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Mask ``(B, T)`` → ``(B, ceil(T / stride))``: position ``i`` of the output sits at input ``i * stride``."""
    return mask[:, ::stride]


def local_window_mask(length: int, window_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``(T, T)`` band: query ``i`` may attend key ``j`` iff ``|i - j| <= window_size // 2``.

    ``window_size <= 0`` means global attention (all True).
    """
    idx = torch.arange(length, device=device)
    if window_size <= 0:
        return torch.ones(length, length, dtype=torch.bool, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window_size // 2


def dense_local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    window_size: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Multi-head self-attention restricted to a window around each query and to valid keys, as one dense
    ``(T, T)`` masked ``scaled_dot_product_attention``: O(T²) time and memory. Global attention when
    ``window_size <= 0``.

    q, k, v: ``(B, H, T, D)``; key_mask: ``(B, T)`` bool (True = valid). Returns ``(B, H, T, D)``.
    A query always sees itself, so padded queries (whose window may hold no valid key) never produce NaN;
    their outputs are meaningless and the caller zeroes them with the mask.
    """
    length = q.shape[-2]
    allowed = local_window_mask(length, window_size, q.device)[None, None] & key_mask[:, None, None, :]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)


def banded_block_size(window_size: int) -> int:
    """Query block length of :func:`banded_local_attention`: the window (``2 * (window_size // 2) + 1``), at
    least 16 so that small windows still give matrix products big enough to be fast."""
    return max(16, 2 * (window_size // 2) + 1)


def banded_local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    window_size: int,
    dropout_p: float = 0.0,
    block_size: int | None = None,
) -> torch.Tensor:
    """The function of :func:`dense_local_attention` (``window_size > 0``) in O(T·w) time and memory.

    The queries are cut into blocks of ``c = block_size`` positions; block ``n`` attends the ``c + 2h`` keys
    ``[n c - h, (n + 1) c + h)`` (``h = window_size // 2``), read as strided views (``unfold``) of the keys and
    values padded by ``h`` on each side, never copied per query. Inside a block, query ``a`` may see key ``b``
    iff ``0 <= b - a <= 2h`` (the window) and the key is valid (positions outside ``[0, T)`` are not), or
    ``b - a == h`` (itself). Scores per block: ``(B, H, T / c, c, c + 2h)``.

    q, k, v: ``(B, H, T, D)``; key_mask: ``(B, T)`` bool. Returns ``(B, H, T, D)``.
    """
    if window_size <= 0:
        raise ValueError(f"banded attention needs a window, got window_size={window_size}")
    b, heads, length, dim = q.shape
    half, c = window_size // 2, block_size or banded_block_size(window_size)
    num_blocks = -(-length // c)
    span, extra = c + 2 * half, num_blocks * c - length
    q_blocks = F.pad(q, (0, 0, 0, extra)).view(b, heads, num_blocks, c, dim)
    k_blocks = F.pad(k, (0, 0, half, half + extra)).unfold(2, span, c)  # (B, H, N, D, c + 2h)
    v_blocks = F.pad(v, (0, 0, half, half + extra)).unfold(2, span, c).transpose(-1, -2)  # (B, H, N, c+2h, D)
    key_valid = F.pad(key_mask, (half, half + extra), value=False).unfold(1, span, c)  # (B, N, c + 2h)
    rel = torch.arange(span, device=q.device)[None] - torch.arange(c, device=q.device)[:, None]  # (c, c + 2h)
    allowed = ((rel >= 0) & (rel <= 2 * half) & key_valid[:, None, :, None, :]) | (rel == half)
    scores = (q_blocks @ k_blocks) * dim**-0.5
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    out = (weights @ v_blocks).view(b, heads, num_blocks * c, dim)
    return out[:, :, :length]


ATTENTION_IMPLS = ("banded", "dense")


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    window_size: int,
    dropout_p: float = 0.0,
    impl: str = "banded",
) -> torch.Tensor:
    """Windowed (``window_size > 0``) or global masked self-attention; see :func:`dense_local_attention`.

    ``impl="banded"`` computes a window with :func:`banded_local_attention` unless the level is too short for
    the bands to be cheaper than the dense ``(T, T)`` scores (``T <= c + 2h``), where (as for global attention)
    the dense version is used; ``"dense"`` always uses the dense version (the O(T²) reference). Both give the
    same outputs and gradients to float tolerance.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; expected one of {ATTENTION_IMPLS}")
    half = window_size // 2
    if impl == "dense" or window_size <= 0 or q.shape[-2] <= banded_block_size(window_size) + 2 * half:
        return dense_local_attention(q, k, v, key_mask, window_size, dropout_p)
    return banded_local_attention(q, k, v, key_mask, window_size, dropout_p)


def conv1d_btc(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1, groups: int = 1
) -> torch.Tensor:
    """``F.conv1d`` with 'same' padding (``k // 2``) on a channels-last sequence.

    x: ``(B, T, C_in)``; weight: a ``Conv1d`` weight ``(C_out, C_in / groups, k)``. Returns a contiguous
    ``(B, ceil(T / stride), C_out)``. Runs as a 2-D convolution of the ``(B, C_in, 1, T)`` view, which is
    channels-last in memory, so oneDNN reads and writes ``(B, T, C)`` directly (no transposed copy; its
    depthwise backward is also ~3x faster than in channels-first).
    """
    k = weight.shape[-1]
    out = F.conv2d(
        x.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), bias, (1, stride), (0, k // 2), 1, groups
    )
    return out.squeeze(2).transpose(1, 2).contiguous()


def max_pool1d_btc(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max over the 3 positions around every ``stride``-th one (``MaxPool1d(3, stride, padding=1)``) of a
    channels-last ``(B, T, C)`` → ``(B, ceil(T / stride), C)``."""
    out = F.max_pool2d(x.transpose(1, 2).unsqueeze(2), (1, 3), (1, stride), (0, 1))
    return out.squeeze(2).transpose(1, 2).contiguous()


def linear_btc(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` for a channels-last ``(B, T, C_in)`` → ``(B, T, C_out)``, computed as a 1×1 convolution by
    oneDNN: on this CPU class twice as fast as the BLAS matrix product ``nn.Linear`` calls (forward and
    backward; same float32 accuracy). The parameters stay those of ``layer``."""
    return conv1d_btc(x, layer.weight[..., None], layer.bias)


class Conv1dBTC(nn.Conv1d):
    """A ``Conv1d`` (same parameters and initial weights) applied to channels-last ``(B, T, C)`` sequences with
    'same' padding: forward(x (B, T, C_in)) -> (B, T / stride, C_out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, **kwargs):
        if kernel_size % 2 != 1:
            raise ValueError(f"{type(self).__name__} needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv1d_btc(x, self.weight, self.bias, self.stride[0], self.groups)


class MaskedConv1d(Conv1dBTC):
    """:class:`Conv1dBTC` whose output is zeroed at padded positions.

    forward(x (B, T, C_in), mask (B, T)) -> (y (B, T / stride, C_out), mask (B, T / stride)).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_mask = downsample_mask(mask, self.stride[0])
        return super().forward(x) * out_mask[..., None].to(x.dtype), out_mask


class LocalSelfAttention(nn.Module):
    """Masked multi-head self-attention over a local window, optionally down-sampling by ``stride``.

    As ActionFormer's ``LocalMaskedMHCA``: query, key and value each come from their own depthwise (strided)
    conv + LayerNorm of the input, then their own linear projection (``separate_qkv_convs=False``: one depthwise
    conv + LayerNorm shared by the three, tal's earlier design, kept to measure the difference).
    ``attention``: ``"banded"`` (O(T·w)) or ``"dense"`` (the O(T²) reference), see :func:`local_attention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        stride: int = 1,
        attn_drop: float = 0.0,
        proj_drop=0.0,
        separate_qkv_convs: bool = True,
        attention: str = "banded",
    ):
        super().__init__()
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention {attention!r}; expected one of {ATTENTION_IMPLS}")
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.window_size, self.attn_drop = num_heads, window_size, attn_drop
        self.attention = attention
        n = 3 if separate_qkv_convs else 1
        self.dw_convs = nn.ModuleList(
            MaskedConv1d(dim, dim, 3, stride, groups=dim, bias=False) for _ in range(n)
        )
        self.dw_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n))
        self.k_proj = nn.Linear(dim, dim)  # key first: the official creation order (same initial weights)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C), mask (B, T) -> (B, T / stride, C), mask (B, T / stride)."""
        out_mask = downsample_mask(mask, self.dw_convs[0].stride[0])
        hs = [norm(conv(x, mask)[0]) for conv, norm in zip(self.dw_convs, self.dw_norms)]
        hs = hs * 3 if len(hs) == 1 else hs  # (B, T', C) each
        b, t, c = hs[0].shape
        q, k, v = (
            linear_btc(h, proj).view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)
            for proj, h in zip((self.q_proj, self.k_proj, self.v_proj), hs)
        )
        drop = self.attn_drop if self.training else 0.0
        out = local_attention(q, k, v, out_mask, self.window_size, drop, self.attention)
        out = out.transpose(1, 2).reshape(b, t, c)
        out = self.proj_drop(linear_btc(out, self.proj))
        return out * out_mask[..., None].to(out.dtype), out_mask


class LayerScale1d(nn.Module):
    """Learnable per-channel scale of a ``(B, T, C)`` residual branch (CaiT's LayerScale), ``init`` at start."""

    def __init__(self, dim: int, init: float = 1e-4):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on masked sequences; ``stride=2`` halves the length (max-pooled skip).

    Each residual branch is scaled by a per-channel :class:`LayerScale1d` (initialised at ``layer_scale_init``;
    ``None`` or 0: no scale) before drop path, as ActionFormer's ``AffineDropPath``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        stride: int = 1,
        mlp_ratio: int = 4,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        path_drop: float = 0.0,
        layer_scale_init: float | None = 1e-4,
        separate_qkv_convs: bool = True,
        attention: str = "banded",
    ):
        super().__init__()
        self.stride = stride
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LocalSelfAttention(
            dim, num_heads, window_size, stride, attn_drop, proj_drop, separate_qkv_convs, attention
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            Conv1dBTC(dim, mlp_ratio * dim, 1),
            nn.GELU(),
            nn.Dropout(proj_drop),
            Conv1dBTC(mlp_ratio * dim, dim, 1),
            nn.Dropout(proj_drop),
        )
        scaled = bool(layer_scale_init)
        self.ls1 = LayerScale1d(dim, layer_scale_init) if scaled else nn.Identity()
        self.ls2 = LayerScale1d(dim, layer_scale_init) if scaled else nn.Identity()
        self.drop_path = DropPath(path_drop) if path_drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C), mask (B, T) -> (B, T / stride, C), mask (B, T / stride)."""
        attn, out_mask = self.attn(self.norm1(x) * mask[..., None].to(x.dtype), mask)
        keep = out_mask[..., None].to(x.dtype)
        skip = x
        if self.stride > 1:
            # -inf at padded positions: the pooled skip of a valid position never sees padding
            skip = max_pool1d_btc(x.masked_fill(~mask[..., None], float("-inf")), self.stride)
        skip = skip.masked_fill(~out_mask[..., None], 0.0)
        x = skip + self.drop_path(self.ls1(attn))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x)) * keep))
        return x, out_mask


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level on the regression head)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
