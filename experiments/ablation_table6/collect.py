"""Collect the seed's Table 6 from a two-stage ablation multirun into a Markdown table.

    python experiments/ablation_table6/collect.py outputs/two_stage_synthetic/multiruns/<time> \
        --one-stage outputs/actionformer_synthetic/runs/<time> --out experiments/ablation_table6/table.md

Reads every job's ``pipeline.json`` and ``metrics.json`` (the ``ablation=`` override names the row) and, with
``--one-stage``, a ``tal.run`` ActionFormer run's ``metrics.json`` on the same data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: row -> (what it adds, seed 000's FineAction validation average mAP in %)
ROWS = {
    "bmn": ("BMN", 17.32),
    "lgte": ("+ LGTE", 17.61),
    "gcnext": ("+ GCNeXt", 18.21),
    "dilation": ("+ dilation (1, 2, 3)", 18.63),
    "refiner": ("+ refiner (1 stage)", 19.14),
    "refiner_nms": ("+ NMS on the refiner's input", 21.19),
    "cascade3": ("+ 3-stage cascade", 22.05),
}


def _row_name(overrides: list[str]) -> str | None:
    for o in overrides:
        if o.startswith("ablation="):
            return o.split("=", 1)[1]
    return None


def collect(sweep_dir: Path) -> dict[str, dict]:
    rows = {}
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json")):
        name = _row_name(json.loads(metrics_file.read_text()).get("overrides", []))
        pipeline_file = metrics_file.parent / "pipeline.json"
        if name is None or not pipeline_file.is_file():
            continue
        report = json.loads(pipeline_file.read_text())
        stages = report["stages"]
        last = stages.get("cascade") or stages["proposals"]  # the proposals that were fused
        rows[name] = {
            "job": metrics_file.parent.name,
            "final": report["final"],
            "proposal_auc": last["metrics"].get("val/AUC"),
            "proposal_ar100": last["metrics"].get("val/AR@100"),
            "minutes": report["stage_seconds"] / 60,
        }
    return rows


def markdown(rows: dict[str, dict], one_stage: dict | None) -> str:
    lines = [
        "| row | seed 000 on FineAction (avg mAP %) | synthetic avg mAP % | mAP@0.5 | mAP@0.75 | mAP@0.95 "
        "| oracle-class avg mAP % | fused proposals AUC | AR@100 | minutes (all stages) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (label, seed) in ROWS.items():
        r = rows.get(name)
        if r is None:
            lines.append(f"| {label} | {seed:.2f} | (not run) | | | | | | | |")
            continue
        f = r["final"]
        lines.append(
            f"| {label} | {seed:.2f} | {100 * f['mAP']:.2f} | {100 * f['mAP@0.50']:.2f} | "
            f"{100 * f['mAP@0.75']:.2f} | {100 * f['mAP@0.95']:.2f} | {100 * f['oracle_mAP']:.2f} | "
            f"{r['proposal_auc']:.2f} | {r['proposal_ar100']:.4f} | {r['minutes']:.1f} |"
        )
    if one_stage is not None:
        m = one_stage["metrics"]
        lines.append(
            f"| one-stage ActionFormer | | {100 * m['val/mAP']:.2f} | {100 * m['val/mAP@0.50']:.2f} | "
            f"{100 * m['val/mAP@0.75']:.2f} | {100 * m['val/mAP@0.95']:.2f} | | | | |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--one-stage", type=Path, default=None, help="an ActionFormer run folder on the same data")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    one_stage = json.loads((args.one_stage / "metrics.json").read_text()) if args.one_stage else None
    text = markdown(collect(args.sweep_dir), one_stage)
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
