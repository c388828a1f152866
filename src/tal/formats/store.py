"""Feature stores: one ``(T, C)`` array per video, read lazily, written atomically, described by a manifest.

A store is a folder of ``<video_id>.npy | .npz | .pt`` files or one HDF5 file keyed by video id. Several stores
are concatenated on the channel axis by :class:`ConcatStore` (e.g. I3D + SlowFast, as the ActionFormer entries
to FineAction do), the shorter sequence linearly resampled to the longer one's length.

A folder store may hold ``manifest.json`` (:class:`StoreManifest`): how the features were made (backbone,
weights file, width, snippet geometry) and each video's length and fps. ``tal.features`` writes it; readers
use it to know the width before opening any file.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tal.formats._json import read_json
from tal.utils.io import atomic_write_bytes, atomic_write_json

__all__ = [
    "FEATURE_SUFFIXES",
    "MANIFEST_NAME",
    "ConcatStore",
    "FeatureError",
    "FeatureStore",
    "StoreManifest",
    "check_video_id",
    "read_manifest",
    "resize_features",
    "write_features",
    "write_manifest",
]

FEATURE_SUFFIXES = (".npy", ".npz", ".pt")
MANIFEST_NAME = "manifest.json"


class FeatureError(ValueError):
    """A feature file is missing, unreadable or invalid; the message names the file and the video."""


def resize_features(x, length: int):
    """Linear resize along time: ``(T, C) -> (length, C)`` float32 ``torch.Tensor``.

    ``align_corners=False``: the T input cells and the ``length`` output cells both tile the same time span, so
    output cell ``j`` reads input position ``(j + 0.5) * T / length - 0.5``. Identity when ``T == length``.
    """
    import torch
    import torch.nn.functional as F

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
        import torch

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


@dataclass
class StoreManifest:
    """How a feature store was made, and each video's length: ``manifest.json`` in the store folder.

    Attributes:
        backbone: the model that embedded the snippets (e.g. ``timm:resnet18``, ``torchvision:r3d_18``).
        weights: the weights file it loaded (``None``: randomly initialised).
        width: ``C``, channels of every array.
        feat_stride: frames between consecutive snippets (the frame interval).
        snippet_frames: frames each snippet looks at (the clip length).
        videos: ``video_id -> {"T": positions, "fps": frames per second, "frame_count": decoded frames}``.
        extra: anything else the writer records (input size, normalisation, library versions).
    """

    backbone: str | None = None
    weights: str | None = None
    width: int | None = None
    feat_stride: float | None = None
    snippet_frames: float | None = None
    videos: dict[str, dict] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def same_recipe(self, other: StoreManifest) -> bool:
        """True when ``other`` describes features made the same way (everything but ``videos``)."""
        keys = ("backbone", "weights", "width", "feat_stride", "snippet_frames", "extra")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def _manifest_path(store_path: str | os.PathLike) -> Path:
    path = Path(store_path)
    return path / MANIFEST_NAME if path.suffix not in (".h5", ".hdf5") else path.with_suffix(".manifest.json")


def read_manifest(store_path: str | os.PathLike) -> StoreManifest | None:
    """The manifest of the store at ``store_path`` (``manifest.json`` inside a folder, ``<name>.manifest.json``
    beside an HDF5 file), or ``None`` when it has none."""
    path = _manifest_path(store_path)
    if not path.is_file():
        return None
    data = read_json(path, FeatureError, "feature store manifest")
    known = set(StoreManifest.__dataclass_fields__)
    if not isinstance(data, dict) or not set(data) <= known:
        raise FeatureError(f"{path}: a manifest is a mapping with keys among {sorted(known)}")
    return StoreManifest(**data)


def write_manifest(store_path: str | os.PathLike, manifest: StoreManifest) -> Path:
    """Write ``manifest`` beside the store, atomically."""
    return atomic_write_json(_manifest_path(store_path), asdict(manifest), indent=1)


def write_features(root: str | os.PathLike, video_id: str, x) -> Path:
    """Write one video's ``(T, C)`` features as ``root/<video_id>.npy``, atomically: a reader, or a run killed
    mid-write, never sees a half-written file. Floating arrays keep their dtype (float16 halves the disk),
    others become float32."""
    root = Path(root)
    check_video_id(video_id, root)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise FeatureError(f"video {video_id!r}: features to write must be (T, C) with T > 0, got {x.shape}")
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return atomic_write_bytes(root / f"{video_id}.npy", buf.getvalue())
