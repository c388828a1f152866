"""Seconds <-> feature positions: the one place this conversion lives (data, every post-processing, the cascade).

Every time axis in tal is affine, ``t_sec = position * sec_per_unit + offset_sec``:

* Snippet features (I3D, SlowFast, TSN, ...) are extracted every ``feat_stride`` frames from windows of
  ``snippet_frames`` frames, so feature ``i`` looks at frames ``[i * feat_stride, i * feat_stride +
  snippet_frames)`` and sits at the centre of that window (ActionFormer's convention)::

      t_sec = (idx * feat_stride + 0.5 * snippet_frames) / fps
      idx   = (t_sec * fps - 0.5 * snippet_frames) / feat_stride

  that is ``sec_per_unit = feat_stride / fps`` and ``offset_sec = 0.5 * snippet_frames / fps``
  (:func:`snippet_axis`). The common mistake is to forget the half-window offset (0.27 s for 16-frame
  snippets at 30 fps): every boundary then lands that much late, which costs mAP at high tIoU.
* On a resized grid of ``L`` cells spanning the whole video (BMN), cell ``p`` covers ``[p, p + 1) * duration /
  L``: ``sec_per_unit = duration / L``, ``offset_sec = 0`` (:func:`grid_axis`).

Conversions run in float64: a float32 time rounds past the duration (37.79 -> 37.790001) and loses
milliseconds on long videos.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "grid_axis",
    "idx_to_sec",
    "positions_to_sec",
    "sec_to_idx",
    "sec_to_positions",
    "snippet_axis",
]


def snippet_axis(fps: float, feat_stride: float, snippet_frames: float) -> tuple[float, float]:
    """``(sec_per_unit, offset_sec)`` of snippet features: one every ``feat_stride`` frames, each over a window
    of ``snippet_frames`` frames, at ``fps`` frames per second."""
    return feat_stride / fps, 0.5 * snippet_frames / fps


def grid_axis(duration_sec: float, length: int) -> tuple[float, float]:
    """``(sec_per_unit, offset_sec)`` of a grid of ``length`` cells spanning ``[0, duration_sec]``."""
    return duration_sec / length, 0.0


def positions_to_sec(
    positions, sec_per_unit: float, offset_sec: float = 0.0, duration_sec: float | None = None
):
    """Positions on a time axis (any shape, may be fractional) -> seconds, in float64.

    ``t_sec = positions * sec_per_unit + offset_sec``, clamped to ``[0, duration_sec]`` when ``duration_sec`` is
    given. A ``torch.Tensor`` gives a float64 tensor on its device, anything else a float64 ``np.ndarray``.
    """
    if isinstance(positions, torch.Tensor):
        t_sec = positions.double() * sec_per_unit + offset_sec
        return t_sec if duration_sec is None else t_sec.clamp(min=0.0, max=float(duration_sec))
    t_sec = np.asarray(positions, dtype=np.float64) * sec_per_unit + offset_sec
    return t_sec if duration_sec is None else np.clip(t_sec, 0.0, float(duration_sec))


def sec_to_positions(t_sec, sec_per_unit: float, offset_sec: float = 0.0):
    """Seconds (any shape) -> fractional positions, in float64: the inverse of :func:`positions_to_sec`
    (without its clamp). A ``torch.Tensor`` gives a float64 tensor, anything else a float64 ``np.ndarray``."""
    if isinstance(t_sec, torch.Tensor):
        return (t_sec.double() - offset_sec) / sec_per_unit
    return (np.asarray(t_sec, dtype=np.float64) - offset_sec) / sec_per_unit


def idx_to_sec(idx, fps: float, feat_stride: float, snippet_frames: float):
    """Snippet feature index (scalar or array, may be fractional) -> time in seconds (float64)."""
    return (np.asarray(idx, dtype=np.float64) * feat_stride + 0.5 * snippet_frames) / fps


def sec_to_idx(t_sec, fps: float, feat_stride: float, snippet_frames: float):
    """Time in seconds (scalar or array) -> fractional snippet index (float64). Inverse of :func:`idx_to_sec`."""
    return (np.asarray(t_sec, dtype=np.float64) * fps - 0.5 * snippet_frames) / feat_stride
