"""Video classifiers over whole feature sequences (TSN consensus, NeXtVLAD, attention pooling) and test-time
augmentation over temporal crops. The ensemble of their class scores is :mod:`tal.models.classifier.ensemble`
(``python -m tal.models.classifier.ensemble``; not imported here, so running it as a module stays clean)."""

from .heads import (
    HEADS,
    AttentionHead,
    ContextGating,
    NeXtVLADHead,
    TSNHead,
    build_head,
    context_gating,
    masked_mean,
    nextvlad_aggregate,
    segment_means,
)
from .losses import classification_loss, probabilities
from .module import ClassifierModule
from .targets import multi_hot_targets, video_label_targets
from .tta import crop_batch, temporal_crops, tta_probs

__all__ = [
    "HEADS",
    "AttentionHead",
    "ClassifierModule",
    "ContextGating",
    "NeXtVLADHead",
    "TSNHead",
    "build_head",
    "classification_loss",
    "context_gating",
    "crop_batch",
    "masked_mean",
    "multi_hot_targets",
    "nextvlad_aggregate",
    "probabilities",
    "segment_means",
    "temporal_crops",
    "tta_probs",
    "video_label_targets",
]
