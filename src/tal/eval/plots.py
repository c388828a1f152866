"""PNG figures of evaluation results (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tal.eval.detection import DetectionResult  # noqa: E402
from tal.eval.proposal import ProposalResult  # noqa: E402
from tal.utils.io import atomic_write_bytes  # noqa: E402

__all__ = ["plot_ar_an", "plot_per_class_ap"]


def _save(fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_ar_an(result: ProposalResult, path: str | os.PathLike) -> Path:
    """AR vs average number of proposals per video: the threshold-averaged curve and one curve per tIoU."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for thr, recall in zip(result.tiou_thresholds, result.recall):
        ax.plot(result.proposals_per_video, recall, lw=0.8, alpha=0.5, label=f"tIoU {thr:.2f}")
    ax.plot(result.proposals_per_video, result.avg_recall, "k", lw=2, label=f"average (AUC {result.auc:.2f})")
    ax.set_xlabel("average number of proposals per video")
    ax.set_ylabel("average recall")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_per_class_ap(result: DetectionResult, path: str | os.PathLike) -> Path:
    """Horizontal bars of the threshold-averaged AP of each class, sorted."""
    ap = result.ap.mean(axis=0)
    order = ap.argsort()
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.16 * len(ap) + 1)))
    ax.barh(range(len(ap)), ap[order], color="tab:blue")
    ax.set_yticks(range(len(ap)), [result.class_names[i] for i in order], fontsize=6)
    ax.axvline(result.average_map, color="k", ls="--", lw=1, label=f"mAP {result.average_map:.4f}")
    ax.set_xlabel("average AP over tIoU thresholds")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)
