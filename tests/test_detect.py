"""Raw video in, detections out: ``tal.detect`` re-makes the run's features from video and gives the detections
``tal.run`` predicts on the features extracted for training; unusable runs are refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tal.detect import DetectError, detect, resolve_checkpoint
from tal.features import extract
from tal.formats import StoreManifest, load_results, write_manifest
from tal.run import compose, train
from videos import write_video

TIMM_TINY = "timm:test_resnet"
FRAMES = {"a": 60, "b": 52, "c": 64, "d": 48, "e": 56, "f": 44}  # a-d training, e-f validation


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Videos -> a tal.features store -> an ActionFormer run trained (1 epoch) and predicting its val split."""
    root = tmp_path_factory.mktemp("detect")
    video_dir = root / "videos"
    video_dir.mkdir()
    for vid, n in FRAMES.items():
        write_video(video_dir / f"{vid}.mp4", n, fps=25)
    with pytest.warns(UserWarning, match="randomly initialised"):
        extract(video_dir, root / "store", TIMM_TINY, None, feat_stride=4, snippet_frames=8, verbose=False)
    database = {
        vid: {
            "subset": "training" if vid in "abcd" else "validation",
            "duration": n / 25,
            "fps": 25.0,
            "annotations": [{"segment": [0.4, 1.2], "label": "jump" if i % 2 else "run"}],
        }
        for i, (vid, n) in enumerate(FRAMES.items())
    }
    (root / "gt.json").write_text(json.dumps({"database": database}))
    overrides = [
        "data=features",
        f"data.annotation_file={root / 'gt.json'}",
        f"data.feature_dirs=[{root / 'store'}]",
        "data.feat_stride=4",
        "data.snippet_frames=8",
        "data.max_seq_len=32",
        "data.num_workers=0",
        "model.network.embed_dim=16",
        "model.network.head_dim=16",
        "model.lr=1e-3",
        "trainer.max_epochs=1",
        "predict=true",
        "predict_splits=[val]",
        f"paths.root_dir={root}",
    ]
    result = train(compose(overrides))
    return root, video_dir, result


def test_detect_from_raw_video_equals_the_run_on_its_features(trained):
    root, video_dir, result = trained
    run_dir = result.output_dir
    assert torch.load(result.paths["checkpoint_last"], weights_only=False)["label_names"] == ["jump", "run"]
    env = {**os.environ, "TAL_ROOT": str(root)}
    cmd = [sys.executable, "-m", "tal.detect", str(video_dir), f"ckpt={run_dir}", "top_k=5"]
    run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (out,) = (root / "outputs" / "detect" / "runs").iterdir()
    detections = load_results(out / "detections.json")
    assert sorted(detections.video_ids) == sorted(FRAMES)
    expected = load_results(result.paths["detections_val"])
    for vid in ("e", "f"):
        mine, theirs = dict(detections.per_video())[vid], dict(expected.per_video())[vid]
        assert len(mine) == len(theirs) > 0
        assert [mine.label_names[i] for i in mine.label_idx] == [
            theirs.label_names[i] for i in theirs.label_idx
        ]
        np.testing.assert_allclose(mine.segments_sec, theirs.segments_sec, rtol=0, atol=1e-6)
        np.testing.assert_allclose(mine.scores, theirs.scores, rtol=1e-5, atol=1e-7)
    assert sorted(p.name for p in (out / "timelines").iterdir()) == [f"{v}.png" for v in sorted(FRAMES)]
    # features re-made exactly as the training store's recipe, and equal to it
    (store,) = (out / "features").iterdir()
    np.testing.assert_array_equal(np.load(store / "e.npy"), np.load(root / "store" / "e.npy"))
    assert "top detections" in run.stdout


def test_checkpoint_resolution_and_refusals(trained, tmp_path):
    root, video_dir, result = trained
    ckpt, run_dir = resolve_checkpoint(result.output_dir)
    assert ckpt.name == "last.ckpt" and str(run_dir) == result.output_dir
    assert resolve_checkpoint(ckpt) == (ckpt, run_dir)
    # a run on the synthetic set, and a store without a manifest, cannot be re-made from video
    fake = tmp_path / "run"
    (fake / "checkpoints").mkdir(parents=True)
    (fake / "checkpoints" / "last.ckpt").write_bytes(b"")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.data.synthetic = {"preset": "tiny"}
    OmegaConf.save(cfg, fake / "config.yaml")
    with pytest.raises(DetectError, match="synthetic data set"):
        detect(video_dir, fake, tmp_path / "o1")
    bare = tmp_path / "bare"
    bare.mkdir()
    cfg.data.synthetic, cfg.data.feature_dirs = None, [str(bare)]
    OmegaConf.save(cfg, fake / "config.yaml")
    with pytest.raises(DetectError, match="has no manifest.json"):
        detect(video_dir, fake, tmp_path / "o2")
    write_manifest(bare, StoreManifest("i3d-from-somewhere", None, 8, 16, 16))
    with pytest.raises(DetectError, match="cannot run on video"):
        detect(video_dir, fake, tmp_path / "o3")
    (fake / "config.yaml").unlink()
    with pytest.raises(DetectError, match="no config.yaml"):
        resolve_checkpoint(fake / "checkpoints" / "last.ckpt")
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))  # refused before any work
