import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tal.data import (
    AnnotationError,
    ConcatStore,
    FeatureError,
    FeatureStore,
    TALDataModule,
    class_balanced_clips,
    clean_segments,
    collate_batch,
    detect_format,
    idx_to_sec,
    load_annotations,
    relabel_to_video_label,
    remove_short_instances,
    resize_features,
    sec_to_idx,
    synthetic,
    truncate_segments,
    video_label,
)
from tal.formats import read_manifest

THUMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14.json"


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def fineaction_db():
    return {
        "database": {
            "v1": {
                "subset": "training",
                "duration": 10.0,
                "fps": 30,
                "actual_frame_num": 300,
                "filename": "v1.mp4",
                "annotations": [
                    {"label": "zebra jump", "segment": [1.0, 2.0]},
                    {"label": "apple pick", "segment": [3.0, 5.0]},
                ],
            },
            "v2": {
                "subset": "validation",
                "duration": 20.0,
                "fps": 25,
                "annotations": [{"label": "apple pick", "segment": [0.0, 4.0]}],
            },
        }
    }


# ---------------------------------------------------------------- annotations
def test_fineaction_labels_from_sorted_names(tmp_path):
    ann = load_annotations(write_json(tmp_path / "fa.json", fineaction_db()))
    assert ann.label_names == ["apple pick", "zebra jump"]
    assert len(ann) == 2 and ann.num_instances == 3
    assert ann.label_ids(ann["v1"]).tolist() == [1, 0]
    assert ann["v1"].frame_count == 300 and ann["v2"].fps == 25.0
    assert list(ann.subset("validation").videos) == ["v2"]
    # the split does not change the label map
    assert load_annotations(tmp_path / "fa.json", subsets=["validation"]).label_names == ann.label_names


def test_actionformer_label_ids_and_activitynet_detection(tmp_path):
    db = fineaction_db()
    db["database"]["v1"]["annotations"][0]["label_id"] = 0
    db["database"]["v1"]["annotations"][1]["label_id"] = 1
    db["database"]["v2"]["annotations"][0]["label_id"] = 1
    assert detect_format(db) == "actionformer"
    ann = load_annotations(write_json(tmp_path / "af.json", db))
    assert ann.label_names == ["zebra jump", "apple pick"]  # ids from the file, not sorted names
    anet = {"version": "VERSION 1.3", "taxonomy": [], **fineaction_db()}
    assert detect_format(anet) == "activitynet"
    assert load_annotations(write_json(tmp_path / "anet.json", anet)).num_instances == 3


def test_label_file_and_unknown_format(tmp_path):
    (tmp_path / "cats.txt").write_text("1 zebra jump\n0 apple pick\n2 unused\n")
    ann = load_annotations(
        write_json(tmp_path / "fa.json", fineaction_db()), label_file=tmp_path / "cats.txt"
    )
    assert ann.label_names == ["apple pick", "zebra jump", "unused"]
    with pytest.raises(AnnotationError, match=r"bad\.json.*unknown annotation format"):
        load_annotations(write_json(tmp_path / "bad.json", {"videos": []}))
    db = fineaction_db()
    del db["database"]["v2"]["duration"]
    with pytest.raises(AnnotationError, match=r"video 'v2'.*duration"):
        load_annotations(write_json(tmp_path / "nodur.json", db))


@pytest.mark.skipif(not THUMOS.exists(), reason="../shared/data/thumos14.json not present")
def test_real_thumos14_file():
    ann = load_annotations(THUMOS)
    assert (len(ann), ann.num_classes, ann.num_instances) == (412, 20, 6365)
    assert ann.subsets() == {"Validation": 200, "Test": 212}
    clean, report = clean_segments(ann)
    past_end = sum(n for r, n in report.counts.items() if "after video end" in r)
    assert past_end == 30
    assert clean.num_instances == 6365 - 30
    assert report["duplicate instance"] == 0  # the 361 two-label segments are kept


# ---------------------------------------------------------------- cleaning
def test_clean_segments_counts_each_reason(tmp_path):
    db = {
        "database": {
            "v": {
                "subset": "training",
                "duration": 10.0,
                "annotations": [
                    {"label": "a", "segment": [1.0, 2.0]},
                    {"label": "a", "segment": [1.0, 2.0]},  # duplicate
                    {"label": "b", "segment": [1.0, 2.0]},  # same segment, other label: kept
                    {"label": "a", "segment": [3.0, 3.0]},  # empty
                    {"label": "a", "segment": [5.0, 4.0]},  # inverted
                    {"label": "a", "segment": [10.0, 12.0]},  # starts at the end
                    {"label": "a", "segment": [8.0, 11.5]},  # beyond tolerance 1.0
                    {"label": "a", "segment": [8.0, 10.4]},  # clipped to 10
                    {"label": "b", "segment": [-0.5, 0.5]},  # clipped to 0
                ],
            }
        }
    }
    ann = load_annotations(write_json(tmp_path / "d.json", db))
    clean, rep = clean_segments(ann, clip_tolerance_sec=1.0)
    v = clean["v"]
    assert v.segments_sec.tolist() == [[1, 2], [1, 2], [8, 10], [0, 0.5]]
    assert v.labels == ["a", "b", "a", "b"]
    assert rep["duplicate instance"] == 1
    assert rep["inverted or empty segment"] == 2
    assert rep["starts after video end"] == 1
    assert rep["ends after video end (beyond tolerance)"] == 1
    assert rep["end clipped to duration"] == 1 and rep["start clipped to 0"] == 1
    assert rep.examples["duplicate instance"] == ["v"]


def test_remove_short_relabel_and_video_label(tmp_path):
    db = {
        "database": {
            "v": {
                "subset": "training",
                "duration": 100.0,
                "annotations": [
                    {"label": "b", "segment": [0.0, 0.9]},  # shorter than 100/100 = 1 s
                    {"label": "a", "segment": [10.0, 30.0]},
                    {"label": "b", "segment": [40.0, 45.0]},
                ],
            }
        }
    }
    ann = load_annotations(write_json(tmp_path / "s.json", db))
    short, rep = remove_short_instances(ann, 100)
    assert short["v"].labels == ["a", "b"] and rep["shorter than duration/100"] == 1
    # tie 1:1 after removal -> the label covering more seconds ("a": 20 s vs "b": 5 s)
    assert video_label(short["v"]) == "a"
    assert video_label(ann["v"]) == "b"  # 2 "b" vs 1 "a"
    relabelled = relabel_to_video_label(ann)
    assert relabelled["v"].labels == ["b", "b", "b"]


def test_class_balanced_clips_fill_rare_classes(tmp_path):
    vids = {}
    for k in range(6):  # class "a" has 6 instances, "b" 1, "c" 3
        anns = [{"label": "a", "segment": [10.0, 12.0]}]
        if k == 0:
            anns.append({"label": "b", "segment": [30.0, 31.0]})
        if k < 3:
            anns.append({"label": "c", "segment": [50.0, 54.0]})
        vids[f"v{k}"] = {"subset": "training", "duration": 60.0, "annotations": anns}
    ann = load_annotations(write_json(tmp_path / "b.json", {"database": vids}))
    clips, rep = class_balanced_clips(ann, target_quantile=0.5, context=(1.0, 1.0))
    # median count is 3: "b" gets 2 extra clips, "c" and "a" none
    assert len(clips) == 2 and all(c.video_id == "v0" for c in clips)
    assert clips[0].t_start_sec == pytest.approx(29.0) and clips[0].t_end_sec == pytest.approx(32.0)
    assert rep["extra clips for rare class 'b'"] == 2


# ---------------------------------------------------------------- time axis
def test_seconds_index_conversion():
    # 16-frame snippets every 16 frames at 30 fps: feature 0 is centred at 8/30 s
    assert idx_to_sec(0, 30, 16, 16) == pytest.approx(8 / 30)
    assert idx_to_sec(10, 30, 16, 16) == pytest.approx((160 + 8) / 30)
    t = np.array([0.0, 1.5, 99.9])
    np.testing.assert_allclose(idx_to_sec(sec_to_idx(t, 25, 8, 32), 25, 8, 32), t)


# ---------------------------------------------------------------- features
def test_resize_features_matches_numpy_interp():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3)).astype(np.float32)
    y = resize_features(x, 12).numpy()
    pos = np.clip((np.arange(12) + 0.5) * 7 / 12 - 0.5, 0, 6)  # align_corners=False sample positions
    ref = np.stack([np.interp(pos, np.arange(7), x[:, c]) for c in range(3)], axis=1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert resize_features(x, 7).numpy().tolist() == x.tolist()


def test_store_formats_and_concat(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((10, 4)).astype(np.float32)
    b = rng.standard_normal((5, 2)).astype(np.float32)
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    np.save(tmp_path / "A" / "v1.npy", a)
    np.savez(tmp_path / "A" / "v2.npz", feats=a)
    torch.save(torch.from_numpy(a), tmp_path / "A" / "v3.pt")
    with h5py.File(tmp_path / "B.h5", "w") as f:
        for v in ("v1", "v2", "v3"):
            f[v] = b
    store = FeatureStore(tmp_path / "A")
    for v in ("v1", "v2", "v3"):
        np.testing.assert_array_equal(store.load(v), a)
    cat = ConcatStore([store, FeatureStore(tmp_path / "B.h5")])
    assert cat.ids() == {"v1", "v2", "v3"}
    x = cat.load("v2")
    assert x.shape == (10, 6) and cat.channels == 6
    np.testing.assert_allclose(x[:, 4:], resize_features(b, 10).numpy())


def test_bad_feature_files_name_file_and_video(tmp_path):
    d = tmp_path / "feats"
    d.mkdir()
    np.save(d / "good.npy", np.ones((5, 3), np.float32))
    nan = np.ones((5, 3), np.float32)
    nan[2, 1] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "wide.npy", np.ones((5, 4), np.float32))
    np.save(d / "flat.npy", np.ones(5, np.float32))
    (d / "corrupt.npy").write_bytes(b"not a numpy file")
    store = FeatureStore(d)
    store.load("good")
    cases = {
        "nan": r"nan\.npy \(video 'nan'.*NaN/Inf.*time index 2",
        "wide": r"wide\.npy \(video 'wide'.*width 4 but this store has 3",
        "flat": r"flat\.npy \(video 'flat'.*\(T, C\)",
        "corrupt": r"corrupt\.npy \(video 'corrupt'.*unreadable",
        "absent": r"absent\.npy \(video 'absent'.*missing",
    }
    for vid, pattern in cases.items():
        with pytest.raises(FeatureError, match=pattern):
            store.load(vid)
    with pytest.raises(FeatureError, match=r"'\.\./good'.*escape"):
        store.load("../good")


def _tiny_store(tmp_path, videos, widths=None, bad=None):
    """A FineAction-style annotation file and one feature folder; ``bad`` maps video -> array to write."""
    d = tmp_path / "f"
    d.mkdir()
    db = {}
    for i, v in enumerate(videos):
        db[v] = {
            "subset": "training" if i % 2 == 0 else "validation",
            "duration": 20.0,
            "fps": 30.0,
            "annotations": [{"label": "x" if i % 3 else "y", "segment": [2.0, 6.0]}],
        }
        arr = np.random.default_rng(i).standard_normal((36, 8)).astype(np.float32)
        if bad and v in bad:
            arr = bad[v]
        if arr is not None:
            np.save(d / f"{v}.npy", arr)
    return write_json(tmp_path / "ann.json", {"database": db}), d


def test_datamodule_bad_input_error_or_counted_skip(tmp_path):
    nan = np.full((36, 8), np.nan, np.float32)
    ann_file, d = _tiny_store(tmp_path, ["a", "b", "c", "d", "e"], bad={"c": None, "e": nan})
    dm = TALDataModule(annotation_file=str(ann_file), feature_dirs=[str(d)], verbose=False)
    with pytest.raises(FeatureError, match=r"video 'c'.*c\.npy.*on_bad_feature=skip"):
        dm.setup()
    dm = TALDataModule(
        annotation_file=str(ann_file), feature_dirs=[str(d)], on_bad_feature="skip", verbose=False
    )
    dm.setup()
    assert dm.report["video without features"] == 1
    assert dm.report["invalid feature file (skipped)"] == 1
    assert dm.video_ids("train") == ["a"] and dm.video_ids("val") == ["b", "d"]


# ---------------------------------------------------------------- datasets
def test_native_items_map_back_to_seconds(tmp_path):
    ann_file, d = _tiny_store(tmp_path, ["a", "b", "c", "d"])
    dm = TALDataModule(
        annotation_file=str(ann_file), feature_dirs=[str(d)], max_seq_len=64, pad_multiple=32, verbose=False
    )
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["feats"].shape == (2, 8, 64)
    assert batch["mask"].sum(1).tolist() == [36, 36] and not batch["mask"][:, 36:].any()
    for b, idx in enumerate(batch["video_idx"].tolist()):
        gt = dm.ground_truth("val")[dm.video_ids("val")[idx]].segments_sec
        sec = batch["segments"][b].double() * batch["sec_per_unit"][b] + batch["offset_sec"][b]
        np.testing.assert_allclose(sec.numpy(), gt, atol=1e-5)
    # feature i sits at (16 i + 8) / 30 s
    assert batch["sec_per_unit"][0].item() == pytest.approx(16 / 30)
    assert batch["offset_sec"][0].item() == pytest.approx(8 / 30)


def test_resize_items_and_training_crop(tmp_path):
    ann_file, d = _tiny_store(tmp_path, ["a", "b", "c", "d"])
    dm = TALDataModule(
        annotation_file=str(ann_file), feature_dirs=[str(d)], regime="resize", L=40, verbose=False
    )
    dm.setup()
    item = dm.dataset("val")[0]
    assert item["feats"].shape == (8, 40)
    np.testing.assert_allclose(item["segments"].numpy(), [[4.0, 12.0]])  # [2, 6] s on a 0.5 s grid
    crop = TALDataModule(
        annotation_file=str(ann_file),
        feature_dirs=[str(d)],
        crop_ratio=[0.5, 0.5],
        max_seq_len=30,
        verbose=False,
    )
    crop.setup()
    ds = crop.dataset("train")
    for _ in range(5):
        it = ds[0]
        assert it["feats"].shape[1] == 18  # 50% of 36 positions
        seg_sec = it["segments"].double() * it["sec_per_unit"] + it["offset_sec"]
        # the instance survives every crop (>= 50% inside), clipped to the window
        assert len(seg_sec) == 1 and 2.0 - 1e-6 <= seg_sec[0, 0] < seg_sec[0, 1] <= 6.0 + 1e-6


def test_truncate_and_collate():
    segs = np.array([[0.0, 10.0], [8.0, 12.0], [20.0, 30.0]])
    clipped, keep = truncate_segments(segs, 5.0, 11.0)
    assert keep.tolist() == [True, True, False]
    assert clipped.tolist() == [[5.0, 10.0], [8.0, 11.0]]
    items = [
        {
            "video_idx": i,
            "feats": torch.ones(2, t),
            "mask": torch.ones(t, dtype=torch.bool),
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
            "sec_per_unit": 1.0,
            "offset_sec": 0.0,
            "duration_sec": 5.0,
        }
        for i, t in ((0, 5), (1, 40))
    ]
    b = collate_batch(items, pad_to=16, pad_multiple=32)
    assert b["feats"].shape == (2, 2, 64) and b["mask"].sum(1).tolist() == [5, 40]
    assert b["feats"][0, :, 5:].abs().sum() == 0


# ---------------------------------------------------------------- synthetic
def test_synthetic_tiny_is_deterministic_and_fineaction_like(tmp_path):
    a = synthetic.generate(tmp_path / "a", "tiny", seed=3)
    b = synthetic.generate(tmp_path / "b", "tiny", seed=3)
    assert (a / "annotations_gt.json").read_text() == (b / "annotations_gt.json").read_text()
    v = sorted((a / "features" / "i3d").glob("*.npy"))[0].name
    np.testing.assert_array_equal(np.load(a / "features" / "i3d" / v), np.load(b / "features" / "i3d" / v))
    ann = load_annotations(a / "annotations_gt.json")
    assert detect_format(json.loads((a / "annotations_gt.json").read_text())) == "fineaction"
    assert ann.label_names == synthetic.label_names(synthetic.PRESETS["tiny"])
    spec = synthetic.PRESETS["tiny"]
    assert ann.subsets() == {"training": spec.num_train, "validation": spec.num_val, "testing": spec.num_test}
    manifest = read_manifest(a / "features" / "slowfast")
    assert (manifest.width, manifest.feat_stride, manifest.snippet_frames) == (64, 16, 16)
    for vid in ann.videos:
        x = np.load(a / "features" / "slowfast" / f"{vid}.npy")
        assert x.shape == (synthetic.num_features(ann[vid].duration_sec), 64)
        assert manifest.videos[vid]["T"] == len(x) and manifest.videos[vid]["fps"] == ann[vid].fps
    stats = synthetic.statistics(a)
    assert stats["classes"] == 4 and stats["instances"] == ann.num_instances


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return synthetic.ensure_dataset(tmp_path_factory.mktemp("syn"), "small", seed=0)


def test_synthetic_small_statistics(small_set):
    folder = small_set
    stats = synthetic.statistics(folder)
    assert stats["classes"] == 20 and stats["videos"] == 450
    assert 0.84 <= stats["single_label_video_fraction"] <= 0.94
    assert 0.015 <= stats["instance_length_rel_quantiles"]["0.5"] <= 0.06
    assert 0.002 <= stats["dirty_instances"] / stats["instances"] <= 0.02
    lo, _, hi = stats["class_count_min_median_max"]
    assert hi >= 5 * lo  # class imbalance


def test_synthetic_views_are_complementary(small_set):
    """A linear probe on instance-mean features: each view alone is confused, the concatenation is not."""
    folder = small_set
    ann, _ = clean_segments(load_annotations(folder / "annotations_gt.json"))

    def instances(subset, views):
        xs, ys = [], []
        for v in ann.subset(subset):
            x = np.concatenate([np.load(folder / "features" / w / f"{v.video_id}.npy") for w in views], 1)
            for (s, e), y in zip(v.segments_sec, ann.label_ids(v)):
                lo = max(0, round(float(sec_to_idx(s, 30, 16, 16))))
                hi = max(lo + 1, round(float(sec_to_idx(e, 30, 16, 16))))
                xs.append(x[lo:hi].astype(np.float32).mean(0))
                ys.append(y)
        return torch.tensor(np.array(xs)), torch.tensor(ys)

    acc = {}
    torch.manual_seed(0)
    for views in (("i3d",), ("slowfast",), ("i3d", "slowfast")):
        xtr, ytr = instances("training", views)
        xva, yva = instances("validation", views)
        probe = torch.nn.Linear(xtr.shape[1], 20)
        opt = torch.optim.Adam(probe.parameters(), 1e-2, weight_decay=1e-3)
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(probe(xtr), ytr).backward()
            opt.step()
        acc[views] = (probe(xva).argmax(1) == yva).float().mean().item()
    both = acc[("i3d", "slowfast")]
    assert both > acc[("i3d",)] + 0.05 and both > acc[("slowfast",)] + 0.05
    assert max(acc[("i3d",)], acc[("slowfast",)]) < 0.92


def test_datamodule_class_balance_adds_training_clips(tmp_path):
    folder = synthetic.ensure_dataset(tmp_path, "tiny", seed=0)
    kw = dict(synthetic={"preset": "tiny", "root": str(tmp_path)}, regime="resize", L=32, verbose=False)
    plain = TALDataModule(**kw)
    plain.setup()
    balanced = TALDataModule(**kw, class_balance={"target_quantile": 1.0, "max_extra_per_class": 50})
    balanced.setup()
    counts = np.bincount(
        [l for v in balanced.ground_truth("train") for l in balanced.ground_truth("train").label_ids(v)],
        minlength=4,
    )
    extra = len(balanced.dataset("train")) - len(plain.dataset("train"))
    assert extra == int(sum(min(counts.max() - c, 50) for c in counts))
    assert extra > 0 and len(balanced.dataset("val")) == len(plain.dataset("val"))
    train = balanced.dataset("train")
    item = train[len(train) - 1]  # an extra clip: a crop around one instance, on its own L-cell grid
    duration = balanced.ground_truth("train")[balanced.video_ids("train")[item["video_idx"]]].duration_sec
    assert item["feats"].shape == (160, 32) and len(item["segments"]) >= 1
    assert item["sec_per_unit"] < duration / 32
    assert (folder / "DONE").exists()


def actionformer_db():
    """A small ActionFormer-layout file: a segment past the video end, one instance with two labels."""
    ann = lambda label, lid, s, e: {"label": label, "label_id": lid, "segment": [s, e]}  # noqa: E731
    return {
        "database": {
            "video_validation_1": {
                "subset": "Validation",
                "duration": 40.0,
                "fps": 29.97,
                "annotations": [
                    ann("Jump", 1, 5.0, 9.0),
                    ann("Run", 0, 20.0, 24.0),
                    ann("Jump", 1, 20.0, 24.0),
                ],
            },
            "video_validation_2": {
                "subset": "Validation",
                "duration": 30.0,
                "fps": 30.0,
                "annotations": [ann("Run", 0, 2.0, 6.5), ann("Run", 0, 31.0, 33.0)],
            },
            "video_test_1": {
                "subset": "Test",
                "duration": 25.0,
                "fps": 30.0,
                "annotations": [ann("Jump", 1, 10.0, 13.0)],
            },
        }
    }


def test_synthetic_over_annotations_keeps_the_timing(tmp_path):
    """Features laid over a real file's timing: same videos, subsets, durations, segments and label ids;
    features of num_features(duration) snippets carrying each instance's class direction."""
    src = write_json(tmp_path / "real.json", actionformer_db())
    synthetic.main(["--annotations", str(src), "--root", str(tmp_path / "syn"), "--channels", "32"])
    folder = tmp_path / "syn" / "real-c32-seed0"
    assert folder == synthetic.dataset_dir(tmp_path / "syn", annotations=src, channels=32)
    assert (
        synthetic.dataset_dir(tmp_path, annotations=src, channels=32, fps=25).name == "real-c32-seed0-fps25"
    )
    assert synthetic.dataset_views(folder) == {"feats": 32}
    out = json.loads((folder / "annotations_gt.json").read_text())["database"]
    real = actionformer_db()["database"]
    assert list(out) == list(real)
    for vid, entry in real.items():
        assert (out[vid]["subset"], out[vid]["duration"], out[vid]["fps"]) == (
            entry["subset"],
            entry["duration"],
            30,
        )
        rows = [(a["label"], a["label_id"], a["segment"]) for a in out[vid]["annotations"]]
        assert rows == [(a["label"], a["label_id"], a["segment"]) for a in entry["annotations"]]
        x = np.load(folder / "features" / "feats" / f"{vid}.npy")
        assert x.shape == (synthetic.num_features(entry["duration"]), 32) and x.dtype == np.float16
    # the class signal: the Run instance [2, 6.5] s projects onto Run's direction more than the background
    x = np.load(folder / "features" / "feats" / "video_validation_2.npy").astype(np.float64)
    spec = dataclasses.replace(synthetic.PRESETS["small"], num_pairs=1)
    run = synthetic.class_directions(spec, 0, {"feats": 32}, {"feats": synthetic.ANNOTATION_MIX})["feats"][0]
    inside = [i for i in range(len(x)) if 2.5 <= float(idx_to_sec(i, 30, 16, 16)) <= 6.0]
    outside = [i for i in range(len(x)) if float(idx_to_sec(i, 30, 16, 16)) > 12.0]
    assert (x[inside] @ run).mean() > (x[outside] @ run).mean() + 0.5 * synthetic.PRESETS["small"].signal
    again = synthetic.generate_from_annotations(tmp_path / "again", src, channels=32)
    np.testing.assert_array_equal(
        np.load(again / "features" / "feats" / "video_test_1.npy"),
        np.load(folder / "features" / "feats" / "video_test_1.npy"),
    )
    # the DataModule reads it through data.synthetic.annotations
    dm = TALDataModule(
        synthetic={"annotations": str(src), "root": str(tmp_path / "syn"), "channels": 32},
        train_subset="Validation",
        val_subset="Test",
        fps=30,
        verbose=False,
    )
    dm.prepare_data()
    dm.setup()
    assert dm.in_channels == 32 and dm.label_names == ["Run", "Jump"]
    assert dm.video_ids("train") == ["video_validation_1", "video_validation_2"]
    assert dm.report.counts == {"starts after video end": 1}
