"""Feature stores: one ``(T, C)`` array per video, read lazily.

A store is a folder of ``<video_id>.npy | .npz | .pt`` files or one HDF5 file keyed by video id. Several stores
are concatenated on the channel axis by :class:`ConcatStore` (I3D + SlowFast in seed 004), the shorter sequence
linearly resampled to the longer one's length.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_SUFFIXES = (".npy", ".npz", ".pt")


class FeatureError(ValueError):
    """A feature file is missing, unreadable or invalid; the message names the file and the video."""


def resize_features(x: np.ndarray | torch.Tensor, length: int) -> torch.Tensor:
    """Linear resize along time: ``(T, C) -> (length, C)`` float32.

    ``align_corners=False``: the T input cells and the ``length`` output cells both tile the same time span, so
    output cell ``j`` reads input position ``(j + 0.5) * T / length - 0.5``. Identity when ``T == length``.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.shape[0] == length:
        return x
    return F.interpolate(x.T[None], size=length, mode="linear", align_corners=False)[0].T.contiguous()


def check_video_id(video_id: str, root: Path) -> None:
    """Reject ids that would escape the feature folder (``../x``, absolute paths, separators)."""
    bad = (
        not video_id
        or video_id in (".", "..")
        or "/" in video_id
        or "\\" in video_id
        or "\x00" in video_id
        or os.path.isabs(video_id)
    )
    if bad:
        raise FeatureError(
            f"{root}: video id {video_id!r} is not a plain file name (it would escape the folder)"
        )


class FeatureStore:
    """Lazy reader of one feature store (folder or HDF5 file).

    ``load(video_id)`` returns a validated ``(T, C)`` float32 array: it raises :class:`FeatureError` naming the
    file and the video when the file is missing or unreadable, is not 2-D, is empty, holds NaN/Inf, or its width
    differs from ``channels`` (given, or learnt from the first file read).
    """

    def __init__(self, path: str | os.PathLike, channels: int | None = None, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.channels = channels
        self._h5 = None
        self._h5_pid = None
        if self.path.is_dir():
            self.kind = "folder"
            self._files = {}
            for p in sorted(self.path.iterdir()):
                if p.suffix in FEATURE_SUFFIXES and p.stem not in self._files:
                    self._files[p.stem] = p
        elif self.path.is_file() and self.path.suffix in (".h5", ".hdf5"):
            self.kind = "hdf5"
            with self._open_h5(self.path) as f:
                self._files = {k: self.path for k in f.keys()}
        else:
            raise FeatureError(f"feature store {self.path}: not a folder nor an .h5/.hdf5 file")

    @staticmethod
    def _open_h5(path):
        import h5py

        return h5py.File(path, "r")

    def __getstate__(self):  # h5py handles are not picklable (DataLoader workers, ddp_spawn)
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def ids(self) -> set[str]:
        return set(self._files)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._files

    def file_of(self, video_id: str) -> Path:
        check_video_id(video_id, self.path)
        if self.kind == "hdf5":
            return self.path
        return self._files.get(video_id, self.path / f"{video_id}.npy")

    def load(self, video_id: str) -> np.ndarray:
        path = self.file_of(video_id)
        where = f"feature file {path} (video {video_id!r}, store {self.name!r})"
        if video_id not in self._files:
            raise FeatureError(f"{where}: missing")
        try:
            x = self._read(video_id, path)
        except FeatureError:
            raise
        except Exception as e:  # corrupt file: numpy / zip / pickle / h5py errors
            raise FeatureError(f"{where}: unreadable ({type(e).__name__}: {e})") from None
        x = np.asarray(x)
        if x.ndim != 2:
            raise FeatureError(f"{where}: expected a (T, C) array, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise FeatureError(f"{where}: empty sequence (T = 0)")
        if not np.issubdtype(x.dtype, np.number):
            raise FeatureError(f"{where}: non-numeric dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise FeatureError(f"{where}: non-finite value (NaN/Inf), first at time index {bad[0]}")
        if self.channels is None:
            self.channels = x.shape[1]
        elif x.shape[1] != self.channels:
            raise FeatureError(f"{where}: width {x.shape[1]} but this store has {self.channels} channels")
        return x

    def _read(self, video_id: str, path: Path):
        if self.kind == "hdf5":
            if self._h5 is None or self._h5_pid != os.getpid():
                self._h5, self._h5_pid = self._open_h5(self.path), os.getpid()
            return self._h5[video_id][()]
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in ("feats", "features", "arr_0") if k in z.files), None)
                if key is None:
                    if len(z.files) != 1:
                        raise FeatureError(f"{path}: npz with arrays {z.files}; name one 'feats'")
                    key = z.files[0]
                return z[key]
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = next((obj[k] for k in ("feats", "features") if k in obj), None)
        if not isinstance(obj, torch.Tensor):
            raise FeatureError(f"{path}: .pt file must hold a tensor or a dict with 'feats'")
        return obj.float().numpy()


class ConcatStore:
    """Channel concatenation of several stores; the shorter sequences are resized to the longest length."""

    def __init__(self, stores: list[FeatureStore]):
        if not stores:
            raise FeatureError("no feature store given (data.feature_dirs is empty)")
        self.stores = stores

    @classmethod
    def from_paths(cls, paths, channels: list[int | None] | None = None) -> ConcatStore:
        channels = channels or [None] * len(paths)
        return cls([FeatureStore(p, c) for p, c in zip(paths, channels)])

    def ids(self) -> set[str]:
        return set.intersection(*(s.ids() for s in self.stores))

    @property
    def channels(self) -> int | None:
        if any(s.channels is None for s in self.stores):
            return None
        return sum(s.channels for s in self.stores)

    def load(self, video_id: str) -> np.ndarray:
        parts = [s.load(video_id) for s in self.stores]
        if len(parts) == 1:
            return parts[0]
        length = max(p.shape[0] for p in parts)
        parts = [p if p.shape[0] == length else resize_features(p, length).numpy() for p in parts]
        return np.concatenate(parts, axis=1)
