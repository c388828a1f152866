"""Pieces every model family's LightningModule shares."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from torchmetrics import Metric

from tal.utils.io import atomic_write_json


def finish_validation(module: pl.LightningModule, metric: Metric, score_key: str, results_file: str) -> dict:
    """End of a validation epoch: compute ``metric`` (synced, de-duplicated), log ``val/<name>`` for each value
    and ``val/score`` = ``score_key``, and on global rank zero write the gathered predictions to
    ``results_file`` and the numbers to ``eval_val.json`` in the run folder (atomically). Returns the numbers."""
    metrics = {k: float(v) for k, v in metric.compute().items()}
    results = metric.results_dict()
    metric.reset()
    module.log_dict({f"val/{k}": v for k, v in metrics.items()})
    module.log("val/score", metrics[score_key])
    trainer = module.trainer
    if trainer.is_global_zero and not trainer.sanity_checking:
        root = Path(trainer.default_root_dir)
        atomic_write_json(root / results_file, results)
        report = {"epoch": module.current_epoch, "step": module.global_step, **metrics}
        atomic_write_json(root / "eval_val.json", report, indent=2)
    return metrics
