"""Timeline of one video: ground truth against the top detections over time, one row per class.

``python -m tal.plot GT.json DETECTIONS.json --videos v1 v2 --out timelines/`` writes ``timelines/<video>.png``;
``tal.detect`` draws the same picture without ground truth. In each class row the ground truth instances are
black bars in the upper half and the detections shaded bars in the lower half, darker for higher scores (the
colour bar gives the scale); the strongest detections are drawn on top. Proposals (no labels) get one row.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tal.formats.annotations import VideoAnnotation
from tal.formats.results import Predictions
from tal.utils.io import atomic_write_bytes

__all__ = ["PROPOSALS_ROW", "TimelineRow", "plot_timeline", "timeline_rows"]

#: the row name of class-agnostic predictions (proposals)
PROPOSALS_ROW = "(proposals)"


@dataclass
class TimelineRow:
    """One class of a timeline: ground truth ``(N, 2)`` and detections ``(K, 2)`` in seconds, scores ``(K,)``
    sorted ascending (so the strongest is drawn last, on top)."""

    label: str
    gt_sec: np.ndarray
    det_sec: np.ndarray
    det_scores: np.ndarray


def timeline_rows(
    predictions: Predictions, video_id: str, ground_truth: VideoAnnotation | None = None, top_k: int = 20
) -> list[TimelineRow]:
    """The rows of ``video_id``'s timeline: its ``top_k`` best predictions, split by class, and its ground truth.

    One row per class present in the ground truth or among the top predictions; classes with ground truth come
    first, in order of their first instance in time, then the others by their best score.
    """
    preds = predictions.for_videos([video_id])
    order = np.argsort(-preds.scores, kind="stable")[:top_k]
    if preds.has_labels:
        det_labels = [preds.label_names[i] for i in preds.label_idx[order]]
    else:
        det_labels = [PROPOSALS_ROW] * len(order)
    gt_labels = list(ground_truth.labels) if ground_truth is not None else []
    gt_segs = ground_truth.segments_sec if ground_truth is not None else np.zeros((0, 2))
    if not preds.has_labels:  # proposals are class-agnostic: every instance goes in the one row
        gt_labels = [PROPOSALS_ROW] * len(gt_labels)
    first_gt: dict[str, float] = {}
    for (start, _), lab in zip(gt_segs.tolist(), gt_labels):
        first_gt[lab] = min(first_gt.get(lab, np.inf), start)
    best: dict[str, float] = {}
    for score, lab in zip(preds.scores[order].tolist(), det_labels):
        best[lab] = max(best.get(lab, -np.inf), score)
    names = sorted(first_gt, key=lambda n: (first_gt[n], n))
    names += sorted((n for n in best if n not in first_gt), key=lambda n: (-best[n], n))
    rows = []
    for name in names:
        gt = gt_segs[[lab == name for lab in gt_labels]] if len(gt_labels) else np.zeros((0, 2))
        pick = order[[lab == name for lab in det_labels]] if len(order) else order
        pick = pick[np.argsort(preds.scores[pick], kind="stable")]
        rows.append(TimelineRow(name, gt.reshape(-1, 2), preds.segments_sec[pick], preds.scores[pick]))
    return rows


def plot_timeline(
    path: str | os.PathLike,
    video_id: str,
    predictions: Predictions,
    ground_truth: VideoAnnotation | None = None,
    duration_sec: float | None = None,
    top_k: int = 20,
    title: str | None = None,
) -> Path:
    """Write the timeline PNG of ``video_id`` (see the module docstring) to ``path``, atomically.

    ``duration_sec`` sets the time axis (default: the ground truth's duration, else the last segment end).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    rows = timeline_rows(predictions, video_id, ground_truth, top_k)
    if duration_sec is None:
        duration_sec = ground_truth.duration_sec if ground_truth is not None else None
    if duration_sec is None:
        ends = [r.gt_sec[:, 1].max() for r in rows if len(r.gt_sec)] + [
            r.det_sec[:, 1].max() for r in rows if len(r.det_sec)
        ]
        duration_sec = max(ends, default=1.0)
    cmap = ListedColormap(colormaps["Blues"](np.linspace(0.15, 1.0, 256)))  # score 0 still visible
    norm = Normalize(0.0, 1.0)
    n = max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.42 * n))
    for r, row in enumerate(rows):
        y = n - 1 - r  # first row on top
        if len(row.gt_sec):
            spans = [(s, e - s) for s, e in row.gt_sec.tolist()]
            ax.broken_barh(spans, (y + 0.52, 0.36), facecolors="black")
        for (s, e), score in zip(row.det_sec.tolist(), row.det_scores.tolist()):
            color = cmap(norm(min(max(score, 0.0), 1.0)))
            ax.broken_barh(
                [(s, e - s)], (y + 0.1, 0.36), facecolors=[color], edgecolors=["0.3"], linewidths=0.3
            )
    ax.set_yticks([n - 1 - r + 0.5 for r in range(len(rows))], [row.label for row in rows], fontsize=8)
    ax.set_ylim(0, n)
    ax.set_xlim(0, duration_sec)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    kind = "ground truth (black, top) vs " if ground_truth is not None else ""
    ax.set_title(title or f"{video_id}: {kind}top-{top_k} predictions (shaded by score)", fontsize=9)
    if not rows:
        ax.text(0.5, 0.5, "no predictions", transform=ax.transAxes, ha="center", va="center")
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="score", fraction=0.03, pad=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tal.plot", description=__doc__.splitlines()[0])
    p.add_argument(
        "ground_truth", help="annotation JSON (FineAction, ActivityNet 1.3 or ActionFormer layout)"
    )
    p.add_argument("predictions", help="detections or proposals JSON in the official ActivityNet format")
    p.add_argument(
        "--videos", nargs="+", default=None, help="video ids (default: the first 4 with ground truth)"
    )
    p.add_argument("--out", default="timelines", help="output folder of <video_id>.png (default: timelines)")
    p.add_argument("--top-k", type=int, default=20, help="predictions shown per video (default 20)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.markup import escape

    from tal.formats.annotations import AnnotationError, load_annotations
    from tal.formats.results import ResultsError, load_results

    args = build_parser().parse_args(argv)
    console = Console()
    try:
        gt = load_annotations(args.ground_truth)
        preds = load_results(args.predictions)
    except (AnnotationError, ResultsError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    videos = args.videos or [v for v in preds.video_ids if v in gt.videos][:4]
    unknown = [v for v in videos if v not in gt.videos and v not in preds.video_ids]
    if unknown or not videos:
        what = f"videos {unknown} are in neither file" if unknown else "no video is in both files"
        console.print(f"[red]error:[/] {escape(what)}", soft_wrap=True)
        return 2
    for vid in videos:
        truth = gt.videos.get(vid)
        out = plot_timeline(Path(args.out) / f"{vid}.png", vid, preds, truth, top_k=args.top_k)
        console.print(f"wrote {escape(str(out))}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
