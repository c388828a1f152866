"""Fusion: class-agnostic proposals + video-level class scores -> detections (the two-stage system's last step).

Each proposal of a video takes the video's ``top_k`` classes; a (proposal, class) pair scores

* ``product``: ``s * p``
* ``sqrt``: ``sqrt(s * p)`` (ActionFormer and OpenTAD on ActivityNet / FineAction; the same ranking as
  ``product``, so the same mAP, but scores on the scale of the inputs)
* ``power``: ``s * p ** class_power`` (``class_power < 1`` trusts the proposal score more, ``> 1`` the class)

with ``s`` the proposal score and ``p`` the class probability; the ``max_per_video`` best pairs of each video
are kept (ties: proposal order, then class rank). Pure functions plus a CLI::

    python -m tal.fusion proposals_val.json class_scores_val.json detections_val.json --top-k 2 --rule sqrt
    python -m tal.fusion proposals_val.json annotations_gt.json detections_oracle.json --oracle

(``--oracle``: the classes are the ground-truth video labels of the annotation file, the ceiling of fusion.)
Videos of the proposals without class scores get no detections and are counted; videos with class scores but
no proposals are counted; neither is dropped silently.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tal.formats.annotations import AnnotationError, AnnotationSet, load_annotations, video_label
from tal.formats.class_scores import ClassScores, ClassScoresError, load_class_scores
from tal.formats.results import Predictions, ResultsError, load_results, write_results

__all__ = ["RULES", "FusionReport", "fuse", "fuse_scores", "fuse_video", "oracle_class_scores"]

RULES = ("product", "sqrt", "power")


@dataclass
class FusionReport:
    """What :func:`fuse` did: ``videos`` in the output (the proposals' videos), ``detections`` written, the
    proposal videos ``without_class_scores`` (they get no detections) and the class-score videos
    ``without_proposals`` (not in the output)."""

    videos: int = 0
    detections: int = 0
    without_class_scores: list[str] = field(default_factory=list)
    without_proposals: list[str] = field(default_factory=list)


def fuse_scores(
    proposal_scores: np.ndarray, class_probs: np.ndarray, rule: str = "sqrt", class_power: float = 1.0
) -> np.ndarray:
    """``(K, k)`` detection scores of ``K`` proposals ``proposal_scores (K,)`` (in ``[0, 1]`` for ``sqrt``)
    crossed with ``k`` classes ``class_probs (k,)`` under ``rule`` (see the module doc)."""
    s = np.asarray(proposal_scores, dtype=np.float64)[:, None]
    p = np.asarray(class_probs, dtype=np.float64)[None, :]
    if rule == "product":
        return s * p
    if rule == "sqrt":
        return np.sqrt(s * p)
    if rule == "power":
        return s * p**class_power
    raise ValueError(f"fusion rule must be one of {RULES}, got {rule!r}")


def fuse_video(
    segments_sec: np.ndarray,
    scores: np.ndarray,
    class_probs: np.ndarray,
    top_k: int = 2,
    rule: str = "sqrt",
    class_power: float = 1.0,
    max_per_video: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one video: its proposals ``segments_sec (K, 2)``, ``scores (K,)`` crossed with the
    ``top_k`` classes of ``class_probs (C,)`` (highest first, ties to the smaller id).

    Returns ``(segments_sec (M, 2), scores (M,), label_idx (M,))``, best first, ``M <= max_per_video``; equal
    scores keep proposal order, then class rank.
    """
    segments_sec = np.asarray(segments_sec, dtype=np.float64).reshape(-1, 2)
    classes = np.argsort(-np.asarray(class_probs, dtype=np.float64), kind="stable")[:top_k]
    fused = fuse_scores(scores, np.asarray(class_probs)[classes], rule, class_power)  # (K, k)
    flat = fused.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:max_per_video]  # row-major: proposal, then class rank
    proposal, rank = np.divmod(order, len(classes))
    return segments_sec[proposal], flat[order], classes[rank]


def fuse(
    proposals: Predictions,
    class_scores: ClassScores,
    top_k: int = 2,
    rule: str = "sqrt",
    class_power: float = 1.0,
    max_per_video: int = 100,
) -> tuple[Predictions, FusionReport]:
    """Detections of every video of ``proposals`` (:func:`fuse_video` with that video's class scores); label
    names are the class scores'. Returns the detections and a :class:`FusionReport`."""
    if rule not in RULES:
        raise ValueError(f"fusion rule must be one of {RULES}, got {rule!r}")
    if top_k < 1 or max_per_video < 1:
        raise ValueError(f"fusion needs top_k >= 1 and max_per_video >= 1, got {top_k}, {max_per_video}")
    if rule == "sqrt" and len(proposals) and proposals.scores.min() < 0:
        row = int(np.argmin(proposals.scores))
        raise ResultsError(
            f"video {proposals.video_ids[proposals.video_idx[row]]!r}: proposal score "
            f"{proposals.scores[row]} < 0; the sqrt rule needs scores in [0, 1]"
        )
    report = FusionReport(videos=len(proposals.video_ids))
    rows = []
    for vid, p in proposals.per_video():
        if vid not in class_scores:
            report.without_class_scores.append(vid)
            rows.append((vid, np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64)))
            continue
        rows.append(
            (
                vid,
                *fuse_video(
                    p.segments_sec, p.scores, class_scores[vid], top_k, rule, class_power, max_per_video
                ),
            )
        )
    in_proposals = set(proposals.video_ids)
    report.without_proposals = [v for v in class_scores.video_ids if v not in in_proposals]
    detections = Predictions.from_videos(rows, class_scores.label_names)
    report.detections = len(detections)
    return detections, report


def oracle_class_scores(ground_truth: AnnotationSet) -> ClassScores:
    """One-hot class scores of the ground-truth video labels (:func:`tal.formats.video_label`) of every video
    (all zeros for a video without instances): fusion's ceiling for given proposals."""
    probs = np.zeros((len(ground_truth), ground_truth.num_classes))
    for i, video in enumerate(ground_truth):
        label = video_label(video)
        if label is not None:
            probs[i, ground_truth.label_id(label)] = 1.0
    return ClassScores(list(ground_truth.videos), probs, ground_truth.label_names)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tal.fusion", description=__doc__.splitlines()[0])
    p.add_argument("proposals", help="proposals results JSON (proposals_{split}.json)")
    p.add_argument("class_scores", help="class_scores_{split}.json (with --oracle: an annotation JSON)")
    p.add_argument("out", help="detections results JSON to write (detections_{split}.json)")
    p.add_argument("--top-k", type=int, default=2, help="classes per proposal (default 2)")
    p.add_argument("--rule", choices=RULES, default="sqrt", help="score rule (default sqrt)")
    p.add_argument("--class-power", type=float, default=1.0, help="exponent of the class score (rule power)")
    p.add_argument("--max-per-video", type=int, default=100, help="detections kept per video (default 100)")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="classes from the ground-truth video labels of an annotation file",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.markup import escape

    args = build_parser().parse_args(argv)
    console = Console()
    try:
        proposals = load_results(args.proposals)
        if args.oracle:  # the ground truth of the proposals' videos (those missing are counted by fuse)
            ann = load_annotations(args.class_scores)
            wanted = set(proposals.video_ids)
            scores = oracle_class_scores(ann.with_videos(v for v in ann if v.video_id in wanted))
        else:
            scores = load_class_scores(args.class_scores)
        detections, report = fuse(
            proposals, scores, args.top_k, args.rule, args.class_power, args.max_per_video
        )
        write_results(args.out, detections)
    except (ResultsError, ClassScoresError, AnnotationError, ValueError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    console.print(
        f"fused {report.videos} videos into {report.detections} detections "
        f"(top-{args.top_k} classes, rule {args.rule}, at most {args.max_per_video} per video): "
        f"{escape(args.out)}",
        soft_wrap=True,
    )
    for what, videos in (
        ("videos of the proposals without class scores (no detections)", report.without_class_scores),
        ("videos with class scores but no proposals (not in the output)", report.without_proposals),
    ):
        if videos:
            console.print(f"[yellow]{len(videos)} {what}[/], e.g. {escape(videos[0])}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
