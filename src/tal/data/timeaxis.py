"""Seconds <-> feature positions. The one place this conversion lives.

Snippet features (I3D, SlowFast, TSN, ...) are extracted every ``feat_stride`` frames from windows of
``num_frames`` frames, so feature ``i`` looks at frames ``[i * feat_stride, i * feat_stride + num_frames)`` and
sits at the centre of that window (ActionFormer's convention)::

    t_sec = (idx * feat_stride + 0.5 * num_frames) / fps
    idx   = (t_sec * fps - 0.5 * num_frames) / feat_stride

The common mistake is to forget the half-window offset (``0.5 * num_frames / fps`` seconds, 0.27 s for 16-frame
snippets at 30 fps): every boundary then lands that much late, which costs mAP at high tIoU.

On a resized grid of ``L`` cells spanning the whole video (BMN), cell ``p`` covers ``[p, p + 1) * duration / L``;
that is the same affine map with ``sec_per_unit = duration / L`` and ``offset_sec = 0``.
"""

from __future__ import annotations

import numpy as np


def idx_to_sec(idx, fps: float, feat_stride: float, num_frames: float):
    """Feature index (scalar or array, may be fractional) -> time in seconds."""
    return (np.asarray(idx, dtype=np.float64) * feat_stride + 0.5 * num_frames) / fps


def sec_to_idx(t_sec, fps: float, feat_stride: float, num_frames: float):
    """Time in seconds (scalar or array) -> fractional feature index. Inverse of :func:`idx_to_sec`."""
    return (np.asarray(t_sec, dtype=np.float64) * fps - 0.5 * num_frames) / feat_stride


def snippet_axis(fps: float, feat_stride: float, num_frames: float) -> tuple[float, float]:
    """``(sec_per_unit, offset_sec)`` of the affine map ``t_sec = idx * sec_per_unit + offset_sec``."""
    return feat_stride / fps, 0.5 * num_frames / fps


def grid_axis(duration_sec: float, length: int) -> tuple[float, float]:
    """``(sec_per_unit, offset_sec)`` of a grid of ``length`` cells spanning ``[0, duration_sec]``."""
    return duration_sec / length, 0.0
