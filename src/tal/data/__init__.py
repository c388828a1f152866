"""Data layer: annotations, cleaning, feature stores, datasets, the DataModule and the synthetic data set."""

from tal.data.annotations import (
    AnnotationError,
    AnnotationSet,
    VideoAnnotation,
    detect_format,
    load_annotations,
    read_label_file,
)
from tal.data.cleaning import (
    CleaningReport,
    Clip,
    class_balanced_clips,
    clean_segments,
    drop_videos_without_features,
    relabel_to_video_label,
    remove_short_instances,
    video_label,
    video_labels,
)
from tal.data.datamodule import TALDataModule
from tal.data.datasets import FeatureDataset, collate_batch, truncate_segments
from tal.data.features import ConcatStore, FeatureError, FeatureStore, resize_features
from tal.data.timeaxis import grid_axis, idx_to_sec, sec_to_idx, snippet_axis

__all__ = [
    "AnnotationError",
    "AnnotationSet",
    "CleaningReport",
    "Clip",
    "ConcatStore",
    "FeatureDataset",
    "FeatureError",
    "FeatureStore",
    "TALDataModule",
    "VideoAnnotation",
    "class_balanced_clips",
    "clean_segments",
    "collate_batch",
    "detect_format",
    "drop_videos_without_features",
    "grid_axis",
    "idx_to_sec",
    "load_annotations",
    "read_label_file",
    "relabel_to_video_label",
    "remove_short_instances",
    "resize_features",
    "sec_to_idx",
    "snippet_axis",
    "truncate_segments",
    "video_label",
    "video_labels",
]
