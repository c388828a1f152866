import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra.utils import get_class

from tal.data import TALDataModule
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
    assert issubclass(get_class(cfg.data._target_), TALDataModule)  # the base or a stage's own (cascade)


def test_atomic_write_gives_usual_permissions(tmp_path):
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


def _run_cli(args: list[str], root: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "tal.run", *args],
        cwd=root,
        env={**os.environ, "TAL_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


def test_cli_run_writes_metrics_detections_and_predictions(tmp_path):
    _run_cli(["experiment=actionformer_synthetic", "debug=fast", "predict=true"], tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "actionformer_synthetic" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["overrides"] == ["experiment=actionformer_synthetic", "debug=fast", "predict=true"]
    assert 0.0 <= metrics["metrics"]["val/mAP"] <= 1.0
    assert metrics["metrics"]["val/score"] == metrics["metrics"]["val/mAP"]
    val = json.loads((run_dir / "detections_val.json").read_text())
    test = json.loads((run_dir / "detections_test.json").read_text())
    tiny_test_videos = 4
    assert len(test["results"]) == tiny_test_videos and set(val) >= {"version", "results"}
    entry = next(iter(test["results"].values()))[0]
    assert set(entry) == {"segment", "label", "score"} and entry["label"].startswith("c00")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_cli_multirun_sweep_prints_one_row_per_L(tmp_path):
    """One row per L; an override holding '[/abs/path]' (rich markup look-alike) reaches the summary intact."""
    tag = f"tags=[{tmp_path}/x]"
    out = _run_cli(["-m", "experiment=bmn_synthetic", "debug=fast", "L=16,32", tag], tmp_path)
    (sweep_dir,) = (tmp_path / "outputs" / "bmn_synthetic" / "multiruns").iterdir()
    rows = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [r["overrides"] for r in rows] == [
        f"experiment=bmn_synthetic debug=fast L={n} {tag}" for n in (16, 32)
    ]
    assert tag in (sweep_dir / "sweep_summary.md").read_text()
    assert all(0.0 <= r["val/AUC"] <= 100.0 for r in rows)
    assert "L=16" in out.stdout and "L=32" in out.stdout


def test_notebook_path_compose_then_train(tmp_path):
    from tal.run import train

    cfg = compose(
        ["experiment=bmn_synthetic", "debug=fast", "L=16", f"paths.root_dir={tmp_path}", "callbacks=none"]
    )
    result = train(cfg)
    metrics = result.metrics
    assert (
        set(metrics) >= {"val/AR@100", "val/AUC", "val/score"} and metrics["val/score"] == metrics["val/AUC"]
    )
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["overrides"] == [] and written["metrics"] == metrics and written["weights"] == "last"
    assert result.paths["proposals_val"] == str(Path(cfg.paths.output_dir) / "proposals_val.json")
    assert all(Path(p).is_file() for p in result.paths.values())
