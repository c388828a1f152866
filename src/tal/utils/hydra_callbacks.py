"""Hydra callbacks: a summary table of a multirun sweep (one row per job)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tal.utils.io import atomic_write_json, atomic_write_text


def collect_sweep(sweep_dir: str | Path) -> list[dict]:
    """Rows ``{"job", "overrides", **metrics}`` from each job's ``metrics.json`` below ``sweep_dir``."""
    rows = []
    for path in sorted(
        Path(sweep_dir).glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)
    ):
        data = json.loads(path.read_text())
        rows.append(
            {"job": path.parent.name, "overrides": " ".join(data.get("overrides", [])), **data["metrics"]}
        )
    return rows


def sweep_markdown(rows: list[dict], keys: list[str]) -> str:
    """A Markdown table of ``rows`` with the columns ``job, overrides, *keys``."""
    head = ["job", "overrides", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [str(r["job"]), r["overrides"]] + [_fmt(r.get(k)) for k in keys]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


class SweepSummary(Callback):
    """At the end of a multirun, print one row per job and write ``sweep_summary.{json,md}`` in the sweep dir."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect_sweep(sweep_dir)
        if not rows:
            return
        keys = sorted({k for r in rows for k in r} - {"job", "overrides"})
        keys = [k for k in keys if k.startswith("val/")] or keys
        table = Table(title=escape(f"sweep {sweep_dir}"))
        for col in ["job", "overrides", *keys]:
            table.add_column(escape(col), justify="left" if col in ("job", "overrides") else "right")
        for r in rows:
            table.add_row(escape(str(r["job"])), escape(r["overrides"]), *[_fmt(r.get(k)) for k in keys])
        Console().print(table)
        atomic_write_json(sweep_dir / "sweep_summary.json", rows, indent=1)
        atomic_write_text(sweep_dir / "sweep_summary.md", sweep_markdown(rows, keys))
