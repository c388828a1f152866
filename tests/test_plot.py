"""The timeline plot: which rows and bars it draws (by hand), the PNG it writes, its CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np

from tal.formats import Predictions, VideoAnnotation, write_results
from tal.plot import PROPOSALS_ROW, plot_timeline, timeline_rows


def _predictions() -> Predictions:
    return Predictions.from_videos(
        [
            ("v1", [[1, 2], [6, 9], [0, 3], [4, 5], [7, 8]], [0.9, 0.3, 0.6, 0.05, 0.8], [0, 1, 2, 0, 1]),
            ("v2", [[0, 1]], [0.7], [2]),
        ],
        label_names=["jump", "run", "swim"],
    )


def _truth() -> VideoAnnotation:
    return VideoAnnotation(
        "v1", "validation", 10.0, [[5.0, 8.0], [0.5, 2.5], [3.0, 4.0]], ["run", "jump", "jump"]
    )


def test_rows_hold_ground_truth_then_top_detections_by_class():
    rows = timeline_rows(_predictions(), "v1", _truth(), top_k=4)
    # ground-truth classes first by first instance (jump at 0.5 s, run at 5 s), then swim (best score 0.6);
    # top 4 of v1 drops the 0.05 jump; detections sorted by ascending score within a row
    assert [r.label for r in rows] == ["jump", "run", "swim"]
    jump, run, swim = rows
    assert jump.gt_sec.tolist() == [[0.5, 2.5], [3.0, 4.0]] and jump.det_scores.tolist() == [0.9]
    assert run.gt_sec.tolist() == [[5.0, 8.0]] and run.det_scores.tolist() == [0.3, 0.8]
    assert run.det_sec.tolist() == [[6, 9], [7, 8]]
    assert swim.gt_sec.shape == (0, 2) and swim.det_sec.tolist() == [[0, 3]]
    # without ground truth: classes by best score; proposals: one row
    assert [r.label for r in timeline_rows(_predictions(), "v1", None, top_k=2)] == ["jump", "run"]
    proposals = Predictions.from_videos([("v1", [[1, 2], [3, 4]], [0.2, 0.4], None)])
    (row,) = timeline_rows(proposals, "v1", _truth())
    assert row.label == PROPOSALS_ROW and len(row.gt_sec) == 3 and row.det_scores.tolist() == [0.2, 0.4]
    assert timeline_rows(_predictions(), "nothing", None) == []


def test_plot_timeline_writes_one_png_atomically(tmp_path):
    path = plot_timeline(tmp_path / "sub" / "v1.png", "v1", _predictions(), _truth())
    assert [p.name for p in path.parent.iterdir()] == ["v1.png"]
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[1] > 600 and 150 < img.shape[0] < 600  # 3 rows
    # a darker bar is drawn where the 0.9 jump detection is: some pixels are strongly blue
    blue = (img[..., 2] > 0.5) & (img[..., 0] < 0.25)
    assert blue.sum() > 50
    empty = plot_timeline(tmp_path / "none.png", "zzz", _predictions(), None, duration_sec=5.0)
    assert mpimg.imread(empty).shape[0] > 50


def test_cli_draws_the_named_videos(tmp_path):
    gt = {"database": {"v1": {"subset": "validation", "duration": 10.0, "annotations": [
        {"segment": [5.0, 8.0], "label": "run"}, {"segment": [0.5, 2.5], "label": "jump"}]}}}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    write_results(tmp_path / "det.json", _predictions())
    cmd = [sys.executable, "-m", "tal.plot", str(tmp_path / "gt.json"), str(tmp_path / "det.json")]
    run = subprocess.run(
        [*cmd, "--videos", "v1", "v2", "--out", str(tmp_path / "tl")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "tl").iterdir()) == ["v1.png", "v2.png"]
    bad = subprocess.run([*cmd, "--videos", "v9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "videos ['v9'] are in neither file" in bad.stdout
    assert np.isfinite(mpimg.imread(tmp_path / "tl" / "v2.png")).all()
