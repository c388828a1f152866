import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data.distributed import DistributedSampler

from reference_eval import detection_ap_reference, ground_truth_from_rows, random_case
from tal.eval import DetectionMAP, Predictions, ProposalAR, evaluate_detection, evaluate_proposals

NUM_VIDEOS = 7  # odd: a 2-process DistributedSampler pads with one repeated video


def _case(seed=0):
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows, names = random_case(rng, NUM_VIDEOS, 3, preds_per_video=10, extra_videos=0)
    pred_rows = [r for r in pred_rows if r[1] in names]  # the metric takes label ids of the label map
    gt = ground_truth_from_rows(gt_rows, names)
    video_ids = [f"video_{v}" for v in range(NUM_VIDEOS)]
    per_video = []
    for vid in video_ids:
        rows = [r for r in pred_rows if r[0] == vid]
        per_video.append(
            (
                torch.tensor([[r[2], r[3]] for r in rows], dtype=torch.float32).reshape(-1, 2),
                torch.tensor([r[4] for r in rows], dtype=torch.float32),
                torch.tensor([names.index(r[1]) for r in rows], dtype=torch.long),
            )
        )
    return gt, gt_rows, video_ids, per_video


def _update(metric, indices, per_video, with_labels=True, batch_size=2):
    for lo in range(0, len(indices), batch_size):
        idx = indices[lo : lo + batch_size]
        segs, scores, labels = zip(*(per_video[i] for i in idx))
        args = (torch.tensor(idx), list(segs), list(scores)) + ((list(labels),) if with_labels else ())
        metric.update(*args)


def _as_predictions(video_ids, per_video, indices, names):
    """``Predictions`` of ``per_video[i]`` for ``i`` in ``indices`` (entries may repeat videos)."""
    rows = [(i % len(video_ids), *per_video[i]) for i in indices]
    return Predictions(
        video_ids,
        np.concatenate([np.full(len(s), v) for v, s, _, _ in rows]),
        torch.cat([s for _, s, _, _ in rows]).double().numpy(),
        torch.cat([p for _, _, p, _ in rows]).double().numpy(),
        torch.cat([lab for _, _, _, lab in rows]).numpy(),
        names,
    )


def test_detection_map_single_process_equals_reference():
    gt, gt_rows, video_ids, per_video = _case()
    metric = DetectionMAP(gt, video_ids, "anet")
    _update(metric, list(range(NUM_VIDEOS)), per_video)
    out = metric.compute()
    assert list(out) == ["mAP"] + [f"mAP@{t:.2f}" for t in np.linspace(0.5, 0.95, 10)]
    rows = []
    for v, (segs, scores, labels) in enumerate(per_video):
        for (s, e), p, lab in zip(segs.double().tolist(), scores.double().tolist(), labels.tolist()):
            rows.append((video_ids[v], gt.label_names[lab], s, e, p))
    ref = detection_ap_reference(gt_rows, rows, np.linspace(0.5, 0.95, 10))
    expected = np.mean(list(ref.values()), axis=0)
    assert out["mAP@0.50"].item() == pytest.approx(expected[0], abs=1e-15)
    assert out["mAP"].item() == pytest.approx(expected.mean(), abs=1e-15)
    assert out["mAP"].item() > 0.05
    back = Predictions.from_results(metric.results_dict())
    assert len(back) == sum(len(s) for _, s, _ in per_video)


def test_repeated_videos_keep_the_first_occurrence():
    gt, _, video_ids, per_video = _case(1)
    clean = DetectionMAP(gt, video_ids)
    _update(clean, list(range(NUM_VIDEOS)), per_video)
    noisy = DetectionMAP(gt, video_ids)
    _update(noisy, list(range(NUM_VIDEOS)), per_video)
    garbage = [(s + 3.0, torch.ones_like(p), lab) for s, p, lab in per_video]  # repeats carry other rows
    _update(noisy, [2, 0, 5], garbage)
    expected, got = clean.compute(), noisy.compute()
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in expected.items()}
    assert noisy.results_dict() == clean.results_dict()
    # without de-duplication the repeats would change the result
    all_rows = list(range(NUM_VIDEOS)) + [NUM_VIDEOS + v for v in (2, 0, 5)]
    everything = _as_predictions(video_ids, per_video + garbage, all_rows, gt.label_names)
    assert evaluate_detection(gt, everything).average_map != pytest.approx(expected["mAP"].item())


def test_videos_never_updated_still_count_their_ground_truth():
    gt, _, video_ids, per_video = _case(2)
    metric = DetectionMAP(gt, video_ids, [0.5])
    _update(metric, [0, 1], per_video)
    expected = evaluate_detection(gt, _as_predictions(video_ids, per_video, [0, 1], gt.label_names), [0.5])
    assert metric.compute()["mAP"].item() == expected.average_map
    with pytest.raises(ValueError, match="video_idx 9 outside"):
        metric.update(
            torch.tensor([9]), [torch.zeros(1, 2)], [torch.ones(1)], [torch.zeros(1, dtype=torch.long)]
        )
    with pytest.raises(ValueError, match=r"video_1.*label ids must lie in \[0, 3\)"):
        metric.update(torch.tensor([1]), [torch.zeros(1, 2)], [torch.ones(1)], [torch.tensor([3])])
    with pytest.raises(ValueError, match="video_1.*3 segments, 2 scores"):
        metric.update(
            torch.tensor([1]), [torch.zeros(3, 2)], [torch.ones(2)], [torch.zeros(3, dtype=torch.long)]
        )


def test_proposal_ar_metric():
    gt, _, video_ids, per_video = _case(3)
    metric = ProposalAR(gt, video_ids, max_avg_proposals=100)
    _update(metric, list(range(NUM_VIDEOS)) + [3], per_video, with_labels=False)
    out = metric.compute()
    preds = _as_predictions(video_ids, per_video, list(range(NUM_VIDEOS)), gt.label_names)
    preds.label_idx = preds.label_names = None
    expected = evaluate_proposals(gt, preds, 100).metrics()
    assert set(out) == {"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}
    assert {k: v.item() for k, v in out.items()} == expected
    assert "label" not in next(iter(metric.results_dict()["results"].values()))[0]


def _ddp_worker(rank, world_size, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        gt, _, video_ids, per_video = _case()
        sampler = DistributedSampler(range(NUM_VIDEOS), num_replicas=world_size, rank=rank, shuffle=False)
        indices = list(sampler)
        det, prop = DetectionMAP(gt, video_ids), ProposalAR(gt, video_ids)
        _update(det, indices, per_video)
        _update(prop, indices, per_video, with_labels=False)
        out = {k: v.item() for k, v in det.compute().items()}
        out.update({k: v.item() for k, v in prop.compute().items()})
        out["indices"] = indices
        out["num_rows"] = sum(len(r) for r in det.results_dict()["results"].values())
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process(tmp_path):
    gt, _, video_ids, per_video = _case()
    single_det, single_prop = DetectionMAP(gt, video_ids), ProposalAR(gt, video_ids)
    _update(single_det, list(range(NUM_VIDEOS)), per_video)
    _update(single_prop, list(range(NUM_VIDEOS)), per_video, with_labels=False)
    expected = {k: v.item() for k, v in single_det.compute().items()}
    expected.update({k: v.item() for k, v in single_prop.compute().items()})

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    all_indices = results[0].pop("indices") + results[1].pop("indices")
    assert sorted(all_indices) == sorted(list(range(NUM_VIDEOS)) + [0])  # one padded repeat of video 0
    for res in results:
        assert res.pop("num_rows") == sum(len(s) for _, s, _ in per_video)
        assert res == expected
