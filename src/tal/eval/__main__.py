"""``python -m tal.eval GT.json PRED.json`` (console script ``tal-eval``): evaluate a results JSON file.

Detection mAP by default, AR@AN / AUC with ``--proposals``. Prints a rich table, optionally writes a JSON
report and a PNG (per-class AP, or the AR-AN curve).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tal.eval.checks import diagnose
from tal.eval.detection import PROTOCOLS, DetectionResult, evaluate_detection, resolve_tiou_thresholds
from tal.eval.proposal import ProposalResult, evaluate_proposals
from tal.formats.annotations import AnnotationError, load_ground_truth
from tal.formats.results import ResultsError, load_results
from tal.utils.io import atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tal-eval", description=__doc__.splitlines()[0])
    p.add_argument(
        "ground_truth", help="annotation JSON (FineAction, ActivityNet 1.3 or ActionFormer layout)"
    )
    p.add_argument("predictions", help="results JSON in the official ActivityNet format")
    p.add_argument(
        "--subset", default="validation", help="ground-truth subset to evaluate (default: validation)"
    )
    p.add_argument(
        "--tiou",
        default=None,
        help="tIoU thresholds: anet | thumos | comma list like 0.5,0.7 (default: anet)",
    )
    p.add_argument(
        "--protocol",
        default="official",
        choices=list(PROTOCOLS),
        help="official (the ActivityNet code's numbers, quirks included; default) | strict (tIoU 0 for a "
        "non-positive union) | actionformer (ActionFormer's metrics.py: drops <1 ms and duplicated ground truths)",
    )
    p.add_argument("--proposals", action="store_true", help="evaluate class-agnostic proposals (AR@AN, AUC)")
    p.add_argument(
        "--max-avg-proposals", type=int, default=100, help="AN budget for --proposals (default 100)"
    )
    p.add_argument("--per-class", action="store_true", help="also print the AP of every class")
    p.add_argument("--report", default=None, help="write the full result as JSON to this path")
    p.add_argument(
        "--plot", default=None, help="write a PNG: per-class AP, or the AR-AN curve with --proposals"
    )
    return p


def detection_table(result: DetectionResult, per_class: bool) -> list[Table]:
    table = Table(title="Detection mAP")
    table.add_column("tIoU", justify="right")
    table.add_column("mAP (%)", justify="right")
    for thr, value in zip(result.tiou_thresholds, result.map_per_threshold):
        table.add_row(f"{thr:.2f}", f"{100 * value:.2f}")
    table.add_row("average", f"{100 * result.average_map:.2f}", style="bold")
    tables = [table]
    if per_class:
        pc = Table(title="Per-class AP (%)")
        pc.add_column("class")
        pc.add_column("#GT", justify="right")
        pc.add_column("#pred", justify="right")
        for thr in result.tiou_thresholds:
            pc.add_column(f"{thr:.2f}", justify="right")
        pc.add_column("avg", justify="right")
        for c, name in enumerate(result.class_names):
            cells = [f"{100 * a:.2f}" for a in result.ap[:, c]]
            pc.add_row(
                escape(name),
                str(result.num_positives[c]),
                str(result.num_predictions[c]),
                *cells,
                f"{100 * result.ap[:, c].mean():.2f}",
            )
        tables.append(pc)
    return tables


def proposal_table(result: ProposalResult) -> Table:
    table = Table(title=f"Proposals, AN <= {result.max_avg_proposals}")
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for key, value in result.metrics().items():
        table.add_row(key, f"{value:.2f}" if key == "AUC" else f"{100 * value:.2f}")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate; exit 0 with the tables, or 2 with one line saying what is wrong with the inputs."""
    args = build_parser().parse_args(argv)
    console = Console()

    def fail(message: str) -> int:
        console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        return 2

    try:
        if args.max_avg_proposals < 1:
            return fail(f"--max-avg-proposals must be at least 1, got {args.max_avg_proposals}")
        tiou = resolve_tiou_thresholds(args.tiou or "anet")
        gt = load_ground_truth(args.ground_truth, subset=args.subset)
        preds = load_results(args.predictions)
        diagnosis = diagnose(gt, preds, "proposals" if args.proposals else "predictions")
        if diagnosis.errors:
            return fail(
                f"{args.predictions} against {args.ground_truth} ({args.subset}): {diagnosis.errors[0]}"
            )
        if args.proposals:
            result = evaluate_proposals(gt, preds, args.max_avg_proposals, tiou, protocol=args.protocol)
            tables = [proposal_table(result)]
        else:
            result = evaluate_detection(gt, preds, tiou, protocol=args.protocol)
            tables = detection_table(result, args.per_class)
    except (AnnotationError, ResultsError, ValueError) as e:
        return fail(str(e))
    console.print(
        f"{len(gt)} videos / {gt.num_instances} instances in subset {escape(repr(args.subset))}; "
        f"{len(preds)} predictions on {diagnosis.pred_videos} videos; protocol {args.protocol}",
        soft_wrap=True,
    )
    for warning in diagnosis.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    if not args.proposals and result.num_ignored:
        console.print(
            f"[yellow]warning:[/yellow] {result.num_ignored} predictions have labels absent from the ground truth"
        )
    for table in tables:
        console.print(table)
    if args.report:
        report = {
            "ground_truth": str(args.ground_truth),
            "predictions": str(args.predictions),
            "subset": args.subset,
            "protocol": args.protocol,
            "task": "proposals" if args.proposals else "detection",
            "checks": diagnosis.to_dict(),
            **result.to_dict(),
        }
        atomic_write_json(args.report, report, indent=2)
        console.print(f"report written to {escape(str(args.report))}", soft_wrap=True)
    if args.plot:
        from tal.eval.plots import plot_ar_an, plot_per_class_ap

        (plot_ar_an if args.proposals else plot_per_class_ap)(result, args.plot)
        console.print(f"plot written to {escape(str(args.plot))}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
