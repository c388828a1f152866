"""LightningModule for video classification over the whole feature sequence; validation (top-1/2/3/5 of the
video label) and prediction (``class_scores_{split}.json``) through :class:`tal.models.common.TALModule`."""

from __future__ import annotations

import torch

from tal.models.common import TALModule

from .heads import build_head
from .losses import classification_loss, probabilities
from .tta import tta_probs


class ClassifierModule(TALModule):
    """A video classifier with a switchable head (TSN consensus, NeXtVLAD, attention pooling).

    Args:
        in_channels, num_classes: filled from the datamodule by ``tal.run`` when ``null`` in the config.
        network: ``{"head": "tsn" | "nextvlad" | "attention", "tsn": {...}, "nextvlad": {...},
            "attention": {...}}``: the head and the keyword arguments of each (:mod:`.heads`).
        loss: ``multi_label`` (BCE over all instance labels; default: cross-entropy on the video label) and
            ``label_smoothing``.
        tta: test-time augmentation of validation and prediction (:func:`.tta.tta_probs`): ``num_clips``
            (1 = the whole video) and ``crop_ratio``.
        lr, weight_decay, warmup_epochs: AdamW, linear warm-up then cosine decay to 0, per step.
        eval: evaluation settings; ``tal.run`` passes the config's ``eval:`` block.

    Works on either data regime (native: padded and masked; resize: every position valid).
    """

    result_kind = "class_scores"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        network: dict | None = None,
        loss: dict | None = None,
        tta: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1.0,
        eval: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_head(in_channels, num_classes, **dict(network or {}))
        loss = dict(loss or {})
        self.multi_label = bool(loss.pop("multi_label", False))
        self.label_smoothing = float(loss.pop("label_smoothing", 0.0))
        tta = dict(tta or {})
        self.num_clips = int(tta.pop("num_clips", 1))
        self.crop_ratio = float(tta.pop("crop_ratio", 0.8))
        for name, rest in (("loss", loss), ("tta", tta)):
            if rest:
                raise ValueError(f"model.{name}: unknown keys {sorted(rest)}")

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes)`` logits of ``feats (B, C, T)`` with ``mask (B, T)``."""
        return self.net(feats, mask)

    def _loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return classification_loss(
            logits, batch["labels"], batch["segments"], self.multi_label, self.label_smoothing
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["feats"], batch["mask"]), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["feats"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["feats"], batch["mask"])
        self.log("val/loss", self._loss(logits, batch), batch_size=batch["feats"].shape[0], sync_dist=True)
        whole = probabilities(logits, self.multi_label)
        self.update_val_metric(batch, whole if self.num_clips == 1 else self.predict_class_scores(batch))

    @torch.no_grad()
    def predict_class_scores(self, batch: dict) -> torch.Tensor:
        """``(B, num_classes)`` probabilities of the videos of ``batch``, averaged over the TTA crops."""
        return tta_probs(
            lambda x, m: probabilities(self(x, m), self.multi_label),
            batch["feats"],
            batch["mask"],
            self.num_clips,
            self.crop_ratio,
        )

    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for p in self.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.ndim < 2]  # biases, norms, tokens
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(total - 1, round(hp.warmup_epochs * total / max(1, self.trainer.max_epochs or 1)))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        if warmup > 0:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0 / warmup, 1.0, total_iters=warmup)
            scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        else:
            scheduler = cosine
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
