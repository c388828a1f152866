"""Feature extraction from raw videos: streaming decode, snippet windows on the tal time axis, timm and torchvision
backbones with local weights, bad input reported and skipped, resumable stores, DDP, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import timm
import torch

from tal.features import FrameSpec, VideoError, VideoReader, build_backbone, extract, find_videos
from tal.features.backbones import BackboneError
from tal.features.decode import snippet_count, snippet_windows
from tal.features.extract import REPORT_NAME, Journal, make_recipe, plan, recipe_hash
from tal.formats.store import FeatureError, FeatureStore, read_manifest
from tal.ops.timeaxis import idx_to_sec, positions_to_sec, snippet_axis
from tal.utils.cli import positional_overrides
from videos import (
    read_square_x,
    square_x,
    vfr_timestamps,
    write_audio_only,
    write_truncated,
    write_video,
)

TIMM_TINY = "timm:test_resnet"  # 0.37 M parameters, 160 px input: a real timm model, fast on a CPU


# ------------------------------------------------------------------------------------------ references
def reference_windows(n_frames: int, feat_stride: int, snippet_frames: int) -> list[list[int]]:
    """Slow reference: frame indices of every whole snippet, by enumeration."""
    out, i = [], 0
    while i * feat_stride + snippet_frames <= n_frames:
        out.append(list(range(i * feat_stride, i * feat_stride + snippet_frames)))
        i += 1
    return out


def decode_all(path: Path, spec: FrameSpec | None = None) -> tuple[list[np.ndarray], list[float]]:
    """Slow reference decoder: every frame in memory (RGB, resized + centre-cropped by ``spec``) and its time."""
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            times.append(float(frame.pts * frame.time_base))
            if spec is None:
                frames.append(frame.to_ndarray(format="rgb24"))
                continue
            h, w = spec.resized_size(frame.height, frame.width)
            rgb = frame.to_ndarray(
                width=w, height=h, format="rgb24", interpolation=spec.interpolation.upper()
            )
            top, left = spec.crop_box(h, w)
            frames.append(rgb[top : top + spec.crop[0], left : left + spec.crop[1]])
    return frames, times


def reference_features(backbone, path: Path, feat_stride: int, snippet_frames: int):
    """Every snippet embedded alone from the whole decoded video; also each window's ``(first, last)`` time."""
    frames, times = decode_all(path, backbone.frame_spec)
    feats, spans = [], []
    with torch.inference_mode():
        for window in reference_windows(len(frames), feat_stride, snippet_frames):
            clip = torch.from_numpy(np.stack([frames[j] for j in window]))[None]
            feats.append(backbone(clip)[0].numpy())
            spans.append((times[window[0]], times[window[-1]]))
    return np.stack(feats), spans


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "v50.mp4", 50, fps=25)
    write_video(root / "v37.mkv", 37, fps=30, width=80, height=48)
    return root


# ------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize(
    ("n", "stride", "frames"), [(14, 3, 5), (11, 4, 2), (16, 16, 16), (40, 8, 8), (9, 1, 1)]
)
def test_snippet_windows_and_count_match_enumeration(n, stride, frames):
    got = [(i, w) for i, w in snippet_windows(((j, j) for j in range(n)), stride, frames)]
    expected = reference_windows(n, stride, frames)
    assert [w for _, w in got] == expected and [i for i, _ in got] == list(range(len(expected)))
    assert snippet_count(n, stride, frames) == len(expected) == (n - frames) // stride + 1


def test_snippet_windows_hand_case_and_short_video():
    # stride 4, 2 frames: frames 2, 3, 6, 7 belong to no snippet and may be absent from the stream
    stream = [(j, f"f{j}") for j in (0, 1, 4, 5, 8, 9, 10)]
    assert list(snippet_windows(stream, 4, 2)) == [(0, ["f0", "f1"]), (1, ["f4", "f5"]), (2, ["f8", "f9"])]
    assert snippet_count(7, 4, 8) == 0 and list(snippet_windows(((j, j) for j in range(7)), 4, 8)) == []


# ------------------------------------------------------------------------------------------ decoding
def test_reader_streams_every_frame_in_order(videos):
    with VideoReader(videos / "v50.mp4") as reader:
        assert (reader.fps, reader.expected_frames(), reader.height, reader.width) == (25.0, 50, 48, 64)
        xs = [(j, read_square_x(rgb)) for j, rgb in reader.frames()]
        assert reader.frame_count == 50
    assert xs == [(j, square_x(j)) for j in range(50)]


def test_frame_spec_resize_and_crop_match_torchvision(tmp_path):
    import torchvision.transforms.v2.functional as TF

    path = write_video(tmp_path / "wide.mp4", 3, width=96, height=64)
    spec = FrameSpec([40], [32, 32], "bilinear")
    assert spec.resized_size(64, 96) == (40, 60) and spec.crop_box(40, 60) == (4, 14)
    with VideoReader(path) as r:
        shaped = [rgb for _, rgb in r.frames(spec)]
    with VideoReader(path) as r:
        full = [rgb for _, rgb in r.frames()]
    for a, b in zip(shaped, full):
        ref = TF.center_crop(TF.resize(torch.from_numpy(b).permute(2, 0, 1), [40], antialias=True), [32, 32])
        diff = np.abs(a.astype(float) - ref.permute(1, 2, 0).numpy())
        assert a.shape == (32, 32, 3) and diff.mean() < 0.5 and diff.max() <= 8  # same pixels, other filter


def test_resampling_by_timestamps_reads_a_variable_rate_video(tmp_path):
    times = vfr_timestamps()  # 40 ms steps up to frame 15, then 100 ms steps
    path = write_video(tmp_path / "vfr.mkv", len(times), pts_sec=times)
    with pytest.raises(VideoError, match="variable frame rate: frame 16 is shown at 0.700 s, not at 0.640 s"):
        with VideoReader(path) as r:
            list(r.frames())
    with VideoReader(path, fps=10) as r:
        got = [(k, read_square_x(rgb)) for k, rgb in r.frames()]
        assert r.fps == 10.0
    # output k shows the last frame whose timestamp is <= k / 10 s; the last frame lasts 1/25 s
    end = times[-1] + 1 / 25
    expected = [(k, square_x(max(j for j, t in enumerate(times) if t <= k / 10 + 1e-9))) for k in range(21)]
    assert got == expected and 20 / 10 < end <= 21 / 10


# ------------------------------------------------------------------------------------------ extraction
def test_timm_extraction_equals_per_snippet_reference_on_the_tal_time_axis(videos, tmp_path):
    stride, frames = 4, 8
    with pytest.warns(UserWarning, match="randomly initialised"):
        result = extract(
            videos, tmp_path / "store", TIMM_TINY, None, stride, frames, batch_size=3, verbose=False
        )
    assert sorted(result.written) == ["v37", "v50"] and not result.failed
    manifest = read_manifest(tmp_path / "store")
    assert (manifest.backbone, manifest.width, manifest.feat_stride, manifest.snippet_frames) == (
        TIMM_TINY,
        96,
        stride,
        frames,
    )
    assert manifest.extra["kind"] == "image" and manifest.extra["init_seed"] == 0
    store = FeatureStore(tmp_path / "store")
    with pytest.warns(UserWarning):
        backbone = build_backbone(TIMM_TINY, None, frames, seed=0)  # the same seeded random model
    for vid, n, fps in (("v50", 50, 25.0), ("v37", 37, 30.0)):
        x = store.load(vid)
        T = (n - frames) // stride + 1
        assert x.shape == (T, 96) and manifest.videos[vid] == {"T": T, "fps": fps, "frame_count": n}
        ref, spans = reference_features(
            backbone, videos / f"{vid}.{'mp4' if n == 50 else 'mkv'}", stride, frames
        )
        np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-5)
        assert np.abs(x[1:] - x[:-1]).max() > 1e-3  # neighbouring windows differ, so the equality pins them
        # feature i looks at frames [i*stride, i*stride+frames): its window's centre is where the time axis puts it
        centres = [(first + last + 1 / fps) / 2 for first, last in spans]
        tick = 1e-9 if vid == "v50" else 5e-4  # Matroska stores timestamps in whole milliseconds
        np.testing.assert_allclose(centres, idx_to_sec(np.arange(T), fps, stride, frames), rtol=0, atol=tick)
        np.testing.assert_allclose(
            centres, positions_to_sec(np.arange(T), *snippet_axis(fps, stride, frames)), rtol=0, atol=tick
        )


def test_torchvision_video_model_extraction(videos, tmp_path):
    stride, frames = 12, 8
    with pytest.warns(UserWarning, match="randomly initialised"):
        result = extract(
            [videos / "v50.mp4"], tmp_path / "r3d", "torchvision:r3d_18", None, stride, frames, verbose=False
        )
    assert list(result.written) == ["v50"]
    manifest = read_manifest(tmp_path / "r3d")
    assert manifest.width == 512 and manifest.extra["kind"] == "video"
    assert manifest.extra["resize"] == [128, 171] and manifest.extra["crop"] == [112, 112]
    x = np.load(tmp_path / "r3d" / "v50.npy")
    with pytest.warns(UserWarning):
        backbone = build_backbone("torchvision:r3d_18", None, frames, seed=0)
    ref, _ = reference_features(backbone, videos / "v50.mp4", stride, frames)
    assert x.shape == ((50 - frames) // stride + 1, 512) == ref.shape
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-5)


def test_weights_come_from_the_named_local_file_strictly(tmp_path):
    torch.manual_seed(123)
    trained = timm.create_model("test_resnet")  # with its 1000-class head, as a published file has
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "r.pth")
    backbone = build_backbone(TIMM_TINY, tmp_path / "r.pth")
    loaded = backbone.model.state_dict()
    assert loaded and all(torch.equal(v, trained.state_dict()[k]) for k, v in loaded.items())
    assert backbone.weights == str((tmp_path / "r.pth").resolve())
    # a file of another layout fails loudly (timm's own file loading would leave those layers random)
    bad = {("x." + k if k.startswith("layer1") else k): v for k, v in trained.state_dict().items()}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match=r"bad.pth does not fit backbone timm:test_resnet: \d+ missing"):
        build_backbone(TIMM_TINY, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match="does not exist"):
        build_backbone(TIMM_TINY, tmp_path / "nope.pth")
    # torchvision: a state dict with the Kinetics head
    from torchvision.models.video import r3d_18

    video = r3d_18()
    torch.save(video.state_dict(), tmp_path / "r3d.pth")
    vb = build_backbone("torchvision:r3d_18", tmp_path / "r3d.pth", snippet_frames=4)
    assert all(torch.equal(v, video.state_dict()[k]) for k, v in vb.model.state_dict().items())
    with pytest.raises(BackboneError, match="not a torchvision video model"):
        build_backbone("torchvision:resnet18")


def test_bad_videos_are_reported_counted_and_skipped(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "good.mp4", 30)
    write_video(src / "short.mp4", 5)
    write_video(src / "vfr.mkv", 30, pts_sec=vfr_timestamps())
    write_truncated(src / "truncated.mkv")
    write_audio_only(src / "audio_only.mp4")
    (src / "empty.mp4").write_bytes(b"")
    (src / "text.mp4").write_text("not a video")
    with pytest.warns(UserWarning):
        result = extract(src, tmp_path / "out", TIMM_TINY, None, 4, 8, num_workers=2)  # 2 decoding workers
    reasons = {
        "short": "5 frames, shorter than one snippet",
        "vfr": "variable frame rate",
        "truncated": "truncated: frames end at",
        "audio_only": "no video stream (streams: audio)",
        "empty": "empty file (0 bytes)",
        "text": "unreadable",
    }
    assert list(result.written) == ["good"] and set(result.failed) == set(reasons)
    for vid, words in reasons.items():
        assert words in result.failed[vid] and str(src) in result.failed[vid]
    err = capsys.readouterr().err
    assert sum(line.startswith("skipped video") for line in err.splitlines()) == len(reasons)
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["failed"] == result.failed and report["videos"] == 7
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["extract_report.json", "good.npy", "manifest.json"]  # no half-written file, journal folded
    assert list(read_manifest(tmp_path / "out").videos) == ["good"]
    # resampling reads the variable-rate video
    with pytest.warns(UserWarning):
        again = extract([src / "vfr.mkv"], tmp_path / "out25", TIMM_TINY, None, 4, 8, fps=25, verbose=False)
    assert list(again.written) == ["vfr"] and read_manifest(tmp_path / "out25").videos["vfr"]["fps"] == 25.0


def test_rerun_skips_finished_videos_and_refuses_another_recipe(videos, tmp_path):
    out = tmp_path / "store"
    args = (videos, out, TIMM_TINY, None, 4, 8)
    with pytest.warns(UserWarning):
        first = extract(*args, verbose=False)
    saved = {v: np.load(out / f"{v}.npy") for v in first.written}
    stamp = (out / "v37.npy").stat().st_mtime_ns
    (out / "v50.npy").unlink()
    with pytest.warns(UserWarning):
        second = extract(*args, verbose=False)
    assert list(second.written) == ["v50"] and second.already_done == ["v37"]
    assert (out / "v37.npy").stat().st_mtime_ns == stamp  # not rewritten
    np.testing.assert_array_equal(np.load(out / "v50.npy"), saved["v50"])  # same seeded model, same features
    with (
        pytest.warns(UserWarning),
        pytest.raises(FeatureError, match="made another way .*feat_stride: 4 vs 8"),
    ):
        extract(videos, out, TIMM_TINY, None, 8, 8, verbose=False)


def test_a_crashed_run_resumes_from_its_journal(videos, tmp_path):
    """A video written and journaled before a crash (no manifest yet) counts as done; a stale one does not."""
    with pytest.warns(UserWarning):
        backbone = build_backbone(TIMM_TINY, None, 8)
    recipe = make_recipe(backbone, 4, 8, None, "float32")
    found = find_videos(videos)
    out = tmp_path / "store"
    out.mkdir()
    np.save(out / "v50.npy", np.zeros((11, 96), np.float32))
    np.save(out / "v37.npy", np.zeros((3, 96), np.float32))  # shorter than its journal says: redo it
    journal = Journal(out)
    journal.done("v50", {"T": 11, "fps": 25.0, "frame_count": 50, "recipe": recipe_hash(recipe)})
    journal.done("v37", {"T": 8, "fps": 30.0, "frame_count": 37, "recipe": recipe_hash(recipe)})
    todo, done = plan(out, found, recipe)
    assert done == ["v50"] and [v for v, _ in todo] == ["v37"]


def test_ddp_extraction_writes_each_video_once_and_equals_one_process(videos, tmp_path):
    with pytest.warns(UserWarning):
        one = extract(videos, tmp_path / "one", TIMM_TINY, None, 4, 8, verbose=False)
    ddp = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}
    with pytest.warns(UserWarning):
        two = extract(videos, tmp_path / "two", TIMM_TINY, None, 4, 8, verbose=False, trainer=ddp)
    assert sorted(two.written) == sorted(one.written) == ["v37", "v50"]
    assert sorted(two.written.values()) == [0, 1]  # one video per process, each written by exactly one
    for vid in one.written:
        np.testing.assert_array_equal(
            np.load(tmp_path / "two" / f"{vid}.npy"), np.load(tmp_path / "one" / f"{vid}.npy")
        )
    assert read_manifest(tmp_path / "two") == read_manifest(tmp_path / "one")


# ------------------------------------------------------------------------------------------ CLI
def test_positional_paths_become_quoted_overrides():
    args = positional_overrides(
        ["/v/my videos,1", "out'x", "backbone=timm:a", "-m"], ("video_dir", "out_dir"), "u"
    )
    assert args == ["video_dir='/v/my videos,1'", "out_dir='out\\'x'", "backbone=timm:a", "-m"]
    with pytest.raises(SystemExit, match="usage: u"):
        positional_overrides(["a", "b", "c"], ("video_dir", "out_dir"), "u")


def test_cli_extracts_a_folder_with_an_awkward_name(videos, tmp_path):
    src = tmp_path / "my videos, [set 1]"
    src.mkdir()
    os.symlink(videos / "v50.mp4", src / "v50.mp4")
    cmd = [
        sys.executable,
        "-m",
        "tal.features",
        str(src),
        str(tmp_path / "out"),
        f"backbone={TIMM_TINY}",
        "feat_stride=16",
        "snippet_frames=1",
        "dtype=float16",
    ]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    x = np.load(tmp_path / "out" / "v50.npy")
    assert x.shape == ((50 - 1) // 16 + 1, 96) and x.dtype == np.float16
    assert "written" in run.stderr and "randomly initialised" in run.stderr


def test_find_videos_rejects_two_files_with_one_id(tmp_path):
    (tmp_path / "a").mkdir()
    for p in (tmp_path / "x.mp4", tmp_path / "a" / "x.mkv", tmp_path / "notes.txt"):
        p.write_bytes(b"")
    with pytest.raises(ValueError, match="two videos would get the id 'x'"):
        find_videos(tmp_path)
    assert find_videos(tmp_path / "x.mp4") == [("x", str(tmp_path / "x.mp4"))]
