"""torchmetrics wrappers around the official protocol, for LightningModules (single process or DDP).

:class:`SegmentCollector` gathers per-video segment predictions across processes and returns them as one
:class:`~tal.formats.Predictions` (it needs no ground truth: prediction on any split uses it);
:class:`DetectionMAP` and :class:`ProposalAR` extend it with the evaluation.

States are flat tensors concatenated across processes: one row per prediction (``segments``, ``scores``,
``labels``, ``video_idx``) plus one row per updated sample (``sample_video_idx``, ``sample_rows``) that
records how many prediction rows each sample contributed. Lightning's ``DistributedSampler`` pads the last
shards with repeated samples, so ``compute()`` keeps, for each ``video_idx``, only the rows of its *first*
sample in gather order (rank 0 first) and drops later repeats; the kept rows are then put in video order
(``video_ids`` order, each video's rows as its sample gave them), so the result does not depend on the number
of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from tal.eval.detection import evaluate_detection, resolve_tiou_thresholds
from tal.eval.proposal import evaluate_proposals
from tal.formats.annotations import AnnotationSet
from tal.formats.results import Predictions

__all__ = ["DetectionMAP", "ProposalAR", "SegmentCollector", "first_sample_rows"]


def first_sample_rows(sample_video_idx: Tensor, sample_rows: Tensor) -> Tensor:
    """Mask of the prediction rows that belong to the first sample of each video.

    Args:
        sample_video_idx: ``(S,)`` long, video of each sample in gather order.
        sample_rows: ``(S,)`` long, number of prediction rows of each sample (rows are laid out sample by sample).

    Returns:
        ``(sum(sample_rows),)`` bool.
    """
    first = np.unique(sample_video_idx.cpu().numpy(), return_index=True)[1]
    keep_sample = torch.zeros(len(sample_video_idx), dtype=torch.bool)
    keep_sample[torch.from_numpy(first)] = True
    return torch.repeat_interleave(keep_sample, sample_rows.cpu())


class SegmentCollector(Metric):
    """Per-video segment predictions of one split, gathered across processes and de-duplicated.

    Args:
        video_ids: the split's ordered video ids; ``update`` takes indices into this list.
        label_names: class names of the label ids (detections); ``None`` for class-agnostic proposals.

    ``compute()`` returns the :class:`~tal.formats.Predictions` of every video in ``video_ids`` (videos never
    updated have no rows), in video order.
    """

    full_state_update = False

    def __init__(self, video_ids: Sequence[str], label_names: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.video_ids = list(video_ids)
        self.label_names = None if label_names is None else list(label_names)
        self._predictions: Predictions | None = None
        for name in ("segments", "scores", "labels", "video_idx", "sample_video_idx", "sample_rows"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @property
    def with_labels(self) -> bool:
        return self.label_names is not None

    def update(
        self,
        video_idx: Tensor,
        segments_sec: Sequence[Tensor],
        scores: Sequence[Tensor],
        labels: Sequence[Tensor] | None = None,
    ) -> None:
        """Add the predictions of a batch: ``video_idx (B,)``, and per video ``segments_sec (K, 2)``,
        ``scores (K,)`` and (detections) ``labels (K,)`` long."""
        where = f"{type(self).__name__}.update"
        if (labels is None) == self.with_labels:
            raise ValueError(
                f"{where}: " + ("labels are required" if self.with_labels else "takes no labels")
            )
        video_idx = torch.as_tensor(video_idx, dtype=torch.long).reshape(-1)
        n_labels = len(scores) if labels is None else len(labels)
        if not len(video_idx) == len(segments_sec) == len(scores) == n_labels:
            raise ValueError(
                f"{where}: {len(video_idx)} videos but {len(segments_sec)} segment, {len(scores)} score and "
                f"{n_labels} label tensors"
            )
        num_classes = len(self.label_names) if self.with_labels else 1
        segs, scs, labs, rows = [], [], [], []
        for i, (v, seg, sc) in enumerate(zip(video_idx.tolist(), segments_sec, scores)):
            if not 0 <= v < len(self.video_ids):
                raise ValueError(f"{where}: video_idx {v} outside [0, {len(self.video_ids)})")
            seg, sc = seg.detach().reshape(-1, 2), sc.detach().reshape(-1)
            lab = (
                labels[i].detach().reshape(-1)
                if labels is not None
                else torch.zeros(len(seg), dtype=torch.long)
            )
            if len(sc) != len(seg) or len(lab) != len(seg):
                raise ValueError(
                    f"{where}: video {self.video_ids[v]!r}: {len(seg)} segments, {len(sc)} scores"
                    + ("" if labels is None else f", {len(lab)} labels")
                )
            if len(lab) and not 0 <= int(lab.min()) <= int(lab.max()) < num_classes:
                raise ValueError(
                    f"{where}: video {self.video_ids[v]!r}: label ids must lie in [0, {num_classes}), "
                    f"got {lab.tolist()}"
                )
            segs.append(seg)
            scs.append(sc)
            labs.append(lab)
            rows.append(len(seg))
        rows_t = torch.tensor(rows, dtype=torch.long)
        self.segments.append(
            torch.cat(segs).to(self.device, torch.float64) if segs else torch.zeros(0, 2, dtype=torch.float64)
        )
        self.scores.append(
            torch.cat(scs).to(self.device, torch.float64) if scs else torch.zeros(0, dtype=torch.float64)
        )
        self.labels.append(
            torch.cat(labs).to(self.device, torch.long) if labs else torch.zeros(0, dtype=torch.long)
        )
        self.video_idx.append(torch.repeat_interleave(video_idx, rows_t).to(self.device))
        self.sample_video_idx.append(video_idx.to(self.device))
        self.sample_rows.append(rows_t.to(self.device))

    def compute(self) -> Predictions:
        """The synced predictions, de-duplicated by ``video_idx`` (first sample kept), in video order."""
        self._predictions = self._gathered()
        return self._predictions

    def _gathered(self) -> Predictions:
        def cat(state, shape, dtype):
            return dim_zero_cat(state).cpu() if len(state) else torch.zeros(shape, dtype=dtype)

        segments = cat(self.segments, (0, 2), torch.float64).reshape(-1, 2)
        scores = cat(self.scores, (0,), torch.float64)
        labels = cat(self.labels, (0,), torch.long)
        video_idx = cat(self.video_idx, (0,), torch.long)
        keep = first_sample_rows(
            cat(self.sample_video_idx, (0,), torch.long), cat(self.sample_rows, (0,), torch.long)
        )
        if len(keep) != len(scores):
            raise RuntimeError(
                f"{type(self).__name__}: {len(scores)} prediction rows but samples account for {len(keep)}"
            )
        rows = torch.nonzero(keep)[:, 0]
        rows = rows[torch.argsort(video_idx[rows], stable=True)]
        return Predictions(
            self.video_ids,
            video_idx[rows].numpy(),
            segments[rows].numpy(),
            scores[rows].numpy(),
            labels[rows].numpy() if self.with_labels else None,
            self.label_names,
        )

    def reset(self) -> None:
        super().reset()
        self._predictions = None

    def results_dict(self) -> dict:
        """Official results JSON dict of the synced, de-duplicated predictions of the last ``compute()``."""
        if self._predictions is None:
            raise RuntimeError(f"{type(self).__name__}.results_dict() needs compute() first")
        return self._predictions.to_results()

    @property
    def predictions(self) -> Predictions:
        """The predictions of the last ``compute()``."""
        if self._predictions is None:
            raise RuntimeError(f"{type(self).__name__}.predictions needs compute() first")
        return self._predictions


class DetectionMAP(SegmentCollector):
    """ActivityNet detection mAP over ``video_ids`` (label ids index ``ground_truth.label_names``).

    ``compute()`` returns ``{"mAP": average, "mAP@0.50": ..., ...}`` as float64 scalar tensors; the predictions
    it scored are then in :attr:`predictions`.
    """

    higher_is_better = True

    def __init__(
        self,
        ground_truth: AnnotationSet,
        video_ids: Sequence[str],
        tiou_thresholds: str | Sequence[float] = "anet",
        protocol: str = "official",
        **kwargs,
    ) -> None:
        super().__init__(video_ids, ground_truth.label_names, **kwargs)
        self.ground_truth = ground_truth
        self.tiou_thresholds = resolve_tiou_thresholds(tiou_thresholds)
        self.protocol = protocol

    def compute(self) -> dict[str, Tensor]:
        result = evaluate_detection(self.ground_truth, super().compute(), self.tiou_thresholds, self.protocol)
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.metrics().items()}


class ProposalAR(SegmentCollector):
    """AR@1/5/10/100 and AUC of class-agnostic proposals over ``video_ids``."""

    higher_is_better = True

    def __init__(
        self,
        ground_truth: AnnotationSet,
        video_ids: Sequence[str],
        max_avg_proposals: int = 100,
        protocol: str = "official",
        **kwargs,
    ) -> None:
        super().__init__(video_ids, None, **kwargs)
        self.ground_truth = ground_truth
        self.max_avg_proposals = int(max_avg_proposals)
        self.protocol = protocol

    def compute(self) -> dict[str, Tensor]:
        result = evaluate_proposals(
            self.ground_truth, super().compute(), self.max_avg_proposals, protocol=self.protocol
        )
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.metrics().items()}
