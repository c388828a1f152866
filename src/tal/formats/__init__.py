"""On-disk artifacts, one module per file format: annotations, results (detections / proposals), class scores,
feature stores. Each has a reader, a writer and a typed structure; none imports Lightning or a model, so any
stage, script or notebook can read what another stage wrote."""

from tal.formats.annotations import (
    AnnotationError,
    AnnotationSet,
    VideoAnnotation,
    detect_format,
    load_annotations,
    load_ground_truth,
    read_label_file,
    video_label,
    video_labels,
)
from tal.formats.class_scores import ClassScores, ClassScoresError, load_class_scores, write_class_scores
from tal.formats.results import Predictions, ResultsError, load_results, write_results
from tal.formats.store import (
    ConcatStore,
    FeatureError,
    FeatureStore,
    StoreManifest,
    read_manifest,
    resize_features,
    write_features,
    write_manifest,
)

__all__ = [
    "AnnotationError",
    "AnnotationSet",
    "ClassScores",
    "ClassScoresError",
    "ConcatStore",
    "FeatureError",
    "FeatureStore",
    "Predictions",
    "ResultsError",
    "StoreManifest",
    "VideoAnnotation",
    "detect_format",
    "load_annotations",
    "load_class_scores",
    "load_ground_truth",
    "load_results",
    "read_label_file",
    "read_manifest",
    "resize_features",
    "video_label",
    "video_labels",
    "write_class_scores",
    "write_features",
    "write_manifest",
    "write_results",
]
