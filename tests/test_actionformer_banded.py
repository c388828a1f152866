"""Banded local attention against the dense masked one (the O(T²) reference), and inference at each video's own
length against the padded run: equal outputs and gradients to float tolerance."""

from __future__ import annotations

import pytest
import torch

from tal.models.actionformer import (
    ActionFormerModule,
    ActionFormerNet,
    banded_local_attention,
    dense_local_attention,
    local_attention,
    valid_lengths,
)
from test_actionformer import dense_reference_attention


def qkv_and_mask(lengths: list[int], total: int, heads: int = 2, dim: int = 4, seed: int = 0):
    """float64 ``q, k, v (B, H, total, D)`` with gradients and the key mask of videos of ``lengths``."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(len(lengths), heads, total, dim, generator=gen, dtype=torch.float64).requires_grad_()
        for _ in range(3)
    )
    key_mask = torch.arange(total)[None] < torch.tensor(lengths)[:, None]
    return q, k, v, key_mask


def outputs_and_grads(fn, q, k, v, key_mask):
    """Output of ``fn(q, k, v, key_mask)`` at valid queries and the gradients of a fixed weighted sum of it."""
    out = fn(q, k, v, key_mask) * key_mask[:, None, :, None]  # the caller zeroes padded queries
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    return out.detach(), grads


# (lengths of the videos in the batch, padded length, window, block size); None = the default block size
CASES = [
    ([37], 37, 5, None),  # odd length, not a multiple of the block
    ([40, 23], 40, 19, None),  # padded batch
    ([64, 64, 1], 64, 9, 4),  # blocks smaller than the window; a one-position video
    ([33, 30], 45, 7, 5),  # padding beyond the longest video, odd block
    ([13, 9], 13, 19, None),  # window larger than the level (every key in the band)
    ([11], 11, 41, 3),  # window far larger than the level, tiny blocks
    ([50, 17], 50, 6, None),  # even window: the band is |i - j| <= 3
    ([20, 0], 20, 3, 2),  # a batch entry with no valid position at all (no NaN)
]


@pytest.mark.parametrize("lengths,total,window,block", CASES)
def test_banded_equals_dense_outputs_and_gradients(lengths, total, window, block):
    q, k, v, key_mask = qkv_and_mask(lengths, total)
    want, want_grads = outputs_and_grads(
        lambda *a: dense_local_attention(*a, window_size=window), q, k, v, key_mask
    )
    got, got_grads = outputs_and_grads(
        lambda *a: banded_local_attention(*a, window_size=window, block_size=block), q, k, v, key_mask
    )
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    for g, w in zip(got_grads, want_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10)


def test_banded_matches_the_loop_reference():
    """Against attention computed one query at a time over the explicitly listed keys (not via the dense mask)."""
    q, k, v, key_mask = qkv_and_mask([29, 21], 29, heads=2, dim=3, seed=3)
    with torch.no_grad():
        got = banded_local_attention(q, k, v, key_mask, 7, block_size=4)
        want = dense_reference_attention(q, k, v, key_mask, 7)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("impl", ["banded", "dense"])
@pytest.mark.parametrize("total,window", [(100, 9), (20, 9), (30, 0)])
def test_local_attention_dispatch_is_the_same_function(impl, total, window):
    q, k, v, key_mask = qkv_and_mask([total, total - 7], total)
    with torch.no_grad():
        got = local_attention(q, k, v, key_mask, window, impl=impl)
        want = dense_local_attention(q, k, v, key_mask, window)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="unknown attention impl"):
        local_attention(q, k, v, key_mask, window, impl="sparse")


def net_pair(**kw) -> tuple[ActionFormerNet, ActionFormerNet]:
    """The same weights with banded and with dense attention (float64, no dropout)."""
    cfg = dict(embed_dim=16, head_dim=16, num_heads=2, window_size=5, num_levels=4, path_drop=0.0) | kw
    nets = []
    for attention in ("banded", "dense"):
        torch.manual_seed(0)
        nets.append(ActionFormerNet(6, 3, attention=attention, **cfg).double())
    return nets[0], nets[1]


@pytest.mark.parametrize("num_global_levels", [0, 2])
def test_network_banded_equals_dense_outputs_and_parameter_gradients(num_global_levels):
    """Level lengths 120, 60, 30, 15 with window 5 (block 16): banded on the first levels, dense on the last."""
    banded, dense = net_pair(num_global_levels=num_global_levels)
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 6, 120, generator=gen, dtype=torch.float64)
    mask = torch.arange(120)[None] < torch.tensor([120, 77])[:, None]
    results = []
    for net in (banded, dense):
        cls, off, masks = net(feats, mask)
        loss = sum((c * torch.linspace(-1, 1, c.shape[-1], dtype=c.dtype)).sum() for c in cls)
        loss = loss + sum((o**2).sum() for o in off)
        loss.backward()
        results.append((cls, off, {n: p.grad for n, p in net.named_parameters()}))
    (cls_b, off_b, grads_b), (cls_d, off_d, grads_d) = results
    for a, b in zip(cls_b + off_b, cls_d + off_d):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert grads_b.keys() == grads_d.keys()
    for name in grads_b:
        torch.testing.assert_close(grads_b[name], grads_d[name], atol=1e-9, rtol=1e-9, msg=name)


def test_valid_lengths():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert valid_lengths(mask).tolist() == [3, 3, 1, 4]


def test_inference_at_own_length_equals_the_padded_run():
    """Three videos (70, 33 and 96 positions) in a batch padded to 128: each run alone at its own length gives
    the detections of the padded batch; the network outputs at valid positions are those of the padded run."""
    torch.manual_seed(0)
    model = ActionFormerModule(
        6,
        3,
        max_seq_len=128,
        network=dict(embed_dim=16, head_dim=16, num_heads=2, window_size=5, num_levels=4),
    ).eval()
    with torch.no_grad():  # trained-looking norms and a class bias that lets many candidates through
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.bias.normal_()
        model.net.cls_head.out.bias.fill_(0.0)
    lengths = [70, 33, 96]
    mask = torch.arange(128)[None] < torch.tensor(lengths)[:, None]
    batch = {
        "feats": torch.randn(3, 6, 128) * mask[:, None],
        "mask": mask,
        "sec_per_unit": torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64),
        "offset_sec": torch.tensor([0.1, 0.0, 0.3], dtype=torch.float64),
        "duration_sec": torch.tensor([35.0, 8.5, 96.0], dtype=torch.float64),
    }
    with torch.no_grad():
        padded_outputs = model(batch["feats"], batch["mask"])
        padded = model.decode(padded_outputs, batch)
        own = model.predict_segments(batch)
        for b, n in enumerate(lengths):
            alone = model(batch["feats"][b : b + 1, :, :n], batch["mask"][b : b + 1, :n])
            assert alone[2][0].shape[1] == -(-n // 8) * 8  # its own length rounded up to the top stride
            for level, m in enumerate(alone[2]):
                t = m.shape[1]
                assert t <= 128 // 2**level
                for part in (0, 1):
                    torch.testing.assert_close(
                        alone[part][level][0][m[0]],
                        padded_outputs[part][level][b, :t][m[0]],
                        atol=1e-5,
                        rtol=1e-5,
                    )
    assert len(own) == len(padded) == 3
    for (seg_o, score_o, label_o), (seg_p, score_p, label_p) in zip(own, padded):
        assert len(seg_o) > 10
        torch.testing.assert_close(seg_o, seg_p, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(score_o, score_p, atol=1e-5, rtol=1e-5)
        assert torch.equal(label_o, label_p)


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=actionformer_synthetic"],
        ["experiment=actionformer_thumos_synthetic", "data.synthetic.annotations=unused.json"],
        ["experiment=actionformer_thumos"],
    ],
)
def test_experiment_networks_banded_equals_dense(overrides):
    """The network of each ActionFormer experiment (its width, heads, window, levels) at its ``max_seq_len``: banded
    and dense attention give the same outputs and parameter gradients, so training and evaluation are the same
    function (the runs differ by float rounding only)."""
    from tal.run import compose

    cfg = compose(overrides)
    network = dict(cfg.model.network) | {"path_drop": 0.0}
    length = int(cfg.data.max_seq_len)
    results = []
    for attention in ("banded", "dense"):
        torch.manual_seed(0)
        net = ActionFormerNet(8, 5, **(network | {"attention": attention})).double()
        gen = torch.Generator().manual_seed(1)
        feats = torch.randn(2, 8, length, generator=gen, dtype=torch.float64)
        mask = torch.arange(length)[None] < torch.tensor([length, length * 3 // 5])[:, None]
        cls, off, _ = net(feats, mask)
        (sum(c.sum() for c in cls) + sum((o**2).sum() for o in off)).backward()
        results.append((cls + off, [p.grad for p in net.parameters()]))
    (out_b, grads_b), (out_d, grads_d) = results
    for a, b in zip(out_b + grads_b, out_d + grads_d):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
