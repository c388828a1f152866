import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tal.run import compose, config_dir
from tal.utils.hydra_callbacks import collect_sweep, sweep_markdown

REPO = Path(__file__).resolve().parents[1]


def test_compose_interpolates_L_into_data(tmp_path):
    cfg = compose(["L=64", f"paths.root_dir={tmp_path}", "data.regime=resize"])
    assert cfg.data.L == 64 and cfg.data.regime == "resize"
    assert cfg.data.synthetic.root == f"{tmp_path}/data/synthetic"
    assert str(tmp_path) in cfg.paths.output_dir  # notebooks get a fresh run folder
    assert Path(config_dir(), "run.yaml").is_file()


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "ddp_sim"])
def test_trainer_presets_compose(trainer):
    cfg = compose([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer == "ddp_sim":
        assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp_spawn", 2, "cpu")


def test_sweep_summary_rows(tmp_path):
    for job, (l, auc) in enumerate([(100, 0.5), (200, 0.625)]):
        d = tmp_path / str(job)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"overrides": [f"L={l}"], "metrics": {"val/AUC": auc}}))
    rows = collect_sweep(tmp_path)
    assert [r["overrides"] for r in rows] == ["L=100", "L=200"]
    md = sweep_markdown(rows, ["val/AUC"])
    assert "| 1 | L=200 | 0.6250 |" in md


def test_installed_wheel_finds_its_configs(tmp_path):
    """A non-editable install ships conf/ as package data: compose works from the installed copy."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("tal-*.whl"))
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        assert "tal/conf/run.yaml" in z.namelist()
        z.extractall(target)
    code = (
        "import tal.run as r; cfg = r.compose(['L=200']); "
        f"assert r.config_dir().startswith({str(target)!r}), r.config_dir(); print(cfg.data.L)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "200"


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in Path(config_dir(), "experiment").glob("*.yaml"))
)
def test_every_experiment_composes(experiment):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.model._target_.startswith("tal.models.")
    assert cfg.data._target_ == "tal.data.TALDataModule"


def test_atomic_write_gives_usual_permissions(tmp_path):
    import os
    import stat

    from tal.utils.io import atomic_write_json

    mask = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left
