"""The LightningDataModule over precomputed features shared by every model family."""

from __future__ import annotations

import functools

import numpy as np
import pytorch_lightning as pl
from rich.console import Console
from rich.markup import escape
from torch.utils.data import DataLoader

from tal.data import cleaning
from tal.data.datasets import FeatureDataset, collate_batch
from tal.formats.annotations import AnnotationSet, load_annotations, video_labels
from tal.formats.store import ConcatStore, FeatureError
from tal.ops.timeaxis import snippet_axis

SPLITS = ("train", "val", "test")


class TALDataModule(pl.LightningDataModule):
    """Annotations + feature stores -> cleaned splits -> batches in the contract of ``CONTRIBUTING.md``.

    Either point ``annotation_file`` and ``feature_dirs`` at your data, or set ``synthetic`` (e.g.
    ``{"preset": "small", "seed": 0, "root": "data/synthetic"}``) to generate the synthetic FineAction-like set
    on demand; ``views`` then selects which of its feature views to concatenate.

    Splits are ``train``, ``val`` and ``test``, each one or more subsets of the annotation file
    (``train_subset`` ...). ``predict_splits`` lists the splits ``trainer.predict`` runs over (one dataloader
    each, whole videos, in order); a model writes one results file per split.

    To give a stage's own items (extra per-sample keys, other clips), subclass and override :meth:`dataset`:
    the loaders, prediction and DDP handling stay as they are.

    All arguments are numbers, strings and lists so the module pickles (DataLoader workers, ``ddp_spawn``).
    """

    def __init__(
        self,
        annotation_file: str | None = None,
        feature_dirs: list[str] | None = None,
        label_file: str | None = None,
        synthetic: dict | None = None,
        views: list[str] | None = None,
        regime: str = "native",
        L: int = 100,
        max_seq_len: int = 256,
        pad_multiple: int = 1,
        crop_ratio: list[float] | None = None,
        feat_stride: float = 16,
        snippet_frames: float = 16,
        fps: float | None = None,
        train_subset: str | list[str] = "training",
        val_subset: str | list[str] = "validation",
        test_subset: str | list[str] = "validation",
        predict_splits: list[str] | None = None,
        clip_tolerance_sec: float = 1.0,
        remove_short: bool = False,
        relabel: bool = False,
        class_balance: dict | None = None,
        on_bad_feature: str = "error",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_features: bool = True,
        seed: int = 0,
        verbose: bool = True,
    ):
        super().__init__()
        if on_bad_feature not in ("error", "skip"):
            raise ValueError(f"data.on_bad_feature must be 'error' or 'skip', got {on_bad_feature!r}")
        if regime not in ("resize", "native"):
            raise ValueError(f"data.regime must be 'resize' or 'native', got {regime!r}")
        if int(L) != L or L < 1:
            raise ValueError(f"L (data.L) must be a positive number of grid positions, got {L!r}")
        self.annotation_file = annotation_file
        self.feature_dirs = list(feature_dirs or [])
        self.label_file = label_file
        self.synthetic = dict(synthetic) if synthetic else None
        self.views = list(views) if views else None
        self.regime, self.L, self.max_seq_len, self.pad_multiple = (
            regime,
            int(L),
            int(max_seq_len),
            pad_multiple,
        )
        self.crop_ratio = list(crop_ratio) if crop_ratio else None
        self.feat_stride, self.snippet_frames, self.fps = feat_stride, snippet_frames, fps
        self.subsets = {"train": train_subset, "val": val_subset, "test": test_subset}
        self.predict_splits = list(predict_splits) if predict_splits is not None else ["test"]
        unknown = [s for s in self.predict_splits if s not in SPLITS]
        if unknown or not self.predict_splits:
            raise ValueError(
                f"predict_splits must be a non-empty list of {list(SPLITS)}, got {self.predict_splits}"
            )
        self.clip_tolerance_sec, self.remove_short, self.relabel = clip_tolerance_sec, remove_short, relabel
        self.class_balance = dict(class_balance) if class_balance else None
        self.on_bad_feature = on_bad_feature
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.cache_features, self.seed, self.verbose = (
            num_workers,
            cache_features,
            seed,
            verbose,
        )
        self.report = cleaning.CleaningReport()
        self.skipped: dict[str, str] = {}
        self.warnings: list[str] = []
        self._splits: dict[str, AnnotationSet] = {}
        self._datasets: dict[tuple[str, bool], FeatureDataset] = {}
        self.label_names: list[str] = []
        self.in_channels: int | None = None

    # ------------------------------------------------------------------ sources
    def _synthetic_args(self) -> dict:
        """Arguments of :func:`tal.data.synthetic.ensure_dataset` from ``data.synthetic`` (``preset``, ``seed``,
        ``root``; or ``annotations`` (a real annotation file to lay the features over), ``channels``, ``fps``)."""
        s = self.synthetic
        args = {"root": s.get("root", "data/synthetic"), "preset": s.get("preset") or "small"}
        args["seed"] = int(s.get("seed", 0))
        if s.get("annotations"):
            args.update(annotations=s["annotations"], channels=int(s.get("channels", 256)))
            args["fps"] = float(s.get("fps", 30.0))
        return args

    def prepare_data(self) -> None:
        """Generate the synthetic data set once (atomic: written to a temporary folder, then renamed)."""
        if self.synthetic:
            from tal.data.synthetic import ensure_dataset

            ensure_dataset(**self._synthetic_args())

    def _sources(self) -> tuple[str, list[str]]:
        if self.synthetic:
            from tal.data.synthetic import dataset_dir, dataset_views

            root = dataset_dir(**self._synthetic_args())
            known = dataset_views(root)
            views = self.views or list(known)
            unknown = sorted(set(views) - set(known))
            if unknown:
                raise ValueError(f"data.views: unknown synthetic views {unknown}; choose from {list(known)}")
            return str(root / "annotations_gt.json"), [str(root / "features" / v) for v in views]
        if not self.annotation_file or not self.feature_dirs:
            raise ValueError("set data.annotation_file and data.feature_dirs (or data.synthetic.preset)")
        return self.annotation_file, self.feature_dirs

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        ann_file, feature_dirs = self._sources()
        ann = load_annotations(ann_file, label_file=self.label_file)
        self.label_names = list(ann.label_names)
        self._as_read = ann
        self.store = ConcatStore.from_paths(feature_dirs)
        ann, _ = cleaning.clean_segments(ann, self.clip_tolerance_sec, self.report)
        ann = self._check_features(ann)
        if self.relabel:
            ann = cleaning.relabel_to_video_label(ann, self.report)
        if self.remove_short:
            ann, _ = cleaning.remove_short_instances(ann, self.L, self.report)
        for split, subset in self.subsets.items():
            names = [subset] if isinstance(subset, str) else list(subset)
            self._splits[split] = ann.subset(*names)
            if len(self._splits[split]) == 0 and split != "test":
                raise ValueError(
                    f"{ann_file}: no videos in subset {names} for the {split} split "
                    f"(subsets in the file: {ann.subsets()}); set data.{split}_subset"
                )
        self._check_plausibility(ann)
        fitting = stage in (None, "fit", "validate")  # predicting alone (tal.detect) needs no ground truth
        if fitting and self.eval_ground_truth("val").num_instances == 0:
            raise ValueError(
                f"{ann_file}: the validation split (subset {self.subsets['val']!r}) has no action instance, so "
                "no validation number would mean anything; set data.val_subset to a subset with instances"
            )
        if self.verbose:
            Console().print(self.report.table(f"data cleaning of {ann_file}"))

    def _check_features(self, ann: AnnotationSet) -> AnnotationSet:
        """Every video's features checked before training: missing files, then every header (shape, dtype,
        width by the manifest or the majority), and with ``on_bad_feature=skip`` the values too. An error
        names the files, the videos and what to do; a skip is counted and recorded in the report."""
        ids = self.store.ids()
        missing = [v.video_id for v in ann if v.video_id not in ids]
        if missing and self.on_bad_feature == "error":
            store = self.store.stores[0]
            raise FeatureError(
                f"{len(missing)} videos of {ann.source} have no features, e.g. video {missing[0]!r} "
                f"(expected {store.file_of(missing[0])}); set data.on_bad_feature=skip to skip them"
            )
        ann, _ = cleaning.drop_videos_without_features(ann, ids, self.report)
        video_ids = [v.video_id for v in ann]
        problems = self.store.validate(video_ids)
        if self.on_bad_feature == "skip":  # values too, so that no batch fails later
            for vid in video_ids:
                if vid not in problems:
                    try:
                        self.store.load(vid)
                    except FeatureError as e:
                        problems[vid] = str(e)
        if problems and self.on_bad_feature == "error":
            listed = "\n  ".join(list(problems.values())[:5])
            more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise FeatureError(
                f"{len(problems)} of {len(video_ids)} videos have unusable features:\n  {listed}{more}"
            )
        for vid, problem in problems.items():
            self.report.add("invalid feature file (skipped)", vid)
            self.skipped[vid] = problem
            if self.verbose:
                Console().print(f"[yellow]skip:[/] {escape(problem)}", soft_wrap=True)
        self.in_channels = self.store.channels
        return ann.with_videos(v for v in ann if v.video_id not in problems)

    def _check_plausibility(self, ann: AnnotationSet) -> None:
        """Errors for what would fail later (videos without fps in the native regime); warnings for what is
        likely a mistake (features covering much less or more than the video; labels never trained on)."""
        if self.regime == "native" and not self.fps:
            bad = [v.video_id for v in ann if not (v.fps and np.isfinite(v.fps) and v.fps > 0)]
            if bad:
                raise ValueError(
                    f"{ann.source}: {len(bad)} videos have no usable fps (missing, 0 or negative), e.g. {bad[:3]}; "
                    "the native regime needs each video's fps to place its features in time: set data.fps"
                )
            lengths = self.store.stores[0].lengths
            ratios = {
                v.video_id: lengths[v.video_id]
                * snippet_axis(v.fps, self.feat_stride, self.snippet_frames)[0]
                / v.duration_sec
                for v in ann
                if v.video_id in lengths
            }
            if ratios:
                median = float(np.median(list(ratios.values())))
                if not 0.6 <= median <= 1.6:
                    far = sorted(ratios, key=lambda k: abs(np.log(ratios[k])), reverse=True)[:3]
                    self.warn(
                        f"the features cover {median:.2f}x of their videos' durations (median over {len(ratios)} "
                        f"videos; e.g. {far}): check data.feat_stride={self.feat_stride} and data.fps / the "
                        "annotation fps (the time axis is t = (i * feat_stride + snippet_frames / 2) / fps)"
                    )
        train_labels = set(lab for v in self._splits["train"] for lab in v.labels)
        val_only = sorted(set(lab for v in self._splits["val"] for lab in v.labels) - train_labels)
        if val_only:
            self.warn(
                f"{len(val_only)} labels have validation instances but no training instance (they cannot be "
                f"learnt and still count in the mAP): {val_only[:5]}"
            )

    def warn(self, message: str) -> None:
        """A plausibility warning: printed, and kept in the data report."""
        self.warnings.append(message)
        if self.verbose:
            Console().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

    def data_report(self) -> dict:
        """What the data layer dropped, changed, skipped and warned about (``data_report.json`` of a run)."""
        return {
            "cleaning": self.report.as_dict(),
            "skipped_videos": dict(self.skipped),
            "warnings": list(self.warnings),
        }

    # ------------------------------------------------------------------ accessors
    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def ground_truth(self, split: str) -> AnnotationSet:
        """The cleaned ground truth of ``split`` (``train``, ``val`` or ``test``): what training targets use, and
        what ``video_ids(split)`` lists."""
        self.setup()
        return self._splits[split]

    def eval_ground_truth(self, split: str) -> AnnotationSet:
        """The ground truth of ``split`` exactly as the evaluator reads it from the annotation file (no cleaning,
        every video of the subsets): what in-run metrics score against, so they equal ``python -m tal.eval``."""
        self.setup()
        subset = self.subsets[split]
        return self._as_read.subset(*([subset] if isinstance(subset, str) else subset))

    def video_ids(self, split: str) -> list[str]:
        """The ordered ids of ``split``; a batch's ``video_idx`` indexes this list."""
        return list(self.ground_truth(split).videos)

    def video_labels(self, split: str) -> dict[str, str | None]:
        """``video_id -> video label name`` of ``split`` (:func:`tal.formats.video_label`)."""
        return video_labels(self.ground_truth(split))

    def dataset(self, split: str, training: bool | None = None) -> FeatureDataset:
        """The dataset of ``split``: with ``training`` (default: ``split == "train"``) random crops and the
        class-balanced extra clips; without, whole videos in ``video_ids(split)`` order. Cached per
        ``(split, training)``; the override point for a stage that needs other items."""
        training = split == "train" if training is None else bool(training)
        key = (split, training)
        if key not in self._datasets:
            ann = self.ground_truth(split)
            train = training
            clips = cleaning.whole_video_clips(ann)
            if train and self.class_balance:
                extra, rep = cleaning.class_balanced_clips(ann, seed=self.seed, **self.class_balance)
                clips += extra
                self.report.merge(rep)
            self._datasets[key] = FeatureDataset(
                ann,
                self.store,
                clips,
                self.video_ids(split),
                regime=self.regime,
                L=self.L,
                max_seq_len=self.max_seq_len,
                crop_ratio=self.crop_ratio,
                feat_stride=self.feat_stride,
                snippet_frames=self.snippet_frames,
                fps=self.fps,
                train=train,
                cache=self.cache_features,
            )
        return self._datasets[key]

    def _loader(self, split: str, training: bool | None = None) -> DataLoader:
        train = split == "train" if training is None else training
        native = self.regime == "native"
        pad_to, pad_multiple = (self.max_seq_len, self.pad_multiple) if native else (None, 1)
        return DataLoader(
            self.dataset(split, train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=functools.partial(collate_batch, pad_to=pad_to, pad_multiple=pad_multiple),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> list[DataLoader]:
        """One loader per split of ``predict_splits`` (whole videos, no shuffling), in that order."""
        return [self._loader(split, training=False) for split in self.predict_splits]
