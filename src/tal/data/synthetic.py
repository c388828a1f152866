"""A synthetic FineAction-like data set written in the real formats (the default data; nothing to download).

``annotations_gt.json`` in FineAction's layout plus one ``.npy`` per video per feature view
(``features/i3d/<video>.npy`` with 96 channels, ``features/slowfast/<video>.npy`` with 64 channels; float16 to
halve the disk, the readers return float32). Snippet geometry: 30 fps, a feature every 16 frames over 16-frame
windows, so ``t_sec = (idx * 16 + 8) / 30`` (:mod:`tal.ops.timeaxis`).

What makes it FineAction-like (statistics printed by ``python -m tal.data.synthetic --preset small``):
many short instances (median about 3% of the video), about 89% single-label videos, Zipf-like class imbalance,
about 1% dirty annotations (inverted, past the end, or small overruns to clip).

What makes it learnable but not trivial:

* classes come in **confusable pairs** (``c007a`` / ``c007b``): they share a pair prototype and differ by a
  member direction;
* the two views carry **complementary** information: ``i3d`` holds the pair direction strongly and the member
  direction weakly, ``slowfast`` the reverse, so their concatenation beats either alone (as I3D + SlowFast does);
* **boundaries need temporal context**: inside an action each feature is its class direction under heavy noise,
  plus short onset/offset transients; a single frame says little, a neighbourhood says where the action starts;
* the background holds **distractors**: short bursts of half-strength class directions with no transients,
  and a slow per-video drift.

Real timing without a download: ``python -m tal.data.synthetic --annotations FILE`` lays features rendered the
same way (one view, ``features/feats``, ``--channels`` wide, default 256) over the videos, subsets, durations and
instances of a real annotation file (any format :func:`tal.formats.load_annotations` reads), e.g. THUMOS14's;
``data.synthetic.annotations=FILE`` does it from a config (``experiment=actionformer_thumos_synthetic``).

Deterministic by seed: video ``k`` is generated from ``(seed, k)`` alone. Generated on demand into a cache
folder (``data/synthetic/<preset>-seed<seed>``, or ``<file stem>-c<channels>-seed<seed>`` over a file; written
to a temporary folder then renamed), never committed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tal.formats.store import StoreManifest, write_features, write_manifest
from tal.ops.timeaxis import sec_to_idx

FPS, FEAT_STRIDE, SNIPPET_FRAMES = 30.0, 16, 16
VIEWS = {"i3d": 96, "slowfast": 64}
#: (pair strength, member strength) per view: each view is strong on one half of the class identity
VIEW_MIX = {"i3d": (1.0, 0.35), "slowfast": (0.35, 1.0)}
DONE_FILE = "DONE"


@dataclass(frozen=True)
class SyntheticSpec:
    num_pairs: int
    num_train: int
    num_val: int
    num_test: int
    min_duration_sec: float
    max_duration_sec: float
    mean_instances: float = 5.0
    median_rel_length: float = 0.03
    multi_label_prob: float = 0.11
    dirty_prob: float = 0.01
    zipf: float = 0.8
    noise: float = 1.0
    signal: float = 0.3
    distractors_per_min: float = 3.0

    @property
    def num_classes(self) -> int:
        return 2 * self.num_pairs


PRESETS = {
    "tiny": SyntheticSpec(2, 16, 8, 4, 20.0, 40.0, mean_instances=3.0, median_rel_length=0.08, signal=0.8),
    "small": SyntheticSpec(10, 300, 100, 50, 40.0, 120.0),
    "fineaction": SyntheticSpec(53, 8440, 4174, 4118, 30.0, 300.0),
}


def dataset_dir(
    root: str | os.PathLike,
    preset: str = "small",
    seed: int = 0,
    annotations=None,
    channels: int = 256,
    fps: float = FPS,
) -> Path:
    """Where a data set lives: ``<preset>-seed<seed>``, or ``<annotation file stem>-c<channels>-seed<seed>`` for
    one laid over a real annotation file (:func:`generate_from_annotations`; ``-fps<fps>`` and ``-<preset>`` are
    added when they are not 30 and ``small``)."""
    if annotations:
        extra = ("" if float(fps) == FPS else f"-fps{float(fps):g}") + (
            "" if preset == "small" else f"-{preset}"
        )
        return Path(root) / f"{Path(annotations).stem}-c{channels}-seed{seed}{extra}"
    return Path(root) / f"{preset}-seed{seed}"


def dataset_views(folder: str | os.PathLike) -> dict[str, int]:
    """``{view: channels}`` of a generated data set (from its ``meta.json``)."""
    return dict(json.loads((Path(folder) / "meta.json").read_text())["views"])


def label_names(spec: SyntheticSpec) -> list[str]:
    """Class ``2p + m`` is named ``c{p:03d}{'ab'[m]}``; sorted names give the same order."""
    return [f"c{p:03d}{'ab'[m]}" for p in range(spec.num_pairs) for m in range(2)]


def class_directions(
    spec: SyntheticSpec, seed: int, views: dict[str, int] = VIEWS, mix: dict[str, tuple] = VIEW_MIX
) -> dict[str, np.ndarray]:
    """Per view, ``(num_classes, C)`` unit-ish class directions: pair part + signed member part."""
    rng = np.random.default_rng([seed, 7919])
    out = {}
    for view, width in views.items():
        pair_w, member_w = mix[view]
        pair = rng.standard_normal((spec.num_pairs, width)) / math.sqrt(width)
        member = rng.standard_normal((spec.num_pairs, width)) / math.sqrt(width)
        sign = np.array([1.0, -1.0])
        dirs = pair_w * pair[:, None, :] + member_w * sign[None, :, None] * member[:, None, :]
        out[view] = dirs.reshape(spec.num_classes, width) * math.sqrt(width)
    return out


def num_features(duration_sec: float, fps: float = FPS) -> int:
    """Snippets that fit in the video: one every ``FEAT_STRIDE`` frames, each ``SNIPPET_FRAMES`` long."""
    return max(1, int((duration_sec * fps - SNIPPET_FRAMES) // FEAT_STRIDE) + 1)


def snippet_coverage(start_sec: float, end_sec: float, T: int, fps: float = FPS) -> np.ndarray:
    """``(T,)`` fraction of each snippet window ``[16 i, 16 i + 16)`` frames covered by ``[start, end]``."""
    lo = np.arange(T) * FEAT_STRIDE
    hi = lo + SNIPPET_FRAMES
    inter = np.clip(np.minimum(hi, end_sec * fps) - np.maximum(lo, start_sec * fps), 0, None)
    return inter / SNIPPET_FRAMES


def _place_instances(rng, duration: float, n: int, spec: SyntheticSpec) -> list[tuple[float, float]]:
    min_len = 2.0 * FEAT_STRIDE / FPS
    placed: list[tuple[float, float]] = []
    for _ in range(n * 20):
        if len(placed) == n:
            break
        rel = rng.lognormal(math.log(spec.median_rel_length), 0.8)
        length = float(np.clip(rel * duration, min_len, 0.4 * duration))
        s = rng.uniform(0, duration - length)
        e = s + length
        if all(e + 1.0 <= a or s >= b + 1.0 for a, b in placed):
            placed.append((s, e))
    return sorted(placed)


def generate_video(
    spec: SyntheticSpec, seed: int, k: int, class_probs: np.ndarray, dirs
) -> tuple[dict, dict]:
    """Video ``k``: ``(annotation entry with clean segments, {view: (T, C) float16})``."""
    rng = np.random.default_rng([seed, k])
    duration = round(float(rng.uniform(spec.min_duration_sec, spec.max_duration_sec)), 2)
    main = int(rng.choice(spec.num_classes, p=class_probs))
    second = None
    if rng.random() < spec.multi_label_prob:
        second = main ^ 1 if rng.random() < 0.5 else int(rng.choice(spec.num_classes, p=class_probs))
    n = 1 + int(rng.poisson(spec.mean_instances - 1))
    segments = _place_instances(rng, duration, n, spec)
    labels = [main] * len(segments)
    if second is not None and second != main and len(segments) > 1:
        for j in rng.choice(len(segments), size=max(1, len(segments) // 3), replace=False):
            labels[j] = second

    feats = render_features(rng, spec, seed, k, duration, segments, labels, dirs, VIEWS)

    names = label_names(spec)
    anns = [{"label": names[c], "segment": [round(s, 2), round(e, 2)]} for (s, e), c in zip(segments, labels)]
    anns = _make_dirty(rng, anns, duration, spec.dirty_prob)
    entry = {
        "duration": duration,
        "fps": FPS,
        "actual_frame_num": int(duration * FPS),
        "filename": f"{k:07d}.mp4",
        "annotations": anns,
    }
    return entry, feats


def render_features(
    rng,
    spec: SyntheticSpec,
    seed: int,
    k: int,
    duration: float,
    segments: list[tuple[float, float]],
    labels: list[int],
    dirs,
    views: dict[str, int],
    fps: float = FPS,
) -> dict[str, np.ndarray]:
    """``{view: (T, C) float16}`` features of one video whose instances are ``segments`` (seconds) of class
    ``labels``: class directions under noise with onset / offset transients, background distractors and drift.
    ``rng`` draws the per-video randomness, ``(seed, k, width)`` the per-view noise; snippets every
    ``FEAT_STRIDE`` frames over ``SNIPPET_FRAMES`` frames at ``fps``."""
    T = num_features(duration, fps)
    feats = {}
    drift_t = np.cumsum(rng.standard_normal((T, 1)), axis=0) / math.sqrt(T)
    burst_n = int(rng.poisson(spec.distractors_per_min * duration / 60.0))
    bursts = [(float(rng.uniform(0, duration)), float(rng.uniform(0.5, 2.0))) for _ in range(burst_n)]
    burst_cls = rng.integers(0, spec.num_classes, size=burst_n)
    onset_phase = rng.standard_normal(2)
    for view, width in views.items():
        vrng = np.random.default_rng([seed, k, width])
        x = spec.noise * vrng.standard_normal((T, width))
        x += drift_t * vrng.standard_normal(width) * 0.5
        onset, offset = dirs["onset"][view], dirs["offset"][view]
        for (s, e), c in zip(segments, labels):
            cov = snippet_coverage(s, e, T, fps)
            x += spec.signal * cov[:, None] * dirs[view][c][None, :]
            s_idx, e_idx = (
                sec_to_idx(s, fps, FEAT_STRIDE, SNIPPET_FRAMES),
                sec_to_idx(e, fps, FEAT_STRIDE, SNIPPET_FRAMES),
            )
            pos = np.arange(T)
            x += (
                0.3 * np.exp(-0.5 * (pos - s_idx) ** 2)[:, None] * onset[None, :] * (1 + 0.1 * onset_phase[0])
            )
            x += (
                0.3
                * np.exp(-0.5 * (pos - e_idx) ** 2)[:, None]
                * offset[None, :]
                * (1 + 0.1 * onset_phase[1])
            )
        for (b0, blen), c in zip(bursts, burst_cls):
            if any(b0 < e + 1.0 and b0 + blen > s - 1.0 for s, e in segments):
                continue
            x += 0.5 * spec.signal * snippet_coverage(b0, b0 + blen, T, fps)[:, None] * dirs[view][c][None, :]
        feats[view] = x.astype(np.float16)
    return feats


def _make_dirty(rng, anns: list[dict], duration: float, prob: float) -> list[dict]:
    """Corrupt about ``prob`` of the instances the way real annotation files are dirty."""
    out = []
    for a in anns:
        if rng.random() < prob:
            s, e = a["segment"]
            kind = rng.integers(0, 3)
            if kind == 0:  # inverted
                a = {**a, "segment": [e, s]}
            elif kind == 1:  # past the end of the video
                a = {**a, "segment": [round(duration + 1.0, 2), round(duration + 1.0 + (e - s), 2)]}
            else:  # small overrun: cleaning clips it to the duration
                a = {**a, "segment": [s, round(duration + 0.3, 2)]}
        out.append(a)
    return out


def generate(root: str | os.PathLike, preset: str = "small", seed: int = 0) -> Path:
    """Write the data set to ``dataset_dir(root, preset, seed)`` (atomic: temporary folder, then rename)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; choose from {sorted(PRESETS)}")
    spec = PRESETS[preset]
    final = dataset_dir(root, preset, seed)
    ranks = np.arange(1, spec.num_classes + 1, dtype=np.float64)
    class_probs = ranks**-spec.zipf
    class_probs = np.random.default_rng([seed, 31]).permutation(class_probs / class_probs.sum())
    dirs = class_directions(spec, seed)
    trng = np.random.default_rng([seed, 104729])
    dirs["onset"] = {v: trng.standard_normal(w) for v, w in VIEWS.items()}
    dirs["offset"] = {v: trng.standard_normal(w) for v, w in VIEWS.items()}
    subsets = ["training"] * spec.num_train + ["validation"] * spec.num_val + ["testing"] * spec.num_test
    manifests = {
        view: StoreManifest(f"synthetic:{view}", None, width, FEAT_STRIDE, SNIPPET_FRAMES)
        for view, width in VIEWS.items()
    }

    def write(tmp: Path) -> dict:
        for view in VIEWS:
            (tmp / "features" / view).mkdir(parents=True, exist_ok=True)
        database = {}
        for k, subset in enumerate(subsets):
            entry, feats = generate_video(spec, seed, k, class_probs, dirs)
            video_id = f"v_{preset}_{k:06d}"
            database[video_id] = {"subset": subset, **entry}
            for view, x in feats.items():
                write_features(tmp / "features" / view, video_id, x)
                manifests[view].videos[video_id] = {
                    "T": len(x),
                    "fps": FPS,
                    "frame_count": entry["actual_frame_num"],
                }
        for view, manifest in manifests.items():
            write_manifest(tmp / "features" / view, manifest)
        (tmp / "annotations_gt.json").write_text(
            json.dumps({"version": "tal-synthetic-1", "database": database})
        )
        return {"preset": preset, "spec": asdict(spec), "views": VIEWS}

    return _write_atomically(final, seed, FPS, write)


#: the one feature view of a data set laid over a real annotation file, and its (pair, member) strengths
ANNOTATION_VIEW = "feats"
ANNOTATION_MIX = (1.0, 0.5)


def generate_from_annotations(
    root: str | os.PathLike,
    annotations: str | os.PathLike,
    channels: int = 256,
    fps: float = FPS,
    seed: int = 0,
    preset: str = "small",
) -> Path:
    """Lay synthetic features over the timing of a real annotation file (any format ``load_annotations`` reads).

    Every video of the file gets ``num_features(duration, fps)`` snippet features of ``channels`` channels
    (one view, ``features/feats``), rendered like the ``preset`` set (noise, signal, transients, distractors)
    around the file's own instances, as they are (segments past the end are cut by the features' end, a
    segment with two labels carries both classes). The annotations are rewritten in ActionFormer's layout
    (``label_id``; same videos, subsets, durations and segments; ``fps`` set to the rendering ``fps``) as
    ``annotations_gt.json``, so tal and the official ActionFormer code read the same file. Written atomically
    to :func:`dataset_dir` ``(root, preset, seed, annotations, channels, fps)``.
    """
    from dataclasses import replace

    from tal.formats.annotations import load_annotations

    ann = load_annotations(annotations)
    spec = replace(PRESETS[preset], num_pairs=max(1, math.ceil(ann.num_classes / 2)))
    views = {ANNOTATION_VIEW: int(channels)}
    dirs = class_directions(spec, seed, views, {ANNOTATION_VIEW: ANNOTATION_MIX})
    trng = np.random.default_rng([seed, 104729])
    dirs["onset"] = {ANNOTATION_VIEW: trng.standard_normal(channels)}
    dirs["offset"] = {ANNOTATION_VIEW: trng.standard_normal(channels)}
    final = dataset_dir(root, preset, seed, annotations, channels, fps)
    manifest = StoreManifest(f"synthetic:{ANNOTATION_VIEW}", None, channels, FEAT_STRIDE, SNIPPET_FRAMES)
    database = ann.to_database()["database"]

    def write(tmp: Path) -> dict:
        folder = tmp / "features" / ANNOTATION_VIEW
        folder.mkdir(parents=True)
        for k, video in enumerate(ann):
            segments = [tuple(seg) for seg in video.segments_sec.tolist()]
            labels = [ann.label_id(name) for name in video.labels]
            rng = np.random.default_rng([seed, k])
            (x,) = render_features(
                rng, spec, seed, k, video.duration_sec, segments, labels, dirs, views, fps
            ).values()
            write_features(folder, video.video_id, x)
            manifest.videos[video.video_id] = {"T": len(x), "fps": fps}
            database[video.video_id]["fps"] = fps
        write_manifest(folder, manifest)
        (tmp / "annotations_gt.json").write_text(
            json.dumps({"version": "tal-synthetic-1", "database": database})
        )
        return {"annotations": str(annotations), "preset": preset, "channels": channels, "views": views}

    return _write_atomically(final, seed, fps, write)


def _write_atomically(final: Path, seed: int, fps: float, write) -> Path:
    """Run ``write(tmp)`` into a temporary folder beside ``final`` (it returns the meta fields), add
    ``meta.json`` and the done marker, then rename it to ``final``."""
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        meta = {
            **write(tmp),
            "seed": seed,
            "fps": fps,
            "feat_stride": FEAT_STRIDE,
            "snippet_frames": SNIPPET_FRAMES,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        (tmp / DONE_FILE).write_text("ok\n")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep theirs
            if not (final / DONE_FILE).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_dataset(
    root: str | os.PathLike,
    preset: str = "small",
    seed: int = 0,
    annotations: str | os.PathLike | None = None,
    channels: int = 256,
    fps: float = FPS,
) -> Path:
    """The data set's folder, generating it first if it is not complete (laid over ``annotations`` if given)."""
    final = dataset_dir(root, preset, seed, annotations, channels, fps)
    if not (final / DONE_FILE).exists():
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        if annotations:
            generate_from_annotations(root, annotations, channels, fps, seed, preset)
        else:
            generate(root, preset, seed)
    return final


def statistics(path: str | os.PathLike) -> dict:
    """Instance length quantiles (seconds and fraction of the video), labels per video, dirty count, class
    counts of an annotation file (any supported format)."""
    from tal.data.cleaning import clean_segments
    from tal.formats.annotations import load_annotations

    ann = load_annotations(Path(path) / "annotations_gt.json" if Path(path).is_dir() else path)
    clean, report = clean_segments(ann)
    lengths = np.concatenate([v.segments_sec[:, 1] - v.segments_sec[:, 0] for v in clean])
    rel = np.concatenate([(v.segments_sec[:, 1] - v.segments_sec[:, 0]) / v.duration_sec for v in clean])
    labels_per_video = np.array([len(set(v.labels)) for v in clean if v.labels])
    counts = np.bincount(
        [clean.label_id(lab) for v in clean for lab in v.labels], minlength=clean.num_classes
    )
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    return {
        "videos": len(ann),
        "subsets": ann.subsets(),
        "classes": ann.num_classes,
        "instances": ann.num_instances,
        "dirty_instances": int(sum(report.counts.values())),
        "cleaning": report.as_dict(),
        "instance_length_sec_quantiles": dict(
            zip(map(str, q), np.round(np.quantile(lengths, q), 2).tolist())
        ),
        "instance_length_rel_quantiles": dict(zip(map(str, q), np.round(np.quantile(rel, q), 4).tolist())),
        "single_label_video_fraction": round(float((labels_per_video == 1).mean()), 4),
        "instances_per_video_mean": round(ann.num_instances / max(len(ann), 1), 2),
        "class_count_min_median_max": [int(counts.min()), int(np.median(counts)), int(counts.max())],
    }


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tal.data.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--root", default="data/synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even if present")
    ap.add_argument(
        "--annotations",
        metavar="FILE",
        help="lay synthetic features over this real annotation file's videos and instances (any format)",
    )
    ap.add_argument("--channels", type=int, default=256, help="feature channels with --annotations")
    ap.add_argument(
        "--fps", type=float, default=FPS, help="frame rate of the snippet features with --annotations"
    )
    args = ap.parse_args(argv)
    folder = dataset_dir(args.root, args.preset, args.seed, args.annotations, args.channels, args.fps)
    if args.force and folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    existed = (folder / DONE_FILE).exists()
    ensure_dataset(args.root, args.preset, args.seed, args.annotations, args.channels, args.fps)
    seconds = time.perf_counter() - t0
    stats = statistics(folder)
    stats["generation_sec"] = None if existed else round(seconds, 1)
    stats["disk_mib"] = round(_disk_bytes(folder) / 2**20, 1)
    stats["folder"] = str(folder)
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
