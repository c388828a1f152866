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
from collections import Counter
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


WHAT_TO_DO = "fix or remove the file, or set data.on_bad_feature=skip to leave such videos out (counted)"


class FeatureStore:
    """Lazy reader of one feature store (folder or HDF5 file).

    ``header(video_id)`` reads a file's shape and dtype cheaply (a memory-mapped ``.npy``, the member header of
    an ``.npz``, HDF5 metadata; a ``.pt`` has no header and is read whole); :meth:`validate` checks every
    header of a list of videos before training and decides the expected width. ``load(video_id)`` returns a
    ``(T, C)`` float32 array and raises :class:`FeatureError` naming the file, the video, the problem and what
    to do when the file is missing or unreadable, is not 2-D, is empty, is not numeric, holds NaN/Inf, or its
    width differs from ``channels`` (given, decided by :meth:`validate`, or learnt from the first file read).
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
            try:
                with self._open_h5(self.path) as f:
                    self._files = {k: self.path for k in f.keys()}
            except OSError as e:
                raise FeatureError(f"feature store {self.path}: unreadable HDF5 file ({e})") from None
        else:
            raise FeatureError(f"feature store {self.path}: not a folder nor an .h5/.hdf5 file")
        self.lengths: dict[str, int] = {}  # T of each video whose header was validated
        self.manifest = read_manifest(self.path)
        if self.channels is None and self.manifest is not None:
            self.channels = self.manifest.width

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

    def where(self, video_id: str) -> str:
        return f"feature file {self.file_of(video_id)} (video {video_id!r}, store {self.name!r})"

    # ------------------------------------------------------------------ headers
    def header(self, video_id: str) -> tuple[tuple[int, ...], np.dtype]:
        """``(shape, dtype)`` of a video's array without reading its values (except for ``.pt``)."""
        path, where = self.file_of(video_id), self.where(video_id)
        if video_id not in self._files:
            raise FeatureError(f"{where}: missing")
        try:
            if self.kind == "hdf5":
                node = self._h5file()[video_id]
                if not hasattr(node, "shape"):
                    raise FeatureError(
                        f"{where}: an HDF5 group, not a dataset; store one (T, C) dataset per video"
                    )
                return tuple(node.shape), node.dtype
            if path.suffix == ".npy":
                x = np.load(path, mmap_mode="r", allow_pickle=False)
                return tuple(x.shape), x.dtype
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    key = self._npz_key(z.files, path)
                    with z.zip.open(f"{key}.npy") as f:
                        version = np.lib.format.read_magic(f)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                        elif version == (2, 0):
                            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                        else:  # no public header reader: read the member
                            x = z[key]
                            shape, dtype = x.shape, x.dtype
                return tuple(shape), dtype
            x = self._read(video_id, path)
            return tuple(x.shape), x.dtype
        except FeatureError as e:
            raise FeatureError(f"{where}: {e}; {WHAT_TO_DO}") from None
        except Exception as e:  # corrupt or truncated file: numpy / zip / pickle / h5py errors
            raise FeatureError(f"{where}: unreadable ({type(e).__name__}: {e}); {WHAT_TO_DO}") from None

    def shape_problem(self, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
        """What is wrong with an array of this shape and dtype (width aside), or ``None``."""
        if len(shape) != 2:
            return f"expected a (T, C) array, got shape {shape}"
        if shape[0] == 0 or shape[1] == 0:
            return f"empty array of shape {shape}"
        if dtype.kind not in "iuf":
            return f"non-numeric dtype {dtype} (features must be floats)"
        return None

    def validate(self, video_ids: list[str]) -> dict[str, str]:
        """Check the header of every video of ``video_ids``; set :attr:`channels` (the manifest's or given
        width, else the majority width) and return ``{video_id: problem}`` for the videos that cannot be used
        (missing, unreadable, wrong shape or dtype, minority width), each problem naming the file."""
        problems: dict[str, str] = {}
        widths: dict[str, int] = {}
        for vid in video_ids:
            try:
                shape, dtype = self.header(vid)
            except FeatureError as e:
                problems[vid] = str(e)
                continue
            problem = self.shape_problem(shape, dtype)
            if problem:
                problems[vid] = f"{self.where(vid)}: {problem}; {WHAT_TO_DO}"
            else:
                widths[vid] = shape[1]
                self.lengths[vid] = shape[0]
        if widths:
            counts = Counter(widths.values())
            source = "the store's manifest" if self.manifest and self.manifest.width else "the configuration"
            if self.channels is None:
                self.channels, majority = counts.most_common(1)[0]
                source = f"{majority} of {len(widths)} files"
            for vid, width in widths.items():
                if width != self.channels:
                    problems[vid] = (
                        f"{self.where(vid)}: width {width}, but this store has {self.channels} channels "
                        f"({source}); {WHAT_TO_DO}"
                    )
        return problems

    # ------------------------------------------------------------------ values
    def load(self, video_id: str) -> np.ndarray:
        path, where = self.file_of(video_id), self.where(video_id)
        if video_id not in self._files:
            raise FeatureError(f"{where}: missing")
        try:
            x = self._read(video_id, path)
        except FeatureError as e:
            raise FeatureError(f"{where}: {e}; {WHAT_TO_DO}") from None
        except Exception as e:  # corrupt file: numpy / zip / pickle / h5py errors
            raise FeatureError(f"{where}: unreadable ({type(e).__name__}: {e}); {WHAT_TO_DO}") from None
        x = np.asarray(x)
        problem = self.shape_problem(tuple(x.shape), x.dtype)
        if problem:
            raise FeatureError(f"{where}: {problem}; {WHAT_TO_DO}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported just below
            x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise FeatureError(
                f"{where}: non-finite value (NaN/Inf), first at time index {bad[0]} channel {bad[1]}; {WHAT_TO_DO}"
            )
        if self.channels is None:
            self.channels = x.shape[1]
        elif x.shape[1] != self.channels:
            raise FeatureError(
                f"{where}: width {x.shape[1]} but this store has {self.channels} channels; {WHAT_TO_DO}"
            )
        return x

    def _h5file(self):
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5, self._h5_pid = self._open_h5(self.path), os.getpid()
        return self._h5

    @staticmethod
    def _npz_key(files: list[str], path: Path) -> str:
        key = next((k for k in ("feats", "features", "arr_0") if k in files), None)
        if key is None:
            if len(files) != 1:
                raise FeatureError(f"an npz with arrays {files}: name the features 'feats'")
            key = files[0]
        return key

    def _read(self, video_id: str, path: Path):
        if self.kind == "hdf5":
            node = self._h5file()[video_id]
            if not hasattr(node, "shape"):
                raise FeatureError("an HDF5 group, not a dataset (store one (T, C) dataset per video)")
            return node[()]
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return z[self._npz_key(z.files, path)]
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = next((obj[k] for k in ("feats", "features") if k in obj), None)
        if not isinstance(obj, torch.Tensor):
            raise FeatureError("a .pt file must hold a tensor or a dict with 'feats'")
        if obj.is_floating_point():
            obj = obj.float()
        return obj.numpy()


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

    def validate(self, video_ids: list[str]) -> dict[str, str]:
        """:meth:`FeatureStore.validate` of every store; ``{video_id: problem}`` (the first store's problem)."""
        problems: dict[str, str] = {}
        for store in self.stores:
            for vid, problem in store.validate(video_ids).items():
                problems.setdefault(vid, problem)
        return problems

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
