"""BMN (Lin et al. 2019) with the fused boundary-matching layer, LGTE (TCANet) and dilated GCNeXt (G-TAD)."""

from .blocks import LGTE, GCNeXt, edge_features, knn_indices, local_global_attention_mask
from .bm_layer import (
    BoundaryMatching,
    bm_interp_weights,
    bm_sample_positions,
    bm_sampling_operator,
    boundary_matching,
)
from .losses import bmn_loss, iou_regression_loss, weighted_logistic_loss
from .module import BMNModule
from .network import BMN
from .postprocess import bmn_candidates, bmn_proposals, boundary_candidates
from .targets import bmn_targets, boundary_targets, iou_map_targets, valid_map_mask

__all__ = [
    "BMN",
    "LGTE",
    "BMNModule",
    "BoundaryMatching",
    "GCNeXt",
    "bm_interp_weights",
    "bm_sample_positions",
    "bm_sampling_operator",
    "bmn_candidates",
    "bmn_loss",
    "bmn_proposals",
    "bmn_targets",
    "boundary_candidates",
    "boundary_matching",
    "boundary_targets",
    "edge_features",
    "iou_map_targets",
    "iou_regression_loss",
    "knn_indices",
    "local_global_attention_mask",
    "valid_map_mask",
    "weighted_logistic_loss",
]
