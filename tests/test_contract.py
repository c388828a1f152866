"""The contract between stages: file formats, one time axis, one predictions path per split (DDP-safe),
checkpoint names that mean what they say, user strings printed intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.data import collate_batch
from tal.data.datamodule import TALDataModule
from tal.formats import (
    ClassScores,
    ClassScoresError,
    FeatureStore,
    Predictions,
    ResultsError,
    StoreManifest,
    load_class_scores,
    load_results,
    read_manifest,
    write_class_scores,
    write_features,
    write_manifest,
    write_results,
)
from tal.models.actionformer.postprocess import detect_video
from tal.models.bmn.postprocess import bmn_proposals
from tal.ops.timeaxis import positions_to_sec, sec_to_positions
from tal.run import compose, train


# ------------------------------------------------------------------------------------------ imports
@pytest.mark.parametrize("module", ["tal.eval", "tal.formats"])
def test_evaluation_and_formats_import_no_lightning(module):
    code = f"import sys, {module}; print('pytorch_lightning' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------ time axis
def test_positions_to_sec_float64_clamped_and_inverse():
    pos = torch.tensor([[-1.0, 2.5], [3.0, 40.0]], dtype=torch.float32)
    t = positions_to_sec(pos, 0.5333333, 0.2666667, duration_sec=10.0)
    assert t.dtype == torch.float64
    expected = (pos.double() * 0.5333333 + 0.2666667).clamp(0.0, 10.0)
    assert torch.equal(t, expected)
    back = sec_to_positions(positions_to_sec(pos.numpy(), 0.5333333, 0.2666667), 0.5333333, 0.2666667)
    np.testing.assert_allclose(back, pos.numpy(), rtol=0, atol=1e-12)
    assert isinstance(back, np.ndarray) and back.dtype == np.float64


def test_bmn_and_actionformer_convert_positions_alike():
    """Both post-processings map the same positions to the same seconds (float64, clamped to the video)."""
    sec_per_unit, offset_sec, duration_sec = 0.5333333333, 0.2666666667, 6.1
    # BMN: proposals in grid positions (identity axis), then in seconds
    start = torch.tensor([0.0, 0.1, 0.9, 0.1, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0])
    end = torch.tensor([0.0, 0.0, 0.1, 0.1, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9])
    conf_map = torch.rand(2, 6, 12, generator=torch.Generator().manual_seed(0))
    pos, _ = bmn_proposals(start, end, conf_map, sec_per_unit=1.0, offset_sec=0.0)
    sec, _ = bmn_proposals(start, end, conf_map, sec_per_unit, offset_sec, duration_sec)
    assert sec.dtype == torch.float64 and sec.max() <= duration_sec
    assert torch.equal(sec, positions_to_sec(pos, sec_per_unit, offset_sec, duration_sec))
    # ActionFormer: one level, one class, points at every position, offsets of 1.5 and 2 positions
    T = 12
    points = torch.stack(
        [torch.arange(T).float() + 2, torch.zeros(T), torch.full((T,), 1e4), torch.ones(T)], dim=1
    )
    logits, offsets = torch.randn(T, 1, generator=torch.Generator().manual_seed(1)), torch.ones(T, 2) * 1.5
    args = ([logits], [offsets], [points], [torch.ones(T, dtype=torch.bool)])
    af_pos, _, _ = detect_video(*args, sec_per_unit=1.0, offset_sec=0.0, duration_sec=1e9, nms_method="hard")
    af_sec, _, _ = detect_video(*args, sec_per_unit, offset_sec, duration_sec, nms_method="hard")
    expected = positions_to_sec(af_pos, sec_per_unit, offset_sec, duration_sec)
    assert torch.equal(af_sec, expected[expected[:, 1] > expected[:, 0]])
    # the same positions give the same seconds through either path
    assert torch.equal(
        positions_to_sec(pos, sec_per_unit, offset_sec, duration_sec),
        positions_to_sec(pos.float(), sec_per_unit, offset_sec, duration_sec),
    )


# ------------------------------------------------------------------------------------------ formats
def test_predictions_per_video_access_and_round_trip(tmp_path):
    preds = Predictions.from_videos(
        [
            ("b", [[0.0, 1.0], [2.0, 3.0]], [0.5, 0.9], [1, 0]),
            ("a", np.zeros((0, 2)), [], []),
            ("c", [[4.0, 5.0]], [0.1], [1]),
        ],
        label_names=["x", "y"],
    )
    assert preds.video_ids == ["b", "a", "c"] and len(preds) == 3
    per = dict(preds.per_video())
    assert list(per) == ["b", "a", "c"] and len(per["a"]) == 0
    assert per["b"].scores.tolist() == [0.5, 0.9] and per["b"].label_idx.tolist() == [1, 0]
    sub = preds.for_videos(["c", "zzz"])
    assert (
        sub.video_ids == ["c", "zzz"]
        and sub.video_idx.tolist() == [0]
        and sub.segments_sec.tolist() == [[4, 5]]
    )
    write_results(tmp_path / "d.json", preds)
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["external_data"] == {"used": False, "details": ""} and data["results"]["a"] == []
    back = load_results(tmp_path / "d.json")
    assert back.video_ids == ["b", "a", "c"] and back.scores.tolist() == preds.scores.tolist()
    assert [back.label_names[i] for i in back.label_idx] == ["y", "x", "y"]
    with pytest.raises(ResultsError, match="is a folder"):
        load_results(tmp_path)


def test_class_scores_round_trip_and_errors(tmp_path):
    scores = ClassScores(["v1", "v2"], [[0.2, 0.8], [0.6, 0.4]], ["jump", "run"])
    write_class_scores(tmp_path / "class_scores_val.json", scores)
    back = load_class_scores(tmp_path / "class_scores_val.json")
    assert back.video_ids == ["v1", "v2"] and back.label_names == ["jump", "run"]
    np.testing.assert_array_equal(back["v2"], [0.6, 0.4])
    assert back.for_videos(["v2"]).probs.tolist() == [[0.6, 0.4]]
    with pytest.raises(ClassScoresError, match="v9"):
        back.for_videos(["v9"])
    (tmp_path / "bad.json").write_text(json.dumps({"label_names": ["a", "b"], "results": {"v": [0.5]}}))
    with pytest.raises(ClassScoresError, match=r"bad.json: video 'v': expected a list of 2"):
        load_class_scores(tmp_path / "bad.json")
    with pytest.raises(ClassScoresError, match="finite and in"):
        ClassScores(["v"], [[1.5, 0.0]], ["a", "b"])


def test_write_features_atomic_and_manifest(tmp_path):
    x = np.arange(12, dtype=np.float16).reshape(4, 3)
    path = write_features(tmp_path, "vid_1", x)
    assert path == tmp_path / "vid_1.npy" and [p.name for p in tmp_path.iterdir()] == ["vid_1.npy"]
    assert np.load(path).dtype == np.float16
    manifest = StoreManifest("timm:resnet18", "/w/r18.pth", 3, 8, 8, {"vid_1": {"T": 4, "fps": 25.0}})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest and read_manifest(tmp_path / "nothing") is None
    store = FeatureStore(tmp_path)
    assert store.ids() == {"vid_1"} and store.load("vid_1").shape == (4, 3)


def test_collate_passes_extra_keys_through():
    def item(i, extra):
        return {
            "video_idx": i,
            "feats": torch.zeros(2, 3 + i),
            "mask": torch.ones(3 + i, dtype=torch.bool),
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
            "sec_per_unit": 1.0,
            "offset_sec": 0.0,
            "duration_sec": 4.0,
            "proposals": extra,
        }

    batch = collate_batch([item(0, torch.ones(5, 2)), item(1, torch.zeros(2, 2))])
    assert batch["feats"].shape == (2, 2, 4)
    assert [p.shape for p in batch["proposals"]] == [(5, 2), (2, 2)]


def test_predict_splits_are_checked():
    with pytest.raises(ValueError, match="predict_splits"):
        TALDataModule(synthetic={"preset": "tiny"}, predict_splits=["validation"])


# ------------------------------------------------------------------------------------------ runs
def _run_cli(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "tal.run", *args],
        cwd=root,
        env={**os.environ, "TAL_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


AF_SMALL = [
    "experiment=actionformer_synthetic",
    "debug=fast",
    "model.network.embed_dim=32",
    "model.network.head_dim=32",
]


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """One fast ActionFormer run that predicts train and val, with list overrides holding '[/abs/path]'."""
    root = tmp_path_factory.mktemp("splits")
    tag = f"{root}/tag"
    out = _run_cli(
        [*AF_SMALL, "predict=true", "predict_splits=[train,val]", "data.views=[i3d]", f"tags=[{tag}]"], root
    )
    (run_dir,) = (root / "outputs" / "actionformer_synthetic" / "runs").iterdir()
    return root, run_dir, out, tag


def test_one_results_file_per_split_with_exactly_its_videos(split_run):
    root, run_dir, _, _ = split_run
    db = json.loads((root / "data/synthetic/tiny-seed0/annotations_gt.json").read_text())["database"]
    for split, subset in (("train", "training"), ("val", "validation")):
        results = json.loads((run_dir / f"detections_{split}.json").read_text())["results"]
        assert set(results) == {v for v, e in db.items() if e["subset"] == subset}
    assert not (run_dir / "detections_test.json").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["paths"]["detections_train"] == str(run_dir / "detections_train.json")


def test_list_overrides_print_intact(split_run):
    _, _, out, tag = split_run
    assert f"data.views=[i3d] tags=[{tag}]" in out.stdout


def test_predict_under_ddp_writes_what_one_process_writes(split_run, tmp_path):
    _, run_dir, _, _ = split_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    files = {}
    for trainer in ("cpu", "ddp_sim"):
        root = tmp_path / trainer
        root.mkdir()
        args = [*AF_SMALL, "train=false", f"ckpt_path={ckpt}", "predict=true", "predict_splits=[test,val]"]
        _run_cli([*args, f"trainer={trainer}", "data.views=[i3d]"], root)
        (out,) = (root / "outputs" / "actionformer_synthetic" / "runs").iterdir()
        files[trainer] = {s: load_results(out / f"detections_{s}.json") for s in ("test", "val")}
    for split in ("test", "val"):
        one, ddp = files["cpu"][split], files["ddp_sim"][split]
        assert ddp.video_ids == one.video_ids and len(one.video_ids) in (4, 8)
        assert len(ddp) == len(one) > 0
        assert ddp.video_idx.tolist() == one.video_idx.tolist()
        np.testing.assert_allclose(ddp.segments_sec, one.segments_sec, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ddp.scores, one.scores, rtol=1e-4, atol=1e-6)


def test_last_checkpoint_is_the_last_epoch_and_metrics_name_their_weights(tmp_path):
    """lr = 0 keeps val/score constant, so the best checkpoint stays at epoch 0 while training goes on."""
    overrides = [*AF_SMALL, f"paths.root_dir={tmp_path}", "trainer.max_epochs=3", "model.lr=0.0"]
    result = train(compose([*overrides, "eval.weights=best"]))
    last = torch.load(result.paths["checkpoint_last"], weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # 3 epochs of 2 batches (debug=fast)
    best = torch.load(result.paths["checkpoint_best"], weights_only=False)
    assert best["epoch"] == 0 and Path(result.paths["checkpoint_best"]).name == "epoch_000.ckpt"
    written = json.loads(Path(result.paths["metrics"]).read_text())
    assert written["weights"] == "best" and written["checkpoint"] == result.paths["checkpoint_best"]
    assert result.weights == "best" and written["metrics"] == result.metrics
    default = train(compose(overrides))
    written = json.loads(Path(default.paths["metrics"]).read_text())
    assert written["weights"] == "last" and written["checkpoint"] is None
