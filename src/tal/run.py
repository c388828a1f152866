"""Hydra entry point: ``python -m tal.run experiment=NAME key=value`` (or the ``tal`` console script).

From a notebook::

    from tal.run import compose, train
    cfg = compose(["experiment=actionformer_synthetic", "trainer.max_epochs=2", "predict=true"])
    result = train(cfg)          # result.metrics["val/mAP"], result.paths["detections_test"]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from tal.models.common import EVAL_REPORT, results_path
from tal.utils.io import atomic_write_json

log = logging.getLogger("tal.run")


def config_dir() -> str:
    """Absolute path of the configs: the package's ``tal/conf`` (a link to the repo's ``conf/`` in a checkout,
    a copy in an installed wheel)."""
    return str(Path(str(resources.files("tal") / "conf")).resolve())


def compose(overrides: list[str] | None = None, config_name: str = "run") -> DictConfig:
    """The composed config, as ``python -m tal.run`` would build it (for notebooks and tests).

    ``paths.output_dir`` points at a fresh folder under ``paths.log_dir`` since no Hydra run folder exists.
    """
    from datetime import datetime

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)
    raw_output_dir = OmegaConf.to_container(cfg.paths, resolve=False)["output_dir"]
    if "${hydra:" in str(raw_output_dir):  # no Hydra run here: give the run a fresh folder of its own
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        with open_dict(cfg):
            cfg.paths.output_dir = str(Path(cfg.paths.log_dir) / cfg.task_name / "notebook" / stamp)
    return cfg


def _instantiate_dict(node: DictConfig | None) -> list:
    from hydra.utils import instantiate

    if not node:
        return []
    return [instantiate(v, _convert_="all") for v in node.values() if v and "_target_" in v]


def build(cfg: DictConfig):
    """Instantiate ``(datamodule, model, trainer)`` from a composed config.

    The model gets ``in_channels`` / ``num_classes`` from the data when its config leaves them ``null``, and
    the ``eval:`` block of the config as its ``eval`` argument.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    pl.seed_everything(cfg.seed, workers=True)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    from_data = {"in_channels": dm.in_channels, "num_classes": dm.num_classes}
    fill = {k: v for k, v in from_data.items() if k in cfg.model and cfg.model[k] is None}
    if cfg.get("eval") is not None:
        fill["eval"] = OmegaConf.to_container(cfg.eval, resolve=True)
    model = instantiate(cfg.model, _convert_="all", **fill)
    trainer = instantiate(
        cfg.trainer,
        logger=_instantiate_dict(cfg.get("logger")) or False,
        callbacks=_instantiate_dict(cfg.get("callbacks")),
        _convert_="all",
    )
    return dm, model, trainer


@dataclass
class RunResult:
    """What :func:`train` did: the validation ``metrics``, the ``paths`` it wrote (``metrics``, ``config``,
    ``{kind}_{split}`` results files, ``checkpoint_last`` / ``checkpoint_best``) and the run folder."""

    metrics: dict[str, float]
    paths: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""
    weights: str = "last"


def _scalars(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _eval_weights(cfg: DictConfig, trainer) -> tuple[str, str | None]:
    """``(what, checkpoint)``: which weights validation and prediction use (see ``eval.weights``)."""
    if not cfg.get("train", True):
        ckpt = cfg.get("ckpt_path")
        return ("checkpoint", ckpt) if ckpt else ("init", None)
    wanted = (cfg.get("eval") or {}).get("weights", "last")
    if wanted not in ("last", "best"):
        raise ValueError(f"eval.weights must be 'last' or 'best', got {wanted!r}")
    if wanted == "best":
        best = (
            getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        )
        if best:
            return "best", best
        print(
            "eval.weights=best but no best checkpoint was saved (no monitored callback): using the last weights"
        )
    return "last", None  # the weights in memory after fit (EMA-averaged when that callback is on)


@contextmanager
def run_log(path: Path) -> Iterator[logging.Logger]:
    """Log the run to ``path`` (``run.log`` in the run folder) as well as the terminal: what was asked, the
    data report, the result, and the error that ended it, with its traceback, so a finished or crashed run
    can be understood later."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield log
    except BaseException as e:
        log.error("the run stopped: %s: %s", type(e).__name__, e, exc_info=True)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def train(cfg: DictConfig) -> RunResult:
    """Fit, validate and predict as ``cfg`` says, writing to ``cfg.paths.output_dir``.

    Writes ``config.yaml``, ``run.log``, ``data_report.json`` (what the data layer dropped, skipped and warned
    about), ``metrics.json`` (the validation metrics and which weights gave them), ``{kind}_val.json`` and, with
    ``predict=true``, ``{kind}_{split}.json`` for each split of ``predict_splits`` (``kind``: ``detections`` or
    ``proposals``). Returns a :class:`RunResult`; a notebook or a pipeline chains stages through its ``paths``.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    with run_log(out_dir / "run.log"):
        log.info("run in %s with overrides %s", out_dir, _overrides())
        return _train(cfg, out_dir)


def _train(cfg: DictConfig, out_dir: Path) -> RunResult:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not cfg.get("train", True) and not cfg.get("ckpt_path"):
        message = "train=false without ckpt_path: the numbers below are those of an untrained model"
        log.warning(message)
        Console().print(f"[yellow]warning:[/] {message}")
    dm, model, trainer = build(cfg)
    atomic_write_json(out_dir / "data_report.json", dm.data_report(), indent=1)
    log.info("data report: %s", json.dumps(dm.data_report()))
    if cfg.get("train", True):
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    weights, eval_ckpt = _eval_weights(cfg, trainer)
    metrics: dict = {}
    if cfg.get("validate", True):
        results = trainer.validate(model, datamodule=dm, ckpt_path=eval_ckpt, verbose=False)
        metrics = _scalars(results[0] if results else trainer.callback_metrics)
        # the exact (float64) numbers of that validation; Lightning's logged copies are float32
        report = json.loads((out_dir / EVAL_REPORT).read_text())
        metrics.update({k: v for k, v in report.items() if k.startswith("val") and isinstance(v, float)})
    paths = {
        "config": str(out_dir / "config.yaml"),
        "metrics": str(out_dir / "metrics.json"),
        "data_report": str(out_dir / "data_report.json"),
        "run_log": str(out_dir / "run.log"),
    }
    if cfg.get("validate", True):
        paths[f"{model.result_kind}_val"] = str(results_path(out_dir, model.result_kind, "val"))
    if cfg.get("predict", False):
        trainer.predict(model, datamodule=dm, ckpt_path=eval_ckpt, return_predictions=False)
        for split in dm.predict_splits:
            paths[f"{model.result_kind}_{split}"] = str(results_path(out_dir, model.result_kind, split))
    ckpt_dir = out_dir / "checkpoints"
    if (ckpt_dir / "last.ckpt").is_file():
        paths["checkpoint_last"] = str(ckpt_dir / "last.ckpt")
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    if best:
        paths["checkpoint_best"] = str(best)
    missing = [p for p in paths.values() if p != paths["metrics"] and not Path(p).is_file()]
    if missing:
        raise RuntimeError(f"the run should have written {missing} but did not")
    result = RunResult(metrics, paths, str(out_dir), weights)
    if trainer.is_global_zero:
        overrides = _overrides()
        atomic_write_json(
            out_dir / "metrics.json",
            {
                "overrides": overrides,
                "metrics": metrics,
                "weights": weights,
                "checkpoint": eval_ckpt,
                "paths": paths,
            },
            indent=1,
        )
        table = Table(title=f"validation ({weights} weights)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in sorted(metrics.items()):
            table.add_row(escape(k), f"{v:.4f}")
        console = Console()
        console.print(table)
        if overrides:
            console.print(f"overrides: {escape(' '.join(overrides))}", soft_wrap=True)
        console.print(f"outputs in {escape(str(out_dir))}", soft_wrap=True)
    log.info("metrics (%s weights): %s", weights, json.dumps(metrics))
    return result


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main (notebook)
        return []


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="run")
def main(cfg: DictConfig) -> float | None:
    return train(cfg).metrics.get("val/score")


if __name__ == "__main__":
    main()
