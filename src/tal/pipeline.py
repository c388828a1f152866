"""The two-stage system (seed 000, FineAction 2021) as plain functions over run folders.

BMN proposals -> BMN's dense candidates on every split -> the dense2sparse cascade -> video classifiers -> their
ensemble -> fusion -> detections, scored with the official protocol. One command::

    python -m tal.run experiment=two_stage_synthetic
    python -m tal.run experiment=two_stage_synthetic pipeline.proposals.run_dir=outputs/.../proposals  # reuse BMN
    python -m tal.run -m experiment=two_stage_synthetic ablation=bmn,lgte,gcnext   # one pipeline per row

or from a notebook::

    from tal.run import compose
    from tal.pipeline import run_pipeline
    report = run_pipeline(compose(["experiment=two_stage_synthetic"]), overrides=["debug=fast"])
    report["final"]["mAP"], report["stages"]["cascade"]["run_dir"]

Each stage is an ordinary ``tal.run`` training composed from its own experiment (``pipeline.<stage>.experiment``)
with its ``set`` values, the pipeline's ``overrides`` and the command line's (``data.*``, ``trainer=``, ``debug=``,
``seed=``, ``L=``, ``eval.*``...), in that order of precedence, and writes its folder under the pipeline's. Stages
hand over files by path (``proposals_{split}.json``, ``class_scores_{split}.json``, ``detections_{split}.json``).
A stage is not run again when ``pipeline.<stage>.run_dir`` names a finished run, or, with ``pipeline.reuse=true``,
when a finished stage of the same configuration (the same inputs included) lies under ``pipeline.reuse_dir``.
Everything measured lands in ``pipeline.json``; ``metrics.json`` holds the final ``val/*`` (sweep summaries).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from tal.formats.annotations import load_ground_truth
from tal.formats.class_scores import load_class_scores
from tal.formats.results import load_results, write_results
from tal.utils.io import atomic_write_json

__all__ = [
    "STAGE_FILE",
    "PipelineError",
    "compose_stage",
    "config_key",
    "find_finished",
    "forwarded_overrides",
    "fuse_split",
    "run_pipeline",
    "run_stage",
    "set_overrides",
]

#: what a finished stage leaves in its folder (its key, what it wrote, how long it took)
STAGE_FILE = "stage.json"

#: roots of command-line overrides that belong to one stage only (they go in ``pipeline.<stage>.set``)
_NOT_FORWARDED = (
    "experiment",
    "ablation",
    "pipeline",
    "hydra",
    "task_name",
    "tags",
    "model",
    "predict",
    "predict_splits",
    "train",
    "validate",
    "ckpt_path",
)
#: config keys that name where a run writes, not what it computes (left out of a stage's key)
_NOT_IN_KEY = ("paths", "hydra", "logger", "callbacks", "task_name", "tags")


class PipelineError(RuntimeError):
    """A stage's input is missing or a reused run is not what the pipeline needs."""


# ---------------------------------------------------------------------------------------------- configuration
def _format_value(value) -> str:
    """A config value as Hydra override grammar (``true``, ``null``, ``[1,2,3]``, ``'a/b c'``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_format_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def set_overrides(values: Mapping | None, prefix: str = "") -> list[str]:
    """Hydra overrides ``key.path=value`` of the nested ``values`` (a stage's ``set`` block); lists and leaves
    are values, mappings are descended into.

    >>> set_overrides({"model": {"network": {"lgte": True, "dilations": [1, 2]}}})
    ['model.network.lgte=true', 'model.network.dilations=[1,2]']
    """
    out = []
    for key, value in (values or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += set_overrides(value, f"{path}.")
        else:
            out.append(f"{path}={_format_value(value)}")
    return out


def forwarded_overrides(task_overrides: Sequence[str]) -> list[str]:
    """The command line's overrides every stage takes (data, trainer, debug, seed, L, eval, ...).

    ``model.*`` is refused: a model key belongs to one stage (``pipeline.<stage>.set.model...``).
    """
    out = []
    for override in task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        root = key.split(".", 1)[0].split("@", 1)[0]
        if root == "model":
            raise PipelineError(
                f"{override!r}: a model setting belongs to one stage of the pipeline; "
                f"write it as pipeline.<stage>.set.{key}=... (stages: proposals, cascade, classifiers.<name>)"
            )
        if root not in _NOT_FORWARDED:
            out.append(override)
    return out


def _command_line() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main
        return []


def compose_stage(overrides: Sequence[str], output_dir: str | Path) -> DictConfig:
    """The config of one stage, as ``python -m tal.run *overrides`` would compose it, writing to ``output_dir``
    (works inside a running Hydra app, as a pipeline runs, and outside it, from a notebook)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="run", overrides=list(overrides))
    else:
        from tal.run import compose as compose_outside

        cfg = compose_outside(list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def config_key(cfg: DictConfig) -> str:
    """A digest of what ``cfg`` computes: the resolved config without where it writes (``paths``, loggers,
    callbacks) — two stages with equal keys train the same model on the same inputs."""
    cfg = cfg.copy()
    with open_dict(cfg):  # where it writes, also inside other keys (trainer.default_root_dir)
        cfg.paths.output_dir = "<output_dir>"
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_IN_KEY:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- stages
def _read_stage(run_dir: Path) -> dict:
    """What a finished run folder (a stage's, or any ``tal.run`` run's) wrote: its ``metrics.json`` record."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise PipelineError(f"{run_dir}: not a finished run (no metrics.json); give a finished run's folder")
    record = json.loads(metrics_file.read_text())
    stage_file = run_dir / STAGE_FILE
    stage = json.loads(stage_file.read_text()) if stage_file.is_file() else {}
    return {
        "run_dir": str(run_dir),
        "metrics": record.get("metrics", {}),
        "paths": record.get("paths", {}),
        "seconds": stage.get("seconds"),
        "key": stage.get("key"),
    }


def find_finished(root: str | Path, key: str) -> Path | None:
    """The newest finished stage folder below ``root`` whose ``stage.json`` has ``key``, else ``None``."""
    found = []
    for path in Path(root).glob(f"**/{STAGE_FILE}"):
        try:
            stage = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if stage.get("key") == key and (path.parent / "metrics.json").is_file():
            found.append(path.parent)
    return max(found, key=lambda p: (p / STAGE_FILE).stat().st_mtime) if found else None


def run_stage(
    name: str,
    overrides: Sequence[str],
    stage_dir: str | Path,
    run_dir: str | Path | None = None,
    reuse_dir: str | Path | None = None,
    needs: Sequence[str] = (),
) -> dict:
    """Run (or reuse) one stage and return its record ``{run_dir, metrics, paths, seconds, reused, key}``.

    ``run_dir``: a finished run to use as it is; ``reuse_dir``: where to look for a finished stage with the same
    key. ``needs`` names the files (``proposals_val`` ...) the next stages read: a reused run lacking one is an
    error naming it.
    """
    from tal.run import train

    if run_dir is not None:
        record = {**_read_stage(Path(run_dir)), "reused": True}
    else:
        cfg = compose_stage(overrides, stage_dir)
        key = config_key(cfg)
        found = find_finished(reuse_dir, key) if reuse_dir is not None else None
        if found is not None:
            record = {**_read_stage(found), "reused": True}
        else:
            start = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - start
            atomic_write_json(
                Path(stage_dir) / STAGE_FILE,
                {"stage": name, "key": key, "overrides": list(overrides), "seconds": seconds},
                indent=1,
            )
            record = {
                "run_dir": result.output_dir,
                "metrics": result.metrics,
                "paths": result.paths,
                "seconds": seconds,
                "key": key,
                "reused": False,
            }
    missing = [n for n in needs if n not in record["paths"] or not Path(record["paths"][n]).is_file()]
    if missing:
        raise PipelineError(
            f"stage {name!r}: the run {record['run_dir']} has no {missing} "
            f"(it needs predict=true with those splits); run the stage again or give another run_dir"
        )
    return record


# ---------------------------------------------------------------------------------------------- pure steps
def fuse_split(
    proposals_file: str | Path, class_scores_file: str | Path, out_file: str | Path, **fusion
) -> dict:
    """Fuse a proposals file with a class-scores file into ``out_file`` (:func:`tal.fusion.fuse`); returns the
    counts (videos, detections, videos without class scores / without proposals)."""
    from tal.fusion import fuse

    detections, report = fuse(load_results(proposals_file), load_class_scores(class_scores_file), **fusion)
    write_results(out_file, detections)
    return {
        "videos": report.videos,
        "detections": report.detections,
        "without_class_scores": len(report.without_class_scores),
        "without_proposals": len(report.without_proposals),
    }


# ---------------------------------------------------------------------------------------------- the pipeline
def run_pipeline(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict:
    """Run the two-stage system as ``cfg.pipeline`` says, in ``cfg.paths.output_dir``; return the report also
    written to ``pipeline.json``.

    ``overrides``: given to every stage after the pipeline's own (default: the command line's, see
    :func:`forwarded_overrides`).
    """
    from hydra.utils import instantiate

    p = cfg.pipeline
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    common = [
        *(p.get("overrides") or []),
        *(forwarded_overrides(_command_line()) if overrides is None else overrides),
    ]
    reuse_dir = p.reuse_dir if p.get("reuse") else None
    splits = list(p.splits)
    if "val" not in splits:
        raise PipelineError(
            f"pipeline.splits must include 'val' (it is what the pipeline scores), got {splits}"
        )
    others = [s for s in splits if s != "val"]
    start = time.perf_counter()

    def stage_overrides(
        block, extra: Sequence[str] = (), experiment: str | None = None, base=()
    ) -> list[str]:
        """experiment < base < the block's ``set`` < the pipeline's and the command line's < ``extra``"""
        own = set_overrides(_plain(block.get("set")))
        return [f"experiment={experiment or block.experiment}", *base, *own, *common, *extra]

    def stage(name: str, block, extra: Sequence[str], needs: Sequence[str], **kw) -> dict:
        overrides = stage_overrides(block, extra, **kw)
        return run_stage(name, overrides, out_dir / name, block.get("run_dir"), reuse_dir, needs)

    # every stage's config composes (experiment names, set keys) before anything trains
    for block in [p.proposals, *p.classifiers.values()] + ([p.cascade] if p.cascade.enabled else []):
        compose_stage(stage_overrides(block), out_dir)

    predict_others = ["predict=true", f"predict_splits=[{','.join(others)}]"] if others else []
    stages: dict[str, dict] = {}
    # 1. BMN: its Soft-NMS proposals (the final input when the cascade is off) and its checkpoint
    stages["proposals"] = stage(
        "proposals", p.proposals, predict_others, [f"proposals_{s}" for s in splits] + ["checkpoint_last"]
    )
    final_proposals = {s: stages["proposals"]["paths"][f"proposals_{s}"] for s in splits}
    # 2. the cascade on BMN's dense candidates (the same weights, no NMS) of every split
    if p.cascade.enabled:
        bmn = stages["proposals"]
        bmn_set = set_overrides(_plain(p.proposals.get("set")))  # the same network as the proposals stage
        stages["candidates"] = stage(
            "candidates",
            p.candidates,
            [
                "train=false",
                f"ckpt_path={_format_value(bmn['paths']['checkpoint_last'])}",
                "predict=true",
                f"predict_splits=[{','.join(['train', *others])}]",
            ],
            [f"proposals_{s}" for s in ("train", *splits)],
            experiment=p.proposals.experiment,
            base=bmn_set,
        )
        stages["candidates"]["metrics"] = {}  # AR of candidates without NMS says little; the files matter
        stages["cascade"] = stage(
            "cascade",
            p.cascade,
            [f"data.proposals_dir={_format_value(stages['candidates']['run_dir'])}", *predict_others],
            [f"proposals_{s}" for s in splits],
        )
        final_proposals = {s: stages["cascade"]["paths"][f"proposals_{s}"] for s in splits}
    # 3. the video classifiers and their ensemble
    members = {}
    for name, block in p.classifiers.items():
        members[name] = stage(
            f"classifier_{name}", block, predict_others, [f"class_scores_{s}" for s in splits]
        )
    stages.update({f"classifier_{n}": r for n, r in members.items()})

    from tal.models.classifier.ensemble import ensemble_runs

    data = instantiate(compose_stage(stage_overrides(p.proposals), out_dir).data)
    annotation_file, val_subset = data.annotation_path, data.subsets["val"]
    ens_start = time.perf_counter()
    ensemble = ensemble_runs(
        [r["run_dir"] for r in members.values()],
        out_dir / "ensemble",
        annotation_file,
        splits=splits,
        weights=p.ensemble.weights,
        calibrate=p.ensemble.calibrate,
        names=list(members),
    )
    stages["ensemble"] = {
        "run_dir": str(out_dir / "ensemble"),
        "metrics": {
            f"{split}/{k}": v for split, t in ensemble["accuracy"].items() for k, v in t["ensemble"].items()
        },
        "accuracy": ensemble["accuracy"],
        "temperatures": ensemble["temperatures"],
        "paths": ensemble["paths"],
        "seconds": time.perf_counter() - ens_start,
        "reused": False,
    }
    # 4. fusion and the official evaluation of the validation detections
    fusion = _plain(p.fusion)
    fusion_dir = out_dir / "fusion"
    counts, paths = {}, {}
    for split in splits:
        paths[f"detections_{split}"] = str(fusion_dir / f"detections_{split}.json")
        counts[split] = fuse_split(
            final_proposals[split],
            ensemble["paths"][f"class_scores_{split}"],
            paths[f"detections_{split}"],
            **fusion,
        )
    tiou, protocol = cfg.eval.tiou_thresholds, cfg.eval.protocol
    tiou = list(tiou) if not isinstance(tiou, str) else tiou
    from tal.eval.detection import evaluate_detection

    gt = load_ground_truth(annotation_file, subset=val_subset)  # as `python -m tal.eval` reads it
    detections_val = load_results(paths["detections_val"])
    final = evaluate_detection(gt, detections_val, tiou, protocol).metrics()
    oracle = _oracle_map(gt, final_proposals["val"], fusion_dir, fusion, tiou, protocol)
    stages["fusion"] = {"run_dir": str(fusion_dir), "counts": counts, "paths": paths, "reused": False}
    timelines = _timelines(out_dir / "timelines", gt, detections_val, int(p.timelines))
    report = {
        "final": {**final, "oracle_mAP": oracle},
        "stages": stages,
        "ground_truth": {"annotation_file": str(annotation_file), "subset": val_subset},
        "eval": {"tiou_thresholds": tiou, "protocol": protocol},
        "timelines": timelines,
        "seconds": time.perf_counter() - start,
        "stage_seconds": sum(r.get("seconds") or 0.0 for r in stages.values()),
    }
    atomic_write_json(out_dir / "pipeline.json", report, indent=1)
    atomic_write_json(
        out_dir / "metrics.json",
        {
            "overrides": _command_line(),
            "metrics": {f"val/{k}": v for k, v in report["final"].items()},
            "paths": {"pipeline": str(out_dir / "pipeline.json"), **paths},
        },
        indent=1,
    )
    _print_report(report, out_dir)
    return report


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _oracle_map(gt, proposals_file, fusion_dir: Path, fusion: dict, tiou, protocol: str) -> float:
    """The average mAP of the same proposals fused with the ground-truth video labels (fusion's ceiling)."""
    from tal.eval.detection import evaluate_detection
    from tal.fusion import fuse, oracle_class_scores

    detections, _ = fuse(load_results(proposals_file), oracle_class_scores(gt), **fusion)
    write_results(fusion_dir / "detections_val_oracle.json", detections)
    return evaluate_detection(gt, detections, tiou, protocol).average_map


def _timelines(out_dir: Path, gt, detections, count: int) -> list[str]:
    """Timeline PNGs (:func:`tal.plot.plot_timeline`) of the first ``count`` ground-truth videos with instances."""
    from tal.plot import plot_timeline

    videos = [v for v in gt if v.num_instances][:count]
    return [str(plot_timeline(out_dir / f"{v.video_id}.png", v.video_id, detections, v)) for v in videos]


def _print_report(report: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="two-stage pipeline (validation)")
    for col in ("stage", "metric", "value", "minutes", "run"):
        table.add_column(col, justify="right" if col in ("value", "minutes") else "left")
    wanted = ("val/AR@1", "val/AR@10", "val/AR@100", "val/AUC", "val/top1", "val/top5")
    for name, record in report["stages"].items():
        rows = [(k, v) for k, v in record.get("metrics", {}).items() if k in wanted and isinstance(v, float)]
        minutes = (
            "reused"
            if record.get("reused")
            else (f"{record['seconds'] / 60:.1f}" if record.get("seconds") is not None else "")
        )
        for i, (k, v) in enumerate(rows or [("", None)]):
            table.add_row(
                escape(name) if i == 0 else "",
                escape(k),
                "" if v is None else f"{v:.4f}",
                minutes if i == 0 else "",
                escape(record["run_dir"]) if i == 0 else "",
            )
    for k, v in report["final"].items():
        table.add_row("detections" if k == "mAP" else "", escape(k), f"{v:.4f}", "", "")
    console.print(table)
    console.print(f"pipeline report in {escape(str(out_dir / 'pipeline.json'))}", soft_wrap=True)
