"""ActionFormer end to end on the `tiny` synthetic set: overfit, files, prediction, checkpoints, DDP, bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tal.models.actionformer import ActionFormerModule
from tal.run import compose, train

SMALL_NET = [
    "model.network.embed_dim=32",
    "model.network.head_dim=32",
    "model.network.num_heads=2",
    "model.network.window_size=5",
    "model.network.path_drop=0.0",
    "data.max_seq_len=96",
    "data.batch_size=4",
]


def run(root: Path, *overrides: str) -> tuple[dict, Path]:
    """Train + validate under ``root`` (data in ``root/data``, outputs in ``root/outputs``)."""
    cfg = compose(["experiment=actionformer_synthetic", f"paths.root_dir={root}", *SMALL_NET, *overrides])
    return train(cfg).metrics, Path(cfg.paths.output_dir)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """Train and validate on the 16 tiny training videos (debug=overfit), then predict the test split."""
    tmp = tmp_path_factory.mktemp("af_overfit")
    return tmp, *run(
        tmp,
        "debug=overfit",
        "trainer.max_epochs=20",
        "trainer.check_val_every_n_epoch=20",
        "model.lr=3e-3",
        "model.warmup_epochs=1",
        "callbacks.ema.decay=0.9",
        "predict=true",
    )


def test_overfit_tiny_reaches_high_map(overfit):
    _, metrics, out = overfit
    assert metrics["val/mAP"] > 0.7, metrics
    assert metrics["val/score"] == metrics["val/mAP"]
    report = json.loads((out / "eval_val.json").read_text())
    assert report["val/mAP"] == metrics["val/mAP"] and report["val/score"] == metrics["val/score"]


def test_detection_files_use_seconds_and_label_names(overfit):
    root, _, out = overfit
    dets = json.loads((out / "detections_val.json").read_text())["results"]
    preds = json.loads((out / "detections_test.json").read_text())["results"]
    db = json.loads((root / "data/synthetic/tiny-seed0/annotations_gt.json").read_text())["database"]
    labels = {a["label"] for v in db.values() for a in v["annotations"]}
    assert len(dets) == 16 and all(db[v]["subset"] == "training" for v in dets)
    assert len(preds) == 4 and all(db[v]["subset"] == "testing" for v in preds)
    for results in (dets, preds):
        for video, entries in results.items():
            assert 0 < len(entries) <= 100
            assert {e["label"] for e in entries} <= labels
            assert all(0 <= e["segment"][0] < e["segment"][1] <= db[video]["duration"] for e in entries)
            scores = [e["score"] for e in entries]
            assert scores == sorted(scores, reverse=True)


def test_checkpoint_round_trip_weights_only(overfit, tmp_path):
    _, _, out = overfit
    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt)  # torch's default weights_only=True: hparams must be primitive
    assert state["hyper_parameters"]["network"]["embed_dim"] == 32
    model = ActionFormerModule.load_from_checkpoint(ckpt).eval()
    fresh = ActionFormerModule(**state["hyper_parameters"]).eval()
    fresh.load_state_dict(state["state_dict"])
    feats, mask = torch.randn(2, model.hparams.in_channels, 64), torch.ones(2, 64, dtype=torch.bool)
    with torch.no_grad():
        for a, b in zip(model(feats, mask)[0], fresh(feats, mask)[0]):
            assert torch.equal(a, b)


def test_max_seq_len_must_fit_the_pyramid():
    with pytest.raises(ValueError, match="max_seq_len=100 .* multiple of 32"):
        ActionFormerModule(8, 3, max_seq_len=100)


def test_ddp_sim_fast_run(tmp_path):
    metrics, out = run(tmp_path, "trainer=ddp_sim", "debug=fast")
    assert 0.0 <= metrics["val/mAP"] <= 1.0
    dets = json.loads((out / "detections_val.json").read_text())["results"]
    assert len(dets) == 8  # every validation video once, DDP padding de-duplicated


def test_bf16_mixed_fast_run(tmp_path):
    metrics, out = run(tmp_path, "trainer.precision=bf16-mixed", "debug=fast")
    assert 0.0 <= metrics["val/mAP"] <= 1.0 and (out / "detections_val.json").exists()
