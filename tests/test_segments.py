import math

import numpy as np
import pytest
import torch

from reference_eval import nms_reference, soft_nms_reference
from tal.ops import nms, paired_segment_iou, segment_ioa, segment_iou, segment_voting, soft_nms


def _random_segments(seed, n, num_classes, span=100.0):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g, dtype=torch.float64) * span
    length = torch.rand(n, generator=g, dtype=torch.float64) * 20 + 0.5
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return torch.stack([start, start + length], 1), scores, labels


# ------------------------------------------------------------------------------------------------- tIoU
def test_segment_iou_hand_cases():
    a = torch.tensor([[0.0, 10.0], [5.0, 5.0], [8.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [5.0, 5.0]], dtype=torch.float64)
    iou = segment_iou(a, b)
    assert iou.shape == (3, 4)
    # [0,10] vs [0,10]=1, vs [5,15]: 5/15, vs [20,30]: 0, vs zero-length [5,5]: 0/(10+0-0)=0
    torch.testing.assert_close(iou[0], torch.tensor([1.0, 5 / 15, 0.0, 0.0], dtype=torch.float64))
    # zero-length [5,5]: union 0 against itself -> defined 0, never NaN
    assert iou[1, 3] == 0 and not torch.isnan(iou).any()
    # inverted [8,2] (length -6) vs [0,10]: inter 0, union 4 -> 0
    assert iou[2, 0] == 0
    torch.testing.assert_close(paired_segment_iou(a[0], b[1]), torch.tensor(5 / 15, dtype=torch.float64))


def test_segment_iou_no_clipping_and_symmetry():
    a, _, _ = _random_segments(0, 30, 1)
    b, _, _ = _random_segments(1, 20, 1, span=150)
    iou = segment_iou(a, b)
    torch.testing.assert_close(iou, segment_iou(b, a).T)
    for i in range(0, 30, 7):
        for j in range(0, 20, 3):
            (s1, e1), (s2, e2) = a[i].tolist(), b[j].tolist()
            inter = max(0.0, min(e1, e2) - max(s1, s2))
            assert iou[i, j].item() == pytest.approx(inter / ((e1 - s1) + (e2 - s2) - inter), abs=1e-15)


def test_segment_ioa_hand_cases():
    a = torch.tensor([[0.0, 10.0]])
    b = torch.tensor([[5.0, 25.0], [2.0, 4.0], [3.0, 3.0]])
    torch.testing.assert_close(segment_ioa(a, b), torch.tensor([[5 / 20, 1.0, 0.0]]))


# ------------------------------------------------------------------------------------------------- NMS
def test_nms_hand_case():
    segs = torch.tensor([[0.0, 10.0], [1.0, 10.0], [0.0, 5.0], [20.0, 30.0], [1.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    # [1,10] (0.95) suppresses [0,10] (iou .9) and [1,10]; [0,5] has iou 4/10 with it -> kept at 0.5
    assert nms(segs, scores, 0.5).tolist() == [4, 2, 3]
    # per class: [0,10] is another class than [1,10] (0.95) -> kept; it then suppresses [0,5] (iou .5 >= .5)
    labels = torch.tensor([1, 0, 1, 0, 0])
    assert nms(segs, scores, 0.5, labels=labels).tolist() == [4, 0, 3]
    assert nms(segs, scores, 0.5, labels=labels, max_segments=2).tolist() == [4, 0]
    assert nms(segs[:0], scores[:0], 0.5).tolist() == []


@pytest.mark.parametrize("n,num_classes", [(50, 1), (300, 5), (1000, 20)])
def test_nms_matches_reference_and_torchvision(n, num_classes):
    segs, scores, labels = _random_segments(n, n, num_classes)
    keep = nms(segs, scores, 0.4, labels=labels)
    assert keep.dtype == torch.long
    assert keep.tolist() == nms_reference(segs.tolist(), scores.tolist(), labels.tolist(), 0.4)
    torchvision = pytest.importorskip("torchvision")
    boxes = torch.stack([segs[:, 0], torch.zeros(n), segs[:, 1], torch.ones(n)], 1).double()
    assert keep.tolist() == torchvision.ops.batched_nms(boxes, scores, labels, 0.4).tolist()


# ------------------------------------------------------------------------------------------------- Soft-NMS
def test_soft_nms_hand_cases():
    segs = torch.tensor([[0.0, 10.0], [0.0, 5.0], [40.0, 50.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.0005], dtype=torch.float64)  # iou([0,10],[0,5]) = 0.5
    out_segs, out_scores, out_labels = soft_nms(segs, scores, sigma=0.5)
    # gaussian: 0.8 * exp(-0.25/0.5); the 0.0005 segment is below min_score and dropped
    torch.testing.assert_close(out_scores, torch.tensor([0.9, 0.8 * math.exp(-0.5)], dtype=torch.float64))
    torch.testing.assert_close(out_segs, segs[:2])
    assert out_labels.tolist() == [0, 0]
    _, s, _ = soft_nms(segs, scores, method="linear", iou_threshold=0.3)
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8 * 0.5], dtype=torch.float64))
    _, s, _ = soft_nms(segs, scores, method="linear", iou_threshold=0.6)  # iou .5 < .6: no decay
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8], dtype=torch.float64))
    out_segs, s, _ = soft_nms(segs, scores, method="hard", iou_threshold=0.5)  # iou exactly .5: suppressed
    assert s.tolist() == [0.9] and out_segs.tolist() == [[0.0, 10.0]]
    # different classes never decay each other, unless class-agnostic
    labels = torch.tensor([3, 1, 1])
    _, s, lab = soft_nms(segs, scores, labels)
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8], dtype=torch.float64))
    assert lab.tolist() == [3, 1]
    _, s, _ = soft_nms(segs, scores, labels, class_agnostic=True)
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8 * math.exp(-0.5)], dtype=torch.float64))


def test_soft_nms_keeps_best_of_a_class_below_min_score_like_cpp():
    segs = torch.tensor([[0.0, 1.0], [5.0, 6.0], [10.0, 11.0]], dtype=torch.float64)
    scores = torch.tensor([1e-4, 2e-4, 0.5], dtype=torch.float64)
    _, s, lab = soft_nms(segs, scores, torch.tensor([0, 0, 1]))
    assert s.tolist() == [0.5, 2e-4] and lab.tolist() == [1, 0]


def test_soft_nms_empty_and_max_segments():
    segs, scores, labels = _random_segments(3, 40, 2)
    out = soft_nms(segs[:0], scores[:0], labels[:0])
    assert [t.shape[0] for t in out] == [0, 0, 0]
    out_segs, out_scores, _ = soft_nms(segs, scores, labels, max_segments=7)
    assert out_segs.shape == (7, 2) and out_scores.shape == (7,)
    assert torch.all(out_scores[:-1] >= out_scores[1:])
    with pytest.raises(ValueError, match="method"):
        soft_nms(segs, scores, method="cubic")
    with pytest.raises(ValueError, match=r"scores must be \(N,\)"):
        soft_nms(segs, scores[:3])


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
@pytest.mark.parametrize(
    "n,num_classes,max_segments,class_agnostic",
    [(20, 1, 100, False), (200, 4, 50, False), (600, 20, 100, False), (300, 5, 200, True)],
)
def test_soft_nms_matches_cpp_transcription(method, n, num_classes, max_segments, class_agnostic):
    segs, scores, labels = _random_segments(n + num_classes, n, num_classes)
    out_segs, out_scores, out_labels = soft_nms(
        segs,
        scores,
        labels,
        method=method,
        sigma=0.5,
        iou_threshold=0.3,
        min_score=1e-3,
        max_segments=max_segments,
        class_agnostic=class_agnostic,
    )
    ref_idx, ref_scores = soft_nms_reference(
        segs.tolist(), scores.tolist(), labels.tolist(), method, 0.5, 0.3, 1e-3, max_segments, class_agnostic
    )
    assert len(ref_idx) == len(out_scores) > 0
    torch.testing.assert_close(out_segs, segs[ref_idx], rtol=0, atol=0)
    torch.testing.assert_close(out_scores, torch.tensor(ref_scores, dtype=torch.float64), rtol=1e-12, atol=0)
    assert out_labels.tolist() == labels[ref_idx].tolist()


def test_soft_nms_without_labels_is_one_class():
    segs, scores, labels = _random_segments(11, 150, 3)
    a = soft_nms(segs, scores)
    b = soft_nms(segs, scores, labels, class_agnostic=True)
    torch.testing.assert_close(a[1], b[1])
    assert a[2].tolist() == [0] * len(a[2])


# ------------------------------------------------------------------------------------------------- voting
def test_segment_voting_hand_case():
    kept = torch.tensor([[0.0, 10.0], [50.0, 60.0]], dtype=torch.float64)
    all_segs = torch.tensor([[0.0, 10.0], [2.0, 10.0], [20.0, 30.0]], dtype=torch.float64)
    all_scores = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    out = segment_voting(kept, all_segs, all_scores, 0.75)
    # votes for [0,10]: itself (1 * 1) and [2,10] (0.5 * 0.8); [50,60] has no voter -> unchanged
    torch.testing.assert_close(out, torch.tensor([[0.8 / 1.4, 10.0], [50.0, 60.0]], dtype=torch.float64))


def test_segment_voting_matches_loop():
    segs, scores, _ = _random_segments(5, 120, 1)
    kept_segs, kept_scores, _ = soft_nms(segs, scores, max_segments=20)
    out = segment_voting(kept_segs, segs, scores, 0.6)
    a, s = segs.numpy(), scores.numpy()
    for k, (ks, ke) in enumerate(kept_segs.tolist()):
        w = np.array([s[j] * iou if (iou := _iou(ks, ke, *a[j])) >= 0.6 else 0.0 for j in range(len(a))])
        np.testing.assert_allclose(out[k].numpy(), (w @ a) / w.sum(), rtol=1e-12)


def _iou(s1, e1, s2, e2):
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    return inter / ((e1 - s1) + (e2 - s2) - inter)
