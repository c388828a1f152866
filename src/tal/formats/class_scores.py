"""Video-level class scores: what a video classifier (or an ensemble of them) hands to fusion.

File ``class_scores_{split}.json``::

    {"version": "tal", "label_names": [name, ...], "results": {video_id: [p_0, ..., p_{C-1}], ...}}

one probability per label of ``label_names``, in that order, for every video. Read and written only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tal.formats._json import read_json
from tal.utils.io import atomic_write_json

__all__ = ["ClassScores", "ClassScoresError", "load_class_scores", "write_class_scores"]


class ClassScoresError(ValueError):
    """A class-scores file or set is malformed; the message names the file / video and the problem."""


@dataclass
class ClassScores:
    """Class probabilities of many videos.

    Attributes:
        video_ids: ``V`` video names; row ``i`` of ``probs`` belongs to ``video_ids[i]``.
        probs: ``(V, C)`` float64, finite, in ``[0, 1]``.
        label_names: the ``C`` class names of the columns.
    """

    video_ids: list[str]
    probs: np.ndarray
    label_names: list[str]

    def __post_init__(self) -> None:
        self.video_ids = [str(v) for v in self.video_ids]
        self.label_names = [str(n) for n in self.label_names]
        self.probs = np.asarray(self.probs, dtype=np.float64).reshape(len(self.video_ids), -1)
        if self.probs.shape[1] != len(self.label_names):
            raise ClassScoresError(
                f"class scores: {self.probs.shape[1]} columns but {len(self.label_names)} label names"
            )
        if len(set(self.video_ids)) != len(self.video_ids):
            dup = next(v for v in self.video_ids if self.video_ids.count(v) > 1)
            raise ClassScoresError(f"class scores: video {dup!r} appears twice")
        bad = ~(np.isfinite(self.probs) & (self.probs >= 0) & (self.probs <= 1)).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ClassScoresError(
                f"video {self.video_ids[row]!r}: class probabilities must be finite and in [0, 1] "
                f"({int(bad.sum())} such videos)"
            )
        self._row = {v: i for i, v in enumerate(self.video_ids)}

    def __len__(self) -> int:
        return len(self.video_ids)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._row

    def __getitem__(self, video_id: str) -> np.ndarray:
        """``(C,)`` probabilities of one video."""
        return self.probs[self._row[video_id]]

    def for_videos(self, video_ids: Sequence[str]) -> ClassScores:
        """The rows of ``video_ids`` (all must be present), in that order."""
        missing = [v for v in video_ids if v not in self._row]
        if missing:
            raise ClassScoresError(f"class scores: no row for {len(missing)} videos, e.g. {missing[0]!r}")
        return ClassScores(list(video_ids), self.probs[[self._row[v] for v in video_ids]], self.label_names)

    def to_json(self, version: str = "tal") -> dict:
        return {
            "version": version,
            "label_names": list(self.label_names),
            "results": {v: p for v, p in zip(self.video_ids, self.probs.tolist())},
        }

    @classmethod
    def from_json(cls, data: object, source: str = "class scores") -> ClassScores:
        if not isinstance(data, dict) or not isinstance(data.get("label_names"), list):
            raise ClassScoresError(f"{source}: expected a mapping with a 'label_names' list")
        if not isinstance(data.get("results"), dict):
            raise ClassScoresError(f"{source}: expected a 'results' mapping of video -> probabilities")
        names = data["label_names"]
        rows = []
        for vid, probs in data["results"].items():
            if not isinstance(probs, list) or len(probs) != len(names):
                raise ClassScoresError(
                    f"{source}: video {vid!r}: expected a list of {len(names)} probabilities (one per label)"
                )
            rows.append(probs)
        try:
            probs = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
        except (TypeError, ValueError):
            raise ClassScoresError(f"{source}: probabilities must be numbers") from None
        try:
            return cls(list(data["results"]), probs, names)
        except ClassScoresError as e:
            raise ClassScoresError(f"{source}: {e}") from None


def load_class_scores(path: str | os.PathLike) -> ClassScores:
    """Read a ``class_scores_{split}.json`` file."""
    return ClassScores.from_json(read_json(path, ClassScoresError, "class scores file"), source=str(path))


def write_class_scores(path: str | os.PathLike, scores: ClassScores) -> Path:
    """Write ``scores`` atomically."""
    return atomic_write_json(path, scores.to_json())
