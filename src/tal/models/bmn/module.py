"""LightningModule for BMN on batches of the tal contract (resize regime: ``T == L``); validation and prediction
through :class:`tal.models.common.TALModule` (AR@AN / AUC, ``proposals_{split}.json``)."""

from __future__ import annotations

import torch

from tal.models.common import TALModule, adamw_step_decay

from .losses import bmn_loss
from .network import BMN
from .postprocess import bmn_proposals
from .targets import bmn_targets, valid_map_mask


class BMNModule(TALModule):
    """BMN (+ optional LGTE / dilated GCNeXt) proposal generator.

    Args:
        in_channels: feature channels (filled from the datamodule by ``tal.run`` when ``null``).
        L: grid length (features resized to ``L``); D: map durations, ``None`` = ``L // 2``.
        network: keyword arguments of :class:`BMN`: the pre-processing switches ``lgte``, ``gcnext``,
            ``dilations``, ``num_gcnext_blocks`` (the ablation of the FineAction 2021 winning system) and the
            widths ``hidden_dim``, ``pem_dim``, ``bm_dim`` (BMN: 256, 128, 512), ``dropout``, ...
        postprocess: keyword arguments of :func:`bmn_proposals` (``nms_sigma``, ``max_proposals``,
            ``pre_nms_topk``).
        lr, weight_decay, lr_milestones, lr_gamma: AdamW with step decay (multiply by ``lr_gamma`` at each
            epoch in ``lr_milestones``).
        reg_weight: weight of the IoU regression loss; boundary_region: TEM boundary region width (cells).
        eval: evaluation settings (``max_avg_proposals``); ``tal.run`` passes the config's ``eval:`` block.
    """

    result_kind = "proposals"

    def __init__(
        self,
        in_channels: int,
        L: int = 100,
        D: int | None = None,
        network: dict | None = None,
        postprocess: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        reg_weight: float = 10.0,
        boundary_region: float = 3.0,
        eval: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.L = int(L)
        self.D = int(D) if D is not None else self.L // 2
        if self.L < 2 or not 1 <= self.D <= self.L:
            raise ValueError(
                f"BMN needs a grid of L >= 2 positions and 1 <= D <= L durations, got L={L}, D={self.D} "
                "(set the top-level L, e.g. L=100)"
            )
        net = dict(network or {})
        if "dilations" in net:
            net["dilations"] = tuple(net["dilations"] or [1])
        self.net = BMN(in_channels, self.D, **net)
        self.postprocess = dict(postprocess or {})

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
        return adamw_step_decay(self)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_segments(
        self, batch: dict, out: dict | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, None]]:
        """Proposals ``(segments_sec (K, 2), scores (K,), None)`` of each video of ``batch``, best first;
        ``out`` reuses a forward pass already made on ``batch``."""
        if out is None:
            self._check_length(batch)
            out = self(batch["feats"], batch["mask"])
        valid_len = batch["mask"].sum(1).tolist()
        return [
            (
                *bmn_proposals(
                    out["start"][b],
                    out["end"][b],
                    out["conf_map"][b],
                    float(batch["sec_per_unit"][b]),
                    float(batch["offset_sec"][b]),
                    float(batch["duration_sec"][b]),
                    valid_len[b],
                    **self.postprocess,
                ),
                None,
            )
            for b in range(len(valid_len))
        ]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out, losses = self._shared_step(batch)
        self.log("val/loss", losses["loss"], batch_size=batch["feats"].shape[0])
        self.update_val_metric(batch, self.predict_segments(batch, out))
