"""Dense2sparse: the cascade proposal refiner on top of BMN (seed 000 §3.3, after TCANet's temporal boundary
regressor and Cascade R-CNN)."""

from .data import DEFAULT_INPUT, CascadeDataModule, ProposalItems, pad_proposals
from .losses import cascade_loss, sampled_iou_loss, stage_loss
from .module import CascadeModule
from .network import CascadeRefiner, RefineStage
from .postprocess import refined_proposals, select_inputs
from .sampling import region_positions, sample_at, sample_regions
from .targets import (
    decode_boundaries,
    decode_center_width,
    encode_boundaries,
    encode_center_width,
    match_ground_truth,
    refine_proposals,
    stage_targets,
)

__all__ = [
    "DEFAULT_INPUT",
    "CascadeDataModule",
    "CascadeModule",
    "CascadeRefiner",
    "ProposalItems",
    "RefineStage",
    "cascade_loss",
    "decode_boundaries",
    "decode_center_width",
    "encode_boundaries",
    "encode_center_width",
    "match_ground_truth",
    "pad_proposals",
    "refine_proposals",
    "refined_proposals",
    "region_positions",
    "sample_at",
    "sample_regions",
    "sampled_iou_loss",
    "select_inputs",
    "stage_loss",
    "stage_targets",
]
