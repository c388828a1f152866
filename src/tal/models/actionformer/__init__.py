"""ActionFormer (Zhang et al. 2022): one-stage anchor-free detector with local self-attention on a pyramid."""

from .blocks import (
    ATTENTION_IMPLS,
    Conv1dBTC,
    LayerScale1d,
    LocalSelfAttention,
    MaskedConv1d,
    Scale,
    TransformerBlock,
    banded_block_size,
    banded_local_attention,
    conv1d_btc,
    dense_local_attention,
    downsample_mask,
    linear_btc,
    local_attention,
    local_window_mask,
    max_pool1d_btc,
)
from .losses import PositiveCountEMA, actionformer_loss, diou_loss_1d
from .module import ActionFormerModule, valid_lengths, warmup_cosine_factor, weight_decay_groups
from .network import ActionFormerNet, ConvHead, level_window_sizes, pad_to_multiple, relu_pass_through
from .postprocess import detect_video, select_candidates, vote_per_class
from .targets import DEFAULT_REGRESS_RANGES, assign_targets, make_points

__all__ = [
    "ATTENTION_IMPLS",
    "DEFAULT_REGRESS_RANGES",
    "ActionFormerModule",
    "ActionFormerNet",
    "ConvHead",
    "Conv1dBTC",
    "LayerScale1d",
    "LocalSelfAttention",
    "MaskedConv1d",
    "PositiveCountEMA",
    "Scale",
    "TransformerBlock",
    "actionformer_loss",
    "assign_targets",
    "banded_block_size",
    "banded_local_attention",
    "conv1d_btc",
    "dense_local_attention",
    "detect_video",
    "diou_loss_1d",
    "downsample_mask",
    "level_window_sizes",
    "linear_btc",
    "local_attention",
    "local_window_mask",
    "make_points",
    "max_pool1d_btc",
    "pad_to_multiple",
    "relu_pass_through",
    "select_candidates",
    "valid_lengths",
    "vote_per_class",
    "warmup_cosine_factor",
    "weight_decay_groups",
]
