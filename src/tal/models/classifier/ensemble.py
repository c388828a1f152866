"""Ensemble of video classifiers: the weighted mean of their (optionally temperature-calibrated) class
probabilities. Pure functions over :class:`~tal.formats.ClassScores`, and a CLI over run folders::

    python -m tal.models.classifier.ensemble RUN_A RUN_B RUN_C --annotations annotations_gt.json \\
        --splits val test --calibrate --out outputs/ensemble

reads ``class_scores_{split}.json`` of every run folder, fits one temperature per member on the ``--fit-split``
(the video labels of ``--annotations``), writes ``class_scores_{split}.json`` of the ensemble and
``ensemble.json`` (members, weights, temperatures, accuracies) to ``--out``, and prints the top-k accuracy of
every member and of the ensemble on each split (the seed's Table 4).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tal.eval.classification import topk_accuracy
from tal.formats.annotations import AnnotationError, load_annotations, video_label
from tal.formats.class_scores import ClassScores, ClassScoresError, load_class_scores, write_class_scores
from tal.utils.io import atomic_write_json

__all__ = ["apply_temperature", "ensemble", "ensemble_runs", "fit_temperature", "nll", "topk_table"]

_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities ``softmax(log(p) / T)`` of each row of ``probs (V, C)`` (``p`` clamped
    to ``1e-12``); ``T = 1`` only renormalises the rows, ``T > 1`` flattens them, ``T < 1`` sharpens them."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, None)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels (V,)`` under ``probs (V, C)`` (clamped to ``1e-12``)."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, None)).mean())


def fit_temperature(
    probs: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0), tol: float = 1e-7
) -> float:
    """The temperature minimising :func:`nll` of :func:`apply_temperature` ``(probs, T)`` on ``labels``.

    The NLL is convex in ``1 / T``, hence unimodal in ``log T``: golden-section search on ``log T`` within
    ``bounds`` to ``tol``. Args: ``probs (V, C)``, ``labels (V,)`` int class ids.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("fit_temperature: no labelled videos to fit on")

    def loss(u: float) -> float:
        return nll(apply_temperature(probs, math.exp(u)), labels)

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def ensemble(
    members: Sequence[ClassScores],
    weights: Sequence[float] | None = None,
    temperatures: Sequence[float | None] | None = None,
) -> ClassScores:
    """The weighted mean of the members' probabilities (weights normalised to sum 1; default equal), each member
    first scaled by its temperature (:func:`apply_temperature`; ``None``: used as it is).

    Members must have the same label names and the same videos (rows follow the first member's order).
    """
    if not members:
        raise ValueError("ensemble: no members")
    weights = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    temperatures = [None] * len(members) if temperatures is None else list(temperatures)
    if len(weights) != len(members) or len(temperatures) != len(members):
        raise ValueError(
            f"ensemble: {len(members)} members, {len(weights)} weights, {len(temperatures)} temperatures"
        )
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"ensemble: weights must be >= 0 with a positive sum, got {weights.tolist()}")
    first = members[0]
    total = np.zeros_like(first.probs)
    for i, (member, w, t) in enumerate(zip(members, weights / weights.sum(), temperatures)):
        if member.label_names != first.label_names:
            raise ClassScoresError(f"ensemble: member {i} has other label names than member 0")
        if set(member.video_ids) != set(first.video_ids):
            extra = sorted(set(member.video_ids) ^ set(first.video_ids))
            raise ClassScoresError(
                f"ensemble: member {i} and member 0 differ in {len(extra)} videos, e.g. {extra[0]!r}"
            )
        probs = member.for_videos(first.video_ids).probs
        total += w * (probs if t is None else apply_temperature(probs, t))
    return ClassScores(first.video_ids, np.clip(total, 0.0, 1.0), first.label_names)


def labelled_rows(scores: ClassScores, labels: dict[str, str | None]) -> tuple[list[str], np.ndarray]:
    """The videos of ``scores`` that have a video label in ``labels`` and their label ids (columns of
    ``scores``); an unknown label name is an error naming the video."""
    index = {name: i for i, name in enumerate(scores.label_names)}
    videos, ids = [], []
    for v in scores.video_ids:
        name = labels.get(v)
        if name is None:
            continue
        if name not in index:
            raise ClassScoresError(f"video {v!r}: label {name!r} is not among the class scores' label names")
        videos.append(v)
        ids.append(index[name])
    return videos, np.array(ids, dtype=np.int64)


def topk_table(scores: ClassScores, labels: dict[str, str | None]) -> dict[str, float]:
    """Top-1/2/3/5 accuracy of ``scores`` on its videos with a video label (``{"top1": ..., "videos": n}``)."""
    videos, ids = labelled_rows(scores, labels)
    if not videos:
        return {"videos": 0}
    acc = topk_accuracy(torch.from_numpy(scores.for_videos(videos).probs), torch.from_numpy(ids))
    return {**{k: round(v * len(videos)) / len(videos) for k, v in acc.items()}, "videos": len(videos)}


def ensemble_runs(
    runs: Sequence[str | Path],
    out_dir: str | Path,
    annotation_file: str | Path,
    splits: Sequence[str] = ("val",),
    weights: Sequence[float] | None = None,
    calibrate: bool = False,
    fit_split: str = "val",
    names: Sequence[str] | None = None,
) -> dict:
    """Ensemble the ``class_scores_{split}.json`` of the run folders ``runs`` for every split; write the
    ensemble's files and ``ensemble.json`` to ``out_dir``. With ``calibrate``, one temperature per member is
    fitted on ``fit_split`` (video labels of ``annotation_file``) and applied on every split. Returns the
    report (members, weights, temperatures, ``{split: {name: top-k}}``, paths)."""
    names = list(names) if names else [Path(r).name for r in runs]
    if len(names) != len(runs) or len(set(names)) != len(names) or "ensemble" in names:
        raise ValueError(f"need {len(runs)} distinct member names other than 'ensemble', got {names}")
    labels = {v.video_id: video_label(v) for v in load_annotations(annotation_file)}
    scores = {s: [load_class_scores(Path(r) / f"class_scores_{s}.json") for r in runs] for s in splits}
    temperatures: list[float | None] = [None] * len(runs)
    if calibrate:
        if fit_split not in scores:
            scores[fit_split] = [load_class_scores(Path(r) / f"class_scores_{fit_split}.json") for r in runs]
        temperatures = []
        for member in scores[fit_split]:
            videos, ids = labelled_rows(member, labels)
            temperatures.append(fit_temperature(member.for_videos(videos).probs, ids))
    report: dict = {
        "members": [str(r) for r in runs],
        "names": names,
        "weights": None if weights is None else [float(w) for w in weights],
        "temperatures": temperatures,
        "fit_split": fit_split if calibrate else None,
        "accuracy": {},
        "paths": {},
    }
    out_dir = Path(out_dir)
    for split in splits:
        members = scores[split]
        result = ensemble(members, weights, temperatures)
        path = write_class_scores(out_dir / f"class_scores_{split}.json", result)
        report["paths"][f"class_scores_{split}"] = str(path)
        table = {name: topk_table(m, labels) for name, m in zip(names, members)}
        table["ensemble"] = topk_table(result, labels)
        report["accuracy"][split] = table
    atomic_write_json(out_dir / "ensemble.json", report, indent=1)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tal.models.classifier.ensemble", description=__doc__.splitlines()[0]
    )
    p.add_argument("runs", nargs="+", help="run folders holding class_scores_{split}.json (one per member)")
    p.add_argument("--out", required=True, help="folder for the ensemble's class_scores_{split}.json")
    p.add_argument("--annotations", required=True, help="annotation JSON: video labels of the top-k table")
    p.add_argument("--splits", nargs="+", default=["val"], help="splits to ensemble (default: val)")
    p.add_argument(
        "--weights", nargs="+", type=float, default=None, help="one weight per member (default equal)"
    )
    p.add_argument("--calibrate", action="store_true", help="fit one temperature per member on --fit-split")
    p.add_argument("--fit-split", default="val", help="split the temperatures are fitted on (default: val)")
    p.add_argument(
        "--names", nargs="+", default=None, help="member names in the table (default: folder names)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    args = build_parser().parse_args(argv)
    console = Console()
    try:
        report = ensemble_runs(
            args.runs,
            args.out,
            args.annotations,
            args.splits,
            args.weights,
            args.calibrate,
            args.fit_split,
            args.names,
        )
    except (ClassScoresError, AnnotationError, ValueError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    weights = report["weights"] or [1.0] * len(report["names"])
    total = sum(weights)
    for split, table in report["accuracy"].items():
        t = Table(title=escape(f"top-k accuracy (%), split {split}"))
        for col in ("model", "weight", "T", "videos", "top-1", "top-2", "top-3", "top-5"):
            t.add_column(col, justify="left" if col == "model" else "right")
        rows = list(zip(report["names"], weights, report["temperatures"])) + [("ensemble", total, None)]
        for name, w, temp in rows:
            acc = table[name]
            cells = [f"{100 * acc[k]:.2f}" if k in acc else "" for k in ("top1", "top2", "top3", "top5")]
            temp_cell = "" if temp is None else f"{temp:.3f}"
            style = "bold" if name == "ensemble" else None
            t.add_row(escape(name), f"{w / total:.3f}", temp_cell, str(acc["videos"]), *cells, style=style)
        console.print(t)
    console.print(f"outputs in {escape(str(args.out))}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
