"""ActionFormer as a LightningModule: training with focal + DIoU; validation and prediction through
:class:`tal.models.common.TALModule` (mAP, ``detections_{split}.json``)."""

from __future__ import annotations

import math

import torch

from tal.models.common import TALModule

from .losses import PositiveCountEMA, actionformer_loss
from .network import ActionFormerNet
from .postprocess import detect_video
from .targets import DEFAULT_REGRESS_RANGES, assign_targets, make_points


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimizer step ``step``: linear warm-up from ~0 to 1 over ``warmup_steps``,
    then cosine decay to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def weight_decay_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on weight matrices / conv kernels only; none on biases, norms, scales
    (every parameter with fewer than 2 dimensions) or positional parameters (names containing ``pos``)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "pos" in name.rsplit(".", 1)[-1] else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def valid_lengths(mask: torch.Tensor) -> torch.Tensor:
    """``mask (B, T)`` → ``(B,)`` long: one past the last valid position of each row (at least 1)."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (positions * mask).amax(dim=1).clamp(min=1)


class ActionFormerModule(TALModule):
    """ActionFormer (Zhang et al. 2022) on batches of the tal contract (see ``CONTRIBUTING.md``).

    Args:
        in_channels, num_classes: filled from the datamodule by ``tal.run`` when ``null`` in the config.
        max_seq_len: the training length (``data.max_seq_len``); must be a multiple of ``2 ** (num_levels - 1)``.
        network: keyword arguments of :class:`ActionFormerNet` (embed_dim, head_dim, num_heads, window_size, ...).
        regress_ranges: per level ``[lo, hi]`` in input-grid positions, both ends inclusive (not multiplied by the
            level's stride, as ActionFormer's configs write them); ``None`` = ActionFormer's.
        center_radius: centre sampling radius in units of the level stride.
        postprocess: keyword arguments of :func:`detect_video` (score_threshold, pre_nms_topk, nms_sigma, ...).
        lr, weight_decay, warmup_epochs, min_lr_ratio: AdamW + linear warm-up + per-step cosine schedule.
        eval: evaluation settings (``tiou_thresholds``: ``"anet"`` (0.5:0.05:0.95), ``"thumos"`` (0.3:0.1:0.7) or
            a list); ``tal.run`` passes the config's ``eval:`` block.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        max_seq_len: int = 2304,
        network: dict | None = None,
        regress_ranges: list[list[float]] | None = None,
        center_radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        reg_weight: float = 1.0,
        normalizer_init: float = 100.0,
        normalizer_momentum: float = 0.9,
        postprocess: dict | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        warmup_epochs: float = 5.0,
        min_lr_ratio: float = 0.0,
        eval: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = ActionFormerNet(in_channels, num_classes, **(network or {}))
        if max_seq_len % self.net.max_stride:
            raise ValueError(
                f"max_seq_len={max_seq_len} (data.max_seq_len) must be a multiple of {self.net.max_stride}, the "
                f"stride of the top pyramid level (2 ** (num_levels - 1)); e.g. use "
                f"{math.ceil(max_seq_len / self.net.max_stride) * self.net.max_stride}"
            )
        self.regress_ranges = [tuple(r) for r in regress_ranges] if regress_ranges else DEFAULT_REGRESS_RANGES
        self.normalizer = PositiveCountEMA(normalizer_init, normalizer_momentum)
        self.postprocess = dict(postprocess or {})

    # ------------------------------------------------------------------ forward
    def forward(self, feats: torch.Tensor, mask: torch.Tensor):
        """feats (B, C, T), mask (B, T) -> per level cls logits (B, T_l, K), offsets (B, T_l, 2), masks (B, T_l)."""
        return self.net(feats, mask)

    def _points(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Points ``(T_l, 4)`` of every level for the level lengths of ``masks``."""
        lengths = [m.shape[1] for m in masks]
        points = make_points(lengths, self.net.strides, self.regress_ranges, device=masks[0].device)
        return list(points.split(lengths))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cls_logits, offsets, masks = self(batch["feats"], batch["mask"])
        points = torch.cat(self._points(masks))
        targets = [
            assign_targets(
                points, segs.to(points), labels, self.hparams.num_classes, self.hparams.center_radius
            )
            for segs, labels in zip(batch["segments"], batch["labels"])
        ]
        cls_targets, reg_targets = (torch.stack(t) for t in zip(*targets))
        valid = torch.cat(masks, dim=1)
        num_pos = (valid & (cls_targets.sum(-1) > 0)).sum()
        losses = actionformer_loss(
            torch.cat(cls_logits, dim=1),
            torch.cat(offsets, dim=1),
            valid,
            cls_targets,
            reg_targets,
            normalizer=self.normalizer.update(num_pos),
            reg_weight=self.hparams.reg_weight,
            alpha=self.hparams.focal_alpha,
            gamma=self.hparams.focal_gamma,
        )
        bs = len(batch["segments"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log_dict(
            {"train/cls_loss": losses["cls_loss"], "train/reg_loss": losses["reg_loss"]}, batch_size=bs
        )
        self.log("train/num_pos", num_pos.float(), batch_size=bs)
        return losses["loss"]

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(weight_decay_groups(self, hp.weight_decay), lr=hp.lr)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total_steps / max(1, self.trainer.max_epochs or 1)
        warmup_steps = max(1, round(hp.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            return warmup_cosine_factor(step, warmup_steps, total_steps, hp.min_lr_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_segments(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Detections per video of a batch: ``(segments_sec (K, 2), scores (K,), labels (K,))``, best first.

        Each video is run alone at its own length (up to its last valid position, which the network pads to a
        multiple of its top stride), not at the batch's padded length (``max_seq_len`` at least): the outputs
        at valid positions, hence the detections, are those of the padded run (to float tolerance).
        """
        rows = []
        for b, length in enumerate(valid_lengths(batch["mask"]).tolist()):
            video = {key: batch[key][b : b + 1] for key in ("sec_per_unit", "offset_sec", "duration_sec")}
            video["feats"], video["mask"] = (
                batch["feats"][b : b + 1, :, :length],
                batch["mask"][b : b + 1, :length],
            )
            rows += self.decode(self(video["feats"], video["mask"]), video)
        return rows

    def decode(self, outputs: tuple, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Post-processing of the network ``outputs`` of ``batch`` (see :func:`detect_video`), per video."""
        cls_logits, offsets, masks = outputs
        points = self._points(masks)
        return [
            detect_video(
                [c[b] for c in cls_logits],
                [o[b] for o in offsets],
                points,
                [m[b] for m in masks],
                sec_per_unit=float(batch["sec_per_unit"][b]),
                offset_sec=float(batch["offset_sec"][b]),
                duration_sec=float(batch["duration_sec"][b]),
                **self.postprocess,
            )
            for b in range(len(masks[0]))
        ]
