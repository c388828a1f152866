"""BMNModule end to end on the `tiny` synthetic set: it overfits the training videos (high AR@100)."""

import json

import pytest
import pytorch_lightning as pl
import torch

from tal.data import TALDataModule
from tal.models.bmn import BMNModule


def _fit(tmp_path, epochs: int, **model_kwargs) -> dict:
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = TALDataModule(
        synthetic={"preset": "tiny", "seed": 0, "root": str(tmp_path / "data")},
        regime="resize",
        L=64,
        remove_short=True,
        train_subset="training",
        val_subset="training",  # overfit: validate on the training videos
        batch_size=4,
        verbose=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    model = BMNModule(in_channels=dm.in_channels, L=64, lr=3e-3, **model_kwargs)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=epochs,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path / "run"),
    )
    trainer.fit(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_overfit_tiny_reaches_high_ar(tmp_path):
    metrics = _fit(tmp_path, epochs=15)
    assert metrics["val/AR@100"] > 0.8, metrics
    assert metrics["val/score"] == metrics["val/AUC"]
    results = json.loads((tmp_path / "run" / "proposals_val.json").read_text())["results"]
    assert len(results) == 16 and all(len(p) <= 100 for p in results.values())


@pytest.mark.slow
def test_overfit_tiny_all_modules(tmp_path):
    metrics = _fit(tmp_path, epochs=20, network={"lgte": True, "gcnext": True, "dilations": [1, 2, 3]})
    assert metrics["val/AR@100"] > 0.8, metrics
