"""Video classification losses: cross-entropy on the video label (single-label, the default) or binary
cross-entropy over all instance labels (multi-label)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from .targets import IGNORE, multi_hot_targets, video_label_targets

__all__ = ["classification_loss", "probabilities"]


def classification_loss(
    logits: Tensor,
    labels: Sequence[Tensor],
    segments: Sequence[Tensor],
    multi_label: bool = False,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Mean loss of a batch.

    Args:
        logits: ``(B, C)``.
        labels, segments: the batch's per-item instance label ids ``(N_i,)`` and segments ``(N_i, 2)``.
        multi_label: BCE with logits against the multi-hot of each item's labels (an item without instances
            is an all-negative target); otherwise cross-entropy on :func:`video_label_targets`, items without
            instances ignored (a batch of only such items gives a zero loss that keeps the graph).
        label_smoothing: cross-entropy label smoothing (single-label only).
    """
    if multi_label:
        target = multi_hot_targets(labels, logits.shape[1]).to(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
    target = video_label_targets(labels, segments).to(logits.device)
    if bool((target == IGNORE).all()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE, label_smoothing=label_smoothing)


def probabilities(logits: Tensor, multi_label: bool = False) -> Tensor:
    """Class probabilities of ``logits (B, C)``: sigmoid (multi-label) or softmax over classes."""
    return logits.sigmoid() if multi_label else logits.softmax(-1)
