"""Classification targets from the standard batch (``batch["labels"]``, ``batch["segments"]``): the video
label of each item, or a multi-hot of all its instance labels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["IGNORE", "multi_hot_targets", "video_label_targets"]

#: target of an item without instances (ignored by the single-label loss)
IGNORE = -100


def video_label_targets(labels: Sequence[Tensor], segments: Sequence[Tensor]) -> Tensor:
    """``(B,)`` long: the most frequent label id of each item's instances, ties to the label covering more
    positions, then the smaller id (:func:`tal.formats.video_label` on the item, with label ids sorted like the
    names); :data:`IGNORE` for an item without instances.

    Args:
        labels: per item ``(N_i,)`` label ids; segments: per item ``(N_i, 2)`` ``[start, end]`` positions.
    """
    out = []
    for lab, seg in zip(labels, segments):
        lab = lab.detach().cpu().long().reshape(-1)
        if lab.numel() == 0:
            out.append(IGNORE)
            continue
        seg = seg.detach().cpu().double().reshape(-1, 2)
        ids, inverse = torch.unique(lab, return_inverse=True)  # ids sorted ascending
        counts = torch.bincount(inverse, minlength=len(ids))
        covered = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, inverse, seg[:, 1] - seg[:, 0])
        best = min(range(len(ids)), key=lambda i: (-int(counts[i]), -float(covered[i]), int(ids[i])))
        out.append(int(ids[best]))
    return torch.tensor(out, dtype=torch.long)


def multi_hot_targets(labels: Sequence[Tensor], num_classes: int) -> Tensor:
    """``(B, num_classes)`` float: 1 for every label id among each item's instances, else 0."""
    out = torch.zeros(len(labels), num_classes)
    for b, lab in enumerate(labels):
        out[b, lab.detach().cpu().long().reshape(-1)] = 1.0
    return out
