"""The official ActivityNet evaluation protocol: detection mAP, proposal AR@AN / AUC, top-k accuracy.

Functions take an :class:`~tal.formats.AnnotationSet` (one subset) and flat
:class:`~tal.formats.Predictions`; :mod:`tal.eval.metrics` wraps them as torchmetrics ``Metric`` s and
``python -m tal.eval`` (``tal-eval``) evaluates a results JSON file.
"""

from tal.eval.classification import topk_accuracy, video_label_ids
from tal.eval.detection import (
    TIOU_PRESETS,
    DetectionResult,
    evaluate_detection,
    interpolated_average_precision,
    resolve_tiou_thresholds,
)
from tal.eval.metrics import ClassScoreCollector, DetectionMAP, ProposalAR, SegmentCollector, TopKAccuracy
from tal.eval.proposal import ProposalResult, evaluate_proposals
from tal.formats.annotations import load_ground_truth
from tal.formats.results import Predictions, ResultsError, load_results, write_results

__all__ = [
    "TIOU_PRESETS",
    "ClassScoreCollector",
    "DetectionMAP",
    "DetectionResult",
    "Predictions",
    "ProposalAR",
    "ProposalResult",
    "SegmentCollector",
    "ResultsError",
    "TopKAccuracy",
    "evaluate_detection",
    "evaluate_proposals",
    "interpolated_average_precision",
    "load_ground_truth",
    "load_results",
    "resolve_tiou_thresholds",
    "topk_accuracy",
    "video_label_ids",
    "write_results",
]
