"""What to tell a user before trusting a number: degenerate segments, no ground truth, ids that do not match.

:func:`diagnose` looks at a ground-truth subset and a prediction set together. Its ``errors`` make any number
meaningless (no ground-truth instance; no predicted video in the ground truth, e.g. a ``v_`` prefix on one side
only): the CLI stops on them. Its ``warnings`` say what shapes the official number (degenerate segments, which
the official protocol scores as described in :mod:`tal.eval.detection`; predictions on videos outside the
subset, which are false positives).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tal.formats.annotations import AnnotationSet
from tal.formats.results import Predictions

__all__ = ["Diagnosis", "degenerate_counts", "diagnose"]


def degenerate_counts(segments: np.ndarray) -> dict[str, int]:
    """Counts of degenerate rows of ``segments (N, 2)``: ``NaN`` (a NaN time), ``zero-length`` (end == start)
    and ``inverted`` (end < start). Only non-zero counts are returned."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    nan = np.isnan(segments).any(axis=1)
    length = segments[:, 1] - segments[:, 0]
    counts = {
        "NaN": int(nan.sum()),
        "zero-length": int((length == 0).sum()),
        "inverted": int((length < 0).sum()),
    }
    return {k: v for k, v in counts.items() if v}


@dataclass
class Diagnosis:
    """Findings about one (ground truth, predictions) pair; ``errors`` and ``warnings`` are sentences."""

    gt_videos: int
    gt_instances: int
    pred_videos: int
    pred_rows: int
    pred_videos_in_gt: int
    gt_degenerate: dict[str, int] = field(default_factory=dict)
    pred_degenerate: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _id_hint(gt_ids: list[str], pred_ids: list[str]) -> str:
    gt_set = set(gt_ids)
    for vid in pred_ids[:1000]:
        for candidate in (f"v_{vid}", vid[2:] if vid.startswith("v_") else None):
            if candidate and candidate in gt_set:
                return f" (prediction {vid!r} matches ground truth {candidate!r}: a 'v_' prefix differs)"
    return f" (e.g. predictions {pred_ids[:3]} vs ground truth {gt_ids[:3]})"


def diagnose(ground_truth: AnnotationSet, predictions: Predictions, what: str = "predictions") -> Diagnosis:
    """Check ``predictions`` against the ground-truth subset ``ground_truth`` (see the module docstring)."""
    gt_ids = list(ground_truth.videos)
    gt_segments = (
        np.concatenate([v.segments_sec for v in ground_truth]) if len(ground_truth) else np.zeros((0, 2))
    )
    with_rows = sorted(set(np.asarray(predictions.video_idx).tolist()))
    pred_ids = [predictions.video_ids[i] for i in with_rows]
    gt_set = set(gt_ids)
    in_gt = sum(v in gt_set for v in pred_ids)
    d = Diagnosis(
        gt_videos=len(gt_ids),
        gt_instances=len(gt_segments),
        pred_videos=len(pred_ids),
        pred_rows=len(predictions),
        pred_videos_in_gt=in_gt,
        gt_degenerate=degenerate_counts(gt_segments),
        pred_degenerate=degenerate_counts(predictions.segments_sec),
    )
    if d.gt_instances == 0:
        d.errors.append(
            f"the ground truth has no instance ({d.gt_videos} videos): there is nothing to score against; "
            "check the subset"
        )
    if d.pred_rows == 0:
        d.errors.append(f"the {what} hold no prediction")
    elif in_gt == 0 and d.gt_videos:
        d.errors.append(
            f"none of the {d.pred_videos} videos of the {what} is in the ground truth"
            + _id_hint(gt_ids, pred_ids)
        )
    elif in_gt < d.pred_videos:
        d.warnings.append(
            f"{d.pred_videos - in_gt} of {d.pred_videos} predicted videos are not in the ground-truth subset: "
            "their predictions count as false positives"
        )
    for side, counts in (("ground truth", d.gt_degenerate), (what, d.pred_degenerate)):
        if counts:
            listed = ", ".join(f"{n} {kind}" for kind, n in counts.items())
            d.warnings.append(
                f"degenerate segments in the {side}: {listed}; they affect the official number (a zero union "
                "gives tIoU NaN, a detection hit; see --protocol strict)"
            )
    return d
