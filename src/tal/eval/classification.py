"""Video-level classification: the video label (most frequent instance label) and top-k accuracy."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy

from tal.formats.annotations import AnnotationSet, video_label
from tal.formats.class_scores import ClassScores

__all__ = ["video_label_ids", "topk_accuracy", "split_topk_accuracy"]


def video_label_ids(ground_truth: AnnotationSet) -> dict[str, int]:
    """Label id of the video label of each video with instances (:func:`tal.formats.video_label`: the most
    frequent instance label); videos without instances are left out."""
    return {
        video.video_id: ground_truth.label_id(video_label(video))
        for video in ground_truth
        if video.num_instances
    }


def topk_accuracy(
    class_scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 2, 3, 5)
) -> dict[str, float]:
    """Top-k accuracy of video classification.

    Args:
        class_scores: ``(V, C)`` scores or probabilities.
        labels: ``(V,)`` long, the video label of each row.
        ks: the k values; those larger than ``C`` are skipped.

    Returns:
        ``{"top1": ..., "top2": ...}`` fractions in ``[0, 1]``.
    """
    class_scores = torch.as_tensor(class_scores, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if class_scores.ndim != 2 or labels.shape != class_scores.shape[:1]:
        raise ValueError(
            f"class_scores must be (V, C) and labels (V,), got {tuple(class_scores.shape)} and {tuple(labels.shape)}"
        )
    num_classes = class_scores.shape[1]
    return {
        f"top{k}": float(
            multiclass_accuracy(class_scores, labels, num_classes=num_classes, top_k=k, average="micro")
        )
        for k in ks
        if k <= num_classes
    }


def split_topk_accuracy(
    ground_truth: AnnotationSet,
    scores: ClassScores,
    video_ids: list[str] | None = None,
    ks: tuple[int, ...] = (1, 2, 3, 5),
) -> dict[str, float]:
    """Top-k accuracy of ``scores`` over the labelled videos of a split (``video_ids``, default: every video of
    ``ground_truth``): a labelled video missing from ``scores`` counts as a miss, so the number is over the
    split, not over what was predicted. Exact fractions ``hits / labelled videos``; ``k > C`` left out."""
    labels = video_label_ids(ground_truth)
    ids = list(ground_truth.videos) if video_ids is None else list(video_ids)
    labelled = {v: labels[v] for v in ids if v in labels}
    if not labelled:
        raise ValueError("no video of the split has a video label (no instances)")
    seen = [v for v in scores.video_ids if v in labelled]
    num_classes = len(scores.label_names)
    acc = {f"top{k}": 0.0 for k in ks if k <= num_classes}
    if seen:
        target = torch.tensor([labelled[v] for v in seen])
        acc = topk_accuracy(torch.from_numpy(scores.for_videos(seen).probs), target, ks)
    return {k: round(v * len(seen)) / len(labelled) for k, v in acc.items()}
