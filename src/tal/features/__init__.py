"""Raw videos -> feature stores: streaming PyAV decoding, timm (TSN-style) and torchvision video backbones with
local weights, and a resumable Lightning ``predict`` that spreads videos over processes.

``python -m tal.features VIDEO_DIR OUT_DIR backbone=timm:resnet50 weights=/w/r50.safetensors feat_stride=16``, or
from a notebook ``tal.features.extract(video_dir, out_dir, backbone=..., weights=...)``.
"""

from tal.features.backbones import TORCHVISION_VIDEO_MODELS, Backbone, BackboneError, build_backbone
from tal.features.decode import FrameSpec, VideoError, VideoReader, snippet_count, snippet_windows
from tal.features.extract import ExtractResult, extract, find_videos

__all__ = [
    "TORCHVISION_VIDEO_MODELS",
    "Backbone",
    "BackboneError",
    "ExtractResult",
    "FrameSpec",
    "VideoError",
    "VideoReader",
    "build_backbone",
    "extract",
    "find_videos",
    "snippet_count",
    "snippet_windows",
]
