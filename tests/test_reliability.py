"""Hostile but realistic inputs: every bad input is caught before training with a message naming the file, the
video and what to do, or is a counted skip; plausibility warnings; reports in the run folder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tal.data import TALDataModule
from tal.formats import AnnotationError, FeatureError, load_annotations
from tal.models.bmn import BMNModule
from tal.run import compose, train

T, C = 20, 8


def make_data(root: Path, n: int = 6, fps: float = 30.0, duration: float | None = None) -> tuple[Path, Path]:
    """``n`` videos (4 training, the rest validation) with one instance each and ``(T, C)`` features."""
    root.mkdir(parents=True, exist_ok=True)
    feats = root / "feats"
    feats.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    database = {}
    for k in range(n):
        vid = f"vid{k}"
        dur = duration if duration is not None else (T * 16 + 8) / fps
        label = "jump" if k % 2 else "run"
        database[vid] = {
            "subset": "training" if k < 4 else "validation",
            "duration": dur,
            "fps": fps,
            "annotations": [{"label": label, "segment": [0.2 * dur, 0.6 * dur]}],
        }
        np.save(feats / f"{vid}.npy", rng.standard_normal((T, C)).astype(np.float32))
    ann = root / "gt.json"
    ann.write_text(json.dumps({"database": database}))
    return ann, feats


def datamodule(ann: Path, feats: Path, **kwargs) -> TALDataModule:
    dm = TALDataModule(str(ann), [str(feats)], verbose=False, **kwargs)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------------------ features
def _truncated(path: Path) -> None:
    np.save(path, np.ones((T, C), np.float32))
    path.write_bytes(path.read_bytes()[:-40])


BAD_FEATURES = {
    "truncated npy": (".npy", _truncated, "unreadable"),
    "garbage npy": (".npy", lambda p: p.write_bytes(b"not an array at all"), "unreadable"),
    "zero steps": (".npy", lambda p: np.save(p, np.zeros((0, C), np.float32)), "empty array"),
    "1-D": (".npy", lambda p: np.save(p, np.zeros(T, np.float32)), r"expected a \(T, C\) array"),
    "3-D": (".npy", lambda p: np.save(p, np.zeros((T, C, 2), np.float32)), r"expected a \(T, C\) array"),
    "bool": (".npy", lambda p: np.save(p, np.ones((T, C), bool)), "non-numeric dtype bool"),
    "object": (".npy", lambda p: np.save(p, np.array([[object()] * C] * T), allow_pickle=True), "unreadable"),
    "npz without the key": (
        ".npz",
        lambda p: np.savez(p, a=np.zeros((T, C)), b=np.zeros((T, C))),
        "name the features 'feats'",
    ),
    "pickled pt": (".pt", lambda p: p.write_bytes(pickle.dumps({"feats": [[1.0] * C] * T})), "unreadable"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FEATURES))
def test_bad_feature_files_stop_before_training(tmp_path, kind):
    ann, feats = make_data(tmp_path)
    suffix, write, message = BAD_FEATURES[kind]
    (feats / "vid2.npy").unlink()
    write(feats / f"vid2{suffix}")
    with pytest.raises(FeatureError, match=message) as err:
        datamodule(ann, feats)
    text = str(err.value)
    assert "vid2" in text and str(feats) in text and "on_bad_feature=skip" in text
    dm = datamodule(ann, feats, on_bad_feature="skip")
    assert dm.report["invalid feature file (skipped)"] == 1 and "vid2" in dm.data_report()["skipped_videos"]
    assert "vid2" not in dm.video_ids("train")


def test_hdf5_group_instead_of_a_dataset(tmp_path):
    ann, _ = make_data(tmp_path)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for k in range(6):
            if k == 3:
                f.create_group("vid3").create_dataset("x", data=np.zeros((T, C)))
            else:
                f.create_dataset(f"vid{k}", data=np.zeros((T, C), np.float32))
    with pytest.raises(FeatureError, match="vid3.*HDF5 group"):
        datamodule(ann, tmp_path / "f.h5")


def test_nan_values_are_found_lazily_with_advice_or_skipped_up_front(tmp_path):
    ann, feats = make_data(tmp_path)
    x = np.ones((T, C), np.float32)
    x[5, 3] = np.nan
    np.save(feats / "vid1.npy", x)
    dm = datamodule(ann, feats)  # the header is fine: values are checked when read
    with pytest.raises(
        FeatureError, match=r"vid1.*NaN/Inf\), first at time index 5 channel 3.*on_bad_feature"
    ):
        dm.store.load("vid1")
    dm = datamodule(ann, feats, on_bad_feature="skip")
    assert "vid1" in dm.data_report()["skipped_videos"] and "vid1" not in dm.video_ids("train")


def test_the_odd_width_is_named_even_when_read_first(tmp_path):
    """The first file read has 5 channels, the five others 8: the majority decides, the odd one is named."""
    ann, feats = make_data(tmp_path)
    np.save(feats / "vid0.npy", np.zeros((T, 5), np.float32))
    with pytest.raises(FeatureError) as err:
        datamodule(ann, feats)
    assert "1 of 6 videos" in str(err.value) and "vid0.npy (video 'vid0'" in str(err.value)
    assert "width 5, but this store has 8 channels (5 of 6 files)" in str(err.value)
    assert "vid1" not in str(err.value)  # the good files are not blamed
    dm = datamodule(ann, feats, on_bad_feature="skip")
    assert dm.in_channels == 8 and list(dm.data_report()["skipped_videos"]) == ["vid0"]


# ------------------------------------------------------------------------------------------ annotations
def _write_gt(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "video,message",
    [
        ('{"duration": 10, "annotations": [{"label": "a", "segment": [NaN, 2]}]}', "non-finite time"),
        ('{"duration": NaN, "annotations": []}', "positive number of seconds"),
        ('{"duration": -3, "annotations": []}', "positive number of seconds"),
        ('{"duration": 0, "annotations": []}', "positive number of seconds"),
        ('{"duration": 10, "annotations": [{"label": null, "segment": [1, 2]}]}', "needs a 'label'"),
        ('{"duration": 10, "annotations": [{"label": "a", "segment": ["1", 2]}]}', "in seconds"),
        ('{"duration": "10", "annotations": []}', "non-numeric 'duration'"),
        ('{"duration": 10, "fps": "30", "annotations": []}', "'fps' must be a number"),
        ('{"duration": 10, "annotations": {"label": "a"}}', "'annotations' must be a list"),
    ],
)
def test_bad_annotations_are_errors_naming_file_and_video(tmp_path, video, message):
    path = _write_gt(tmp_path, '{"database": {"v7": ' + video + "}}")
    with pytest.raises(AnnotationError, match=message) as err:
        load_annotations(path)
    assert str(path) in str(err.value) and "v7" in str(err.value)


def test_duplicated_video_key_and_non_utf8(tmp_path):
    dup = '{"database": {"v1": {"duration": 5, "annotations": []}, "v1": {"duration": 6, "annotations": []}}}'
    with pytest.raises(AnnotationError, match="key 'v1' appears twice"):
        load_annotations(_write_gt(tmp_path, dup))
    path = tmp_path / "latin.json"
    path.write_bytes('{"database": {"caf\xe9": {"duration": 5}}}'.encode("latin-1"))
    with pytest.raises(AnnotationError, match="latin.json: not UTF-8"):
        load_annotations(path)


def test_missing_or_zero_fps_is_found_at_setup(tmp_path):
    ann, feats = make_data(tmp_path)
    db = json.loads(ann.read_text())
    db["database"]["vid5"]["fps"] = 0
    del db["database"]["vid1"]["fps"]
    ann.write_text(json.dumps(db))
    with pytest.raises(ValueError, match=r"2 videos have no usable fps.*'vid1'.*'vid5'.*data.fps"):
        datamodule(ann, feats)
    assert datamodule(ann, feats, fps=30.0).num_classes == 2  # a given fps serves every video


# ------------------------------------------------------------------------------------------ plausibility
def test_features_covering_a_third_of_the_video_are_flagged(tmp_path):
    ann, feats = make_data(tmp_path, duration=3 * (T * 16 + 8) / 30.0)
    dm = datamodule(ann, feats)
    assert any("cover 0.33x of their videos' durations" in w for w in dm.warnings)
    assert not datamodule(*make_data(tmp_path / "ok")).warnings


def test_label_only_in_validation_is_flagged(tmp_path):
    ann, feats = make_data(tmp_path)
    db = json.loads(ann.read_text())
    db["database"]["vid5"]["annotations"][0]["label"] = "swim"
    ann.write_text(json.dumps(db))
    dm = datamodule(ann, feats)
    assert any("no training instance" in w and "swim" in w for w in dm.warnings)
    assert "swim" in dm.label_names  # still counted


def test_unusable_grid_lengths_are_clear_errors(tmp_path):
    ann, feats = make_data(tmp_path)
    with pytest.raises(ValueError, match="positive number of grid positions"):
        TALDataModule(str(ann), [str(feats)], L=0)
    with pytest.raises(ValueError, match="BMN needs a grid of L >= 2"):
        BMNModule(in_channels=8, L=1)


# ------------------------------------------------------------------------------------------ run reports
OWN_DATA = ["experiment=actionformer_i3d_slowfast", "data.num_workers=0", "trainer.max_epochs=1"]


def _own_data_cfg(tmp_path, ann, feats, *extra):
    return compose(
        [
            *OWN_DATA,
            f"paths.root_dir={tmp_path}",
            f"data.annotation_file={ann}",
            f"data.feature_dirs=[{feats}]",
            "data.max_seq_len=32",
            "model.network.embed_dim=16",
            "model.network.head_dim=16",
            "model.network.num_heads=2",
            "model.network.window_size=3",
            *extra,
        ]
    )


def test_reports_of_a_finished_and_of_a_crashed_run(tmp_path):
    ann, feats = make_data(tmp_path)
    np.save(feats / "vid2.npy", np.zeros((T, 5), np.float32))
    cfg = _own_data_cfg(tmp_path, ann, feats, "data.on_bad_feature=skip", "train=false")
    result = train(cfg)
    report = json.loads(Path(result.paths["data_report"]).read_text())
    assert list(report["skipped_videos"]) == ["vid2"] and "width 5" in report["skipped_videos"]["vid2"]
    assert report["cleaning"]["invalid feature file (skipped)"]["count"] == 1
    run_log = Path(result.paths["run_log"]).read_text()
    assert "train=false without ckpt_path" in run_log and "metrics (init weights)" in run_log
    crashed = _own_data_cfg(tmp_path, ann, feats)
    with pytest.raises(FeatureError):
        train(crashed)
    log = (Path(crashed.paths.output_dir) / "run.log").read_text()
    assert "the run stopped: FeatureError" in log and "vid2" in log and "Traceback" in log


# ------------------------------------------------------------------------------------------ resume
RESUME_SCRIPT = """
import os, signal, sys, json, torch
import pytorch_lightning as pl
from tal.run import compose, build, train

root, mode, ckpt = sys.argv[1], sys.argv[2], sys.argv[3]
overrides = [
    "experiment=actionformer_synthetic", "debug=fast", f"paths.root_dir={root}", "trainer.max_epochs=3",
    "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0", "model.network.embed_dim=16",
    "model.network.head_dim=16", "data.max_seq_len=64", "model.lr=5e-3", "model.warmup_epochs=1",
    f"paths.output_dir={root}/run_{mode}",
]
if mode == "resumed":
    overrides.append(f"ckpt_path={ckpt}")
cfg = compose(overrides)


class KillDuringEpoch1(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1 and trainer.global_step == 6:  # 4 batches per epoch
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handler: a real crash


if mode == "killed":
    import tal.run as run
    original = run.build
    def build_with_kill(cfg):
        dm, model, trainer = original(cfg)
        trainer.callbacks.append(KillDuringEpoch1())
        return dm, model, trainer
    run.build = build_with_kill
result = train(cfg)
print("RESULT", json.dumps(result.metrics))
"""


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)

    def run(mode: str, ckpt: str = "-") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path), mode, ckpt],
            capture_output=True,
            text=True,
            timeout=600,
        )

    whole = run("whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run("killed")
    assert killed.returncode == -9  # SIGKILL
    last = tmp_path / "run_killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # killed during epoch 1: epoch 0 is saved
    resumed = run("resumed", str(last))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = [json.loads(p.stdout.split("RESULT ")[-1]) for p in (whole, resumed)]
    assert metrics[0] == metrics[1] and metrics[0]["val/mAP"] > 0
    a = torch.load(tmp_path / "run_whole/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "run_resumed/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
