"""Evaluation at the edges: in-run numbers equal the CLI's on the same file, one clear line and exit 2 for bad
inputs, warnings for degenerate segments, no number without ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tal.data import TALDataModule
from tal.eval.__main__ import main
from tal.run import compose, train

# ------------------------------------------------------------------------------------------ in-run == CLI


def _cli_report(tmp_path: Path, gt: Path, results: Path, *args: str) -> dict:
    report = tmp_path / f"report_{results.stem}.json"
    assert main([str(gt), str(results), "--subset", "validation", "--report", str(report), *args]) == 0
    return json.loads(report.read_text())


@pytest.mark.parametrize(
    "overrides,kind,args,key",
    [
        (
            ["experiment=actionformer_synthetic", "model.network.embed_dim=32", "model.network.head_dim=32"],
            "detections",
            [],
            "mAP",
        ),
        (
            ["experiment=bmn_synthetic", "L=32", "eval.clean_ground_truth=true"],
            "proposals",
            ["--proposals"],
            "AUC",
        ),
    ],
)
def test_in_run_metrics_equal_the_cli_on_the_same_file(tmp_path, overrides, kind, args, key):
    """The run scores against the ground truth as the file holds it (dirty and short instances included),
    so the CLI on the run's own results file gives the same numbers to the last digit."""
    cfg = compose([*overrides, "debug=fast", f"paths.root_dir={tmp_path}", "callbacks=none"])
    result = train(cfg)
    gt = tmp_path / "data/synthetic/tiny-seed0/annotations_gt.json"
    report = _cli_report(tmp_path, gt, Path(result.paths[f"{kind}_val"]), *args)
    in_run = {k.removeprefix("val/"): v for k, v in result.metrics.items() if k.startswith("val/")}
    for name, value in report["metrics"].items():
        assert in_run[name] == value, (name, in_run[name], value)
    if kind == "proposals":  # BMN drops instances shorter than a grid cell from its training targets
        assert set(result.metrics) >= {"val_clean/AUC", "val_clean/AR@100"}
        assert result.metrics["val_clean/AUC"] != result.metrics["val/AUC"]


def test_validation_split_without_instances_stops_before_training(tmp_path):
    database = {
        "a": {
            "subset": "training",
            "duration": 10.0,
            "fps": 30.0,
            "annotations": [{"label": "x", "segment": [1, 3]}],
        },
        "b": {"subset": "validation", "duration": 10.0, "fps": 30.0, "annotations": []},
    }
    (tmp_path / "gt.json").write_text(json.dumps({"database": database}))
    (tmp_path / "feats").mkdir()
    for vid in database:
        np.save(tmp_path / "feats" / f"{vid}.npy", np.zeros((18, 4), np.float32))
    dm = TALDataModule(str(tmp_path / "gt.json"), [str(tmp_path / "feats")], verbose=False)
    with pytest.raises(ValueError, match="validation split .* has no action instance"):
        dm.setup("fit")


# ------------------------------------------------------------------------------------------ CLI edges
GT = {
    "database": {
        "v_1": {
            "subset": "validation",
            "duration": 20.0,
            "annotations": [{"label": "a", "segment": [0, 10]}],
        },
        "v_2": {"subset": "validation", "duration": 20.0, "annotations": [{"label": "a", "segment": [5, 5]}]},
        "t_1": {"subset": "training", "duration": 20.0, "annotations": []},
    }
}


def _results(rows: dict) -> dict:
    return {"version": "x", "results": rows}


def _run(tmp_path, capsys, gt, pred, *args) -> tuple[int, str]:
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(pred if isinstance(pred, str) else json.dumps(pred))
    code = main([str(gt_path), str(pred_path), *args])
    return code, capsys.readouterr().out


OK_ROWS = {"v_1": [{"segment": [0, 10], "score": 0.9, "label": "a"}]}


@pytest.mark.parametrize(
    "pred,args,message",
    [
        ('{"results": {"v_1": [{"segment": [0, 1], "score": NaN, "label": "a"}]}}', [], "non-finite"),
        (_results({"v_1": [{"segment": [0, "1"], "score": 0.5, "label": "a"}]}), [], "as numbers"),
        ({"version": "1"}, [], "no 'results' key"),
        (_results(OK_ROWS), ["--max-avg-proposals", "0", "--proposals"], "at least 1"),
        (_results(OK_ROWS), ["--subset", "training"], "no instance"),
        (_results({"1": [{"segment": [0, 10], "score": 0.9, "label": "a"}]}), [], "'v_' prefix differs"),
        (_results({}), [], "hold no prediction"),
    ],
)
def test_bad_inputs_get_one_line_and_exit_2(tmp_path, capsys, pred, args, message):
    code, out = _run(tmp_path, capsys, GT, pred, *args)
    assert code == 2
    assert out.startswith("error:") and message in out and len(out.strip().splitlines()) == 1


def test_a_folder_given_as_a_file(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    assert main([str(tmp_path / "gt.json"), str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().out


def test_degenerate_segments_are_reported_with_their_side(tmp_path, capsys):
    rows = {
        "v_1": [
            {"segment": [0, 10], "score": 0.9, "label": "a"},
            {"segment": [6, 2], "score": 0.5, "label": "a"},
        ]
    }
    code, out = _run(tmp_path, capsys, GT, _results(rows))
    assert code == 0
    assert "degenerate segments in the ground truth: 1 zero-length" in out
    assert "degenerate segments in the predictions: 1 inverted" in out
    code, out = _run(tmp_path, capsys, GT, _results(rows), "--protocol", "strict")
    assert code == 0 and "protocol strict" in out


def test_the_cli_imports_neither_torch_nor_lightning(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "p.json").write_text(json.dumps(_results(OK_ROWS)))
    code = (
        "import sys, runpy; sys.argv = ['tal.eval', sys.argv[1], sys.argv[2]]\n"
        "try:\n    runpy.run_module('tal.eval', run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('torch', 'torchmetrics', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "gt.json"), str(tmp_path / "p.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
