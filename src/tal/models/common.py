"""What every model family's LightningModule shares: the validation metric, and the one predictions path.

A family subclasses :class:`TALModule`, sets :attr:`TALModule.result_kind` and implements
:meth:`TALModule.predict_segments` (``detections``, ``proposals``) or :meth:`TALModule.predict_class_scores`
(``class_scores``); validation and prediction then work alike for all of them, on one process or many:

* validation collects every video's output in a :class:`~tal.eval.DetectionMAP` / :class:`~tal.eval.ProposalAR`
  / :class:`~tal.eval.TopKAccuracy` (gathered across processes, de-duplicated by ``video_idx``) scored against
  the validation ground truth exactly as ``python -m tal.eval`` reads it from the annotation file (so the two
  agree to the last digit), logs ``val/<metric>`` and ``val/score`` (and, with ``eval.clean_ground_truth``,
  ``val_clean/<metric>`` against the cleaned ground truth the model trains on), and rank zero writes
  ``{kind}_val.json`` and ``eval_val.json``;
* prediction runs over each split of ``datamodule.predict_splits`` and rank zero writes
  ``{kind}_{split}.json`` (through :mod:`tal.formats.results` or :mod:`tal.formats.class_scores`), atomically,
  holding exactly that split's videos.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from tal.eval.checks import diagnose
from tal.eval.classification import split_topk_accuracy
from tal.eval.detection import evaluate_detection
from tal.eval.metrics import ClassScoreCollector, DetectionMAP, ProposalAR, SegmentCollector, TopKAccuracy
from tal.eval.proposal import evaluate_proposals
from tal.formats.annotations import AnnotationSet
from tal.formats.class_scores import ClassScores, write_class_scores
from tal.formats.results import Predictions, write_results
from tal.utils.distributed import destroy_process_group_at_exit
from tal.utils.io import atomic_write_json

#: the evaluation settings a module uses when none are given (``eval:`` block of ``conf/run.yaml``)
DEFAULT_EVAL = {
    "tiou_thresholds": "anet",
    "max_avg_proposals": 100,
    "protocol": "official",
    "clean_ground_truth": False,
}

#: the metric each result kind logs as ``val/score`` (what checkpoints monitor)
SCORE_KEYS = {"detections": "mAP", "proposals": "AUC", "class_scores": "top1"}

#: one video's predictions: ``segments_sec (K, 2)`` float64, ``scores (K,)``, ``labels (K,)`` long or ``None``
VideoRows = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


#: the numbers of the last validation, in float64, with the checks (written by rank zero in the run folder)
EVAL_REPORT = "eval_val.json"


def rng_states() -> dict:
    """The global random states of torch, numpy and Python, as tensors and plain numbers (so the checkpoint
    still loads with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` saved."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))


def adamw_step_decay(module: pl.LightningModule) -> dict:
    """Lightning's optimizer config of a module whose hparams hold ``lr``, ``weight_decay``, ``lr_milestones``
    and ``lr_gamma``: AdamW, the learning rate multiplied by ``lr_gamma`` at each milestone epoch."""
    hp = module.hparams
    optimizer = torch.optim.AdamW(module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(hp.lr_milestones or []), hp.lr_gamma)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def results_path(root: str | Path, kind: str, split: str) -> Path:
    """Where a stage writes its ``kind`` (``detections``, ``proposals``, ``class_scores``) of ``split``."""
    return Path(root) / f"{kind}_{split}.json"


def write_predictions(path: str | Path, predictions: Predictions | ClassScores) -> Path:
    """Write a stage's output through its format: results JSON (detections / proposals) or class scores."""
    if isinstance(predictions, ClassScores):
        return write_class_scores(path, predictions)
    return write_results(path, predictions)


class TALModule(pl.LightningModule):
    """Base of tal's LightningModules.

    Subclasses set ``result_kind`` (``"detections"``: rows carry labels, scored by mAP; ``"proposals"``:
    class-agnostic, scored by AR@AN / AUC; ``"class_scores"``: one probability per class and video, scored by
    top-k accuracy of the video label) and implement :meth:`predict_segments` (segment kinds) or
    :meth:`predict_class_scores`. ``self.hparams.eval`` (a dict like :data:`DEFAULT_EVAL`; ``tal.run`` passes
    the ``eval:`` block of the config) sets the protocol.
    """

    result_kind = "detections"

    def predict_segments(self, batch: dict) -> list[VideoRows]:
        """Predictions of every video of ``batch``, in seconds, best first (see :data:`VideoRows`)."""
        raise NotImplementedError

    def predict_class_scores(self, batch: dict) -> torch.Tensor:
        """``(B, C)`` class probabilities of every video of ``batch`` (``result_kind = "class_scores"``; columns
        follow ``datamodule.label_names``)."""
        raise NotImplementedError

    def predict_batch(self, batch: dict) -> list[VideoRows] | torch.Tensor:
        """What the family predicts for ``batch``, as its kind's collector takes it."""
        if self.result_kind == "class_scores":
            return self.predict_class_scores(batch)
        return self.predict_segments(batch)

    # ------------------------------------------------------------------ settings
    @property
    def eval_settings(self) -> dict:
        return {**DEFAULT_EVAL, **(self.hparams.get("eval") or {})}

    @property
    def score_key(self) -> str:
        """The metric logged as ``val/score`` (what checkpoints monitor)."""
        return SCORE_KEYS[self.result_kind]

    def _label_names(self) -> list[str] | None:
        labelled = self.result_kind in ("detections", "class_scores")
        return list(self.trainer.datamodule.label_names) if labelled else None

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the random states (torch, numpy, python), so a resumed run shuffles, crops and drops out
        exactly as the uninterrupted run would have from this point; and the class names with the weights, so a
        checkpoint alone names its detections (``tal.detect``). A family overriding this calls ``super()``."""
        checkpoint["rng_states"] = rng_states()
        names = getattr(getattr(self._trainer, "datamodule", None), "label_names", None)
        if names:
            checkpoint["label_names"] = list(names)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            set_rng_states(checkpoint["rng_states"])

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # in every process of a DDP run, once its process group exists
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if stage in ("fit", "validate"):
            gt, ids = dm.eval_ground_truth("val"), dm.video_ids("val")
            ev = self.eval_settings
            if self.result_kind == "detections":
                self.val_metric = DetectionMAP(gt, ids, ev["tiou_thresholds"], ev["protocol"])
            elif self.result_kind == "class_scores":
                self.val_metric = TopKAccuracy(gt, ids)
            else:
                self.val_metric = ProposalAR(gt, ids, ev["max_avg_proposals"], ev["protocol"])
            self.val_clean_ground_truth = dm.ground_truth("val") if ev["clean_ground_truth"] else None
        if stage == "predict":
            self.predict_splits = list(dm.predict_splits)
            labels = self._label_names()
            collector = ClassScoreCollector if self.result_kind == "class_scores" else SegmentCollector
            self.predict_collectors = nn.ModuleList(
                [collector(dm.video_ids(split), labels) for split in self.predict_splits]
            )

    # ------------------------------------------------------------------ validation
    def update_val_metric(self, batch: dict, rows: list[VideoRows] | torch.Tensor) -> None:
        _update(self.val_metric, batch, rows)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.update_val_metric(batch, self.predict_batch(batch))

    def on_validation_epoch_end(self) -> None:
        name = results_path("", self.result_kind, "val").name
        finish_validation(self, self.val_metric, self.score_key, name, self.val_clean_ground_truth)

    # ------------------------------------------------------------------ prediction
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        _update(self.predict_collectors[dataloader_idx], batch, self.predict_batch(batch))

    def on_predict_epoch_end(self) -> None:
        root = Path(self.trainer.default_root_dir)
        for split, collector in zip(self.predict_splits, self.predict_collectors):
            predictions = collector.compute()  # every process takes part in the gather
            if self.trainer.is_global_zero:
                path = write_predictions(results_path(root, self.result_kind, split), predictions)
                if isinstance(predictions, ClassScores) and len(predictions) < len(collector.video_ids):
                    missing = [v for v in collector.video_ids if v not in predictions]
                    rank_zero_warn(  # a class-scores file has no empty row: say which videos it lacks
                        f"{path}: {len(missing)} of {len(collector.video_ids)} videos of the {split} split were "
                        f"not predicted (limit_predict_batches?), e.g. {missing[0]!r}"
                    )
            collector.reset()
        self.trainer.strategy.barrier()  # no process reads the files before rank zero has written them


def _update(
    collector: SegmentCollector | ClassScoreCollector, batch: dict, rows: list[VideoRows] | torch.Tensor
) -> None:
    if isinstance(collector, ClassScoreCollector):  # rows: (B, C) class probabilities
        collector.update(batch["video_idx"], rows)
        return
    segments, scores, labels = zip(*rows) if rows else ((), (), ())
    has_labels = collector.with_labels
    collector.update(batch["video_idx"], list(segments), list(scores), list(labels) if has_labels else None)


def finish_validation(
    module: pl.LightningModule,
    metric: DetectionMAP | ProposalAR | TopKAccuracy,
    score_key: str,
    results_file: str,
    clean_ground_truth: AnnotationSet | None = None,
) -> dict:
    """End of a validation epoch: compute ``metric`` (synced, de-duplicated), log ``val/<name>`` for each value
    and ``val/score`` = ``score_key`` (and ``val_clean/<name>`` against ``clean_ground_truth`` when given), and
    on global rank zero write the gathered predictions to ``results_file`` and the numbers (float64), with the
    checks of :func:`tal.eval.checks.diagnose`, to ``eval_val.json`` in the run folder (atomically). Returns the
    numbers."""
    metrics = {f"val/{k}": float(v) for k, v in metric.compute().items()}
    metrics["val/score"] = metrics[f"val/{score_key}"]
    predictions = metric.predictions
    metric.reset()
    if clean_ground_truth is not None:
        clean = _evaluate(metric, clean_ground_truth, predictions)
        metrics.update({f"val_clean/{k}": v for k, v in clean.items()})
    module.log_dict(metrics)
    trainer = module.trainer
    if trainer.is_global_zero and not trainer.sanity_checking:
        root = Path(trainer.default_root_dir)
        write_predictions(root / results_file, predictions)
        report = {"epoch": module.current_epoch, "step": module.global_step, **metrics}
        if isinstance(predictions, Predictions):  # the checks look at segments; class scores have none
            checks = diagnose(metric.ground_truth, predictions, "model's predictions")
            if checks.warnings and not getattr(module, "_warned_val_checks", False):
                from rich.console import Console
                from rich.markup import escape

                for warning in checks.warnings:
                    Console().print(f"[yellow]validation:[/yellow] {escape(warning)}", soft_wrap=True)
                module._warned_val_checks = True
            report["checks"] = checks.to_dict()
        # float64 here; Lightning's logged values are float32
        atomic_write_json(root / EVAL_REPORT, report, indent=2)
    return metrics


def _evaluate(
    metric: DetectionMAP | ProposalAR | TopKAccuracy, ground_truth: AnnotationSet, predictions
) -> dict[str, float]:
    """``metric``'s numbers for ``predictions`` against another ``ground_truth`` (same settings)."""
    if isinstance(metric, TopKAccuracy):
        return split_topk_accuracy(ground_truth, predictions, metric.video_ids, metric.ks)
    if isinstance(metric, DetectionMAP):
        result = evaluate_detection(ground_truth, predictions, metric.tiou_thresholds, metric.protocol)
    else:
        result = evaluate_proposals(
            ground_truth, predictions, metric.max_avg_proposals, protocol=metric.protocol
        )
    return result.metrics()
