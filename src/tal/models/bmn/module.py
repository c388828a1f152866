"""LightningModule for BMN on batches of the tal contract (resize regime: ``T == L``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from tal.models.common import finish_validation

from .losses import bmn_loss
from .network import BMN
from .postprocess import bmn_proposals
from .targets import bmn_targets, valid_map_mask


class BMNModule(pl.LightningModule):
    """BMN (+ optional LGTE / dilated GCNeXt) proposal generator.

    Args:
        in_channels: feature channels (filled from the datamodule by ``tal.run`` when ``null``).
        L: grid length (features resized to ``L``); D: map durations, ``None`` = ``L // 2``.
        lgte, gcnext, dilations, num_gcnext_blocks: pre-processing switches (seed 000's ablation).
        hidden_dim, pem_dim, bm_dim: widths (BMN: 256, 128, 512; other widths break checkpoint compatibility).
        lr, weight_decay, lr_milestones, lr_gamma: AdamW with step decay (multiply by ``lr_gamma`` at each
            epoch in ``lr_milestones``).
        reg_weight: weight of the IoU regression loss; boundary_region: TEM boundary region width (cells).
        nms_sigma, max_proposals, pre_nms_topk: post-processing.
    """

    def __init__(
        self,
        in_channels: int,
        L: int = 100,
        D: int | None = None,
        lgte: bool = False,
        gcnext: bool = False,
        dilations: list[int] | None = None,
        num_gcnext_blocks: int = 1,
        hidden_dim: int = 256,
        pem_dim: int = 128,
        bm_dim: int = 512,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        reg_weight: float = 10.0,
        boundary_region: float = 3.0,
        nms_sigma: float = 0.4,
        max_proposals: int = 100,
        pre_nms_topk: int = 3000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.L = int(L)
        self.D = int(D) if D is not None else self.L // 2
        self.net = BMN(
            in_channels,
            self.D,
            hidden_dim=hidden_dim,
            pem_dim=pem_dim,
            bm_dim=bm_dim,
            lgte=lgte,
            gcnext=gcnext,
            dilations=tuple(dilations or [1]),
            num_gcnext_blocks=num_gcnext_blocks,
            dropout=dropout,
        )
        self.val_ar = None
        self.video_ids: dict[str, list[str]] = {}

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.net(feats, mask)

    def _check_length(self, batch: dict) -> None:
        length = batch["feats"].shape[-1]
        if length != self.L:
            raise ValueError(
                f"BMN expects features resized to L={self.L} positions (data.regime: resize, data.L: ${{L}}) "
                f"but got T={length} (video_idx {batch['video_idx'].tolist()})"
            )

    def _shared_step(self, batch: dict) -> tuple[dict, dict]:
        self._check_length(batch)
        out = self(batch["feats"], batch["mask"])
        target = bmn_targets(
            [s.to(self.device) for s in batch["segments"]], self.L, self.D, self.hparams.boundary_region
        )
        map_valid = valid_map_mask(batch["mask"].sum(1), self.L, self.D)
        return out, bmn_loss(out, target, batch["mask"], map_valid, self.hparams.reg_weight)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, losses = self._shared_step(batch)
        bs = batch["feats"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": losses[k] for k in ("tem", "reg", "cls")}, batch_size=bs)
        return losses["loss"]

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(hp.lr_milestones or []), hp.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ inference
    def propose(self, batch: dict, out: dict | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Proposals ``(segments_sec (K, 2), scores (K,))`` of each video of ``batch``."""
        if out is None:
            self._check_length(batch)
            out = self(batch["feats"], batch["mask"])
        hp = self.hparams
        valid_len = batch["mask"].sum(1).tolist()
        return [
            bmn_proposals(
                out["start"][b],
                out["end"][b],
                out["conf_map"][b],
                float(batch["sec_per_unit"][b]),
                float(batch["offset_sec"][b]),
                valid_len[b],
                hp.nms_sigma,
                hp.max_proposals,
                hp.pre_nms_topk,
            )
            for b in range(len(valid_len))
        ]

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if stage in ("fit", "validate"):
            from tal.eval import ProposalAR

            self.val_ar = ProposalAR(dm.ground_truth("val"), dm.video_ids("val"), self.hparams.max_proposals)
        if stage == "predict":
            self.video_ids["predict"] = dm.video_ids("test")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out, losses = self._shared_step(batch)
        self.log("val/loss", losses["loss"], batch_size=batch["feats"].shape[0])
        segments, scores = zip(*self.propose(batch, out))
        self.val_ar.update(batch["video_idx"], list(segments), list(scores))

    def on_validation_epoch_end(self) -> None:
        finish_validation(self, self.val_ar, "AUC", "proposals_val.json")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, list[dict]]:
        """``{video_id: [{"segment": [t_start_sec, t_end_sec], "score": p}, ...]}`` (ActivityNet proposals)."""
        ids = self.video_ids["predict"]
        return {
            ids[idx]: [{"segment": [s, e], "score": p} for (s, e), p in zip(segs.tolist(), scores.tolist())]
            for idx, (segs, scores) in zip(batch["video_idx"].tolist(), self.propose(batch))
        }
