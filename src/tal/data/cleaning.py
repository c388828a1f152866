"""Data cleaning: dirty segments, duplicates, videos without features, video relabel, class-balanced resampling
of training clips, and removal of instances shorter than a grid cell.

Every function returns what it changed in a :class:`CleaningReport`; nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tal.formats.annotations import AnnotationSet, VideoAnnotation, copy_video, video_label


@dataclass
class CleaningReport:
    """Counts of what cleaning dropped or changed, with a few example video ids per reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, video_id: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[reason] += n
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples and video_id not in ex:
            ex.append(video_id)

    def merge(self, other: CleaningReport) -> CleaningReport:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            ex = self.examples.setdefault(reason, [])
            ex.extend(v for v in other.examples.get(reason, []) if v not in ex)
            del ex[self.max_examples :]
        return self

    def __getitem__(self, reason: str) -> int:
        return self.counts.get(reason, 0)

    def as_dict(self) -> dict:
        return {r: {"count": n, "examples": self.examples.get(r, [])} for r, n in sorted(self.counts.items())}

    def table(self, title: str = "data cleaning"):
        """A ``rich.table.Table`` of the report (every string escaped: ids and paths may hold ``[...]``)."""
        from rich.markup import escape
        from rich.table import Table

        t = Table(title=escape(title))
        t.add_column("what")
        t.add_column("count", justify="right")
        t.add_column("e.g. videos")
        for reason, n in sorted(self.counts.items()):
            t.add_row(escape(reason), str(n), escape(", ".join(self.examples.get(reason, []))))
        if not self.counts:
            t.add_row("nothing dropped or changed", "0", "")
        return t


def clean_segments(
    ann: AnnotationSet, clip_tolerance_sec: float = 1.0, report: CleaningReport | None = None
) -> tuple[AnnotationSet, CleaningReport]:
    """Drop dirty instances and exact duplicates; clip small overruns.

    Dropped: ``end <= start`` (``inverted or empty segment``), ``start >= duration`` (``starts after video end``),
    ``end > duration + clip_tolerance_sec`` (``ends after video end``), and a second instance with the same label
    and segment (``duplicate instance``). Clipped: ``start < 0`` to 0 and ``end`` within the tolerance past the
    duration to the duration. Two *different* labels on one segment are kept (THUMOS has 361 such pairs).
    """
    report = report if report is not None else CleaningReport()
    out = []
    for v in ann:
        keep_seg, keep_lab, seen = [], [], set()
        for (s, e), lab in zip(v.segments_sec.tolist(), v.labels):
            if e <= s:
                report.add("inverted or empty segment", v.video_id)
                continue
            if s >= v.duration_sec:
                report.add("starts after video end", v.video_id)
                continue
            if e > v.duration_sec + clip_tolerance_sec:
                report.add("ends after video end (beyond tolerance)", v.video_id)
                continue
            if s < 0:
                report.add("start clipped to 0", v.video_id)
                s = 0.0
            if e > v.duration_sec:
                report.add("end clipped to duration", v.video_id)
                e = v.duration_sec
            key = (round(s, 6), round(e, 6), lab)
            if key in seen:
                report.add("duplicate instance", v.video_id)
                continue
            seen.add(key)
            keep_seg.append((s, e))
            keep_lab.append(lab)
        out.append(copy_video(v, segments_sec=np.array(keep_seg).reshape(-1, 2), labels=keep_lab))
    return ann.with_videos(out), report


def drop_videos_without_features(
    ann: AnnotationSet, available: Iterable[str], report: CleaningReport | None = None
) -> tuple[AnnotationSet, CleaningReport]:
    """Keep only videos whose id is in ``available`` (the feature store's ids); count the rest."""
    report = report if report is not None else CleaningReport()
    available = set(available)
    kept = []
    for v in ann:
        if v.video_id in available:
            kept.append(v)
        else:
            report.add("video without features", v.video_id)
    return ann.with_videos(kept), report


def remove_short_instances(
    ann: AnnotationSet, length: int, report: CleaningReport | None = None
) -> tuple[AnnotationSet, CleaningReport]:
    """Drop instances shorter than one cell of an ``length``-cell grid (``duration / length`` seconds).

    For the dense (BMN) branch only: such instances cannot be represented on the grid.
    """
    report = report if report is not None else CleaningReport()
    out = []
    for v in ann:
        min_len = v.duration_sec / length
        keep = (v.segments_sec[:, 1] - v.segments_sec[:, 0]) >= min_len
        report.add(f"shorter than duration/{length}", v.video_id, int((~keep).sum()))
        out.append(
            copy_video(v, segments_sec=v.segments_sec[keep], labels=[l for l, k in zip(v.labels, keep) if k])
        )
    return ann.with_videos(out), report


@dataclass(frozen=True)
class Clip:
    """A training item: a window ``[t_start_sec, t_end_sec]`` of one video (the whole video by default)."""

    video_id: str
    t_start_sec: float
    t_end_sec: float


def whole_video_clips(ann: AnnotationSet) -> list[Clip]:
    return [Clip(v.video_id, 0.0, v.duration_sec) for v in ann]


def class_balanced_clips(
    ann: AnnotationSet,
    target_quantile: float = 0.5,
    max_extra_per_class: int = 200,
    context: tuple[float, float] = (1.0, 4.0),
    seed: int = 0,
) -> tuple[list[Clip], CleaningReport]:
    """Extra training clips cropped around instances of rare classes (the class resampling of the FineAction 2021
    winning two-stage system).

    Classes with fewer instances than the ``target_quantile`` of the per-class counts get extra clips until they
    reach it (at most ``max_extra_per_class``). Each extra clip is centred on one instance of the class (drawn in
    turn) and extends it by ``uniform(*context)`` times its length on each side, clipped to the video.
    Returns only the extra clips; add them to :func:`whole_video_clips`.
    """
    rng = np.random.default_rng(seed)
    report = CleaningReport()
    by_class: dict[str, list[tuple[VideoAnnotation, float, float]]] = {}
    for v in ann:
        for (s, e), lab in zip(v.segments_sec.tolist(), v.labels):
            by_class.setdefault(lab, []).append((v, s, e))
    if not by_class:
        return [], report
    target = int(np.quantile([len(x) for x in by_class.values()], target_quantile))
    clips = []
    for lab in sorted(by_class):
        instances = by_class[lab]
        n_extra = min(max(target - len(instances), 0), max_extra_per_class)
        for k in range(n_extra):
            v, s, e = instances[k % len(instances)]
            pad_l, pad_r = rng.uniform(*context, size=2) * (e - s)
            clips.append(Clip(v.video_id, max(0.0, s - pad_l), min(v.duration_sec, e + pad_r)))
        report.add(f"extra clips for rare class {lab!r}", instances[0][0].video_id, n_extra)
    return clips, report


def relabel_to_video_label(ann: AnnotationSet, report: CleaningReport | None = None) -> AnnotationSet:
    """Give every instance its video's label (:func:`video_label`); count the instances that changed.

    FineAction videos are 89% single-label; relabelling removes rare label noise for the two-stage pipeline,
    whose class comes from a video-level classifier.
    """
    report = report if report is not None else CleaningReport()
    out = []
    for v in ann:
        lab = video_label(v)
        changed = sum(l != lab for l in v.labels)
        report.add("instance relabelled to the video label", v.video_id, changed)
        out.append(copy_video(v, labels=[lab] * len(v.labels)))
    return ann.with_videos(out)
