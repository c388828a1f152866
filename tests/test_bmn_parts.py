"""BMN targets, losses, post-processing and pre-processing blocks on hand-made cases."""

import math

import pytest
import torch

from tal.models.bmn import (
    BMN,
    LGTE,
    GCNeXt,
    bmn_candidates,
    bmn_loss,
    bmn_proposals,
    bmn_targets,
    boundary_candidates,
    boundary_targets,
    edge_features,
    iou_map_targets,
    iou_regression_loss,
    knn_indices,
    local_global_attention_mask,
    valid_map_mask,
    weighted_logistic_loss,
)

# ---------------------------------------------------------------- targets


def test_boundary_targets_hand_computed():
    # start 2 → region [0.5, 3.5]; end 5 → region [3.5, 6.5]; cells [p, p+1)
    start, end = boundary_targets(torch.tensor([[2.0, 5.0]]), length=8)
    torch.testing.assert_close(start, torch.tensor([0.5, 1, 1, 0.5, 0, 0, 0, 0]))
    torch.testing.assert_close(end, torch.tensor([0, 0, 0, 0.5, 1, 1, 0.5, 0]))


def test_iou_map_hand_computed():
    iou = iou_map_targets(torch.tensor([[2.0, 5.0], [6.0, 7.5]]), length=8, max_duration=4)
    assert iou.shape == (4, 8)
    expected = {
        (2, 2): 1.0,  # [2, 5) == gt
        (0, 2): 1 / 3,  # [2, 3)
        (3, 1): 0.75,  # [1, 5): 3 / 4
        (3, 4): 0.375,  # [4, 8): 1/6 with [2, 5]; inter 1.5 / union 4 with [6, 7.5]
        (1, 6): 0.75,  # [6, 8) vs [6, 7.5]
        (0, 6): 2 / 3,  # [6, 7) vs [6, 7.5]
        (1, 0): 0.0,  # [0, 2)
        (3, 5): 0.0,  # [5, 9) leaves the grid: invalid
        (1, 7): 0.0,  # [7, 9): invalid
    }
    for (d, t), v in expected.items():
        assert iou[d, t].item() == pytest.approx(v, abs=1e-6), (d, t)


def test_targets_without_segments_are_zero():
    tgt = bmn_targets([torch.zeros(0, 2)], length=6, max_duration=3)
    assert tgt["start"].shape == (1, 6) and tgt["iou_map"].shape == (1, 3, 6)
    assert tgt["start"].sum() == 0 and tgt["end"].sum() == 0 and tgt["iou_map"].sum() == 0


def test_valid_map_mask():
    mask = valid_map_mask(torch.tensor([4, 2]), length=4, max_duration=2)
    torch.testing.assert_close(mask[0].long(), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    torch.testing.assert_close(mask[1].long(), torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]))


# ---------------------------------------------------------------- losses


def test_weighted_logistic_hand_computed():
    pred = torch.tensor([0.8, 0.2, 0.5, 0.5])
    valid = torch.ones(4, dtype=torch.bool)
    # ratio = 4 / 1: positives weigh 2, negatives 2/3
    loss = weighted_logistic_loss(pred, torch.tensor([1.0, 0, 0, 0]), valid)
    expected = -(2 * math.log(0.8) + 2 / 3 * (math.log(0.8) + 2 * math.log(0.5))) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # no positive: n_pos clamped to 1 → same negative weight, finite
    loss = weighted_logistic_loss(torch.full((4,), 0.5), torch.zeros(4), valid)
    assert loss.item() == pytest.approx(2 / 3 * math.log(2), rel=1e-4)
    # invalid entries do not count
    # invalid entries do not count: 2 valid, 1 positive → ratio 2, both weights 1
    loss = weighted_logistic_loss(
        pred, torch.tensor([1.0, 0, 0, 0]), torch.tensor([True, True, False, False])
    )
    assert loss.item() == pytest.approx(-(math.log(0.8) + math.log(0.8)) / 2, rel=1e-4)


def test_regression_loss_samples_and_guards():
    target = torch.zeros(1, 2, 3)
    target[0, 0, 0] = 0.8
    pred = torch.full((1, 2, 3), 0.6)
    valid = torch.ones(1, 2, 3, dtype=torch.bool)
    # one high cell, nothing in (0, 0.7]: only it is sampled → 0.5 * 0.2^2
    assert iou_regression_loss(pred, target, valid).item() == pytest.approx(0.02, rel=1e-4)
    # no high cell → nothing sampled → 0, not NaN
    assert iou_regression_loss(pred, torch.full((1, 2, 3), 0.2), valid).item() == 0.0


def test_loss_finite_on_batch_without_positives():
    torch.manual_seed(0)
    net = BMN(in_channels=8, max_duration=4, hidden_dim=16, pem_dim=8, bm_dim=16)
    feats = torch.randn(2, 8, 8)
    out = net(feats)
    target = bmn_targets([torch.zeros(0, 2), torch.zeros(0, 2)], 8, 4)
    seq_valid = torch.ones(2, 8, dtype=torch.bool)
    losses = bmn_loss(out, target, seq_valid, valid_map_mask(torch.tensor([8, 8]), 8, 4))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["reg"].item() == 0.0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


# ---------------------------------------------------------------- post-processing


def test_boundary_candidates_hand_computed():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.3, 0.9, 0.1])
    # peaks 1, 4 (3 is not a peak: 0.3 < 0.9); > 0.45: 1, 4; position 0 always for starts
    assert boundary_candidates(scores).tolist() == [True, True, False, False, True, False]
    assert boundary_candidates(scores, keep_first=False, keep_last=True).tolist() == [
        False,
        True,
        False,
        False,
        True,
        True,
    ]


def slow_candidates(start, end, conf_map, n):
    """Loop reference of public BMN's candidate enumeration in the tal map convention."""

    def bins(s, first):
        out = [False] * n
        for i in range(n):
            peak = 0 < i < n - 1 and s[i] > s[i + 1] and s[i] > s[i - 1]
            out[i] = peak or s[i] > 0.5 * max(s[:n])
        out[0 if first else n - 1] = True
        return out

    sb, eb = bins(start.tolist(), True), bins(end.tolist(), False)
    rows = []
    for d in range(conf_map.shape[1]):
        for t in range(n):
            if t + d + 1 <= n and sb[t] and eb[t + d]:
                score = start[t] * end[t + d] * conf_map[0, d, t] * conf_map[1, d, t]
                rows.append((t, t + d + 1, float(score)))
    return rows


def test_candidates_match_loop_reference():
    torch.manual_seed(1)
    start, end, conf_map = torch.rand(10), torch.rand(10), torch.rand(2, 5, 10)
    for n in (10, 7):
        segments, scores = bmn_candidates(start, end, conf_map, valid_len=n)
        got = sorted(zip(segments[:, 0].tolist(), segments[:, 1].tolist(), scores.tolist()))
        ref = sorted(slow_candidates(start, end, conf_map, n))
        assert len(got) == len(ref) > 0
        for g, r in zip(got, ref):
            assert g[:2] == r[:2] and g[2] == pytest.approx(r[2], rel=1e-6)


def test_proposals_in_seconds():
    # one clear proposal [2, 5): start peak at 2, end peak at 4 (last cell), high confidence at [d=2, t=2]
    start = torch.tensor([0.0, 0.1, 0.9, 0.1, 0.0, 0.0])
    end = torch.tensor([0.0, 0.0, 0.1, 0.1, 0.9, 0.1])
    conf_map = torch.full((2, 3, 6), 0.1)
    conf_map[:, 2, 2] = 1.0
    segments_sec, scores = bmn_proposals(start, end, conf_map, sec_per_unit=2.0, offset_sec=1.0)
    torch.testing.assert_close(
        segments_sec[0], torch.tensor([5.0, 11.0], dtype=torch.float64)
    )  # [2, 5) * 2 + 1
    assert scores[0].item() == pytest.approx(0.81)
    assert (scores[1:] <= scores[0]).all() and len(scores) <= 100
    clamped, _ = bmn_proposals(start, end, conf_map, sec_per_unit=2.0, offset_sec=1.0, duration_sec=10.0)
    torch.testing.assert_close(
        clamped[0], torch.tensor([5.0, 10.0], dtype=torch.float64)
    )  # clamped to the video


# ---------------------------------------------------------------- blocks


def test_local_global_attention_mask():
    mask = local_global_attention_mask(length=4, num_heads=2, num_local_heads=1, window=1)
    band = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0], band) and mask[1].all()


def test_lgte_ignores_padded_and_far_positions():
    torch.manual_seed(0)
    block = LGTE(dim=16, num_heads=8, num_local_heads=4, window=1).eval()
    x = torch.randn(1, 16, 6)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    y = block(x, mask)
    x2 = x.clone()
    x2[..., 4:] = 100.0  # padded positions change
    torch.testing.assert_close(block(x2, mask)[..., :4], y[..., :4])
    assert y.shape == x.shape
    assert torch.isfinite(y).all()  # query 5's local window (4, 5) is all padding: no NaN row


def test_knn_hand_computed():
    x = torch.tensor([[[0.0, 1.0, 5.0, 6.0, 20.0]]])
    idx = knn_indices(x, k=2)
    assert [sorted(r) for r in idx[0].tolist()] == [[0, 1], [0, 1], [2, 3], [2, 3], [3, 4]]
    idx = knn_indices(x, k=2, mask=torch.tensor([[True, True, True, True, False]]))
    assert sorted(idx[0, 3].tolist()) == [2, 3]  # 20 is padding: never a neighbour


def test_gcnext_semantic_branch_matches_loop_reference():
    torch.manual_seed(0)
    block = GCNeXt(dim=8, width=8, groups=2, k=3, dilations=(1, 2, 3))
    x = torch.randn(2, 8, 7)
    idx = knn_indices(x, 3)
    feats = edge_features(x, idx)
    for b in range(2):
        for i in range(7):
            for m in range(3):
                j = idx[b, i, m]
                torch.testing.assert_close(feats[b, :, i, m], torch.cat([x[b, :, j], x[b, :, i]]))
    semantic = block.semantic(feats).amax(-1)
    temporal = sum(branch(x) for branch in block.temporal)
    torch.testing.assert_close(block(x), torch.relu(temporal + x + semantic))
    assert len(block.temporal) == 3 and block.temporal[2][2].dilation == (3,)


def test_bmn_shapes_with_all_modules():
    net = BMN(in_channels=12, max_duration=8, hidden_dim=32, lgte=True, gcnext=True, dilations=(1, 2, 3))
    out = net(torch.randn(2, 12, 16), torch.ones(2, 16, dtype=torch.bool))
    assert out["start"].shape == (2, 16) and out["conf_map"].shape == (2, 2, 8, 16)
    assert ((out["conf_map"] > 0) & (out["conf_map"] < 1)).all()
