"""Command-line helpers shared by the Hydra entry points that take positional paths."""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

__all__ = ["config_dir", "hydra_quote", "positional_overrides"]


def config_dir() -> str:
    """Absolute path of tal's Hydra configs (the package's ``tal/conf``), for entry points below ``tal.run``."""
    return str(Path(str(resources.files("tal") / "conf")).resolve())


def hydra_quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value (spaces, commas, brackets, ``=`` and quotes survive)."""
    value = re.sub(
        r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value
    )  # Hydra unescapes only before ' and at end
    return "'" + value.replace("'", "\\'") + "'"


def positional_overrides(argv: Sequence[str], names: Sequence[str], usage: str) -> list[str]:
    """Turn the leading positional arguments of ``argv`` (no ``=``, not a ``-`` flag) into ``name=value``
    overrides, in the order of ``names``; the rest of ``argv`` is kept as is.

    ``python -m tal.features VIDEOS OUT backbone=x`` -> ``["video_dir='VIDEOS'", "out_dir='OUT'", "backbone=x"]``.
    Raises ``SystemExit`` with ``usage`` when there are more positionals than names.
    """
    argv = list(argv)
    n = 0
    while n < len(argv) and "=" not in argv[n] and not argv[n].startswith("-"):
        n += 1
    if n > len(names):
        raise SystemExit(f"usage: {usage}\n(got {n} positional arguments: {argv[:n]})")
    return [f"{name}={hydra_quote(value)}" for name, value in zip(names, argv[:n])] + argv[n:]
