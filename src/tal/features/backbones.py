"""Snippet embedders: any timm image model (TSN-style, frame features averaged over the snippet) and torchvision's
video models, with weights from a local file only.

``build_backbone("timm:resnet50", weights="/w/resnet50.safetensors", snippet_frames=8)`` returns a
:class:`Backbone`: ``uint8 frames (B, K, H, W, 3) -> features (B, C)`` taken before the classifier, frames
normalised with the model's own mean and std. Its :attr:`Backbone.frame_spec` says how to shape frames (resize +
centre crop, as the model's pretrained config says: timm's ``crop_pct`` rule, torchvision's weights transforms).

Weights: a state dict file (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``, optionally inside ``state_dict`` /
``model``) loaded strictly except for the classifier, so a file for another architecture is an error, never a
silent partial load (timm's own ``pretrained_cfg_overlay=dict(file=...)`` path drops the classifier with
``strict=False`` and only logs keys it could not place). Nothing is downloaded: without a file the model is
randomly initialised and a warning says so.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from tal.features.decode import FrameSpec

__all__ = ["TORCHVISION_VIDEO_MODELS", "Backbone", "BackboneError", "build_backbone", "file_sha256"]

#: torchvision video models and the attribute holding their classifier (replaced by an identity)
TORCHVISION_VIDEO_MODELS = {
    "r3d_18": "fc",
    "mc3_18": "fc",
    "r2plus1d_18": "fc",
    "s3d": "classifier",
    "mvit_v1_b": "head",
    "mvit_v2_s": "head",
    "swin3d_t": "head",
    "swin3d_s": "head",
    "swin3d_b": "head",
}


class BackboneError(ValueError):
    """A backbone cannot be built or its weights do not fit; the message names the model and the file."""


class Backbone(nn.Module):
    """``uint8 frames (B, K, H, W, 3) -> (B, C)`` float features of ``B`` snippets of ``K`` frames.

    ``kind == "image"``: every frame goes through the 2D model and the ``K`` frame features are averaged (TSN's
    consensus); ``kind == "video"``: the snippet is one ``(3, K, H, W)`` clip.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        kind: str,
        frame_spec: FrameSpec,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        weights: str | None,
    ):
        super().__init__()
        self.name, self.model, self.kind, self.frame_spec, self.weights = (
            name,
            model,
            kind,
            frame_spec,
            weights,
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.width: int | None = None

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 (..., H, W, 3) -> float (..., 3, H, W)``, scaled to [0, 1] then ``(x - mean) / std``."""
        x = frames.movedim(-1, -3).float().div_(255.0)
        return (x - self.mean) / self.std

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        B, K = frames.shape[:2]
        x = self.normalize(frames)  # (B, K, 3, H, W)
        if self.kind == "image":
            feats = self.model(x.flatten(0, 1))  # (B*K, C)
            return feats.view(B, K, -1).mean(dim=1)
        return self.model(x.transpose(1, 2))  # (B, 3, K, H, W) -> (B, C)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded in the feature manifest to identify the weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_backbone(
    name: str, weights: str | os.PathLike | None = None, snippet_frames: int = 1, seed: int = 0
) -> Backbone:
    """The :class:`Backbone` called ``name``: ``timm:<model>`` (or a bare timm name) or ``torchvision:<model>``
    (one of :data:`TORCHVISION_VIDEO_MODELS`), with ``weights`` from a local state dict file (``None``: random
    init from ``seed``, with a warning, so a resumed run embeds with the same random model). One dry run on
    ``snippet_frames`` black frames checks the model accepts snippets of that length and sets
    :attr:`Backbone.width`."""
    source, _, model_name = name.rpartition(":")
    source = source or "timm"
    if weights is not None:
        weights = str(Path(weights).expanduser().resolve())
        if not Path(weights).is_file():
            raise BackboneError(f"backbone {name}: weights file {weights} does not exist")
    else:
        warnings.warn(
            f"backbone {name}: no weights file given (weights=null), the model is randomly initialised; its "
            "features carry no learnt meaning",
            UserWarning,
            stacklevel=2,
        )
    builders = {"timm": _timm_backbone, "torchvision": _torchvision_backbone}
    if source not in builders:
        raise BackboneError(f"backbone {name!r}: the source must be 'timm' or 'torchvision'")
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's random state alone
        torch.manual_seed(seed)
        backbone = builders[source](model_name, weights)
    backbone.name = f"{source}:{model_name}"
    backbone.eval()
    ch, cw = backbone.frame_spec.crop
    with torch.inference_mode():
        try:
            out = backbone(torch.zeros(1, snippet_frames, ch, cw, 3, dtype=torch.uint8))
        except RuntimeError as e:
            raise BackboneError(
                f"backbone {backbone.name} cannot embed snippets of {snippet_frames} frames of {ch}x{cw} "
                f"({str(e).splitlines()[0]})"
            ) from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise BackboneError(f"backbone {backbone.name}: expected (1, C) features, got {tuple(out.shape)}")
    backbone.width = int(out.shape[1])
    return backbone


def _load_strict(model: nn.Module, state_dict: dict, head_keys: set[str], name: str, path: str) -> None:
    state_dict = {k: v for k, v in state_dict.items() if k not in head_keys}
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if k not in head_keys]
    if missing or result.unexpected_keys:
        raise BackboneError(
            f"weights file {path} does not fit backbone {name}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(result.unexpected_keys)} unexpected keys {result.unexpected_keys[:3]}"
        )


def _read_state_dict(path: str, name: str) -> dict:
    from timm.models import load_state_dict  # state_dict / model / EMA containers, safetensors, 'module.'

    try:
        return load_state_dict(path, use_ema=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader error becomes one clear line
        raise BackboneError(
            f"weights file {path} for backbone {name}: unreadable ({type(e).__name__}: {e})"
        ) from None


def _timm_backbone(model_name: str, weights: str | None) -> Backbone:
    import timm
    from timm.data import resolve_data_config

    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except RuntimeError as e:  # unknown model
        raise BackboneError(f"backbone timm:{model_name}: {e}") from None
    if weights is not None:
        classifiers = model.pretrained_cfg.get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        head = {f"{c}.{p}" for c in classifiers for p in ("weight", "bias")}
        _load_strict(
            model, _read_state_dict(weights, f"timm:{model_name}"), head, f"timm:{model_name}", weights
        )
    cfg = resolve_data_config({}, model=model)
    size = cfg["input_size"][1:]
    crop_pct = cfg.get("crop_pct") or 1.0
    spec = FrameSpec(
        resize=[int(size[0] / crop_pct)] if size[0] == size[1] else [int(s / crop_pct) for s in size],
        crop=list(size),
        interpolation=cfg.get("interpolation", "bilinear")
        if cfg.get("interpolation") != "random"
        else "bilinear",
    )
    return Backbone(f"timm:{model_name}", model, "image", spec, cfg["mean"], cfg["std"], weights)


def _torchvision_backbone(model_name: str, weights: str | None) -> Backbone:
    from torchvision.models import get_model, get_model_weights

    if model_name not in TORCHVISION_VIDEO_MODELS:
        raise BackboneError(
            f"backbone torchvision:{model_name}: not a torchvision video model; choose from "
            f"{sorted(TORCHVISION_VIDEO_MODELS)} (or a timm image model: timm:<name>)"
        )
    model = get_model(model_name, weights=None)
    head = TORCHVISION_VIDEO_MODELS[model_name]
    if weights is not None:
        head_keys = {k for k in model.state_dict() if k.startswith(head + ".")}
        sd = _read_state_dict(weights, f"torchvision:{model_name}")
        head_keys |= {k for k in sd if k.startswith(head + ".")}
        _load_strict(model, sd, head_keys, f"torchvision:{model_name}", weights)
    setattr(model, head, nn.Identity())
    # the preprocessing of the model's published weights (metadata only: nothing is downloaded)
    transform = get_model_weights(model_name).DEFAULT.transforms()
    spec = FrameSpec(
        resize=list(transform.resize_size),
        crop=list(transform.crop_size),
        interpolation=transform.interpolation.value,
    )
    return Backbone(
        f"torchvision:{model_name}",
        model,
        "video",
        spec,
        tuple(transform.mean),
        tuple(transform.std),
        weights,
    )
