"""Pure-PyTorch segment operations: tIoU, NMS, Soft-NMS, voting."""

from tal.ops.segments import nms, paired_segment_iou, segment_ioa, segment_iou, segment_voting, soft_nms

__all__ = ["nms", "paired_segment_iou", "segment_ioa", "segment_iou", "segment_voting", "soft_nms"]
