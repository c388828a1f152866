"""``python -m tal.detect VIDEO_OR_DIR ckpt=RUN_OR_CHECKPOINT``: raw videos in, detections JSON and timelines out.

What it does, and what you can count on:

* **The features the detector was trained on.** The run's ``config.yaml`` names its feature stores
  (``data.feature_dirs``); each store's ``manifest.json`` (written by ``python -m tal.features``) records how it
  was made: backbone, weights file (checked by SHA-256), snippet geometry, frame rate, preprocessing. Every video
  is extracted again with exactly that recipe, one store per view, concatenated as in training. A store without
  a manifest (features made elsewhere, or the synthetic set) cannot be re-made from video: that is an error
  saying so, before any work.
* **The weights that gave the run's validation numbers.** ``ckpt`` is a checkpoint file, or a run folder: then
  the checkpoint its ``metrics.json`` names (``eval.weights=best``), else ``checkpoints/last.ckpt``. Class names
  come from the checkpoint (or, for older checkpoints, the run's annotation file).
* **The run's own inference path.** The videos become a prediction split of the run's data config (same regime,
  padding, post-processing), so the detections equal what ``python -m tal.run ... predict=true`` gives on the
  same features; times are seconds of each video, at its own frame rate as decoded.
* **Outputs** in the run folder (``outputs/detect/runs/<time>/``): ``detections.json`` (``proposals.json`` for a
  proposal model) in the official ActivityNet format, ``timelines/<video>.png`` (:mod:`tal.plot`), the extracted
  ``features/`` (set ``features_dir=`` to a fixed folder to reuse them across runs), and a table of the top
  detections. Videos that cannot be decoded are reported and skipped; the others are detected.

``trainer=ddp`` / ``gpu`` spread both the extraction and the detection over devices.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tal.utils.cli import config_dir

__all__ = ["DetectResult", "detect", "resolve_checkpoint"]

USAGE = "python -m tal.detect VIDEO_OR_DIR ckpt=RUN_DIR_OR_CKPT [key=value ...]"


class DetectError(ValueError):
    """The checkpoint, its run folder or its feature stores cannot be used for detection from raw video."""


@dataclass
class DetectResult:
    """What :func:`detect` wrote: the results file, one timeline PNG per drawn video, the feature stores, and
    the videos it skipped (``video_id -> reason``)."""

    results: str
    timelines: list[str] = field(default_factory=list)
    feature_dirs: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def resolve_checkpoint(ckpt: str | os.PathLike) -> tuple[Path, Path]:
    """``(checkpoint file, run folder)`` of ``ckpt``: a ``.ckpt`` file inside a run folder's ``checkpoints/``,
    or a run folder (its ``metrics.json`` checkpoint, else ``checkpoints/last.ckpt``)."""
    path = Path(ckpt).expanduser()
    if path.is_dir():
        run_dir, chosen = path, None
        metrics = path / "metrics.json"
        if metrics.is_file():
            chosen = json.loads(metrics.read_text()).get("checkpoint")
        ckpt_file = Path(chosen) if chosen and Path(chosen).is_file() else path / "checkpoints" / "last.ckpt"
        if not ckpt_file.is_file():
            raise DetectError(f"{path}: no checkpoint in this run folder (expected {ckpt_file})")
    elif path.is_file():
        ckpt_file = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        raise DetectError(f"checkpoint {path}: no such file or run folder")
    if not (run_dir / "config.yaml").is_file():
        raise DetectError(
            f"{ckpt_file}: no config.yaml in its run folder {run_dir}; tal.detect needs the folder tal.run wrote"
        )
    return ckpt_file.resolve(), run_dir.resolve()


def _training_manifests(train_cfg: DictConfig, run_dir: Path):
    from tal.formats.store import read_manifest

    data = train_cfg.data
    if data.get("synthetic"):
        raise DetectError(
            f"the run in {run_dir} was trained on the synthetic data set, whose features cannot be made from "
            "video; train on a store made by `python -m tal.features` (data.feature_dirs) to detect on videos"
        )
    dirs = list(data.get("feature_dirs") or [])
    if not dirs:
        raise DetectError(f"{run_dir}/config.yaml names no data.feature_dirs")
    manifests = []
    for d in dirs:
        m = read_manifest(d)
        if m is None:
            raise DetectError(
                f"feature store {d} (data.feature_dirs of {run_dir}) has no manifest.json, so how its features "
                "were made is unknown; only stores written by `python -m tal.features` can be re-made from video"
            )
        if not str(m.backbone).startswith(("timm:", "torchvision:")):
            raise DetectError(f"feature store {d}: backbone {m.backbone!r} cannot run on video")
        manifests.append((d, m))
    return manifests


def _label_names(ckpt_file: Path, train_cfg: DictConfig) -> list[str]:
    import torch

    from tal.formats.annotations import load_annotations

    checkpoint = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    if checkpoint.get("label_names"):
        return list(checkpoint["label_names"])
    ann = train_cfg.data.get("annotation_file")  # checkpoints written before the names were stored
    if not ann or not Path(ann).is_file():
        raise DetectError(f"{ckpt_file} holds no class names and the run's annotation file {ann} is gone")
    return list(load_annotations(ann, label_file=train_cfg.data.get("label_file")).label_names)


def detect(
    videos: str | os.PathLike | list,
    ckpt: str | os.PathLike,
    out_dir: str | os.PathLike,
    features_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    trainer: dict | None = None,
    top_k: int = 20,
    max_timelines: int = 20,
    verbose: bool = True,
) -> DetectResult:
    """Detect actions in ``videos`` (a file, a folder or a list) with the trained run ``ckpt``; see the module
    docstring. ``trainer``: ``pytorch_lightning.Trainer`` keyword arguments for extraction and detection."""
    import pytorch_lightning as pl
    from hydra.utils import get_class, instantiate
    from rich.console import Console

    from tal.features.extract import extract
    from tal.formats.annotations import AnnotationSet, VideoAnnotation
    from tal.formats.results import load_results
    from tal.formats.store import read_manifest
    from tal.models.common import results_path
    from tal.plot import plot_timeline
    from tal.utils.io import atomic_write_json

    out_dir = Path(out_dir).resolve()
    features_dir = Path(features_dir).resolve() if features_dir else out_dir / "features"
    ckpt_file, run_dir = resolve_checkpoint(ckpt)
    train_cfg = OmegaConf.load(run_dir / "config.yaml")
    manifests = _training_manifests(train_cfg, run_dir)
    label_names = _label_names(ckpt_file, train_cfg)
    trainer = {k: v for k, v in (trainer or {}).items() if k != "_target_"}

    # 1. the features, made as the training stores were
    stores, skipped, written = [], {}, None
    for i, (train_dir, m) in enumerate(manifests):
        store = features_dir / f"{i}_{Path(train_dir).name}"
        res = extract(
            videos,
            store,
            backbone=m.backbone,
            weights=m.weights,
            feat_stride=int(m.feat_stride),
            snippet_frames=int(m.snippet_frames),
            fps=m.extra.get("fps"),
            dtype=m.extra.get("dtype", "float32"),
            seed=m.extra.get("init_seed") or 0,
            batch_size=batch_size,
            num_workers=num_workers,
            trainer=trainer,
            verbose=verbose,
        )
        made = read_manifest(store)
        if made is not None and not made.same_recipe(m):
            raise DetectError(
                f"features extracted into {store} differ in recipe from the training store {train_dir} (e.g. "
                "another timm/torchvision version changed the preprocessing); compare the two manifest.json"
            )
        skipped.update(res.failed)
        ok = set(res.written) | set(res.already_done)
        written = ok if written is None else written & ok
        stores.append(str(store))
    info = read_manifest(stores[0]).videos
    ids = [vid for vid in info if vid in (written or set())]
    if not ids:
        raise DetectError(f"no video of {videos} could be decoded: {skipped}")

    # 2. the videos as a prediction split of the run's data config
    def video(vid: str) -> VideoAnnotation:  # no instances; duration and rate as decoded
        n, fps = info[vid]["frame_count"], info[vid]["fps"]
        return VideoAnnotation(vid, "detect", n / fps, [], [], fps=fps, frame_count=n)

    ann = AnnotationSet({vid: video(vid) for vid in sorted(ids)}, label_names)
    atomic_write_json(out_dir / "videos.json", ann.to_database(), indent=1)
    atomic_write_json(out_dir / "labels.json", label_names)
    dm = instantiate(
        train_cfg.data,
        _convert_="all",
        annotation_file=str(out_dir / "videos.json"),
        label_file=str(out_dir / "labels.json"),
        feature_dirs=stores,
        synthetic=None,
        views=None,
        fps=None,
        train_subset="detect",
        val_subset="detect",
        test_subset="detect",
        predict_splits=["test"],
        class_balance=None,
        on_bad_feature="error",
        num_workers=0,
        verbose=False,
    )
    model = get_class(train_cfg.model._target_).load_from_checkpoint(ckpt_file, map_location="cpu")
    dm.setup("predict")
    if model.hparams.get("in_channels") not in (None, dm.in_channels):
        raise DetectError(
            f"the detector takes {model.hparams.in_channels} channels but the extracted features have "
            f"{dm.in_channels} ({stores})"
        )
    pl_trainer = pl.Trainer(
        **{**trainer, "logger": False, "enable_checkpointing": False, "default_root_dir": str(out_dir)},
        callbacks=[],
    )
    pl_trainer.predict(model, datamodule=dm, return_predictions=False)

    # 3. the results file, the timelines, a table
    kind = model.result_kind
    results = out_dir / f"{kind}.json"
    os.replace(results_path(out_dir, kind, "test"), results)
    preds = load_results(results)
    timelines = []
    for vid in preds.video_ids[:max_timelines]:
        duration = ann[vid].duration_sec
        png = plot_timeline(out_dir / "timelines" / f"{vid}.png", vid, preds, None, duration, top_k=top_k)
        timelines.append(str(png))
    if verbose:
        _print_table(Console(), preds, ann, results, skipped)
    return DetectResult(str(results), timelines, stores, skipped)


def _print_table(console, preds, ann, results: Path, skipped: dict[str, str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"top detections ({escape(str(results))})")
    for col in ("video", "duration (s)", "predictions", "top 3: label [start, end] score"):
        table.add_column(col)
    for vid, p in preds.per_video():
        best = p.scores.argsort()[::-1][:3]
        tops = [
            f"{p.label_names[p.label_idx[i]] if p.has_labels else 'action'} "
            f"[{p.segments_sec[i, 0]:.1f}, {p.segments_sec[i, 1]:.1f}] {p.scores[i]:.2f}"
            for i in best
        ]
        table.add_row(escape(vid), f"{ann[vid].duration_sec:.1f}", str(len(p)), escape("; ".join(tops)))
    console.print(table)
    for vid, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {escape(vid)}: {escape(reason)}", soft_wrap=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="detect")
def _main(cfg: DictConfig) -> None:
    detect(
        cfg.videos,
        cfg.ckpt,
        cfg.paths.output_dir,
        features_dir=cfg.features_dir,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        top_k=cfg.top_k,
        max_timelines=cfg.max_timelines,
    )


def main() -> None:
    from tal.utils.cli import positional_overrides

    sys.argv[1:] = positional_overrides(sys.argv[1:], ("videos",), USAGE)
    _main()


if __name__ == "__main__":
    main()
