"""The fused BM layer against a dense reference written the public BMN way (mask + matmul + Conv3d)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tal.models.bmn import BoundaryMatching, bm_interp_weights, bm_sampling_operator


def reference_bin_mask(x_min, x_max, length, num_sample, num_points):
    """One (T, N) block of public BMN's mask: plain Python loops over points, ``math.modf`` / ``math.ceil``."""
    step = float(x_max - x_min) / (num_sample * num_points - 1.0)
    points = [x_min + step * i for i in range(num_sample * num_points)]
    block = np.zeros((length, num_sample))
    for n in range(num_sample):
        column = np.zeros(length)
        for p in points[n * num_points : (n + 1) * num_points]:
            frac, lower = math.modf(p)
            upper = math.ceil(p)
            if 0 <= int(lower) <= length - 1:
                column[int(lower)] += 1 - frac
            if 0 <= int(upper) <= length - 1:
                column[int(upper)] += frac
        block[:, n] = column / num_points
    return block


def reference_mask(length, max_duration, num_sample=32, num_points=3, ratio=0.5):
    """Dense ``(T, N, D, T)`` float32 mask, ``[t', n, d, t]``."""
    mask = np.zeros((length, num_sample, max_duration, length))
    for t in range(length):
        for d in range(max_duration):
            if t + d < length:
                center_len = float(d) + 1
                x_min, x_max = t - center_len * ratio, t + d + center_len * ratio
                mask[:, :, d, t] = reference_bin_mask(x_min, x_max, length, num_sample, num_points)
    return torch.from_numpy(mask.astype(np.float32))


def reference_bm(x, conv3d, mask):
    """Public BMN: ``x @ mask`` → ``(B, C, N, D, T)`` → ``Conv3d((N,1,1))`` → ``(B, O, D, T)``."""
    batch, channels, length = x.shape
    sampled = torch.matmul(x, mask.reshape(length, -1)).reshape(batch, channels, mask.shape[1], -1, length)
    return conv3d(sampled).squeeze(2)


def test_interp_weights_follow_public_truncation():
    # -0.3: modf -> (-0.3, -0.0): lower 0 gets 1.3, upper 0 gets -0.3 → net 1 on index 0
    # 2.25: 0.75 on 2, 0.25 on 3;  4.5 with L=5: 0.5 on 4, upper 5 dropped;  -1.5: both taps dropped
    idx, w = bm_interp_weights(np.array([-0.3, 2.25, 4.5, -1.5, 3.0]), length=5)
    dense = np.zeros((5, 5))
    for i in range(5):
        np.add.at(dense[i], idx[i], w[i])
    expected = np.array(
        [
            [1.0, 0, 0, 0, 0],
            [0, 0, 0.75, 0.25, 0],
            [0, 0, 0, 0, 0.5],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 1.0, 0],
        ]
    )
    np.testing.assert_allclose(dense, expected, atol=1e-12)


@pytest.mark.parametrize("length,max_duration", [(16, 8), (24, 12), (10, 10)])
def test_operator_equals_public_mask(length, max_duration):
    op, op_t = bm_sampling_operator(length, max_duration)
    mask = reference_mask(length, max_duration)  # [t', n, d, t]
    dense_op = mask.permute(2, 3, 1, 0).reshape(max_duration * length, -1)  # [(d,t), (n,t')]
    assert torch.equal(op.to_dense(), dense_op)
    assert torch.equal(op_t.to_dense(), dense_op.t())
    # at most 2 taps per point, 3 points per bin
    taps_per_bin = (mask != 0).sum(0)
    assert taps_per_bin.max() <= 6


def test_operator_built_in_chunks_is_identical(monkeypatch):
    from tal.models.bmn import bm_layer

    whole, whole_t = bm_sampling_operator(16, 8)
    monkeypatch.setattr(bm_layer, "_CHUNK_ENTRIES", 3 * 16 * 96)  # 3 durations per chunk
    parts, parts_t = bm_sampling_operator.__wrapped__(16, 8)
    assert torch.equal(parts.to_dense(), whole.to_dense()) and torch.equal(
        parts_t.to_dense(), whole_t.to_dense()
    )


@pytest.mark.parametrize("length,max_duration,batch", [(16, 8, 2), (24, 12, 1)])
def test_fused_layer_matches_dense_reference(length, max_duration, batch):
    torch.manual_seed(0)
    in_ch, out_ch = 8, 16
    layer = BoundaryMatching(in_ch, out_ch)
    conv3d = nn.Conv3d(in_ch, out_ch, (32, 1, 1))
    conv3d.load_state_dict(layer.proj.state_dict())  # same parameters, public layout
    x = torch.randn(batch, in_ch, length, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    out = layer(x, max_duration)
    ref = reference_bm(x_ref, conv3d, reference_mask(length, max_duration))
    assert out.shape == (batch, out_ch, max_duration, length)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.proj.weight.grad, conv3d.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.proj.bias.grad, conv3d.bias.grad, rtol=1e-4, atol=1e-4)


def test_invalid_cells_hold_bias_only():
    layer = BoundaryMatching(4, 6)
    out = layer(torch.randn(1, 4, 12), max_duration=12)
    d, t = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    invalid = (t + d + 1) > 12
    bias = layer.proj.bias.detach()[:, None].expand(-1, int(invalid.sum()))
    torch.testing.assert_close(out[0][:, invalid], bias)


def test_bad_max_duration_raises():
    with pytest.raises(ValueError, match="max_duration"):
        bm_sampling_operator(8, 9)


def test_blocked_sparse_product_equals_plain_product():
    from tal.models.bmn.bm_layer import _batched_spmm

    op, _ = bm_sampling_operator(16, 8)
    y = torch.randn(2, op.shape[1], 5)
    expected = torch.stack([op.to_dense() @ y_b for y_b in y])
    torch.testing.assert_close(_batched_spmm(op, y, block_rows=7), expected)  # 128 rows in 19 blocks
