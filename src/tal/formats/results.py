"""Detections and proposals: flat prediction sets and the official ActivityNet results JSON.

Results JSON: ``{"version", "external_data", "results": {video_id: [{"segment": [s, e], "label": name,
"score": p}, ...]}}``; proposals are the same rows without ``label``. Times are seconds. Every stage of tal
writes and reads these files through this module only (``{detections|proposals}_{split}.json``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tal.formats._json import gc_paused, read_json
from tal.utils.io import atomic_write_json

__all__ = ["EXTERNAL_DATA", "VERSION", "Predictions", "ResultsError", "load_results", "write_results"]

VERSION = "tal"
#: what tal writes under ``external_data`` (the official format's field; tal's models use no external data)
EXTERNAL_DATA = {"used": False, "details": ""}


class ResultsError(ValueError):
    """A results file or prediction set is malformed; the message names the file / video and the problem."""


@dataclass
class Predictions:
    """Predictions of many videos as flat arrays; row ``i`` belongs to ``video_ids[video_idx[i]]``.

    Row order is the *input order* that breaks score ties in the evaluation (earlier row first).

    Attributes:
        video_ids: names of the videos the rows refer to.
        video_idx: ``(P,)`` int64 index into ``video_ids``.
        segments_sec: ``(P, 2)`` float64 ``[t_start_sec, t_end_sec]``.
        scores: ``(P,)`` float64.
        label_idx: ``(P,)`` int64 index into ``label_names``; ``None`` for proposals.
        label_names: class names the ``label_idx`` refer to; ``None`` for proposals.
    """

    video_ids: list[str]
    video_idx: np.ndarray
    segments_sec: np.ndarray
    scores: np.ndarray
    label_idx: np.ndarray | None = None
    label_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.video_idx = np.asarray(self.video_idx, dtype=np.int64).reshape(-1)
        self.segments_sec = np.asarray(self.segments_sec, dtype=np.float64).reshape(-1, 2)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.scores)
        if len(self.video_idx) != n or len(self.segments_sec) != n:
            raise ResultsError(
                f"predictions: {len(self.video_idx)} video indices, {len(self.segments_sec)} segments and "
                f"{n} scores; all must be equal"
            )
        if n and (self.video_idx.min() < 0 or self.video_idx.max() >= len(self.video_ids)):
            raise ResultsError(f"predictions: video_idx outside [0, {len(self.video_ids)})")
        if (self.label_idx is None) != (self.label_names is None):
            raise ResultsError("predictions: give both label_idx and label_names, or neither (proposals)")
        if self.label_idx is not None:
            self.label_idx = np.asarray(self.label_idx, dtype=np.int64).reshape(-1)
            if len(self.label_idx) != n:
                raise ResultsError(f"predictions: {len(self.label_idx)} labels for {n} rows")
            if n and (self.label_idx.min() < 0 or self.label_idx.max() >= len(self.label_names)):
                raise ResultsError(f"predictions: label_idx outside [0, {len(self.label_names)})")
        bad = ~(np.isfinite(self.scores) & np.isfinite(self.segments_sec).all(axis=1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ResultsError(
                f"video {self.video_ids[self.video_idx[row]]!r}: non-finite segment or score "
                f"{self.segments_sec[row].tolist()} / {self.scores[row]} ({int(bad.sum())} such rows)"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def has_labels(self) -> bool:
        return self.label_idx is not None

    @classmethod
    def from_videos(
        cls,
        rows: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
        label_names: Sequence[str] | None = None,
    ) -> Predictions:
        """Predictions from per-video arrays ``(video_id, segments_sec (K, 2), scores (K,), label_idx (K,) or
        None)``; rows keep the given order. ``label_names`` is required when labels are given. A video with
        ``K = 0`` is kept in ``video_ids`` (it has no rows)."""
        video_ids, idx, segs, scores, labels = [], [], [], [], []
        for vid, seg, score, lab in rows:
            seg = np.asarray(seg, dtype=np.float64).reshape(-1, 2)
            idx.append(np.full(len(seg), len(video_ids), dtype=np.int64))
            video_ids.append(str(vid))
            segs.append(seg)
            scores.append(np.asarray(score, dtype=np.float64).reshape(-1))
            if lab is not None:
                labels.append(np.asarray(lab, dtype=np.int64).reshape(-1))
        if labels and len(labels) != len(video_ids):
            raise ResultsError(f"predictions: labels given for {len(labels)} of {len(video_ids)} videos")
        return cls(
            video_ids,
            np.concatenate(idx) if idx else np.zeros(0, np.int64),
            np.concatenate(segs) if segs else np.zeros((0, 2)),
            np.concatenate(scores) if scores else np.zeros(0),
            np.concatenate(labels) if labels else None,
            list(label_names) if labels else None,
        )

    def per_video(self) -> Iterator[tuple[str, Predictions]]:
        """``(video_id, that video's predictions)`` for every video in ``video_ids`` order (rows in file order;
        a video without rows gives an empty set)."""
        order = np.argsort(self.video_idx, kind="stable")
        bounds = np.searchsorted(self.video_idx[order], np.arange(len(self.video_ids) + 1))
        for v, vid in enumerate(self.video_ids):
            yield (
                vid,
                self._take(order[bounds[v] : bounds[v + 1]], [vid], np.zeros(bounds[v + 1] - bounds[v])),
            )

    def for_videos(self, video_ids: Iterable[str]) -> Predictions:
        """The rows of ``video_ids`` only, re-indexed over that list (in its order); a listed video without rows
        is kept with none. Rows keep their relative order."""
        wanted = [str(v) for v in video_ids]
        new_index = {v: i for i, v in enumerate(wanted)}
        old_to_new = np.array([new_index.get(v, -1) for v in self.video_ids], dtype=np.int64)
        mapped = old_to_new[self.video_idx] if len(self) else np.zeros(0, np.int64)
        rows = np.flatnonzero(mapped >= 0)
        return self._take(rows, wanted, mapped[rows])

    def _take(self, rows: np.ndarray, video_ids: list[str], video_idx: np.ndarray) -> Predictions:
        return Predictions(
            video_ids,
            video_idx,
            self.segments_sec[rows],
            self.scores[rows],
            None if self.label_idx is None else self.label_idx[rows],
            self.label_names,
        )

    def to_results(self, version: str = VERSION) -> dict:
        """The official results JSON dict (rows grouped by video, input order kept within a video; every video
        of ``video_ids`` is listed, with ``[]`` when it has no rows)."""
        results: dict[str, list[dict]] = {vid: [] for vid in self.video_ids}
        segs, scores = self.segments_sec.tolist(), self.scores.tolist()
        labels = None if self.label_idx is None else [self.label_names[i] for i in self.label_idx.tolist()]
        for row, v in enumerate(self.video_idx.tolist()):
            entry = {"segment": segs[row], "score": scores[row]}
            if labels is not None:
                entry["label"] = labels[row]
            results[self.video_ids[v]].append(entry)
        return {"version": version, "external_data": dict(EXTERNAL_DATA), "results": results}

    @classmethod
    def from_results(cls, data: object, source: str = "results") -> Predictions:
        """Parse an official results dict. ``label`` is required on every row or on none (proposals).

        Times and scores must be JSON numbers (a string such as ``"0.5"`` is an error, not converted) and
        finite. The arrays are built per field, not per row, so a FineAction-sized file parses in a fraction
        of a second.
        """
        if not isinstance(data, dict):
            raise ResultsError(
                f"{source}: expected a mapping with a 'results' key, got a {type(data).__name__}"
            )
        if "results" not in data:
            raise ResultsError(f"{source}: no 'results' key (keys: {sorted(map(str, data))[:8]})")
        results = data["results"]
        if not isinstance(results, dict):
            raise ResultsError(f"{source}: 'results' must map video id -> list of predictions")
        video_ids = [str(v) for v in results]
        for vid, rows in results.items():
            if not isinstance(rows, list):
                raise ResultsError(f"{source}: video {vid!r}: expected a list of predictions")
        rows = [row for video_rows in results.values() for row in video_rows]
        counts = np.fromiter((len(r) for r in results.values()), dtype=np.int64, count=len(results))
        video_idx = np.repeat(np.arange(len(video_ids), dtype=np.int64), counts)
        try:
            segments = [row["segment"] for row in rows]
            scores = [row["score"] for row in rows]
            labels = [row["label"] for row in rows if "label" in row]
            seg_arr, score_arr = np.array(segments), np.array(scores)
        except (KeyError, TypeError, ValueError):  # ValueError: ragged segments such as [[0, 1], []]
            raise _row_error(results, source) from None
        if len(rows) and (seg_arr.dtype.kind not in "iuf" or seg_arr.shape != (len(rows), 2)):
            raise _row_error(results, source)
        if score_arr.dtype.kind not in "iuf" or score_arr.shape != (len(rows),):
            raise _row_error(results, source)
        if labels and len(labels) != len(rows):
            raise ResultsError(f"{source}: 'label' is on {len(labels)} of {len(rows)} predictions")
        label_names = label_idx = None
        if labels:
            names = np.array(labels)
            if names.dtype.kind != "U":
                names = np.array([str(x) for x in labels])
            uniq, label_idx = np.unique(names, return_inverse=True)
            label_names = uniq.tolist()
        try:
            return cls(video_ids, video_idx, seg_arr.reshape(-1, 2), score_arr, label_idx, label_names)
        except ResultsError as e:
            raise ResultsError(f"{source}: {e}") from None


def _row_error(results: dict, source: str) -> ResultsError:
    """The error naming the first malformed row (the slow path, taken only when the fast one failed)."""
    for vid, rows in results.items():
        for k, row in enumerate(rows):
            ok = isinstance(row, dict) and isinstance(row.get("segment"), list) and len(row["segment"]) == 2
            ok = ok and all(_is_number(x) for x in (*row["segment"], row.get("score")))
            if not ok:
                shown = repr(row) if len(repr(row)) < 120 else repr(row)[:117] + "..."
                return ResultsError(
                    f"{source}: video {vid!r}: prediction {k} needs 'segment': [start, end] and 'score' as "
                    f"numbers, got {shown}"
                )
    return ResultsError(f"{source}: malformed predictions")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_results(path: str | os.PathLike) -> Predictions:
    """Read an official results JSON file (detections or proposals)."""
    data = read_json(path, ResultsError, "results file")
    with gc_paused():
        return Predictions.from_results(data, source=str(path))


def write_results(path: str | os.PathLike, predictions: Predictions, version: str = VERSION) -> Path:
    """Write ``predictions`` as an official results JSON file, atomically."""
    return atomic_write_json(path, predictions.to_results(version=version))
