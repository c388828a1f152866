"""Proposal average recall vs average number of proposals (AR@AN) and its AUC, official ActivityNet protocol.

As ``average_recall_vs_avg_nr_proposals`` of the ActivityNet ``Evaluation`` code:

* ``ratio = max_avg_proposals * num_gt_videos / num_proposals`` (all proposals of the file, also those on
  videos without ground truth); video ``i`` keeps its ``min(int(n_i * ratio), n_i)`` best proposals
  (score descending; equal scores: the later proposal first, the official ``argsort()[::-1]``).
* For 100 budgets ``pcn_j = j / 100 * max_avg_proposals * num_gt_videos / total_kept``, video ``i`` uses its
  first ``min(int(kept_i * pcn_j), kept_i)`` proposals; a ground truth is recalled at threshold ``t`` when one
  of them has ``tIoU >= t``. Recall is pooled over videos; ``avg_recall`` averages the thresholds.
* ``AUC = 100 * trapz(avg_recall, proposals_per_video) / proposals_per_video[-1]`` (the last point equals
  ``max_avg_proposals`` up to float rounding); ``AR@n = avg_recall`` at ``n`` proposals per video.
* Only videos with ground-truth instances are evaluated; a video without proposals recalls nothing.
* tIoU follows ``protocol`` (:mod:`tal.eval.detection`): officially unguarded, so a degenerate pair's NaN is
  never ``>=`` a threshold and never recalls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tal.eval.detection import (
    pair_chunks,
    paired_tiou,
    prepare_ground_truth,
    ranking_order,
    resolve_tiou_thresholds,
)
from tal.formats.annotations import AnnotationSet
from tal.formats.results import Predictions

__all__ = ["ProposalResult", "evaluate_proposals"]

NUM_BUDGETS = 100
AR_POINTS = (1, 5, 10, 100)


@dataclass
class ProposalResult:
    """``recall (T, 100)`` per threshold and budget, ``avg_recall (100,)``, ``proposals_per_video (100,)``."""

    tiou_thresholds: np.ndarray
    recall: np.ndarray
    avg_recall: np.ndarray
    proposals_per_video: np.ndarray
    max_avg_proposals: int

    @property
    def auc(self) -> float:
        if not self.proposals_per_video[-1] > 0:
            return 0.0
        area = np.trapezoid(self.avg_recall, self.proposals_per_video)
        return 100.0 * float(area) / float(self.proposals_per_video[-1])

    def average_recall_at(self, num_proposals: int) -> float:
        """AR at ``num_proposals`` per video: grid point ``num_proposals * 100 / max_avg_proposals``."""
        k = num_proposals * NUM_BUDGETS / self.max_avg_proposals
        if k != int(k) or not 1 <= k <= NUM_BUDGETS:
            raise ValueError(f"AR@{num_proposals} is not on the grid of {self.max_avg_proposals} proposals")
        return float(self.avg_recall[int(k) - 1])

    def metrics(self) -> dict[str, float]:
        """``{"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}`` (the AR points that lie on the grid)."""
        out = {}
        for n in AR_POINTS:
            k = n * NUM_BUDGETS / self.max_avg_proposals
            if k == int(k) and 1 <= k <= NUM_BUDGETS:
                out[f"AR@{n}"] = self.average_recall_at(n)
        out["AUC"] = self.auc
        return out

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics(),
            "tiou_thresholds": self.tiou_thresholds.tolist(),
            "avg_recall": self.avg_recall.tolist(),
            "proposals_per_video": self.proposals_per_video.tolist(),
            "recall": self.recall.tolist(),
        }


def evaluate_proposals(
    ground_truth: AnnotationSet,
    proposals: Predictions,
    max_avg_proposals: int = 100,
    tiou_thresholds: str | list[float] | np.ndarray = "anet",
    protocol: str = "official",
) -> ProposalResult:
    """AR@AN of ``proposals`` (labels, if any, are ignored) against ``ground_truth`` (one subset), under
    ``protocol`` (``official``, ``strict`` or ``actionformer``; see :mod:`tal.eval.detection`)."""
    if int(max_avg_proposals) < 1:
        raise ValueError(f"max_avg_proposals must be at least 1, got {max_avg_proposals}")
    thresholds = resolve_tiou_thresholds(tiou_thresholds)
    ground_truth = prepare_ground_truth(ground_truth, protocol)
    videos = [v for v in ground_truth if v.num_instances]
    num_videos = len(videos)
    empty = ProposalResult(
        thresholds,
        np.zeros((len(thresholds), NUM_BUDGETS)),
        np.zeros(NUM_BUDGETS),
        np.zeros(NUM_BUDGETS),
        max_avg_proposals,
    )
    if num_videos == 0 or len(proposals) == 0:
        return empty
    ratio = max_avg_proposals * float(num_videos) / len(proposals)

    # proposals of the evaluated videos, ranked per video (score descending, equal scores: later first)
    video_index = {v.video_id: i for i, v in enumerate(videos)}
    video_map = np.array([video_index.get(v, -1) for v in proposals.video_ids], dtype=np.int64)
    prop_video = video_map[proposals.video_idx]
    order = np.flatnonzero(prop_video >= 0)
    order = order[ranking_order(proposals.scores[order])]
    order = order[np.argsort(prop_video[order], kind="stable")]
    n_per_video = np.bincount(prop_video[order], minlength=num_videos)
    kept_per_video = np.minimum((n_per_video * ratio).astype(np.int64), n_per_video)
    total_kept = int(kept_per_video.sum())
    if total_kept == 0:
        return empty
    video_start = np.r_[0, np.cumsum(n_per_video)[:-1]]

    # first rank reaching each threshold, per ground truth: (G, T); "never" = a rank past any budget.
    # Ground truth x kept proposal pairs of the same video (rank = position in the video's ranking), enumerated
    # over ground truths in chunks of bounded size.
    gt_video = np.repeat(np.arange(num_videos), [v.num_instances for v in videos])
    gt_segments = np.concatenate([v.segments_sec for v in videos])
    counts = kept_per_video[gt_video]
    never = int(kept_per_video.max()) + 1
    first_hit = np.full((len(gt_video), len(thresholds)), never, dtype=np.int64)
    for lo, hi in pair_chunks(counts):
        c = counts[lo:hi]
        pair_gt = lo + np.repeat(np.arange(hi - lo), c)
        pair_rank = np.arange(len(pair_gt)) - np.repeat(np.cumsum(c) - c, c)
        pair_prop = order[video_start[gt_video[pair_gt]] + pair_rank]
        iou = paired_tiou(proposals.segments_sec[pair_prop], gt_segments[pair_gt], protocol)
        has_pairs = c > 0
        if not has_pairs.any():
            continue
        starts = (np.cumsum(c) - c)[has_pairs]
        rows = lo + np.flatnonzero(has_pairs)
        for t, thr in enumerate(thresholds):
            rank_if_hit = np.where(iou >= thr, pair_rank, never)
            first_hit[rows, t] = np.minimum.reduceat(rank_if_hit, starts)

    # per-video budgets as the official code: width = kept proposals (1 when the video has none)
    pcn_lst = np.arange(1, NUM_BUDGETS + 1) / 100.0 * (max_avg_proposals * float(num_videos) / total_kept)
    width = np.where(n_per_video > 0, kept_per_video, 1)
    budget = np.minimum((width[:, None] * pcn_lst[None, :]).astype(np.int64), width[:, None])  # (V, 100)
    matched = first_hit[:, :, None] < budget[gt_video][:, None, :]  # (G, T, 100)
    recall = matched.sum(axis=0) / float(len(gt_video))
    avg_recall = recall.mean(axis=0)
    proposals_per_video = pcn_lst * (float(total_kept) / num_videos)
    return ProposalResult(thresholds, recall, avg_recall, proposals_per_video, max_avg_proposals)
