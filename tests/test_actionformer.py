"""ActionFormer pieces on hand-made tensors: attention masks, padding, targets, losses, schedule, decoding."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tal.formats.annotations import load_annotations
from tal.models.actionformer import (
    DEFAULT_REGRESS_RANGES,
    ActionFormerNet,
    PositiveCountEMA,
    actionformer_loss,
    assign_targets,
    conv1d_btc,
    detect_video,
    diou_loss_1d,
    linear_btc,
    local_attention,
    local_window_mask,
    make_points,
    max_pool1d_btc,
    select_candidates,
    vote_per_class,
    warmup_cosine_factor,
    weight_decay_groups,
)
from tal.ops.timeaxis import sec_to_positions, snippet_axis


def loop_window_mask(length: int, window_size: int) -> torch.Tensor:
    mask = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        for j in range(length):
            mask[i, j] = window_size <= 0 or abs(i - j) <= window_size // 2
    return mask


def dense_reference_attention(q, k, v, key_mask, window_size):
    """Attention one query at a time over the explicitly listed allowed keys."""
    B, H, T, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = [j for j in range(T) if j == i or (key_mask[b, j] and abs(i - j) <= window_size // 2)]
                if window_size <= 0:
                    keys = [j for j in range(T) if j == i or key_mask[b, j]]
                scores = torch.stack([q[b, h, i] @ k[b, h, j] for j in keys]) / math.sqrt(D)
                weights = scores.softmax(0)
                out[b, h, i] = sum(w * v[b, h, j] for w, j in zip(weights, keys))
    return out


@pytest.mark.parametrize("length,window", [(1, 3), (7, 3), (12, 19), (10, 4), (9, 0)])
def test_window_mask_matches_loop(length, window):
    assert torch.equal(local_window_mask(length, window), loop_window_mask(length, window))


@pytest.mark.parametrize("window", [3, 5, 0])
def test_local_attention_matches_dense_reference(window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 11, 4) for _ in range(3))
    key_mask = torch.ones(2, 11, dtype=torch.bool)
    key_mask[1, 7:] = False  # second video: 7 valid positions, padded queries see only themselves
    got = local_attention(q, k, v, key_mask, window)
    want = dense_reference_attention(q, k, v, key_mask, window)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize(
    "kernel,stride,groups,length", [(3, 1, 1, 11), (3, 2, 1, 11), (1, 1, 1, 8), (3, 2, 6, 10)]
)
def test_channels_last_conv_equals_conv1d(kernel, stride, groups, length):
    """conv1d_btc on (B, T, C) equals torch's channels-first Conv1d ('same' padding), outputs and gradients."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, length, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    conv = torch.nn.Conv1d(6, 12, kernel, stride, padding=kernel // 2, groups=groups).double()
    got = conv1d_btc(x, conv.weight, conv.bias, stride, groups)
    want = conv(x.transpose(1, 2)).transpose(1, 2)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    got_grads = torch.autograd.grad((got * weights).sum(), (x, conv.weight, conv.bias))
    want_grads = torch.autograd.grad((want * weights).sum(), (x, conv.weight, conv.bias))
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_channels_last_linear_and_pool_equal_torch():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 5, generator=gen)
    layer = torch.nn.Linear(5, 7)
    torch.testing.assert_close(linear_btc(x, layer), layer(x), rtol=1e-6, atol=1e-6)
    x[0, 3:6] = torch.tensor([1.0, 4.0, 2.0])[:, None]  # a hand case: positions 3..5 of video 0
    want = torch.nn.MaxPool1d(3, 2, padding=1)(x.transpose(1, 2)).transpose(1, 2)
    got = max_pool1d_btc(x, 2)
    assert got.shape == (2, 5, 5)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (got[0, 2] == 4.0).all()  # output 2 pools inputs 3, 4, 5


def tiny_net(**kw) -> ActionFormerNet:
    torch.manual_seed(0)
    cfg = dict(embed_dim=16, head_dim=16, num_heads=2, window_size=5, num_levels=4, path_drop=0.0)
    return ActionFormerNet(6, 3, **(cfg | kw)).eval()


def test_network_shapes_and_prior():
    net = tiny_net()
    cls, off, masks = net(torch.randn(2, 6, 20), torch.ones(2, 20, dtype=torch.bool))  # padded to 24 inside
    assert [c.shape for c in cls] == [(2, 24, 3), (2, 12, 3), (2, 6, 3), (2, 3, 3)]
    assert [o.shape for o in off] == [(2, 24, 2), (2, 12, 2), (2, 6, 2), (2, 3, 2)]
    assert [m[0].sum().item() for m in masks] == [20, 10, 5, 3]
    assert all((o >= 0).all() for o in off)
    torch.testing.assert_close(net.cls_head.out.bias, torch.full((3,), math.log(0.01 / 0.99)))


def test_padding_does_not_change_valid_outputs():
    """A 40-position video alone and padded to 96 (garbage in the padding): identical valid outputs."""
    net = tiny_net(num_global_levels=1)
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero norm biases, as after training: LayerNorm(0) != 0 at padded positions
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.bias.normal_()
    video = torch.randn(6, 40)
    outs = []
    for total in (40, 96):
        feats = torch.randn(1, 6, total) * 100  # the mask must hide the garbage
        feats[0, :, :40] = video
        outs.append(net(feats, torch.arange(total)[None] < 40))
    for level in range(4):
        n = 40 // 2**level
        for a, b in zip(outs[0][:2], outs[1][:2]):
            torch.testing.assert_close(a[level][0], b[level][0, :n], atol=1e-5, rtol=1e-5)
        assert outs[1][2][level][0, n:].sum() == 0


def test_make_points():
    points = make_points([4, 2], [1, 2])
    want = torch.tensor(
        [[0, 0, 4, 1], [1, 0, 4, 1], [2, 0, 4, 1], [3, 0, 4, 1], [0, 4, 8, 2], [2, 4, 8, 2]],
        dtype=torch.float32,
    )
    assert torch.equal(
        points, want
    )  # ranges in input positions, as ActionFormer's configs: not times the stride
    assert make_points([1] * 6, [2**l for l in range(6)])[-1, 1:].tolist() == [64, 10000, 32]


def test_assign_targets_hand_computed():
    """Levels of 8, 4, 2 points (strides 1, 2, 4), ranges [0,2], [4,8], [16,inf] positions; radius 1.5.

    A [1, 3] (label 0): level 0 point 2 only (distances 1, 1).
    B [0.5, 6.5] (label 1), D [0, 7] (label 2), level 1 (positions 0, 2, 4, 6, range [4, 8]):
      pos 2: B (1.5, 4.5) and D (2, 5) qualify -> B, the shorter, wins;  pos 4: B reach 3.5 fails, D (4, 3);
      pos 6: B (5.5, 0.5) and D (6, 1) -> B.   Level 0: B/D centre regions hold points 3, 4 with reach > 2 (out of [0, 2]).
    """
    points = make_points([8, 4, 2], [1, 2, 4], [(0, 2), (4, 8), (16, math.inf)])
    segments = torch.tensor([[1.0, 3.0], [0.5, 6.5], [0.0, 7.0]])
    cls, reg = assign_targets(points, segments, torch.tensor([0, 1, 2]), num_classes=3, center_radius=1.5)
    want_cls = torch.zeros(14, 3)
    want_reg = torch.zeros(14, 2)
    want_cls[2, 0], want_reg[2] = 1, torch.tensor([1.0, 1.0])
    want_cls[8 + 1, 1], want_reg[8 + 1] = 1, torch.tensor([0.75, 2.25])
    want_cls[8 + 2, 2], want_reg[8 + 2] = 1, torch.tensor([2.0, 1.5])
    want_cls[8 + 3, 1], want_reg[8 + 3] = 1, torch.tensor([2.75, 0.25])
    assert torch.equal(cls, want_cls)
    torch.testing.assert_close(reg, want_reg)


def test_assign_targets_ranges_in_positions_both_ends_inclusive():
    """Strides 1, 2 with ranges [0,4], [4,8] positions; S = [2, 8] (centre 5), radius 1.5.

    Level 0 (centre region (3.5, 6.5)): points 4, 5, 6 with larger distances 4, 3, 4 (4 = hi: inside).
    Level 1 (centre region (2, 8)): points 4, 6 with larger distance 4 (= lo: inside), targets / 2.
    With the ranges times the stride (level 1 owning [8, 16]) level 1 would hold no positive point.
    """
    points = make_points([16, 8], [1, 2], [(0, 4), (4, 8)])
    cls, reg = assign_targets(points, torch.tensor([[2.0, 8.0]]), torch.tensor([0]), num_classes=1)
    assert cls[:, 0].nonzero().flatten().tolist() == [4, 5, 6, 16 + 2, 16 + 3]
    torch.testing.assert_close(
        reg[cls[:, 0] > 0], torch.tensor([[2.0, 4.0], [3.0, 3.0], [4.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
    )


def test_assign_targets_two_labels_and_no_centre_sampling():
    points = make_points([8], [1], [(0, math.inf)])
    segments = torch.tensor([[2.0, 6.0], [2.0, 6.0]])  # one instance annotated with two classes
    cls, reg = assign_targets(points, segments, torch.tensor([0, 2]), num_classes=3, center_radius=1.5)
    assert cls[:, 0].nonzero().flatten().tolist() == [3, 4, 5]  # strictly inside [4 - 1.5, 4 + 1.5]
    assert torch.equal(cls[:, 0], cls[:, 2]) and cls[:, 1].sum() == 0
    cls, reg = assign_targets(points, segments, torch.tensor([0, 2]), num_classes=3, center_radius=0)
    assert cls[:, 0].nonzero().flatten().tolist() == [3, 4, 5]  # strictly inside (2, 6)
    # lengths within 1e-3 of the shortest tie (ActionFormer's tolerance): both labels; the first one's target
    segments = torch.tensor([[2.0, 6.0005], [2.0, 6.0]])
    cls, reg = assign_targets(points, segments, torch.tensor([0, 2]), num_classes=3, center_radius=1.5)
    assert cls[:, 0].nonzero().flatten().tolist() == [3, 4, 5] and torch.equal(cls[:, 0], cls[:, 2])
    torch.testing.assert_close(reg[4], torch.tensor([2.0, 2.0]))
    cls, reg = assign_targets(points, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), num_classes=3)
    assert cls.sum() == 0 and reg.sum() == 0


def test_diou_hand_computed():
    pred = torch.tensor([[1.0, 1.0], [2.0, 3.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 3.0], [2.0, 3.0], [2.0, 0.0]])
    # 1: inter 2, union 4, enclosing 4, centres 0 vs +1 -> 1 - 0.5 + (1/4)^2;  2: identical -> 0;
    # 3: disjoint [p, p+1] vs [p-2, p]: iou 0, enclosing 3, centres +0.5 vs -1 -> 1 + (1.5/3)^2
    torch.testing.assert_close(diou_loss_1d(pred, target), torch.tensor([0.5625, 0.0, 1.25]))


def test_loss_normalised_and_positive_count_ema():
    ema = PositiveCountEMA(100.0, 0.9)
    assert ema.update(10) == pytest.approx(91.0)
    assert ema.update(0) == pytest.approx(0.9 * 91 + 0.1)  # at least one positive
    logits = torch.tensor([[[0.0], [0.0], [5.0]]])
    cls_t = torch.tensor([[[1.0], [0.0], [0.0]]])
    valid = torch.tensor([[True, True, False]])  # the padded point (huge logit) must not count
    offsets = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]]])
    reg_t = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])
    out = actionformer_loss(logits, offsets, valid, cls_t, reg_t, normalizer=2.0)
    focal = 0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)  # p = 0.5 for both points
    assert out["cls_loss"].item() == pytest.approx(focal / 2)
    assert out["reg_loss"].item() == pytest.approx(0.5625 / 2)
    assert out["loss"].item() == pytest.approx((focal + 0.5625) / 2)


def test_warmup_cosine_schedule():
    assert warmup_cosine_factor(0, 4, 14) == pytest.approx(0.25)
    assert warmup_cosine_factor(3, 4, 14) == pytest.approx(1.0)
    assert warmup_cosine_factor(4, 4, 14) == pytest.approx(1.0)
    assert warmup_cosine_factor(9, 4, 14) == pytest.approx(0.5)
    assert warmup_cosine_factor(14, 4, 14, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_weight_decay_groups():
    net = tiny_net()
    decay, no_decay = weight_decay_groups(net, 0.05)
    names = {id(p): n for n, p in net.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"reg_scales.0.scale", "neck.0.weight", "cls_head.out.bias", "stem.0.norm1.bias"} <= no_decay_names
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_padded_points_never_yield_candidates():
    points = make_points([6], [1])
    logits = torch.full((6, 2), -9.0)
    logits[4:] = 9.0  # padded points score highest
    logits[1, 1] = 0.0
    valid = torch.tensor([True] * 4 + [False] * 2)
    offsets = torch.ones(6, 2)
    segs, scores, labels = select_candidates(logits, offsets, points, valid, score_threshold=1e-3)
    # only (point 1, class 1) passes: sigmoid(-9) = 1.2e-4 < 1e-3
    torch.testing.assert_close(segs, torch.tensor([[0.0, 2.0]]))
    assert labels.tolist() == [1] and scores.tolist() == [0.5]


def test_detect_video_converts_to_seconds_and_clips():
    pytest.importorskip("tal.ops.segments")
    points = make_points([8, 4], [1, 2])
    logits = torch.full((12, 2), -9.0)
    logits[3, 0] = 3.0  # level 0, pos 3, offsets (1, 2) -> [2, 5]
    logits[8 + 3, 1] = 2.0  # level 1, pos 6, offsets (1, 3) * 2 -> [4, 12]: ends past the video
    offsets = torch.zeros(12, 2)
    offsets[3] = torch.tensor([1.0, 2.0])
    offsets[8 + 3] = torch.tensor([1.0, 3.0])
    valid = torch.ones(12, dtype=torch.bool)
    segs, scores, labels = detect_video(
        [logits[:8], logits[8:]], [offsets[:8], offsets[8:]], list(points.split([8, 4])), list(valid.split([8, 4])),
        sec_per_unit=0.5, offset_sec=0.25, duration_sec=5.0,
    )  # fmt: skip
    torch.testing.assert_close(segs, torch.tensor([[1.25, 2.75], [2.25, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(scores, torch.tensor([3.0, 2.0]).sigmoid())
    assert labels.tolist() == [0, 1]


def test_voting_uses_candidates_of_the_same_class_only():
    kept = torch.tensor([[0.0, 10.0], [0.0, 10.0]])
    kept_labels = torch.tensor([0, 1])
    cands = torch.tensor([[0.0, 10.0], [2.0, 10.0], [0.0, 12.0], [0.0, 10.0]])
    cand_scores = torch.tensor([0.5, 0.5, 1.0, 0.9])
    cand_labels = torch.tensor([0, 0, 1, 1])
    out = vote_per_class(kept, kept_labels, cands, cand_scores, cand_labels, iou_threshold=0.7)
    # class 0: weights 0.5 * 1 and 0.5 * 0.8 -> start (0 * 0.5 + 2 * 0.4) / 0.9
    torch.testing.assert_close(out[0], torch.tensor([0.8 / 0.9, 10.0]))
    # class 1: weights 1.0 * (10 / 12) and 0.9 * 1 -> end (12 * 0.8333 + 10 * 0.9) / 1.7333
    w = torch.tensor([10 / 12, 0.9])
    torch.testing.assert_close(
        out[1], torch.tensor([0.0, float((w * torch.tensor([12.0, 10.0])).sum() / w.sum())])
    )
    agnostic = vote_per_class(kept, kept_labels, cands, cand_scores, cand_labels, 0.7, class_agnostic=True)
    assert torch.equal(agnostic[0], agnostic[1]) and not torch.equal(agnostic[0], out[0])


def test_spawn_safe_ema_pickles_and_matches_torch_ema():
    import pickle

    from torch.optim.swa_utils import get_ema_avg_fn

    from tal.utils.callbacks import SpawnSafeEMA

    cb = pickle.loads(pickle.dumps(SpawnSafeEMA(decay=0.9)))
    ema, cur = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    got = cb._kwargs["avg_fn"](ema, cur, torch.tensor(1))
    torch.testing.assert_close(got, get_ema_avg_fn(0.9)(ema, cur, torch.tensor(1)))
    torch.testing.assert_close(got, torch.tensor([1.2, 1.6]))


THUMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14.json"


@pytest.mark.skipif(not THUMOS.exists(), reason="../shared/data/thumos14.json not present")
def test_thumos14_training_instances_own_a_positive_point():
    """On the real THUMOS14 Validation timing at stride 16 (16-frame snippets, 30 fps), whole videos: at least
    99% of the instances own a positive point (with the ranges times the stride, only 84% did)."""
    ann = load_annotations(THUMOS).subset("Validation")
    strides = [2**l for l in range(6)]
    sec_per_unit, offset_sec = snippet_axis(30.0, 16, 16)
    covered = {"positions": 0, "times stride": 0}
    ranges = {
        "positions": DEFAULT_REGRESS_RANGES,
        "times stride": [(lo * s, hi * s) for (lo, hi), s in zip(DEFAULT_REGRESS_RANGES, strides)],
    }
    for v in ann:
        T = int((v.duration_sec * 30 - 16) // 16) + 1
        lengths = [math.ceil(T / 32) * 32 // s for s in strides]
        valid = torch.cat([torch.arange(n) * s < T for n, s in zip(lengths, strides)])
        segs = torch.as_tensor(
            sec_to_positions(v.segments_sec, sec_per_unit, offset_sec), dtype=torch.float32
        )
        for name, rr in ranges.items():
            # one class per instance, so the class targets say which instances own each point
            cls, _ = assign_targets(
                make_points(lengths, strides, rr), segs, torch.arange(len(segs)), len(segs)
            )
            covered[name] += int((cls[valid] > 0).any(0).sum())
    assert ann.num_instances == 3007
    assert covered["positions"] / ann.num_instances >= 0.99
    assert covered["times stride"] / ann.num_instances < 0.85


@pytest.mark.parametrize("revive", [False, True])
def test_dead_offset_channel_trains_only_with_the_pass_through_gradient(revive):
    """The offset head's last conv reads ReLU features (>= 0): with its right-offset weights and bias negative, that
    channel is 0 at every point, as the official code's seed 2 starts. A plain ReLU gives it no gradient, so it stays
    0 for good; the pass-through gradient (same outputs) pushes it up, since every target offset is positive."""
    torch.manual_seed(0)
    net = ActionFormerNet(
        8,
        2,
        embed_dim=16,
        head_dim=16,
        num_heads=2,
        window_size=5,
        num_levels=3,
        path_drop=0.0,
        revive_offsets=revive,
    )
    with torch.no_grad():
        net.reg_head.out.weight[1] = -net.reg_head.out.weight[1].abs()
        net.reg_head.out.bias[1] = -0.5
    feats, mask = torch.randn(2, 8, 64), torch.ones(2, 64, dtype=torch.bool)
    segments, labels = (
        [torch.tensor([[10.0, 30.0]]), torch.tensor([[20.0, 52.0]])],
        [torch.tensor([0]), torch.tensor([1])],
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(40):
        cls, offsets, masks = net(feats, mask)
        points = make_points([c.shape[1] for c in cls], net.strides, [(0, 4), (4, 8), (8, 10000)])
        cls_t, reg_t = (
            torch.stack(t) for t in zip(*(assign_targets(points, s, l, 2) for s, l in zip(segments, labels)))
        )
        valid = torch.cat(masks, 1)
        loss = actionformer_loss(
            torch.cat(cls, 1), torch.cat(offsets, 1), valid, cls_t, reg_t, normalizer=10.0
        )
        opt.zero_grad()
        loss["loss"].backward()
        if step == 0:
            grad = net.reg_head.out.weight.grad[1].abs().sum()
            assert (grad > 0) == revive
            right_at_start = torch.cat(offsets, 1)[..., 1].detach()
            assert right_at_start.abs().sum() == 0  # dead at the start either way (same forward)
        opt.step()
    positive = (cls_t.sum(-1) > 0) & valid
    right = torch.cat(offsets, 1)[..., 1][positive].detach()
    if revive:
        assert (right > 0).float().mean() > 0.9 and loss["reg_loss"] < 0.5
    else:
        assert right.abs().sum() == 0
