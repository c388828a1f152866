"""LightningModule of the dense2sparse cascade refiner; validation (AR@AN / AUC) and prediction
(``proposals_{split}.json``) through :class:`tal.models.common.TALModule`."""

from __future__ import annotations

import torch
from torch import Tensor

from tal.models.common import TALModule, adamw_step_decay
from tal.ops.timeaxis import sec_to_positions

from .data import pad_proposals
from .losses import cascade_loss
from .network import CascadeRefiner
from .postprocess import refined_proposals
from .targets import match_ground_truth, stage_targets

#: decoding constants (``model.decode``): centre / width scales, and the boundary ``k`` in training (between
#: stages) and at inference. TCANet uses k = 1 in training and 0.2 at inference, and so does tal: on the
#: synthetic `small` set k = 0.2 at inference gives a higher AUC than k = 1 (experiments/cascade.md).
DEFAULT_DECODE = {"center": 0.1, "width": 0.2, "boundary_train": 1.0, "boundary_infer": 0.2}
DEFAULT_LOSS = {"beta": 0.1, "reg_weight": 1.0, "iou_weight": 1.0}


class CascadeModule(TALModule):
    """The three-stage (``num_stages``) proposal refiner on top of a proposal stage (BMN).

    Args:
        in_channels: feature channels (filled from the datamodule by ``tal.run`` when ``null``).
        num_stages: refinement stages (separate weights); iou_thresholds: stage ``i`` regresses the proposals
            with ``tIoU >= iou_thresholds[i]`` (0.5, 0.6, 0.7).
        network: keyword arguments of :class:`~tal.models.cascade.network.RefineStage` (``hidden_dim``,
            ``num_start``, ``num_action``, ``num_end``, ``pool``, ``dropout``).
        decode: :data:`DEFAULT_DECODE`; loss: :data:`DEFAULT_LOSS`.
        postprocess: keyword arguments of :func:`~tal.models.cascade.postprocess.refined_proposals`
            (``nms_sigma``, ``max_proposals``).
        input: how the input proposals were chosen (the data module reads the same block); kept with the
            weights as a record.
        lr, weight_decay, lr_milestones, lr_gamma: AdamW with step decay.
        eval: evaluation settings; ``tal.run`` passes the config's ``eval:`` block.
    """

    result_kind = "proposals"

    def __init__(
        self,
        in_channels: int,
        num_stages: int = 3,
        iou_thresholds: list[float] | None = None,
        network: dict | None = None,
        decode: dict | None = None,
        loss: dict | None = None,
        postprocess: dict | None = None,
        input: dict | None = None,
        lr: float = 4e-4,
        weight_decay: float = 1e-5,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        eval: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.iou_thresholds = list(iou_thresholds or [0.5, 0.6, 0.7])[:num_stages]
        if len(self.iou_thresholds) != num_stages:
            raise ValueError(f"{num_stages} stages need {num_stages} iou_thresholds, got {iou_thresholds}")
        self.decode = {**DEFAULT_DECODE, **(decode or {})}
        self.loss_kwargs = {**DEFAULT_LOSS, **(loss or {})}
        self.postprocess = dict(postprocess or {})
        self.net = CascadeRefiner(in_channels, num_stages, **(network or {}))

    # ------------------------------------------------------------------ forward
    @staticmethod
    def video_bounds(batch: dict) -> Tensor:
        """``(B, 2)`` each video's first and last position (times 0 and ``duration_sec`` on its axis)."""
        spu, off, dur = batch["sec_per_unit"], batch["offset_sec"], batch["duration_sec"]
        first = sec_to_positions(torch.zeros_like(dur), spu, off)
        return torch.stack([first, sec_to_positions(dur, spu, off)], dim=1).float()

    def inputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """``proposals (B, K, 2)``, ``scores (B, K)``, ``valid (B, K)`` of the batch, on its device."""
        proposals, scores, valid = pad_proposals(batch["proposals"], batch["proposal_scores"])
        return proposals.to(self.device), scores.to(self.device), valid.to(self.device)

    def forward(self, batch: dict, training: bool | None = None) -> list[dict[str, Tensor]]:
        """Every stage's outputs on ``batch`` (:meth:`CascadeRefiner.forward`), decoding with the boundary
        ``k`` of training or of inference (default: ``self.training``)."""
        training = self.training if training is None else training
        proposals, _, _ = self.inputs(batch)
        d = self.decode
        k = d["boundary_train"] if training else d["boundary_infer"]
        return self.net(
            batch["feats"],
            batch["mask"],
            proposals,
            self.video_bounds(batch).to(self.device),
            k,
            d["center"],
            d["width"],
        )

    def matched_ground_truth(self, batch: dict, proposals: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Each input proposal's ground truth of highest tIoU: ``matched (B, K, 2)``, ``has_gt (B, K)``."""
        pairs = [match_ground_truth(p, g.to(p.device)) for p, g in zip(proposals, batch["segments"])]
        matched = torch.stack([m for m, _ in pairs])
        has_gt = torch.stack([h for _, h in pairs]) & valid
        return matched, has_gt

    def stage_tious(self, batch: dict, outs: list[dict[str, Tensor]]) -> list[Tensor]:
        """Mean tIoU with the matched ground truth of the input and of each stage's output (``S + 1`` values,
        over the real proposals of videos with ground truth)."""
        proposals, _, valid = self.inputs(batch)
        matched, has_gt = self.matched_ground_truth(batch, proposals, valid)
        steps = [proposals] + [o["refined"] for o in outs]
        n = has_gt.sum().clamp(min=1)
        return [stage_targets(p, matched, has_gt, 0.0)["iou"].sum() / n for p in steps]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        outs = self(batch, training=True)
        proposals, _, valid = self.inputs(batch)
        matched, has_gt = self.matched_ground_truth(batch, proposals, valid)
        d = self.decode
        losses = cascade_loss(
            outs,
            matched,
            has_gt,
            valid,
            self.iou_thresholds,
            k=d["boundary_train"],
            center=d["center"],
            width=d["width"],
            **self.loss_kwargs,
        )
        bs = batch["feats"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v.float() for k, v in losses.items() if k != "loss"}, batch_size=bs)
        return losses["loss"]

    def configure_optimizers(self):
        return adamw_step_decay(self)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_segments(
        self, batch: dict, outs: list[dict[str, Tensor]] | None = None
    ) -> list[tuple[Tensor, Tensor, None]]:
        """Refined proposals ``(segments_sec (M, 2), scores (M,), None)`` of each video, best first: the last
        stage's output scored ``input score x its tIoU estimate``, Soft-NMS, top ``max_proposals``."""
        if outs is None:
            outs = self(batch, training=False)
        _, scores, valid = self.inputs(batch)
        last = outs[-1]
        iou = torch.sigmoid(last["iou_logit"])
        rows = []
        for b in range(len(valid)):
            keep = valid[b]
            segments_sec, video_scores = refined_proposals(
                last["refined"][b][keep],
                scores[b][keep],
                iou[b][keep],
                float(batch["sec_per_unit"][b]),
                float(batch["offset_sec"][b]),
                float(batch["duration_sec"][b]),
                **self.postprocess,
            )
            rows.append((segments_sec, video_scores, None))
        return rows

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        with torch.no_grad():
            outs = self(batch, training=False)
            tious = self.stage_tious(batch, outs)
        bs = batch["feats"].shape[0]
        self.log_dict({f"val/tiou_s{i}": v for i, v in enumerate(tious)}, batch_size=bs, sync_dist=True)
        self.update_val_metric(batch, self.predict_segments(batch, outs))
