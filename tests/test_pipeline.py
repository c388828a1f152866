"""The two-stage pipeline (tal.pipeline): one command on `tiny`, every stage's file, the final number equal to
the evaluation CLI's, reuse of finished stages, and the pure helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tal.formats.annotations import load_ground_truth
from tal.formats.class_scores import load_class_scores
from tal.formats.results import load_results
from tal.pipeline import PipelineError, forwarded_overrides, run_stage, set_overrides

SUBSETS = {"train": "training", "val": "validation", "test": "testing"}


def _tal(args: list[str], root: Path, module: str = "tal.run") -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env={**os.environ, "TAL_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    _tal(["experiment=two_stage_synthetic", "debug=fast"], root)
    (run_dir,) = (root / "outputs" / "two_stage_synthetic" / "runs").iterdir()
    return root, run_dir, json.loads((run_dir / "pipeline.json").read_text())


def test_every_stage_writes_its_files_with_the_videos_of_its_split(pipeline_run):
    root, run_dir, report = pipeline_run
    gt_file = report["ground_truth"]["annotation_file"]
    videos = {split: set(load_ground_truth(gt_file, subset=s).videos) for split, s in SUBSETS.items()}
    expected = {
        "proposals": ("proposals", ["val", "test"]),
        "candidates": ("proposals", ["train", "val", "test"]),  # the cascade's input, every split
        "cascade": ("proposals", ["val", "test"]),
        "classifier_tsn": ("class_scores", ["val", "test"]),
        "classifier_nextvlad": ("class_scores", ["val", "test"]),
        "classifier_attention": ("class_scores", ["val", "test"]),
        "ensemble": ("class_scores", ["val", "test"]),
        "fusion": ("detections", ["val", "test"]),
    }
    assert set(report["stages"]) == set(expected)
    for stage, (kind, splits) in expected.items():
        record = report["stages"][stage]
        assert Path(record["run_dir"]).parent == run_dir, stage  # every stage under the pipeline's folder
        for split in splits:
            path = Path(record["run_dir"]) / f"{kind}_{split}.json"
            read = load_class_scores(path) if kind == "class_scores" else load_results(path)
            assert set(read.video_ids) == videos[split], (stage, split)
    detections = load_results(run_dir / "fusion" / "detections_val.json")
    assert detections.has_labels and len(detections) > 0
    assert len(report["timelines"]) == 4 and all(Path(p).is_file() for p in report["timelines"])
    assert report["stages"]["cascade"]["metrics"]["val/AUC"] >= 0.0


def test_final_map_equals_the_evaluation_cli_on_the_written_detections(pipeline_run):
    root, run_dir, report = pipeline_run
    cli_report = root / "eval.json"
    _tal(
        [
            report["ground_truth"]["annotation_file"],
            str(run_dir / "fusion" / "detections_val.json"),
            "--subset",
            report["ground_truth"]["subset"],
            "--report",
            str(cli_report),
        ],
        root,
        module="tal.eval",
    )
    cli = json.loads(cli_report.read_text())
    assert report["final"]["mAP"] == cli["metrics"]["mAP"]
    assert {k: v for k, v in report["final"].items() if k.startswith("mAP")} == cli["metrics"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["val/mAP"] == cli["metrics"]["mAP"]
    assert 0.0 <= report["final"]["mAP"] <= 1.0 and 0.0 <= report["final"]["oracle_mAP"] <= 1.0


def test_a_finished_stage_is_reused_by_path_and_by_config(pipeline_run, tmp_path):
    root, run_dir, report = pipeline_run
    from tal.pipeline import compose_stage

    # by path: the record of the finished run, nothing trained
    bmn = report["stages"]["proposals"]
    again = run_stage("proposals", [], tmp_path / "x", run_dir=bmn["run_dir"], needs=["proposals_val"])
    assert again["reused"] and again["run_dir"] == bmn["run_dir"] and not (tmp_path / "x").exists()
    # by config: the same overrides find the stage under the pipeline's folder
    stage_json = json.loads((Path(bmn["run_dir"]) / "stage.json").read_text())
    os.environ["TAL_ROOT"] = str(root)
    try:
        found = run_stage("proposals", stage_json["overrides"], tmp_path / "y", reuse_dir=run_dir)
        assert found["reused"] and found["run_dir"] == bmn["run_dir"] and not (tmp_path / "y").exists()
        assert compose_stage(stage_json["overrides"], tmp_path).model.network.lgte is True
    finally:
        del os.environ["TAL_ROOT"]
    # a reused run must have what the next stage reads
    with pytest.raises(PipelineError, match="proposals_train"):
        run_stage("proposals", [], tmp_path / "z", run_dir=bmn["run_dir"], needs=["proposals_train"])


def test_set_blocks_become_hydra_overrides():
    values = {
        "model": {"network": {"lgte": True, "dilations": [1, 2, 3]}, "postprocess": {"nms_sigma": None}}
    }
    assert set_overrides(values) == [
        "model.network.lgte=true",
        "model.network.dilations=[1,2,3]",
        "model.postprocess.nms_sigma=null",
    ]
    assert set_overrides({"data": {"proposals_dir": "/a b/it's"}}) == ["data.proposals_dir='/a b/it\\'s'"]


def test_command_line_overrides_reach_every_stage_but_model_keys_are_refused():
    line = [
        "experiment=two_stage_synthetic",
        "debug=fast",
        "data.synthetic.preset=tiny",
        "L=64",
        "ablation=bmn",
        "pipeline.reuse=true",
        "trainer=ddp_sim",
        "+seed=3",
    ]
    assert forwarded_overrides(line) == [
        "debug=fast",
        "data.synthetic.preset=tiny",
        "L=64",
        "trainer=ddp_sim",
        "+seed=3",
    ]
    with pytest.raises(PipelineError, match=r"pipeline.<stage>.set.model.lr"):
        forwarded_overrides(["model.lr=0.1"])


@pytest.mark.parametrize("experiment", ["two_stage_synthetic", "two_stage_fineaction"])
def test_every_stage_of_a_pipeline_experiment_composes(experiment, tmp_path):
    from tal.pipeline import compose_stage
    from tal.run import compose

    p = compose([f"experiment={experiment}"]).pipeline
    for block in [p.proposals, p.cascade, *p.classifiers.values()]:
        overrides = [f"experiment={block.experiment}", *set_overrides(dict(block.set))]
        cfg = compose_stage(overrides, tmp_path)
        assert cfg.model._target_.startswith("tal.models.") and cfg.paths.output_dir == str(tmp_path)
    assert cfg.model.network.head == "attention"
