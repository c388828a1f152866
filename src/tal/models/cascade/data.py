"""The cascade's data: the standard items (``cap`` regime: whole videos, resized to ``input.length`` only when
longer) plus each video's input proposals, read from a proposal stage's ``proposals_{split}.json`` through
:mod:`tal.formats.results`, selected by :func:`~tal.models.cascade.postprocess.select_inputs` and put on the item's
time axis with :mod:`tal.ops.timeaxis`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tal.data import TALDataModule
from tal.data.datasets import FeatureDataset
from tal.formats.results import ResultsError, load_results
from tal.ops.timeaxis import sec_to_positions

from .postprocess import NMS_METHODS, select_inputs

__all__ = ["DEFAULT_INPUT", "CascadeDataModule", "ProposalItems", "pad_proposals"]

#: how input proposals are chosen (``model.input`` in ``conf/model/cascade.yaml``)
DEFAULT_INPUT = {
    "length": 1000,  # features longer than this are resized to it (cap regime)
    "top_k": 128,
    "nms": True,
    "nms_method": "gaussian",
    "nms_sigma": 0.4,
    "nms_iou_threshold": 0.7,
}

#: what to run when no proposal files are given (``data.proposals_command`` replaces it)
DEFAULT_COMMAND = (
    "python -m tal.run experiment=bmn_synthetic predict=true predict_splits=[train,val,test] "
    "model.postprocess.nms_sigma=null model.postprocess.max_proposals=1000"
)

VideoInputs = tuple[np.ndarray, np.ndarray]  # segments_sec (K, 2) float64, scores (K,) float64


class ProposalItems(Dataset):
    """The items of ``base`` with two extra keys: ``proposals`` ``(K, 2)`` float32 in positions of the item's
    time axis and ``proposal_scores`` ``(K,)`` float32 (``collate_batch`` passes them through as lists)."""

    def __init__(self, base: FeatureDataset, inputs: dict[str, VideoInputs], video_ids: list[str]) -> None:
        self.base, self.inputs, self.video_ids = base, inputs, list(video_ids)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        segments_sec, scores = self.inputs[self.video_ids[item["video_idx"]]]
        positions = sec_to_positions(segments_sec, item["sec_per_unit"], item["offset_sec"])
        item["proposals"] = torch.as_tensor(positions, dtype=torch.float32).reshape(-1, 2)
        item["proposal_scores"] = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        return item


def pad_proposals(proposals: list[Tensor], scores: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-video proposals ``(K_i, 2)`` / scores ``(K_i,)`` into ``(B, K, 2)``, ``(B, K)`` and a
    ``(B, K)`` bool mask of the real ones (``K = max K_i``, at least 1; padding is ``[0, 1]`` with score 0)."""
    K = max([1, *(len(p) for p in proposals)])
    B = len(proposals)
    out = torch.zeros(B, K, 2)
    out[..., 1] = 1.0
    out_scores, valid = torch.zeros(B, K), torch.zeros(B, K, dtype=torch.bool)
    for b, (p, s) in enumerate(zip(proposals, scores)):
        out[b, : len(p)], out_scores[b, : len(p)], valid[b, : len(p)] = p, s, True
    return out, out_scores, valid


class CascadeDataModule(TALDataModule):
    """:class:`~tal.data.TALDataModule` whose items carry the video's input proposals.

    Args:
        proposals_dir: folder of the proposal stage's run holding ``proposals_{split}.json`` for each split used
            (train and val for training, plus ``predict_splits``).
        proposals_files: ``{split: path}`` overriding ``proposals_dir`` per split.
        proposals_command: the command that makes the proposal files, printed when they are missing.
        input: how to choose each video's input proposals (:data:`DEFAULT_INPUT`); ``length`` is the cap of the
            ``cap`` regime (it sets ``max_seq_len``).
        **kwargs: :class:`~tal.data.TALDataModule` arguments (``regime`` defaults to ``cap``).
    """

    def __init__(
        self,
        proposals_dir: str | None = None,
        proposals_files: dict[str, str] | None = None,
        proposals_command: str | None = None,
        input: dict | None = None,
        **kwargs,
    ) -> None:
        self.input = {**DEFAULT_INPUT, **(input or {})}
        unknown = sorted(set(self.input) - set(DEFAULT_INPUT))
        if unknown:
            raise ValueError(f"data.input: unknown keys {unknown}; known: {sorted(DEFAULT_INPUT)}")
        if self.input["nms_method"] not in NMS_METHODS:
            raise ValueError(
                f"input nms_method must be one of {NMS_METHODS}, got {self.input['nms_method']!r}"
            )
        if int(self.input["top_k"]) < 1:
            raise ValueError(f"input top_k must be >= 1, got {self.input['top_k']}")
        kwargs.setdefault("regime", "cap")
        kwargs["max_seq_len"] = int(self.input["length"])
        super().__init__(**kwargs)
        # absolute now: spawned DDP workers and later chdirs see the same files
        self.proposals_dir = str(Path(proposals_dir).resolve()) if proposals_dir else None
        self.proposals_files = {s: str(Path(p).resolve()) for s, p in (proposals_files or {}).items() if p}
        self.proposals_command = proposals_command or DEFAULT_COMMAND
        self._inputs: dict[str, dict[str, VideoInputs]] = {}
        self._items: dict[tuple[str, bool], ProposalItems] = {}

    # ------------------------------------------------------------------ files
    def proposals_file(self, split: str) -> Path:
        """The input proposals file of ``split``; a clear error naming the command to run when it is missing."""
        if split in self.proposals_files:
            path = Path(self.proposals_files[split])
        elif self.proposals_dir:
            path = Path(self.proposals_dir) / f"proposals_{split}.json"
        else:
            raise FileNotFoundError(
                "the cascade refines the proposals of a proposal stage, and no proposal files are given "
                f"(data.proposals_dir or data.proposals_files.{split}). Make them first:\n  "
                f"{self.proposals_command}\nthen pass that run's folder: "
                "data.proposals_dir=outputs/<task>/runs/<time>"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no input proposals for the {split} split (data.proposals_dir / proposals_files). "
                f"The proposal run must predict this split, e.g.:\n  {self.proposals_command}"
            )
        return path

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        # fail before training, not after the first epoch; predicting alone needs only its splits' files (and
        # the accessors' setup() without a stage needs none: Lightning's setup("fit") still checks before fit)
        needed = {"fit": ("train", "val"), "validate": ("val",)}.get(stage, ())
        for split in needed:
            self.proposals_file(split)

    def input_proposals(self, split: str) -> dict[str, VideoInputs]:
        """``video_id -> (segments_sec, scores)`` of the split's videos after :func:`select_inputs` (cached).

        Every video of the split must be in the file (an error names the file and the video); proposals with
        ``end <= start`` are skipped and counted in ``self.report``.
        """
        if split in self._inputs:
            return self._inputs[split]
        path = self.proposals_file(split)
        predictions = load_results(path)
        ids = self.video_ids(split)
        missing = sorted(set(ids) - set(predictions.video_ids))
        if missing:
            raise ResultsError(
                f"{path}: no proposals for video {missing[0]!r} of the {split} split ({len(missing)} of "
                f"{len(ids)} videos missing); was the file written for this split and data set?"
            )
        inp = self.input
        out = {}
        for vid, rows in predictions.for_videos(ids).per_video():
            segments, scores = torch.from_numpy(rows.segments_sec), torch.from_numpy(rows.scores)
            ok = segments[:, 1] > segments[:, 0]
            self.report.add("input proposal with end <= start (skipped)", vid, int((~ok).sum()))
            segments, scores = select_inputs(
                segments[ok],
                scores[ok],
                int(inp["top_k"]),
                bool(inp["nms"]),
                inp["nms_method"],
                float(inp["nms_sigma"]),
                float(inp["nms_iou_threshold"]),
            )
            self.report.add("video without input proposals", vid, int(len(scores) == 0))
            out[vid] = (segments.numpy(), scores.numpy())
        self._inputs[split] = out
        return out

    # ------------------------------------------------------------------ items
    def dataset(self, split: str, training: bool | None = None) -> ProposalItems:
        training = split == "train" if training is None else bool(training)
        key = (split, training)
        if key not in self._items:
            base = super().dataset(split, training)
            self._items[key] = ProposalItems(base, self.input_proposals(split), self.video_ids(split))
        return self._items[key]
