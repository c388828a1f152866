"""ActionFormer (Zhang et al. 2022): one-stage anchor-free detector with local self-attention on a pyramid."""

from .blocks import (
    LayerNorm1d,
    LayerScale1d,
    LocalSelfAttention,
    MaskedConv1d,
    Scale,
    TransformerBlock,
    downsample_mask,
    local_attention,
    local_window_mask,
)
from .losses import PositiveCountEMA, actionformer_loss, diou_loss_1d
from .module import ActionFormerModule, warmup_cosine_factor, weight_decay_groups
from .network import ActionFormerNet, ConvHead, level_window_sizes, pad_to_multiple, relu_pass_through
from .postprocess import detect_video, select_candidates, vote_per_class
from .targets import DEFAULT_REGRESS_RANGES, assign_targets, make_points

__all__ = [
    "DEFAULT_REGRESS_RANGES",
    "ActionFormerModule",
    "ActionFormerNet",
    "ConvHead",
    "LayerNorm1d",
    "LayerScale1d",
    "LocalSelfAttention",
    "MaskedConv1d",
    "PositiveCountEMA",
    "Scale",
    "TransformerBlock",
    "actionformer_loss",
    "assign_targets",
    "detect_video",
    "diou_loss_1d",
    "downsample_mask",
    "level_window_sizes",
    "local_attention",
    "local_window_mask",
    "make_points",
    "pad_to_multiple",
    "relu_pass_through",
    "select_candidates",
    "vote_per_class",
    "warmup_cosine_factor",
    "weight_decay_groups",
]
