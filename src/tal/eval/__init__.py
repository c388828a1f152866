"""The official ActivityNet evaluation protocol: detection mAP, proposal AR@AN / AUC, top-k accuracy.

Functions take an :class:`~tal.formats.AnnotationSet` (one subset) and flat
:class:`~tal.formats.Predictions`; :mod:`tal.eval.metrics` wraps them as torchmetrics ``Metric`` s and
``python -m tal.eval`` (``tal-eval``) evaluates a results JSON file.

Names are imported on first use: the evaluation itself needs numpy only, so ``python -m tal.eval`` never
loads torch, torchmetrics or Lightning.
"""

from importlib import import_module

_EXPORTS = {
    "TIOU_PRESETS": "tal.eval.detection",
    "PROTOCOLS": "tal.eval.detection",
    "DetectionResult": "tal.eval.detection",
    "evaluate_detection": "tal.eval.detection",
    "interpolated_average_precision": "tal.eval.detection",
    "resolve_tiou_thresholds": "tal.eval.detection",
    "ProposalResult": "tal.eval.proposal",
    "evaluate_proposals": "tal.eval.proposal",
    "Diagnosis": "tal.eval.checks",
    "diagnose": "tal.eval.checks",
    "topk_accuracy": "tal.eval.classification",
    "video_label_ids": "tal.eval.classification",
    "DetectionMAP": "tal.eval.metrics",
    "ProposalAR": "tal.eval.metrics",
    "SegmentCollector": "tal.eval.metrics",
    "load_ground_truth": "tal.formats.annotations",
    "Predictions": "tal.formats.results",
    "ResultsError": "tal.formats.results",
    "load_results": "tal.formats.results",
    "write_results": "tal.formats.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tal.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
