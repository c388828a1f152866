"""Data layer: cleaning, datasets, the DataModule and the synthetic data set, over the file formats of
:mod:`tal.formats` (re-exported here for notebooks: ``from tal.data import load_annotations``)."""

from tal.data.cleaning import (
    CleaningReport,
    Clip,
    class_balanced_clips,
    clean_segments,
    drop_videos_without_features,
    relabel_to_video_label,
    remove_short_instances,
)
from tal.data.datamodule import TALDataModule
from tal.data.datasets import FeatureDataset, collate_batch, truncate_segments
from tal.formats.annotations import (
    AnnotationError,
    AnnotationSet,
    VideoAnnotation,
    detect_format,
    load_annotations,
    read_label_file,
    video_label,
    video_labels,
)
from tal.formats.store import ConcatStore, FeatureError, FeatureStore, resize_features
from tal.ops.timeaxis import (
    grid_axis,
    idx_to_sec,
    positions_to_sec,
    sec_to_idx,
    sec_to_positions,
    snippet_axis,
)

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
    "positions_to_sec",
    "read_label_file",
    "relabel_to_video_label",
    "remove_short_instances",
    "resize_features",
    "sec_to_idx",
    "sec_to_positions",
    "snippet_axis",
    "truncate_segments",
    "video_label",
    "video_labels",
]
