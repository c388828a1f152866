"""Lightning's ``EMAWeightAveraging`` made picklable, so it survives ``ddp_spawn`` (``trainer=ddp_sim``).

Lightning 2.6 builds the EMA update with ``torch.optim.swa_utils.get_ema_avg_fn``, a local closure that
``multiprocessing`` cannot pickle; this subclass swaps in the same formula as a module-level function bound
with ``functools.partial``. Behaviour is otherwise Lightning's.
"""

from __future__ import annotations

import functools

import torch
from pytorch_lightning.callbacks import EMAWeightAveraging


def ema_update(
    ema_param: torch.Tensor, current_param: torch.Tensor, num_averaged: torch.Tensor, decay: float
) -> torch.Tensor:
    """``decay * ema + (1 - decay) * current`` (``torch.optim.swa_utils.get_ema_avg_fn``'s update)."""
    return decay * ema_param + (1 - decay) * current_param


class SpawnSafeEMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` (same arguments) whose averaging function pickles."""

    def __init__(self, decay: float = 0.999, **kwargs):
        super().__init__(decay=decay, **kwargs)
        self._kwargs["avg_fn"] = functools.partial(ema_update, decay=decay)
