"""Hydra entry point: ``python -m tal.run experiment=NAME key=value`` (or the ``tal`` console script).

From a notebook::

    from tal.run import compose, train
    cfg = compose(["experiment=actionformer_synthetic", "trainer.max_epochs=2"])
    metrics = train(cfg)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from tal.utils.io import atomic_write_json


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
    """Instantiate ``(datamodule, model, trainer)`` from a composed config."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    pl.seed_everything(cfg.seed, workers=True)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    from_data = {"in_channels": dm.in_channels, "num_classes": dm.num_classes}
    fill = {k: v for k, v in from_data.items() if k in cfg.model and cfg.model[k] is None}
    model = instantiate(cfg.model, _convert_="all", **fill)
    trainer = instantiate(
        cfg.trainer,
        logger=_instantiate_dict(cfg.get("logger")) or False,
        callbacks=_instantiate_dict(cfg.get("callbacks")),
        _convert_="all",
    )
    return dm, model, trainer


def _scalars(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def train(cfg: DictConfig) -> dict:
    """Fit, validate and optionally predict as ``cfg`` says; write ``metrics.json`` (and predictions) to
    ``cfg.paths.output_dir``. Returns the validation metrics."""
    from rich.console import Console
    from rich.table import Table

    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    dm, model, trainer = build(cfg)
    if cfg.get("train", True):
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
        eval_ckpt = None  # the trained weights in memory (EMA weights when that callback is on)
    else:
        eval_ckpt = cfg.get("ckpt_path")
    metrics: dict = {}
    if cfg.get("validate", True):
        results = trainer.validate(model, datamodule=dm, ckpt_path=eval_ckpt, verbose=False)
        metrics = _scalars(results[0] if results else trainer.callback_metrics)
    if cfg.get("predict", False):
        outputs = trainer.predict(model, datamodule=dm, ckpt_path=eval_ckpt)
        write_predictions(out_dir / "predictions_test.json", outputs)
    if trainer.is_global_zero:
        overrides = _overrides()
        atomic_write_json(out_dir / "metrics.json", {"overrides": overrides, "metrics": metrics}, indent=1)
        table = Table(title="validation", caption=" ".join(overrides) or None)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in sorted(metrics.items()):
            table.add_row(k, f"{v:.4f}")
        Console().print(table)
        Console().print(f"outputs in {out_dir}")
    return metrics


def write_predictions(path: Path, outputs: list | None) -> None:
    """Merge ``predict_step`` outputs (dicts ``video_id -> [{"segment", "score", ("label")}]``) into one
    ActivityNet results file, atomically. A video met twice (DDP pads shards with repeated samples) keeps one
    copy of its entries."""
    results: dict = {}
    for batch in outputs or []:
        results.update(batch)
    atomic_write_json(path, {"version": "tal", "external_data": {}, "results": results})


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main (notebook)
        return []


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="run")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("val/score")


if __name__ == "__main__":
    main()
