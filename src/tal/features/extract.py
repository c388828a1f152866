"""Raw videos -> a feature store (one ``(T, C)`` array per video + ``manifest.json``), as a Lightning ``predict``.

The items are snippet batches of one video each, streamed by :class:`SnippetStream` (decode, window, batch);
:class:`ExtractionModule` embeds them and writes a video through :func:`tal.formats.store.write_features` once its
last batch has arrived. Videos are split over processes before the run (longest-processing-time first on file
size), so ``trainer=ddp`` / ``gpu`` spread them over devices and nodes, every process writes only its own videos,
and a DataLoader worker decodes while the model embeds (``num_workers``).

Resumable: each finished video is also journaled (``.extract/done/<video_id>.json``, atomic); at the end rank
zero folds the journal into ``manifest.json`` and writes ``extract_report.json``. A later run skips every video
the manifest or the journal lists with the same recipe and a feature file of the recorded length; a run killed
mid-way leaves no half-written file (atomic writes) and loses at most the videos in flight. A store made with a
different recipe (backbone, weights, geometry, preprocessing) is an error, never a mix.

Bad input (see :mod:`tal.features.decode`) is one clear line per video, counted in the summary and listed in
``extract_report.json``; the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from rich.console import Console
from rich.markup import escape
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tal.features.backbones import Backbone, build_backbone, file_sha256
from tal.features.decode import (
    VIDEO_SUFFIXES,
    FrameSpec,
    VideoError,
    VideoReader,
    snippet_count,
    snippet_frame_needed,
    snippet_windows,
)
from tal.formats.store import (
    FeatureError,
    StoreManifest,
    check_video_id,
    read_manifest,
    write_features,
    write_manifest,
)
from tal.utils.io import atomic_write_json

__all__ = [
    "REPORT_NAME",
    "ExtractResult",
    "ExtractionModule",
    "ExtractionProgress",
    "Journal",
    "SnippetStream",
    "VideoDataModule",
    "extract",
    "find_videos",
    "make_recipe",
    "recipe_hash",
    "shard_videos",
]

REPORT_NAME = "extract_report.json"
JOURNAL_DIR = ".extract"


# ---------------------------------------------------------------------------------------------- inputs
def find_videos(source: str | os.PathLike | list) -> list[tuple[str, str]]:
    """``(video_id, path)`` of the videos at ``source``: one file, a folder (searched recursively for
    :data:`VIDEO_SUFFIXES`), or a list of files. The id is the file name without suffix; two files with one id
    are an error naming both."""
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"video files not found: {missing[:5]}")
    else:
        root = Path(source)
        if root.is_file():
            paths = [root]
        elif root.is_dir():
            paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not paths:
                raise FileNotFoundError(f"{root}: no video files ({' '.join(VIDEO_SUFFIXES)}) in this folder")
        else:
            raise FileNotFoundError(f"{root}: no such video file or folder")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(f"two videos would get the id {p.stem!r}: {seen[p.stem]} and {p}; rename one")
        check_video_id(p.stem, p.parent)
        seen[p.stem] = p
    return [(vid, str(p)) for vid, p in seen.items()]


def shard_videos(videos: list[tuple[str, str]], parts: int) -> list[list[tuple[str, str]]]:
    """Split videos over ``parts`` processes, largest file first onto the least-loaded part (LPT on bytes, a
    proxy for decoding time); deterministic, so every process computes the same split. Each part keeps the
    input order."""
    order = {v: i for i, v in enumerate(videos)}
    loads = [0] * parts
    out: list[list[tuple[str, str]]] = [[] for _ in range(parts)]
    for item in sorted(videos, key=lambda v: (-_size(v[1]), v[0])):
        k = min(range(parts), key=lambda i: (loads[i], i))
        out[k].append(item)
        loads[k] += max(_size(item[1]), 1)
    return [sorted(part, key=order.__getitem__) for part in out]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------- recipe
def make_recipe(
    backbone: Backbone, feat_stride: int, snippet_frames: int, fps: float | None, dtype: str, seed: int = 0
) -> StoreManifest:
    """The manifest of a store made by ``backbone`` at this snippet geometry, without videos yet (``seed``: of
    the random init, recorded when there are no weights)."""
    spec = backbone.frame_spec
    extra = {
        "kind": backbone.kind,
        "resize": list(spec.resize),
        "crop": list(spec.crop),
        "interpolation": spec.interpolation,
        "mean": [float(x) for x in backbone.mean.flatten()],
        "std": [float(x) for x in backbone.std.flatten()],
        "fps": float(fps) if fps is not None else None,
        "dtype": dtype,
        "weights_sha256": file_sha256(backbone.weights) if backbone.weights else None,
        "init_seed": None if backbone.weights else seed,
    }
    return StoreManifest(
        backbone.name, backbone.weights, backbone.width, feat_stride, snippet_frames, extra=extra
    )


def recipe_hash(manifest: StoreManifest) -> str:
    """Short digest of how features are made (everything in the manifest but ``videos``)."""
    keys = ("backbone", "weights", "width", "feat_stride", "snippet_frames", "extra")
    text = json.dumps({k: getattr(manifest, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _recipe_diff(old: StoreManifest, new: StoreManifest) -> str:
    keys = ("backbone", "weights", "width", "feat_stride", "snippet_frames")
    diffs = [
        f"{k}: {getattr(old, k)!r} vs {getattr(new, k)!r}" for k in keys if getattr(old, k) != getattr(new, k)
    ]
    diffs += [
        f"{k}: {old.extra.get(k)!r} vs {new.extra.get(k)!r}"
        for k in sorted(set(old.extra) | set(new.extra))
        if old.extra.get(k) != new.extra.get(k)
    ]
    return "; ".join(diffs)


# ---------------------------------------------------------------------------------------------- journal
class Journal:
    """Per-video records of a store being written: ``.extract/done/<id>.json`` (``T``, ``fps``, ``frame_count``,
    ``recipe``, ``rank``) and ``.extract/failed/<id>.json`` (``path``, ``reason``). Each file is written atomically
    by the one process that handled the video, so processes never write the same file."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root) / JOURNAL_DIR

    def _write(self, kind: str, video_id: str, record: dict) -> None:
        atomic_write_json(self.root / kind / f"{video_id}.json", record)

    def done(self, video_id: str, record: dict) -> None:
        self._write("done", video_id, record)

    def failed(self, video_id: str, record: dict) -> None:
        self._write("failed", video_id, record)

    def read(self, kind: str) -> dict[str, dict]:
        folder = self.root / kind
        if not folder.is_dir():
            return {}
        out = {}
        for p in sorted(folder.glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # unreadable entry: the video counts as not done and is extracted again
        return out

    def remove(self, kind: str, video_ids) -> None:
        for vid in video_ids:
            (self.root / kind / f"{vid}.json").unlink(missing_ok=True)

    def prune(self) -> None:
        """Remove the journal folders once they are empty."""
        for folder in (self.root / "done", self.root / "failed", self.root):
            try:
                folder.rmdir()
            except OSError:  # absent, or still holds entries
                pass


def _written_length(root: Path, video_id: str) -> int | None:
    try:
        return int(np.load(root / f"{video_id}.npy", mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return None


def plan(out_dir: Path, videos: list[tuple[str, str]], recipe: StoreManifest) -> tuple[list, list[str]]:
    """``(todo, done_ids)``: videos still to extract and those already in the store with this recipe (listed by
    the manifest or the journal, with a feature file of the recorded length). Reads only."""
    existing = read_manifest(out_dir)
    if existing is not None and not existing.same_recipe(recipe):
        raise FeatureError(
            f"{out_dir} already holds features made another way ({_recipe_diff(existing, recipe)}); "
            "extract into another folder, or delete this one first"
        )
    known = dict(existing.videos) if existing is not None else {}
    digest = recipe_hash(recipe)
    for vid, rec in Journal(out_dir).read("done").items():
        if rec.get("recipe") == digest:
            known.setdefault(vid, rec)
    todo, done = [], []
    for vid, path in videos:
        rec = known.get(vid)
        if rec is not None and _written_length(out_dir, vid) == rec.get("T"):
            done.append(vid)
        else:
            todo.append((vid, path))
    return todo, done


def finalize(out_dir: Path, recipe: StoreManifest, todo: list[str], already_done: list[str]) -> dict:
    """Fold the journal into ``manifest.json`` and write ``extract_report.json`` (rank zero, after every process
    has finished). Returns the report."""
    journal = Journal(out_dir)
    manifest = read_manifest(out_dir) or StoreManifest(**{**recipe.__dict__, "videos": {}})
    digest = recipe_hash(recipe)
    done = {vid: rec for vid, rec in journal.read("done").items() if rec.get("recipe") == digest}
    for vid, rec in done.items():
        manifest.videos[vid] = {k: rec[k] for k in ("T", "fps", "frame_count")}
    write_manifest(out_dir, manifest)
    journal.remove("done", done)
    written = {vid: done[vid].get("rank", 0) for vid in todo if vid in done}
    failures = journal.read("failed")
    failed = {vid: failures[vid]["reason"] for vid in todo if vid not in written and vid in failures}
    journal.remove("failed", failures)
    journal.prune()
    missing = [vid for vid in todo if vid not in written and vid not in failed]
    for vid in missing:  # cannot happen unless a process died; say so rather than drop it silently
        failed[vid] = "not extracted (its process stopped before finishing it)"
    report = {
        "out_dir": str(out_dir),
        "backbone": recipe.backbone,
        "videos": len(todo) + len(already_done),
        "already_done": sorted(already_done),
        "written": written,
        "failed": failed,
    }
    atomic_write_json(out_dir / REPORT_NAME, report, indent=1)
    return report


# ---------------------------------------------------------------------------------------------- data
class SnippetStream(IterableDataset):
    """Batches of up to ``batch_size`` snippets of one video, decoded as they are needed.

    Each item is a dict: ``video_id``, ``path``, ``start_idx`` (index of its first snippet), ``frames`` uint8
    ``(B, snippet_frames, h, w, 3)``, ``expected_T`` (from the container, for progress), and ``last``. The last
    item of a video (possibly with ``B = 0``) carries ``T``, ``fps`` and ``frame_count`` after the decoder has
    checked the whole stream, or ``error`` (then the video must not be written).

    Args:
        shards: the videos of each process (:func:`shard_videos`); process ``rank`` reads ``shards[rank]``,
            split again over its DataLoader workers.
    """

    def __init__(
        self,
        shards: list[list[tuple[str, str]]],
        feat_stride: int,
        snippet_frames: int,
        frame_spec: FrameSpec,
        fps: float | None = None,
        batch_size: int = 8,
        rank: int = 0,
    ):
        super().__init__()
        self.shards, self.rank = shards, rank
        self.feat_stride, self.snippet_frames = int(feat_stride), int(snippet_frames)
        self.frame_spec, self.fps, self.batch_size = frame_spec, fps, int(batch_size)

    def videos(self) -> list[tuple[str, str]]:
        """This process's videos, or this DataLoader worker's share of them."""
        mine = self.shards[self.rank]
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            mine = shard_videos(mine, info.num_workers)[info.id]
        return mine

    def __iter__(self):
        for video_id, path in self.videos():
            yield from self.items(video_id, path)

    def items(self, video_id: str, path: str):
        """The items of one video (see the class docstring)."""
        s, k = self.feat_stride, self.snippet_frames
        empty = np.zeros((0, k, *self.frame_spec.crop, 3), np.uint8)
        item = {"video_id": video_id, "path": path, "expected_T": None, "error": None}
        item.update(T=None, fps=None, frame_count=None)
        pending: list[np.ndarray] = []  # snippets (k, h, w, 3) of the batch being filled
        try:
            with VideoReader(path, self.fps) as reader:
                announced = reader.expected_frames()
                item["expected_T"] = snippet_count(announced, s, k) if announced else None
                frames = reader.frames(self.frame_spec, needed=lambda j: snippet_frame_needed(j, s, k))
                for i, window in snippet_windows(frames, s, k):
                    pending.append(np.stack(window))
                    if len(pending) == self.batch_size:
                        yield {
                            **item,
                            "start_idx": i + 1 - len(pending),
                            "frames": np.stack(pending),
                            "last": False,
                        }
                        pending = []
                T = snippet_count(reader.frame_count, s, k)  # decoding ended and the stream checked out
                if T == 0:
                    raise VideoError(
                        f"{path}: {reader.frame_count} frames, shorter than one snippet (snippet_frames={k})"
                    )
        except VideoError as e:
            yield {**item, "start_idx": 0, "frames": empty, "last": True, "error": str(e)}
            return
        item.update(T=T, fps=reader.fps, frame_count=reader.frame_count, expected_T=T)
        yield {
            **item,
            "start_idx": T - len(pending),
            "frames": np.stack(pending) if pending else empty,
            "last": True,
        }


class VideoDataModule(pl.LightningDataModule):
    """The predict loader of an extraction: process ``trainer.global_rank`` reads ``shards[global_rank]``.
    Holds only plain data, so it pickles for ``ddp_spawn``."""

    def __init__(
        self,
        shards: list[list[tuple[str, str]]],
        feat_stride: int,
        snippet_frames: int,
        frame_spec: FrameSpec,
        fps: float | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
    ):
        super().__init__()
        self.shards = shards
        self.stream_args = (feat_stride, snippet_frames, frame_spec, fps, batch_size)
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        stream = SnippetStream(self.shards, *self.stream_args, rank=rank)
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers)


# ---------------------------------------------------------------------------------------------- model
class ExtractionModule(pl.LightningModule):
    """Embeds snippet batches with ``backbone`` and writes each finished video to ``out_dir`` (its own process's
    videos only); at the end of the run rank zero folds the journal into the manifest (:func:`finalize`)."""

    def __init__(
        self,
        backbone: Backbone,
        out_dir: str,
        recipe: StoreManifest,
        todo: list[str],
        already_done: list[str],
        dtype: str = "float32",
        verbose: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.out_dir = Path(out_dir)
        self.recipe, self.digest = recipe, recipe_hash(recipe)
        self.todo, self.already_done = list(todo), list(already_done)
        self.out_dtype = np.dtype(dtype)  # (LightningModule owns `dtype`)
        self.verbose = verbose
        self._pending: dict[str, list[np.ndarray]] = {}  # video_id -> embedded batches (B, C) so far
        self.report: dict | None = None

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(frames)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> int:
        vid = batch["video_id"]
        journal = Journal(self.out_dir)
        if batch["error"]:
            self._pending.pop(vid, None)
            journal.failed(vid, {"path": batch["path"], "reason": batch["error"]})
            if self.verbose:
                Console(stderr=True).print(
                    f"[yellow]skipped[/] video {escape(vid)}: {escape(batch['error'])}", soft_wrap=True
                )
            return 0
        parts = self._pending.setdefault(vid, [])
        if len(batch["frames"]):
            done = sum(len(p) for p in parts)
            if batch["start_idx"] != done:  # a video's batches come from one worker, in order
                raise RuntimeError(
                    f"video {vid}: batch starts at snippet {batch['start_idx']}, expected {done}"
                )
            parts.append(self(batch["frames"]).float().cpu().numpy())
        if not batch["last"]:
            return len(batch["frames"])
        x = np.concatenate(self._pending.pop(vid), axis=0)  # T >= 1: the stream never ends a video empty
        if x.shape[0] != batch["T"]:
            raise RuntimeError(f"video {vid}: embedded {x.shape[0]} snippets, expected {batch['T']}")
        write_features(self.out_dir, vid, x.astype(self.out_dtype))
        record = {k: batch[k] for k in ("T", "fps", "frame_count")}
        journal.done(vid, {**record, "recipe": self.digest, "rank": self.global_rank})
        return len(batch["frames"])  # (a count, so Lightning does not warn about a None result)

    def on_predict_epoch_end(self) -> None:
        self.trainer.strategy.barrier()  # every process has written its videos and journal entries
        if self.trainer.is_global_zero:
            self.report = finalize(self.out_dir, self.recipe, self.todo, self.already_done)
        self.trainer.strategy.barrier()


class ExtractionProgress(pl.Callback):
    """A rich progress bar on rank zero: its videos, and the snippets of each video in flight."""

    def __init__(self):
        self.progress = None

    def on_predict_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        total = len(trainer.datamodule.shards[0])
        label = "videos" if trainer.world_size == 1 else "videos (rank 0)"
        self.videos = self.progress.add_task(label, total=total)
        self.snippets: dict[str, int] = {}
        self.progress.start()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.progress is None:
            return
        vid = batch["video_id"]
        if vid not in self.snippets:
            self.snippets[vid] = self.progress.add_task(f"  {escape(vid)}", total=batch["expected_T"])
        task = self.snippets[vid]
        self.progress.advance(task, len(batch["frames"]))
        if batch["last"]:
            self.progress.remove_task(self.snippets.pop(vid))
            self.progress.advance(self.videos)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# ---------------------------------------------------------------------------------------------- entry
@dataclass
class ExtractResult:
    """What :func:`extract` did: the store folder, the videos it wrote (``video_id -> rank``), those already
    there, and the ones it skipped (``video_id -> reason``)."""

    out_dir: str
    written: dict[str, int] = field(default_factory=dict)
    already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def manifest(self) -> StoreManifest:
        return read_manifest(self.out_dir)


def extract(
    videos: str | os.PathLike | list,
    out_dir: str | os.PathLike,
    backbone: str = "timm:resnet50",
    weights: str | os.PathLike | None = None,
    feat_stride: int = 16,
    snippet_frames: int = 16,
    fps: float | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    dtype: str = "float32",
    seed: int = 0,
    trainer: dict | None = None,
    verbose: bool = True,
) -> ExtractResult:
    """Extract features of ``videos`` (a file, a folder or a list of files) into the store ``out_dir``.

    ``backbone``: ``timm:<image model>`` (TSN-style) or ``torchvision:<video model>`` (see
    :func:`~tal.features.backbones.build_backbone`); ``weights``: a local state dict file, ``None`` for a random
    init. Snippet ``i`` covers frames ``[i * feat_stride, i * feat_stride + snippet_frames)``; ``fps``
    resamples every video to that rate (``None``: each video's own constant rate). ``seed``: of the random init
    when there are no weights. ``trainer``: keyword
    arguments of ``pytorch_lightning.Trainer`` (e.g. ``{"accelerator": "gpu", "devices": 4, "strategy": "ddp"}``).
    Returns an :class:`ExtractResult`; skipped videos are listed, never silently dropped.
    """
    feat_stride, snippet_frames = int(feat_stride), int(snippet_frames)
    if feat_stride < 1 or snippet_frames < 1:
        raise ValueError(f"feat_stride and snippet_frames must be >= 1, got {feat_stride}, {snippet_frames}")
    out_dir = Path(out_dir).resolve()
    found = find_videos(videos)
    model = build_backbone(backbone, weights, snippet_frames, seed)
    recipe = make_recipe(model, feat_stride, snippet_frames, fps, str(np.dtype(dtype)), seed)
    todo, already_done = plan(out_dir, found, recipe)
    kwargs = {k: v for k, v in (trainer or {}).items() if k != "_target_"}
    defaults = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    kwargs = {**defaults, **kwargs, "enable_progress_bar": False, "use_distributed_sampler": False}
    pl_trainer = pl.Trainer(**kwargs, callbacks=[ExtractionProgress()] if verbose else [])  # its own bar
    console = Console(stderr=True)
    if pl_trainer.is_global_zero and verbose:
        console.print(
            f"{escape(recipe.backbone)} ({recipe.extra['kind']}, width {recipe.width}) on {len(found)} videos: "
            f"{len(already_done)} already in {escape(str(out_dir))}, {len(todo)} to extract",
            soft_wrap=True,
        )
    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
        shards = shard_videos(todo, pl_trainer.world_size)
        dm = VideoDataModule(
            shards, feat_stride, snippet_frames, model.frame_spec, fps, batch_size, num_workers
        )
        module = ExtractionModule(
            model, str(out_dir), recipe, [v for v, _ in todo], already_done, dtype, verbose
        )
        pl_trainer.predict(module, datamodule=dm, return_predictions=False)
        report = json.loads((out_dir / REPORT_NAME).read_text())
    else:
        report = {"written": {}, "failed": {}, "already_done": sorted(already_done)}
    result = ExtractResult(str(out_dir), report["written"], report["already_done"], report["failed"])
    if verbose and pl_trainer.is_global_zero:
        _print_summary(console, result, len(found))
    return result


def _print_summary(console: Console, result: ExtractResult, found: int) -> None:
    from rich.table import Table

    table = Table(title=f"feature extraction into {escape(result.out_dir)}")
    table.add_column("videos")
    table.add_column("count", justify="right")
    for name, n in (
        ("found", found),
        ("already done (skipped)", len(result.already_done)),
        ("written", len(result.written)),
        ("failed (skipped)", len(result.failed)),
    ):
        table.add_row(name, str(n), style="bold red" if name.startswith("failed") and n else None)
    console.print(table)
    for vid, reason in list(result.failed.items())[:20]:
        console.print(f"  [red]failed[/] {escape(vid)}: {escape(reason)}", soft_wrap=True)
    if len(result.failed) > 20:
        console.print(
            f"  ... {len(result.failed) - 20} more in {escape(str(Path(result.out_dir) / REPORT_NAME))}"
        )
