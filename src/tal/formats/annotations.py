"""Annotation structures and readers for the three JSON layouts used in temporal action localization.

* FineAction ``annotations_gt.json``: ``database`` → video → ``subset`` (``training|validation|testing``),
  ``duration``, ``fps``, ``actual_frame_num``, ``filename``, ``annotations[{label, segment}]``; no ``label_id``.
* ActivityNet 1.3: ``version``, ``taxonomy``, ``database`` (same per-video layout, ``resolution``, ``url``).
* ActionFormer: ``database`` → video → ``subset``, ``duration``, ``fps``, ``annotations[{label, segment, label_id}]``
  (THUMOS14 uses subsets ``Validation`` for training and ``Test``).

All three share the ``database`` layout, so one reader serves them; the format is detected only to give a
clear error when a file is none of them. Times are in seconds everywhere.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tal.formats._json import read_json

__all__ = [
    "AnnotationError",
    "AnnotationSet",
    "VideoAnnotation",
    "copy_video",
    "detect_format",
    "load_annotations",
    "load_ground_truth",
    "read_label_file",
    "video_label",
    "video_labels",
]


class AnnotationError(ValueError):
    """An annotation file is unreadable or malformed; the message names the file and the video."""


@dataclass
class VideoAnnotation:
    """Ground truth of one video. ``segments_sec`` is ``(N, 2)`` float64 ``[t_start_sec, t_end_sec]``."""

    video_id: str
    subset: str
    duration_sec: float
    segments_sec: np.ndarray
    labels: list[str]
    fps: float | None = None
    frame_count: int | None = None

    def __post_init__(self) -> None:
        self.segments_sec = np.asarray(self.segments_sec, dtype=np.float64).reshape(-1, 2)
        if len(self.labels) != len(self.segments_sec):
            raise AnnotationError(
                f"video {self.video_id!r}: {len(self.segments_sec)} segments but {len(self.labels)} labels"
            )

    @property
    def num_instances(self) -> int:
        return len(self.labels)


@dataclass
class AnnotationSet:
    """Videos keyed by id plus the label map (``label_names[label_id]``), in file order."""

    videos: dict[str, VideoAnnotation]
    label_names: list[str]
    source: str = ""
    _label_index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._label_index = {name: i for i, name in enumerate(self.label_names)}

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VideoAnnotation]:
        return iter(self.videos.values())

    def __getitem__(self, video_id: str) -> VideoAnnotation:
        return self.videos[video_id]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_instances(self) -> int:
        return sum(v.num_instances for v in self.videos.values())

    def label_id(self, name: str) -> int:
        """Integer id of a label name; ``KeyError`` naming the label if unknown."""
        try:
            return self._label_index[name]
        except KeyError:
            raise KeyError(f"label {name!r} is not in the label map ({self.num_classes} classes)") from None

    def label_ids(self, video: VideoAnnotation) -> np.ndarray:
        """``(N,)`` int64 label ids of a video's instances."""
        return np.array([self._label_index[n] for n in video.labels], dtype=np.int64)

    def subset(self, *names: str) -> AnnotationSet:
        """The videos whose ``subset`` is one of ``names`` (same label map)."""
        wanted = set(names)
        return self.with_videos(v for v in self.videos.values() if v.subset in wanted)

    def with_videos(self, videos: Iterable[VideoAnnotation]) -> AnnotationSet:
        """A new set over ``videos`` with this label map."""
        return AnnotationSet({v.video_id: v for v in videos}, list(self.label_names), self.source)

    def subsets(self) -> dict[str, int]:
        """Number of videos per subset name."""
        out: dict[str, int] = {}
        for v in self.videos.values():
            out[v.subset] = out.get(v.subset, 0) + 1
        return out

    def to_database(self) -> dict:
        """The ActionFormer-style ``{"database": ...}`` dict (with ``label_id``) that round-trips this set."""
        db = {}
        for v in self.videos.values():
            entry = {"subset": v.subset, "duration": v.duration_sec, "fps": v.fps}
            if v.frame_count is not None:
                entry["actual_frame_num"] = v.frame_count
            entry["annotations"] = [
                {"label": lab, "segment": [float(s), float(e)], "label_id": self._label_index.get(lab, -1)}
                for (s, e), lab in zip(v.segments_sec.tolist(), v.labels)
            ]
            db[v.video_id] = entry
        return {"version": "tal", "database": db}


def detect_format(data: object) -> str:
    """Name the layout of a parsed annotation JSON: ``activitynet``, ``actionformer`` or ``fineaction``.

    Raises :class:`AnnotationError` for anything else.
    """
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise AnnotationError(f"unknown annotation format: no 'database' mapping (top level: {keys})")
    if "taxonomy" in data:
        return "activitynet"
    for video in data["database"].values():
        annotations = video.get("annotations") if isinstance(video, dict) else None
        for ann in annotations if isinstance(annotations, list) else []:
            if isinstance(ann, dict):
                return "actionformer" if "label_id" in ann else "fineaction"
    return "fineaction"


def read_label_file(path: str | os.PathLike) -> list[str]:
    """A category file: one name per line, or ``id name`` / ``id,name`` / ``id<TAB>name`` lines, or a JSON
    list / ``{name: id}`` mapping. Returns ``label_names`` ordered by id."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path, AnnotationError, "category file")
        if isinstance(data, list):
            return [str(x) for x in data]
        if isinstance(data, dict):
            return [name for name, _ in sorted(data.items(), key=lambda kv: int(kv[1]))]
        raise AnnotationError(f"{path}: category JSON must be a list or a name -> id mapping")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"category file {path}: cannot read ({e})") from None
    pairs: list[tuple[int, str]] = []
    names: list[str] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        head, _, rest = line.replace(",", " ", 1).replace("\t", " ", 1).partition(" ")
        if head.isdigit() and rest.strip():
            pairs.append((int(head), rest.strip()))
        else:
            names.append(line)
    if pairs and names:
        raise AnnotationError(f"{path}: mixes 'id name' lines and bare names")
    return [n for _, n in sorted(pairs)] if pairs else names


def load_annotations(
    path: str | os.PathLike,
    label_file: str | os.PathLike | None = None,
    subsets: Iterable[str] | None = None,
) -> AnnotationSet:
    """Read FineAction, ActivityNet 1.3 or ActionFormer JSON into an :class:`AnnotationSet`.

    Strict: a duplicated key (two entries of one video), a non-positive or non-finite duration, a segment
    time that is not a finite number, a missing or ``null`` label or a non-numeric fps is an
    :class:`AnnotationError` naming the file, the video and the annotation. Dirty but well-formed segments
    (inverted, past the end) are kept: cleaning counts them, the evaluator scores them as the official code.

    Label ids: from ``label_file`` when given; else from the file's ``label_id`` fields when every instance has
    one (ActionFormer); else the **sorted** label names (FineAction has no ids). ``subsets`` keeps only those
    videos (the label map is still built from the whole file, so ids do not depend on the split).
    """
    path = Path(path)
    data = read_json(path, AnnotationError, "annotation file", unique_keys=True)
    try:
        fmt = detect_format(data)
    except AnnotationError as e:
        raise AnnotationError(f"{path}: {e}") from None

    videos: dict[str, VideoAnnotation] = {}
    ids_in_file: dict[str, int] = {}
    for video_id, entry in data["database"].items():
        videos[video_id] = _parse_video(path, str(video_id), entry, ids_in_file)

    if label_file is not None:
        label_names = read_label_file(label_file)
        known = set(label_names)
        missing = sorted({lab for v in videos.values() for lab in v.labels} - known)
        if missing:
            raise AnnotationError(f"{path}: labels {missing[:5]} are not in the category file {label_file}")
    elif fmt == "actionformer" and ids_in_file:
        label_names = _names_from_ids(path, ids_in_file)
    else:
        label_names = sorted({lab for v in videos.values() for lab in v.labels})

    out = AnnotationSet(videos, label_names, source=str(path))
    return out.subset(*subsets) if subsets is not None else out


def _number(x: object) -> float | None:
    """``x`` as a float when it is a JSON number (not a bool, not a string), else ``None``."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _parse_video(path: Path, video_id: str, entry: object, ids_in_file: dict[str, int]) -> VideoAnnotation:
    where = f"{path}: video {video_id!r}"
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: entry is a {type(entry).__name__}, not a mapping")
    duration = _number(entry.get("duration"))
    if duration is None:
        raise AnnotationError(f"{where}: missing or non-numeric 'duration' ({entry.get('duration')!r})")
    if not (np.isfinite(duration) and duration > 0):
        raise AnnotationError(f"{where}: 'duration' must be a positive number of seconds, got {duration}")
    annotations = entry.get("annotations", [])
    if not isinstance(annotations, list):
        raise AnnotationError(f"{where}: 'annotations' must be a list, got a {type(annotations).__name__}")
    segments, labels = [], []
    for k, ann in enumerate(annotations):
        segment = ann.get("segment") if isinstance(ann, dict) else None
        times = [_number(x) for x in segment] if isinstance(segment, list) else []
        if len(times) != 2 or None in times:
            raise AnnotationError(
                f"{where}: annotation {k} needs 'segment': [start, end] in seconds, got {segment!r}"
            )
        if not all(np.isfinite(times)):
            raise AnnotationError(f"{where}: annotation {k} has a non-finite time {segment!r}")
        label = ann.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
            raise AnnotationError(f"{where}: annotation {k} needs a 'label' (a name), got {label!r}")
        label = str(label)
        if "label_id" in ann:
            lid = ann["label_id"]
            if isinstance(lid, bool) or not isinstance(lid, int):
                raise AnnotationError(f"{where}: annotation {k}: 'label_id' must be an integer, got {lid!r}")
            if ids_in_file.setdefault(label, lid) != lid:
                raise AnnotationError(f"{where}: label {label!r} has ids {ids_in_file[label]} and {lid}")
        segments.append(times)
        labels.append(label)
    fps = entry.get("fps")
    if fps is not None and _number(fps) is None:
        raise AnnotationError(f"{where}: 'fps' must be a number, got {fps!r}")
    frames = entry.get("actual_frame_num", entry.get("num_frames"))
    if frames is not None and _number(frames) is None:
        raise AnnotationError(f"{where}: 'actual_frame_num' must be a number, got {frames!r}")
    return VideoAnnotation(
        video_id=video_id,
        subset=str(entry.get("subset", "")),
        duration_sec=duration,
        segments_sec=np.array(segments, dtype=np.float64).reshape(-1, 2),
        labels=labels,
        fps=float(fps) if fps is not None else None,
        frame_count=int(frames) if frames is not None else None,
    )


def _names_from_ids(path: Path, ids: dict[str, int]) -> list[str]:
    by_id: dict[int, str] = {}
    for name, i in ids.items():
        if by_id.setdefault(i, name) != name:
            raise AnnotationError(f"{path}: label_id {i} is used by {by_id[i]!r} and {name!r}")
    n = max(by_id) + 1
    # ids may be sparse (a class absent from this file); name the gaps so indices stay aligned
    return [by_id.get(i, f"__unused_{i}") for i in range(n)]


def copy_video(v: VideoAnnotation, **changes) -> VideoAnnotation:
    """A copy of ``v`` with fields replaced (segments/labels arrays are copied)."""
    changes.setdefault("segments_sec", v.segments_sec.copy())
    changes.setdefault("labels", list(v.labels))
    return replace(v, **changes)


def load_ground_truth(path: str | os.PathLike, subset: str | None = "validation") -> AnnotationSet:
    """Ground truth of one subset (``None``: all videos); an empty subset is an error listing the subsets."""
    if subset is None:
        return load_annotations(path)
    everything = load_annotations(path)
    gt = everything.subset(subset)
    if len(gt) == 0:
        raise AnnotationError(
            f"{path}: no video in subset {subset!r}; subsets in the file: {everything.subsets()}"
        )
    return gt


def video_label(video: VideoAnnotation) -> str | None:
    """The video's label: its most frequent instance label; ties go to the label covering more seconds, then
    the smaller name. ``None`` for a video without instances.

    89% of FineAction videos carry a single label, so the two-stage system classifies whole videos and gives
    every proposal of a video the video's classes.
    """
    if not video.labels:
        return None
    counts = Counter(video.labels)
    seconds: Counter = Counter()
    for (s, e), lab in zip(video.segments_sec.tolist(), video.labels):
        seconds[lab] += e - s
    return min(counts, key=lambda lab: (-counts[lab], -seconds[lab], lab))


def video_labels(ann: AnnotationSet) -> dict[str, str | None]:
    """``video_id -> video label name`` (see :func:`video_label`; ``None`` for a video without instances)."""
    return {v.video_id: video_label(v) for v in ann}
