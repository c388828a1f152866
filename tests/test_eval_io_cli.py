import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_eval import detection_ap_reference, ground_truth_from_rows, predictions_from_rows, random_case
from tal.eval import (
    Predictions,
    ResultsError,
    evaluate_detection,
    load_ground_truth,
    load_results,
    resolve_tiou_thresholds,
    topk_accuracy,
    video_label_ids,
    write_results,
)
from tal.eval.__main__ import main
from tal.formats import AnnotationError


def _write_case(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows, names = random_case(rng, 25, 4, preds_per_video=8, score_decimals=2)
    gt = ground_truth_from_rows(gt_rows, names)
    # one training video with an instance: its predictions must be false positives on "validation"
    database = gt.to_database()
    database["database"]["train_video"] = {
        "subset": "training",
        "duration": 50.0,
        "fps": 30.0,
        "annotations": [{"label": names[0], "segment": [0.0, 5.0], "label_id": 0}],
    }
    pred_rows.append(("train_video", names[0], 0.0, 5.0, 0.95))
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(database))
    write_results(pred_path, predictions_from_rows(pred_rows))
    return gt_path, pred_path, gt_rows, pred_rows


def test_results_round_trip(tmp_path):
    rows = [("v1", "b", 0.0, 1.5, 0.5), ("v2", "a", 2.0, 3.0, 0.25), ("v1", "a", 1.0, 2.0, 0.75)]
    path = write_results(tmp_path / "r.json", predictions_from_rows(rows))
    data = json.loads(path.read_text())
    assert set(data) == {"version", "external_data", "results"}
    assert data["results"]["v1"] == [
        {"segment": [0.0, 1.5], "score": 0.5, "label": "b"},
        {"segment": [1.0, 2.0], "score": 0.75, "label": "a"},
    ]
    back = load_results(path)
    assert [back.video_ids[i] for i in back.video_idx] == ["v1", "v1", "v2"]
    assert [back.label_names[i] for i in back.label_idx] == ["b", "a", "a"]
    np.testing.assert_array_equal(back.scores, [0.5, 0.75, 0.25])
    proposals = Predictions.from_results({"results": {"v": [{"segment": [0, 1], "score": 0.1}]}})
    assert not proposals.has_labels and "label" not in proposals.to_results()["results"]["v"][0]


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not valid JSON"),
        ('{"results": []}', "'results' must map video id"),
        ('{"version": "1.3"}', "no 'results' key"),
        ('{"results": {"v9": [{"segment": [1, 2], "score": "0.5"}]}}', "v9.*prediction 0.*numbers"),
        ('{"results": {"v9": [{"segment": ["1", 2], "score": 0.5}]}}', "v9.*prediction 0.*numbers"),
        ('{"results": {"v9": [{"segment": [1, 2], "score": 0.5}, {"segment": [1, 2]}]}}', "v9.*prediction 1"),
        ('{"results": {"vid7": [{"segment": [1], "score": 0.5}]}}', "vid7.*prediction 0"),
        ('{"results": {"vid8": [{"segment": [1, 2], "score": NaN}]}}', "vid8.*non-finite"),
        (
            '{"results": {"v": [{"segment": [1, 2], "score": 1, "label": "a"}, {"segment": [1, 2], "score": 1}]}}',
            "'label' is on 1 of 2",
        ),
    ],
)
def test_bad_results_name_file_and_video(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message) as err:
        load_results(path)
    assert str(path) in str(err.value)


def test_ground_truth_subset_errors(tmp_path):
    gt_path, _, gt_rows, _ = _write_case(tmp_path)
    gt = load_ground_truth(gt_path, "validation")
    assert set(gt.videos) == {r[0] for r in gt_rows}  # the training video is left out
    with pytest.raises(AnnotationError, match="no video in subset 'Test'.*validation"):
        load_ground_truth(gt_path, "Test")


def test_cli_detection_report_and_plot(tmp_path, capsys):
    gt_path, pred_path, gt_rows, pred_rows = _write_case(tmp_path)
    report, plot = tmp_path / "out" / "report.json", tmp_path / "out" / "ap.png"
    argv = [str(gt_path), str(pred_path), "--tiou", "thumos", "--per-class", "--report", str(report)]
    assert main([*argv, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "Detection mAP" in out and "Per-class AP" in out
    data = json.loads(report.read_text())
    ref = detection_ap_reference(gt_rows, pred_rows, resolve_tiou_thresholds("thumos"))
    expected = np.mean([ap for ap in ref.values()], axis=0)
    assert data["metrics"]["mAP"] == pytest.approx(expected.mean(), abs=1e-15)
    assert data["metrics"]["mAP@0.30"] == pytest.approx(expected[0], abs=1e-15)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_proposals_and_errors(tmp_path, capsys):
    gt_path, pred_path, _, _ = _write_case(tmp_path)
    report = tmp_path / "prop.json"
    plot = tmp_path / "arn.png"
    assert (
        main([str(gt_path), str(pred_path), "--proposals", "--report", str(report), "--plot", str(plot)]) == 0
    )
    data = json.loads(report.read_text())
    assert set(data["metrics"]) == {"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}
    assert 0 < data["metrics"]["AR@100"] <= 1 and len(data["avg_recall"]) == 100
    assert plot.stat().st_size > 1000
    assert main([str(gt_path), str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in capsys.readouterr().out
    assert main([str(gt_path), str(pred_path), "--tiou", "1.5"]) == 2


def test_topk_accuracy_hand_case():
    scores = torch.tensor(
        [
            [0.1, 0.6, 0.2, 0.05, 0.05, 0.0],  # label 1: top1
            [0.5, 0.1, 0.3, 0.05, 0.05, 0.0],  # label 2: top2
            [0.5, 0.3, 0.1, 0.04, 0.06, 0.0],  # label 3: rank 5 (0.04 < 0.06 < 0.1 < ...)
            [0.5, 0.3, 0.1, 0.04, 0.06, 0.0],  # label 5: last
        ]
    )
    acc = topk_accuracy(scores, torch.tensor([1, 2, 3, 5]))
    assert acc == {"top1": 0.25, "top2": 0.5, "top3": 0.5, "top5": 0.75}
    assert set(topk_accuracy(scores[:, :3], torch.tensor([1, 2, 0, 0]))) == {"top1", "top2", "top3"}


def test_video_labels_most_frequent():
    gt = ground_truth_from_rows(
        [("v", "b", 0, 1), ("v", "a", 1, 2), ("v", "a", 2, 3), ("w", "b", 0, 1), ("w", "c", 1, 2)],
        ["a", "b", "c"],
    )
    assert video_label_ids(gt) == {"v": 0, "w": 1}


THUMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14.json"


@pytest.mark.skipif(not THUMOS.exists(), reason="real THUMOS14 annotation file not available")
def test_real_thumos_file_perfect_and_jittered(tmp_path):
    gt = load_ground_truth(THUMOS, "Test")
    rng = np.random.default_rng(0)
    gt_rows, perfect, jittered = [], [], []
    for video in gt:
        for (s, e), label in zip(video.segments_sec.tolist(), video.labels):
            gt_rows.append((video.video_id, label, s, e))
            perfect.append((video.video_id, label, s, e, float(rng.uniform())))
            d = rng.normal(0, 0.1 * (e - s), 2)
            jittered.append((video.video_id, label, s + d[0], e + d[1], float(rng.uniform())))
    # every instance (also the segments carrying two labels) is found by its copy: AP 1 everywhere
    np.testing.assert_array_equal(evaluate_detection(gt, predictions_from_rows(perfect), "thumos").ap, 1.0)
    result = evaluate_detection(gt, predictions_from_rows(jittered), "thumos")
    ref = detection_ap_reference(gt_rows, jittered, resolve_tiou_thresholds("thumos"))
    np.testing.assert_array_equal(result.ap, np.stack([ref[c] for c in result.class_names], axis=1))
    assert 0.5 < result.average_map < 1.0
