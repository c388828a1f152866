"""The fused boundary-matching (BM) layer.

Public BMN builds a dense sampling mask ``M`` of shape ``(T, N, D, T)``, computes ``x @ M`` (an ``(B, C, N, D,
T)`` tensor) and then applies ``Conv3d(C, O, (N, 1, 1))``. Both steps are linear, so they re-associate:

    Y[b, o, n, t'] = sum_c W[o, c, n] x[b, c, t']                     (project first: cheap)
    out[b, o, d, t] = sum_{n, t'} Y[b, o, n, t'] M[t', n, d, t] + bias[o]   (then sample)

``M`` has at most 2 non-zeros per sample point (3 points per bin, so at most 6 per ``(n, d, t)``), so the
sampling is a sparse-dense matrix product with ``A[(d, t), (n, t')] = M[t', n, d, t]``. No dense mask and no
``(B, C, N, D, T)`` tensor are ever built. ``A`` is built vectorised once per ``(L, D, N, points, ratio)`` and
cached. The weights reproduce public BMN's ``_get_interp1d_mask`` exactly (see :func:`bm_sample_positions`).

Options measured at L=400, D=200, O=512 on 2 CPU cores (loaded machine, so rough): CSR ``A @ Y`` per video
0.9-1.2 s, COO ``torch.sparse.mm`` 1.3 s, dense ``Y.T @ A.T`` (dense @ CSR) 3.4 s; one wide product over all
videos (``B*O`` columns) was 1.5-2x slower per video than a loop over videos, and a gather of the <= 6 taps per
``(n, d, t)`` would materialise ``B*O*N*6`` values per map cell. The CSR product per video with a cached ``A.T``
for backward is kept (``benchmarks/bench_bm_layer.py`` compares it with the dense algorithm).

Map convention: ``out[..., d, t]`` is the proposal ``[t, t + d + 1)`` in grid units, valid when
``t + d + 1 <= L``; invalid cells hold the bias only (as in public BMN, whose mask is zero there).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
from torch import nn

_CHUNK_ENTRIES = 1 << 21  # sample points per chunk when building the operator (~100 MB of temporaries)


def bm_sample_positions(
    length: int,
    max_duration: int,
    num_sample: int = 32,
    num_points: int = 3,
    boundary_ratio: float = 0.5,
    d_start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions (feature indices) of the BM cells with durations ``d_start <= d < max_duration``,
    public BMN semantics.

    For start ``t`` and duration index ``d`` the region is ``[t - r(d+1), t + d + r(d+1)]`` in feature indices,
    as public BMN's code has it (``p_xmax = start + duration``): the span of the centres of cells ``t .. t+d``
    (the proposal ``[t, t+d+1)``) widened by ``r`` times the proposal length on each side. It is sampled at
    ``num_sample * num_points`` evenly spaced points, both ends included. Arithmetic is float64 in the public
    order of operations so the weights match bit for bit.

    Returns:
        positions ``(D', T, N * P)`` float64 and ``valid`` ``(D', T)`` bool (``t + d + 1 <= L``),
        ``D' = max_duration - d_start``.
    """
    t = np.arange(length, dtype=np.float64)[None, :]
    d = np.arange(d_start, max_duration, dtype=np.float64)[:, None]
    center_len = d + 1.0
    x_min = t - center_len * boundary_ratio
    x_max = (t + d) + center_len * boundary_ratio
    step = (x_max - x_min) / (num_sample * num_points - 1.0)
    k = np.arange(num_sample * num_points, dtype=np.float64)
    positions = x_min[..., None] + step[..., None] * k
    valid = (t + d) < length
    return positions, valid


def bm_interp_weights(positions: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolation taps of sample points, public BMN semantics.

    Public BMN splits ``x`` with ``math.modf`` (truncation towards zero) and ``ceil``: the lower tap is
    ``trunc(x)`` with weight ``1 - frac``, the upper tap ``ceil(x)`` with weight ``frac`` (``frac`` has the sign of
    ``x``), and each tap outside ``[0, L-1]`` is dropped on its own. So a point in ``(-1, 0)`` puts weight 1 on
    index 0, a point in ``(L-1, L)`` keeps only ``1 - frac`` on ``L-1``, and points ``<= -1`` or ``>= L`` vanish.

    Args:
        positions: ``(...,)`` float64 sample positions.
    Returns:
        ``idx (..., 2)`` int64 tap indices (clamped into range) and ``w (..., 2)`` float64 weights (0 for dropped
        taps).
    """
    frac, lower = np.modf(positions)
    upper = np.ceil(positions)
    idx = np.stack([lower, upper], axis=-1)
    w = np.stack([1.0 - frac, frac], axis=-1)
    inside = (idx >= 0) & (idx <= length - 1)
    return np.clip(idx, 0, length - 1).astype(np.int64), np.where(inside, w, 0.0)


@lru_cache(maxsize=8)
def bm_sampling_operator(
    length: int, max_duration: int, num_sample: int = 32, num_points: int = 3, boundary_ratio: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse BM sampling operator and its transpose, float32 CSR, cached.

    ``A[(d * L + t), (n * L + t')] = M[t', n, d, t]``: bin ``n`` of cell ``(d, t)`` is the mean of its
    ``num_points`` interpolated points; duplicate taps are summed in float64 before the float32 cast.

    Returns:
        ``A`` of shape ``(D * L, N * L)`` and ``A.T`` of shape ``(N * L, D * L)``, both sparse CSR float32.
    """
    if not 1 <= max_duration <= length:
        raise ValueError(f"BM layer: max_duration {max_duration} must be in [1, L={length}]")
    per_point = num_sample * num_points
    num_rows, num_cols = max_duration * length, num_sample * length
    chunk = max(1, _CHUNK_ENTRIES // (length * per_point))  # durations per chunk: bounded temporaries
    keys, values = [], []
    for d_start in range(0, max_duration, chunk):
        d_stop = min(d_start + chunk, max_duration)
        positions, valid = bm_sample_positions(
            length, d_stop, num_sample, num_points, boundary_ratio, d_start
        )
        idx, w = bm_interp_weights(positions, length)  # (D', T, N*P, 2)
        d_idx, t_idx = np.nonzero(valid)
        idx, w = idx[d_idx, t_idx], w[d_idx, t_idx]  # (V, N*P, 2)
        rows = ((d_idx + d_start) * length + t_idx)[:, None, None]
        cols = (np.arange(per_point) // num_points)[None, :, None] * length + idx  # bin n, tap t'
        keep = w != 0.0
        # one key per (row, col); taps of a bin that hit the same t' are summed in float64
        key, inverse = np.unique((rows * num_cols + cols)[keep], return_inverse=True)
        keys.append(key)
        values.append((np.bincount(inverse, weights=w[keep]) * (1.0 / num_points)).astype(np.float32))
    key, value = np.concatenate(keys), np.concatenate(values)  # sorted by (row, col): chunks hold rising rows
    del keys, values
    rows, cols = (key // num_cols).astype(np.int32), (key % num_cols).astype(np.int32)
    del key
    order = np.argsort(cols, kind="stable")  # (col, row) order: the CSR of A.T
    op = _csr(rows, cols, value, (num_rows, num_cols))
    op_t = _csr(cols[order], rows[order], value[order], (num_cols, num_rows))
    return op, op_t


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Sparse CSR tensor with int32 indices from entries sorted by (row, col)."""
    crow = np.zeros(shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(np.ascontiguousarray(cols)),
            torch.from_numpy(np.ascontiguousarray(values)),
            shape,
            check_invariants=False,
        )


def _csr_rows(op: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of a CSR matrix, sharing its column indices and values (no copy)."""
    crow = op.crow_indices()
    lo, hi = int(crow[start]), int(crow[stop])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow[start : stop + 1] - lo,
            op.col_indices()[lo:hi],
            op.values()[lo:hi],
            (stop - start, op.shape[1]),
            check_invariants=False,
        )


def _batched_spmm(op: torch.Tensor, y: torch.Tensor, block_rows: int = 1 << 14) -> torch.Tensor:
    """``(R, K) sparse @ (B, K, O) -> (B, R, O)``, one video and ``block_rows`` rows at a time into one
    preallocated output: a ``(K, O)`` slice of ``y`` stays in cache while the sparse rows gather from it (several
    times faster than one wide product), and the sparse kernel's scratch copy of its output stays one block."""
    out = y.new_empty(y.shape[0], op.shape[0], y.shape[2])
    blocks = [(r, min(r + block_rows, op.shape[0])) for r in range(0, op.shape[0], block_rows)]
    blocks = [(start, stop, _csr_rows(op, start, stop)) for start, stop in blocks]
    for y_b, out_b in zip(y, out):
        y_b = y_b.contiguous()
        for start, stop, block in blocks:
            torch.mm(block, y_b, out=out_b[start:stop])
    return out


class _SparseSample(torch.autograd.Function):
    """``A @ y`` per video for a constant sparse ``A``; backward uses the cached ``A.T`` (no transpose per step)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, op: torch.Tensor, op_t: torch.Tensor) -> torch.Tensor:
        ctx.op_t = op_t
        return _batched_spmm(op, y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _batched_spmm(ctx.op_t, grad), None, None


def boundary_matching(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    max_duration: int,
    num_points: int = 3,
    boundary_ratio: float = 0.5,
) -> torch.Tensor:
    """Fused BM sampling + ``Conv3d(C, O, (N, 1, 1))``.

    Args:
        x: ``(B, C, T)`` features.
        weight: ``(O, C, N, 1, 1)`` Conv3d weight (public BMN layout); bias ``(O,)`` or None.
        max_duration: ``D``, number of duration rows of the map.
    Returns:
        ``(B, O, D, T)`` in channels-last memory layout (what the sparse product yields; CPU convolutions take it
        as is): ``out[b, o, d, t]`` scores proposal ``[t, t + d + 1)``.
    """
    batch, _, length = x.shape
    out_ch, _, num_sample = weight.shape[:3]
    op, op_t = bm_sampling_operator(length, max_duration, num_sample, num_points, boundary_ratio)
    op, op_t = op.to(x.device), op_t.to(x.device)
    y = torch.einsum("ocn,bct->bnto", weight.flatten(2).to(x.dtype), x)  # (B, N, T, O)
    y = y.reshape(batch, num_sample * length, out_ch)
    out = _SparseSample.apply(y.float(), op, op_t).to(x.dtype)  # (B, D*T, O)
    if bias is not None:
        out = out.add_(bias.to(x.dtype))  # in place: the map is the largest tensor of BMN
    return out.view(batch, max_duration, length, out_ch).permute(0, 3, 1, 2)


class BoundaryMatching(nn.Module):
    """Thin module around :func:`boundary_matching`.

    Holds ``proj``, a ``Conv3d(in_channels, out_channels, (num_sample, 1, 1))`` whose weight/bias keep public
    BMN's shapes, so checkpoints are interchangeable; the Conv3d itself is never called.
    """

    def __init__(
        self,
        in_channels: int = 128,
        out_channels: int = 512,
        num_sample: int = 32,
        num_points: int = 3,
        boundary_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_points = num_points
        self.boundary_ratio = boundary_ratio
        self.proj = nn.Conv3d(in_channels, out_channels, kernel_size=(num_sample, 1, 1))

    def forward(self, x: torch.Tensor, max_duration: int) -> torch.Tensor:
        """``(B, C, T) -> (B, O, D, T)``."""
        return boundary_matching(
            x, self.proj.weight, self.proj.bias, max_duration, self.num_points, self.boundary_ratio
        )
