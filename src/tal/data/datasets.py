"""Datasets over precomputed features for the two regimes, and the batch collation.

* ``resize``: features of a clip linearly resized to ``L`` grid cells spanning the clip (BMN, dense branch).
* ``native``: features at their own rate (one per ``feat_stride`` frames); during training a random crop of
  ``crop_ratio`` (e.g. 90–100%) of the sequence and at most ``max_seq_len`` positions; padded by the collate.

Every item follows the batch contract of ``CONTRIBUTING.md``: ground truth in positions of the returned time
axis, and ``t_sec = position * sec_per_unit + offset_sec`` to map predictions back to seconds.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from tal.data.cleaning import Clip
from tal.formats.annotations import AnnotationSet
from tal.formats.store import ConcatStore, resize_features
from tal.ops.timeaxis import grid_axis, sec_to_positions, snippet_axis


def truncate_segments(
    segments: np.ndarray, start: float, end: float, min_inside: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Clip segments ``(N, 2)`` to the window ``[start, end]``; keep those with at least ``min_inside`` of
    their length inside. Returns ``(clipped (K, 2), kept mask (N,))``."""
    clipped = np.stack([np.clip(segments[:, 0], start, end), np.clip(segments[:, 1], start, end)], axis=1)
    inside = clipped[:, 1] - clipped[:, 0]
    length = np.maximum(segments[:, 1] - segments[:, 0], 1e-12)
    keep = (inside > 0) & (inside / length >= min_inside)
    return clipped[keep], keep


class FeatureDataset(Dataset):
    """Items of ``clips`` (whole videos or crops) of an :class:`AnnotationSet` over a feature store.

    Args:
        ann: ground truth of the split (cleaned).
        store: features; ``store.load(video_id) -> (T, C)``.
        clips: the items; ``clip.video_id`` must be in ``video_ids``.
        video_ids: the split's ordered video ids; ``video_idx`` of an item is the position of its video here.
        regime: ``"resize"`` or ``"native"``.
        L: grid length of the resize regime.
        max_seq_len: longest native sequence at training (longer ones are randomly cropped).
        crop_ratio: ``(lo, hi)`` random crop of the native sequence at training, or ``None``.
        feat_stride, snippet_frames, fps: snippet geometry (:func:`tal.ops.timeaxis.snippet_axis`);
            ``fps=None`` takes each video's own fps.
        train: random crops on; otherwise deterministic whole clips. Crops draw from numpy's global generator
            (seeded by ``seed_everything``, and per DataLoader worker by Lightning's worker init), whose state
            every tal checkpoint saves: a resumed run crops exactly as the uninterrupted one.
        cache: keep loaded arrays in memory (per worker).
    """

    def __init__(
        self,
        ann: AnnotationSet,
        store: ConcatStore,
        clips: list[Clip],
        video_ids: list[str],
        regime: str = "native",
        L: int = 100,
        max_seq_len: int = 256,
        crop_ratio: tuple[float, float] | None = None,
        feat_stride: float = 16,
        snippet_frames: float = 16,
        fps: float | None = None,
        train: bool = False,
        cache: bool = True,
    ):
        if regime not in ("resize", "native"):
            raise ValueError(f"regime must be 'resize' or 'native', got {regime!r}")
        self.ann, self.store, self.clips = ann, store, clips
        self.video_idx = {v: i for i, v in enumerate(video_ids)}
        self.regime, self.L, self.max_seq_len = regime, int(L), int(max_seq_len)
        self.crop_ratio = tuple(crop_ratio) if crop_ratio is not None else None
        self.feat_stride, self.snippet_frames, self.fps = feat_stride, snippet_frames, fps
        self.train, self.cache = train, cache
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def features(self, video_id: str) -> np.ndarray:
        x = self._cache.get(video_id)
        if x is None:
            x = self.store.load(video_id)
            if self.cache:
                self._cache[video_id] = x
        return x

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        video = self.ann[clip.video_id]
        x = self.features(clip.video_id)
        ids = self.ann.label_ids(video)
        if self.regime == "resize":
            item = self._resize_item(x, video.duration_sec, clip, video.segments_sec, ids)
        else:
            fps = self.fps or video.fps
            if not fps:
                raise ValueError(f"video {clip.video_id!r} has no fps in the annotations; set data.fps")
            item = self._native_item(x, fps, clip, video.segments_sec, ids)
        item["video_idx"] = self.video_idx[clip.video_id]
        item["duration_sec"] = video.duration_sec
        return item

    def _resize_item(self, x, duration_sec, clip: Clip, segments_sec, ids) -> dict:
        T = x.shape[0]
        if clip.t_start_sec > 0 or clip.t_end_sec < duration_sec:  # a crop: cut the features proportionally
            lo = int(math.floor(clip.t_start_sec / duration_sec * T))
            hi = max(int(math.ceil(clip.t_end_sec / duration_sec * T)), lo + 1)
            x = x[lo:hi]
            t0, t1 = lo * duration_sec / T, min(hi, T) * duration_sec / T
        else:
            t0, t1 = 0.0, duration_sec
        segs, keep = truncate_segments(segments_sec, t0, t1)
        sec_per_unit, _ = grid_axis(t1 - t0, self.L)
        feats = resize_features(x, self.L).T  # (C, L)
        return {
            "feats": feats,
            "mask": torch.ones(self.L, dtype=torch.bool),
            "segments": torch.as_tensor(
                sec_to_positions(segs, sec_per_unit, t0), dtype=torch.float32
            ).reshape(-1, 2),
            "labels": torch.as_tensor(ids[keep], dtype=torch.long),
            "sec_per_unit": sec_per_unit,
            "offset_sec": t0,
        }

    def _native_item(self, x, fps, clip: Clip, segments_sec, ids) -> dict:
        sec_per_unit, offset_sec = snippet_axis(fps, self.feat_stride, self.snippet_frames)
        segs_idx = sec_to_positions(segments_sec, sec_per_unit, offset_sec)
        T = x.shape[0]
        lo = max(0, int(math.floor((clip.t_start_sec - offset_sec) / sec_per_unit)))
        hi = min(T, max(lo + 1, int(math.ceil((clip.t_end_sec - offset_sec) / sec_per_unit)) + 1))
        if self.train:
            lo, hi = self._random_window(lo, hi, segs_idx)
        segs, keep = truncate_segments(segs_idx, lo, hi)
        return {
            "feats": torch.as_tensor(x[lo:hi].T, dtype=torch.float32),
            "mask": torch.ones(hi - lo, dtype=torch.bool),
            "segments": torch.as_tensor(segs - lo, dtype=torch.float32).reshape(-1, 2),
            "labels": torch.as_tensor(ids[keep], dtype=torch.long),
            "sec_per_unit": sec_per_unit,
            "offset_sec": offset_sec + lo * sec_per_unit,
        }

    def _random_window(self, lo: int, hi: int, segs_idx: np.ndarray, tries: int = 10) -> tuple[int, int]:
        """A random ``crop_ratio`` window of ``[lo, hi)``, at most ``max_seq_len`` long; keeps at least one
        instance when the clip has any (up to ``tries`` draws)."""
        n = hi - lo
        best = (lo, hi)
        for _ in range(tries):
            length = n
            if self.crop_ratio is not None:
                length = max(1, int(round(n * np.random.uniform(*self.crop_ratio))))
            length = min(length, self.max_seq_len)
            start = lo + int(np.random.randint(0, n - length + 1))
            best = (start, start + length)
            if len(segs_idx) == 0 or truncate_segments(segs_idx, *best)[1].any():
                break
        return best


#: the keys of the batch contract; any other key of the items is passed through as a list (see collate_batch)
CONTRACT_KEYS = (
    "video_idx",
    "feats",
    "mask",
    "segments",
    "labels",
    "sec_per_unit",
    "offset_sec",
    "duration_sec",
)


def collate_batch(items: list[dict], pad_to: int | None = None, pad_multiple: int = 1) -> dict:
    """Stack items into the batch contract; pad the time axis with zeros (``mask`` False there).

    The padded length is ``max(pad_to, longest)`` rounded up to a multiple of ``pad_multiple``. Keys beyond
    the contract (a stage's own per-sample data, e.g. the cascade's input proposals or a classifier's video
    label) are passed through as a list with one entry per sample, in batch order.
    """
    longest = max(it["feats"].shape[1] for it in items)
    T = max(pad_to or 0, longest)
    T = int(math.ceil(T / pad_multiple) * pad_multiple)
    C = items[0]["feats"].shape[0]
    feats = torch.zeros(len(items), C, T)
    mask = torch.zeros(len(items), T, dtype=torch.bool)
    for b, it in enumerate(items):
        t = it["feats"].shape[1]
        feats[b, :, :t] = it["feats"]
        mask[b, :t] = it["mask"]
    return {
        "video_idx": torch.tensor([it["video_idx"] for it in items], dtype=torch.long),
        "feats": feats,
        "mask": mask,
        "segments": [it["segments"] for it in items],
        "labels": [it["labels"] for it in items],
        "sec_per_unit": torch.tensor([it["sec_per_unit"] for it in items], dtype=torch.float64),
        "offset_sec": torch.tensor([it["offset_sec"] for it in items], dtype=torch.float64),
        "duration_sec": torch.tensor([it["duration_sec"] for it in items], dtype=torch.float64),
        **{key: [it[key] for it in items] for key in items[0] if key not in CONTRACT_KEYS},
    }
