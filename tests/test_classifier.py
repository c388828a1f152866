"""Video classifiers: heads (hand-set NeXtVLAD and gating cases, padding invariance), targets and losses, test-time
augmentation over exactly the crops it names, the class-score metric (de-duplication, DDP), overfitting `tiny`,
and a run writing class_scores_{split}.json."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler

from tal.data import TALDataModule
from tal.eval import ClassScoreCollector, TopKAccuracy, load_ground_truth
from tal.eval.classification import split_topk_accuracy
from tal.formats import AnnotationSet, VideoAnnotation, load_class_scores
from tal.models.classifier import (
    AttentionHead,
    ClassifierModule,
    ContextGating,
    NeXtVLADHead,
    TSNHead,
    build_head,
    classification_loss,
    crop_batch,
    masked_mean,
    multi_hot_targets,
    nextvlad_aggregate,
    segment_means,
    temporal_crops,
    tta_probs,
    video_label_targets,
)
from tal.models.classifier.targets import IGNORE
from tal.run import compose, train


# ------------------------------------------------------------------------------------------ heads
def test_nextvlad_aggregate_hand_case():
    x = torch.tensor([[[[1.0], [2.0]], [[3.0], [4.0]]]])  # (B=1, T=2, G=2, D=1)
    attn = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])  # (1, T, G)
    assign = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[0.25, 0.75], [0.0, 1.0]]]])  # (1, T, G, K=2)
    centers = torch.tensor([[0.0], [1.0]])
    v = nextvlad_aggregate(x, attn, assign, centers, torch.tensor([[True, True]]))
    # k=0: 1*1*(1-0) + 0.5*0.5*(2-0) + 0 + 1*0*(4-0) = 1.5 ; k=1: 0 + 0.5*0.5*(2-1) + 0 + 1*1*(4-1) = 3.25
    assert v.shape == (1, 2, 1) and v[0, :, 0].tolist() == [1.5, 3.25]
    v = nextvlad_aggregate(x, attn, assign, centers, torch.tensor([[True, False]]))
    assert v[0, :, 0].tolist() == [1.5, 0.25]


def test_context_gating_multiplies_by_the_sigmoid_gate():
    gate = ContextGating(2, reduction=1)
    with torch.no_grad():
        gate.fc1.weight.copy_(torch.eye(2))
        gate.fc2.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
        gate.fc2.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    y = gate(torch.tensor([[1.0, -2.0]]))  # relu(W1 x) = [1, 0]; gates sigmoid(2), sigmoid(ln 3) = 0.75
    assert torch.allclose(y, torch.tensor([[1.0 / (1.0 + math.exp(-2.0)), -1.5]]), atol=1e-7)


def test_nextvlad_head_shapes_and_normalised_clusters():
    torch.manual_seed(0)
    head = NeXtVLADHead(12, 5, expansion=2, groups=4, clusters=3, hidden_dim=16, kernel_size=3).eval()
    x, mask = torch.randn(2, 12, 9), torch.ones(2, 9, dtype=torch.bool)
    v = head.vlad(x, mask)
    assert v.shape == (2, 3, 6)  # clusters x (2 * 12 / 4)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2, 3), atol=1e-6)
    assert head(x, mask).shape == (2, 5)
    with pytest.raises(ValueError, match="divisible by groups"):
        NeXtVLADHead(10, 5, expansion=1, groups=4)


def test_segment_means_hand_case():
    x = torch.arange(5.0).reshape(1, 1, 5)
    assert segment_means(x, torch.ones(1, 5, dtype=torch.bool), 2)[0, 0].tolist() == [0.5, 3.0]
    # 3 valid positions, 4 segments: [0,1) [0,1) [1,2) [2,3); the padded positions never count
    mask = torch.tensor([[True, True, True, False, False]])
    assert segment_means(x, mask, 4)[0, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert masked_mean(x, mask).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="prefix"):
        segment_means(x, torch.tensor([[True, False, True, False, False]]), 2)


@pytest.mark.parametrize(
    "head",
    [
        TSNHead(8, 3, num_segments=4, hidden_dim=16),
        NeXtVLADHead(8, 3, groups=4, clusters=4, hidden_dim=16, kernel_size=3),
        AttentionHead(8, 3, embed_dim=16, depth=2, num_heads=2, pool="cls"),
        AttentionHead(8, 3, embed_dim=16, depth=1, num_heads=2, pool="attn"),
    ],
    ids=["tsn", "nextvlad", "attention-cls", "attention-attn"],
)
def test_heads_ignore_padding(head):
    """A video alone gives the logits it gives in a padded batch, whatever the padding holds."""
    torch.manual_seed(1)
    head.eval()
    a, b = torch.randn(8, 7), torch.randn(8, 11)
    alone = head(a[None], torch.ones(1, 7, dtype=torch.bool))
    x = torch.full((2, 8, 11), 50.0)
    x[0, :, :7], x[1] = a, b
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, :7], mask[1] = True, True
    assert torch.allclose(head(x, mask)[0], alone[0], atol=1e-5)


def test_build_head_switch_and_errors():
    net = build_head(8, 3, head="tsn", tsn={"num_segments": 2}, nextvlad={"clusters": 999})
    assert isinstance(net, TSNHead) and net.num_segments == 2
    with pytest.raises(ValueError, match="must be one of"):
        build_head(8, 3, head="lstm")
    with pytest.raises(ValueError, match="unknown keys"):
        build_head(8, 3, head="tsn", tsm={})


# ------------------------------------------------------------------------------------------ targets, losses
def test_video_label_targets_and_multi_hot():
    labels = [
        torch.tensor([2, 1, 1]),
        torch.tensor([0, 3]),
        torch.tensor([3, 0]),
        torch.zeros(0, dtype=torch.long),
    ]
    segments = [
        torch.tensor([[0.0, 9.0], [1.0, 2.0], [3.0, 4.0]]),  # 1 twice beats 2 once however long
        torch.tensor([[0.0, 1.0], [2.0, 4.0]]),  # tie on counts: 3 covers more positions
        torch.tensor([[0.0, 1.0], [2.0, 3.0]]),  # tie on counts and length: the smaller id
        torch.zeros(0, 2),
    ]
    assert video_label_targets(labels, segments).tolist() == [1, 3, 0, IGNORE]
    assert multi_hot_targets(labels, 4).tolist() == [[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]]


def test_classification_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    labels, segments = (
        [torch.tensor([1]), torch.zeros(0, dtype=torch.long)],
        [torch.ones(1, 2), torch.zeros(0, 2)],
    )
    ce = classification_loss(logits, labels, segments)
    assert ce.item() == pytest.approx(F.cross_entropy(logits[:1], torch.tensor([1])).item())
    bce = classification_loss(logits, labels, segments, multi_label=True)
    target = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert bce.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item())
    none = classification_loss(logits, [labels[1]] * 2, [segments[1]] * 2)
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and not logits.grad.any()


# ------------------------------------------------------------------------------------------ TTA
def test_temporal_crops_hand_cases():
    assert temporal_crops(10, 3, 0.5).tolist() == [[0, 5], [2, 7], [5, 10]]
    # starts 0, 1.5 -> 2 (half to even), 3
    assert temporal_crops(6, 3, 0.5).tolist() == [[0, 3], [2, 5], [3, 6]]
    assert temporal_crops(7, 1, 0.5).tolist() == [[0, 7]]
    assert temporal_crops(2, 4, 0.1).tolist() == [[0, 1], [0, 1], [1, 2], [1, 2]]
    with pytest.raises(ValueError):
        temporal_crops(5, 0, 0.5)


def test_tta_averages_exactly_its_crops():
    x = torch.full((2, 1, 10), 100.0)  # padding holds 100: it must never be seen
    x[0, 0] = torch.arange(10.0)
    x[1, 0, :6] = 2 * torch.arange(6.0)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0], mask[1, :6] = True, True
    calls = []

    def probs_fn(crop, crop_mask):
        calls.append(crop_mask.sum(1).tolist())
        return masked_mean(crop, crop_mask)

    out = tta_probs(probs_fn, x, mask, num_clips=3, crop_ratio=0.5)
    # video 0: crops [0,5) [2,7) [5,10) of 0..9 -> means 2, 4, 7 ; video 1: [0,3) [2,5) [3,6) of 0,2,..,10 -> 2, 6, 8
    assert out[:, 0].tolist() == pytest.approx([13 / 3, 16 / 3])
    assert calls == [[5, 3], [5, 3], [5, 3]]
    assert torch.equal(tta_probs(probs_fn, x, mask, num_clips=1), masked_mean(x, mask))
    crops, crop_mask = crop_batch(x, torch.tensor([[2, 7], [3, 6]]))
    assert crops.shape == (2, 1, 5) and crop_mask.sum(1).tolist() == [5, 3]


def test_module_predicts_the_mean_of_its_crop_probabilities():
    torch.manual_seed(0)
    model = ClassifierModule(
        6,
        4,
        network={"head": "attention", "attention": {"embed_dim": 8, "num_heads": 2, "depth": 1}},
        tta={"num_clips": 2, "crop_ratio": 0.5},
    ).eval()
    feats = torch.randn(1, 6, 8)
    batch = {"feats": feats, "mask": torch.ones(1, 8, dtype=torch.bool)}
    expected = (
        model(feats[:, :, 0:4], batch["mask"][:, :4]).softmax(-1)
        + model(feats[:, :, 4:8], batch["mask"][:, :4]).softmax(-1)
    ) / 2
    assert torch.allclose(model.predict_class_scores(batch), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------ metrics
def _gt() -> AnnotationSet:
    def video(vid, labels):
        segs = np.array([[float(i), i + 1.0] for i in range(len(labels))]).reshape(-1, 2)
        return VideoAnnotation(vid, "validation", 10.0, segs, list(labels), fps=30.0)

    videos = [video("a", ["x"]), video("b", ["y", "y", "x"]), video("c", ["z"]), video("d", [])]
    return AnnotationSet({v.video_id: v for v in videos}, ["x", "y", "z"])


def test_class_score_collector_keeps_the_first_sample_of_each_video():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    clean = ClassScoreCollector(["a", "b", "c", "d"], ["x", "y", "z"])
    clean.update(torch.tensor([0, 1]), probs[:2])
    clean.update(torch.tensor([2, 3]), probs[2:])
    noisy = ClassScoreCollector(["a", "b", "c", "d"], ["x", "y", "z"])
    noisy.update(torch.tensor([2, 0]), probs[[2, 0]])
    garbage = torch.ones(1, 3)  # a later repeat of video a carries other numbers
    noisy.update(torch.tensor([3, 1, 0]), torch.cat([probs[[3, 1]], garbage]))
    a, b = clean.compute(), noisy.compute()
    assert b.video_ids == a.video_ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(a.probs, probs.double().numpy())
    np.testing.assert_array_equal(b.probs, a.probs)
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        clean.update(torch.tensor([0]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="outside"):
        clean.update(torch.tensor([4]), torch.ones(1, 3))


def test_topk_accuracy_hand_case_counts_unpredicted_videos_as_misses():
    gt = _gt()  # video labels: a -> x, b -> y, c -> z, d -> none (not counted)
    metric = TopKAccuracy(gt, ["a", "b", "c", "d"])
    metric.update(torch.tensor([0, 1, 3]), torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]]))
    out = {k: v.item() for k, v in metric.compute().items()}
    # a right at top-1; b right at top-2; c never predicted: a miss at every k; k = 5 > 3 classes is left out
    assert out == {"top1": 1 / 3, "top2": 2 / 3, "top3": 2 / 3}
    assert metric.predictions.video_ids == ["a", "b", "d"]


def _ddp_worker(rank, world_size, port, out_dir, probs):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        indices = list(
            DistributedSampler(range(len(probs)), num_replicas=world_size, rank=rank, shuffle=False)
        )
        metric = TopKAccuracy(_gt(), ["a", "b", "c"])
        for i in indices:  # the padded repeat of video 0 on rank 1 carries other numbers
            metric.update(torch.tensor([i]), probs[i : i + 1] if i or rank == 0 else torch.ones(1, 3) / 3)
        out = {k: v.item() for k, v in metric.compute().items()}
        out["probs"] = metric.predictions.probs.tolist()
        out["indices"] = indices
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_class_scores_under_two_processes_equal_one_process(tmp_path):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
    single = TopKAccuracy(_gt(), ["a", "b", "c"])
    single.update(torch.arange(3), probs)
    expected = {k: v.item() for k, v in single.compute().items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path), probs), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(results[0]["indices"] + results[1]["indices"]) == [0, 0, 1, 2]  # one padded repeat
    for res in results:
        assert res["probs"] == probs.tolist()
        assert {k: res[k] for k in expected} == expected == {"top1": 2 / 3, "top2": 1.0, "top3": 1.0}


# ------------------------------------------------------------------------------------------ training
def test_overfit_tiny_reaches_high_top1(tmp_path):
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = TALDataModule(
        synthetic={"preset": "tiny", "seed": 0, "root": str(tmp_path / "data")},
        regime="native",
        max_seq_len=128,
        val_subset="training",  # overfit: validate on the training videos
        batch_size=4,
        verbose=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    model = ClassifierModule(dm.in_channels, dm.num_classes, network={"head": "nextvlad"}, lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=15,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=15,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path / "run"),
    )
    trainer.fit(model, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["val/top1"] > 0.9, metrics
    assert metrics["val/score"] == metrics["val/top1"]
    scores = load_class_scores(tmp_path / "run" / "class_scores_val.json")
    assert scores.video_ids == dm.video_ids("val") and scores.label_names == dm.label_names
    np.testing.assert_allclose(scores.probs.sum(1), 1.0, atol=1e-6)


def test_run_writes_class_scores_for_each_split(tmp_path):
    overrides = ["experiment=classifier_synthetic", "debug=fast", f"paths.root_dir={tmp_path}"]
    extra = [
        "predict=true",
        "predict_splits=[val,test]",
        "model.tta.num_clips=3",
        "eval.clean_ground_truth=true",
    ]
    result = train(compose([*overrides, *extra]))
    assert set(result.metrics) >= {
        "val/top1",
        "val/top2",
        "val/top3",
        "val/score",
        "val/loss",
        "val_clean/top1",
    }
    assert result.metrics["val/score"] == result.metrics["val/top1"]
    ann_file = tmp_path / "data/synthetic/tiny-seed0/annotations_gt.json"
    # eval_val.json holds, in float64, the top-k of the written val scores against the annotation file
    report = json.loads((Path(result.paths["metrics"]).parent / "eval_val.json").read_text())
    again = split_topk_accuracy(
        load_ground_truth(ann_file), load_class_scores(result.paths["class_scores_val"])
    )
    assert {k: report[f"val/{k}"] for k in again} == again and "checks" not in report
    db = json.loads(ann_file.read_text())["database"]
    for split, subset in (("val", "validation"), ("test", "testing")):
        scores = load_class_scores(result.paths[f"class_scores_{split}"])
        assert sorted(scores.video_ids) == sorted(v for v, e in db.items() if e["subset"] == subset)
        assert Path(result.paths[f"class_scores_{split}"]).name == f"class_scores_{split}.json"
    metrics = json.loads(Path(result.paths["metrics"]).read_text())
    assert metrics["paths"]["class_scores_val"] == result.paths["class_scores_val"]
    # a class-scores file has no empty rows: a partial prediction says which videos it lacks
    partial = [
        *overrides,
        "train=false",
        "predict=true",
        "data.eval_batch_size=2",
        "+trainer.limit_predict_batches=1",
    ]
    with pytest.warns(UserWarning, match=r"class_scores_test.json: 2 of 4 videos of the test split were not"):
        train(compose(partial))


def test_class_scores_under_ddp_equal_one_process(tmp_path):
    """Prediction from one checkpoint on two spawned processes writes the file one process writes."""
    overrides = ["experiment=classifier_synthetic", "debug=fast", f"paths.root_dir={tmp_path}"]
    single = train(compose([*overrides, "predict=true", "predict_splits=[val,test]"]))
    ckpt = single.paths["checkpoint_last"]
    again = [*overrides, "train=false", f"ckpt_path={ckpt}", "predict=true", "predict_splits=[val,test]"]
    ddp = train(compose([*again, "trainer=ddp_sim"]))
    for split in ("val", "test"):
        one, two = (load_class_scores(r.paths[f"class_scores_{split}"]) for r in (single, ddp))
        assert two.video_ids == one.video_ids and len(one) in (4, 8)
        np.testing.assert_allclose(two.probs, one.probs, rtol=1e-5, atol=1e-6)
    # the synced metric scores exactly the gathered file; not compared across the two runs (it differed once in a
    # full-suite run, not reproduced: likely near-tied classes of an undertrained model under other batch shapes)
    gt = load_ground_truth(tmp_path / "data/synthetic/tiny-seed0/annotations_gt.json")
    for result in (single, ddp):
        acc = split_topk_accuracy(gt, load_class_scores(result.paths["class_scores_val"]))
        assert {k: result.metrics[f"val/{k}"] for k in acc} == acc
