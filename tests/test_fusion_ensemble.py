"""Fusion of hand-made proposals and class scores under each score rule, the ensemble of hand-made class-score
files (weights, temperatures), and both CLIs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tal.formats import (
    AnnotationSet,
    ClassScores,
    ClassScoresError,
    Predictions,
    ResultsError,
    VideoAnnotation,
    load_class_scores,
    load_results,
    write_class_scores,
    write_results,
)
from tal.fusion import fuse, fuse_video, oracle_class_scores
from tal.fusion import main as fusion_main
from tal.models.classifier.ensemble import apply_temperature, ensemble, fit_temperature, nll
from tal.models.classifier.ensemble import main as ensemble_main


# ------------------------------------------------------------------------------------------ fusion
def _inputs() -> tuple[Predictions, ClassScores]:
    proposals = Predictions.from_videos(
        [
            ("v1", [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [0.9, 0.4, 0.1], None),
            ("v2", [[1.0, 2.0]], [0.5], None),
            ("v3", [[0.0, 1.0]], [0.3], None),  # no class scores
        ]
    )
    scores = ClassScores(
        ["v1", "v2", "v4"],  # v4 has no proposals
        [[0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0]],
        ["a", "b", "c"],
    )
    return proposals, scores


def _rows(det: Predictions, video: str) -> list[tuple]:
    (_, p) = next((v, p) for v, p in det.per_video() if v == video)
    return [
        (tuple(s), round(float(x), 12), det.label_names[k])
        for s, x, k in zip(p.segments_sec.tolist(), p.scores, p.label_idx)
    ]


@pytest.mark.parametrize(
    "rule, power, v1, v2",
    [
        # v1 classes: b (0.7), a (0.2); v2 classes: a (0.5), then b / c tie at 0.25 -> b (smaller id)
        (
            "product",
            1.0,
            [
                ((0, 1), 0.63, "b"),
                ((2, 3), 0.28, "b"),
                ((0, 1), 0.18, "a"),
                ((2, 3), 0.08, "a"),
                ((4, 5), 0.07, "b"),
                ((4, 5), 0.02, "a"),
            ],
            [((1, 2), 0.25, "a"), ((1, 2), 0.125, "b")],
        ),
        (
            "sqrt",
            1.0,
            [
                ((0, 1), math.sqrt(0.63), "b"),
                ((2, 3), math.sqrt(0.28), "b"),
                ((0, 1), math.sqrt(0.18), "a"),
                ((2, 3), math.sqrt(0.08), "a"),
                ((4, 5), math.sqrt(0.07), "b"),
                ((4, 5), math.sqrt(0.02), "a"),
            ],
            [((1, 2), 0.5, "a"), ((1, 2), math.sqrt(0.125), "b")],
        ),
        (
            "power",  # s * p^2 reorders: the third proposal's first class beats the first proposal's second
            2.0,
            [
                ((0, 1), 0.441, "b"),
                ((2, 3), 0.196, "b"),
                ((4, 5), 0.049, "b"),
                ((0, 1), 0.036, "a"),
                ((2, 3), 0.016, "a"),
                ((4, 5), 0.004, "a"),
            ],
            [((1, 2), 0.125, "a"), ((1, 2), 0.03125, "b")],
        ),
    ],
)
def test_fuse_hand_case_under_each_rule(rule, power, v1, v2):
    proposals, scores = _inputs()
    det, report = fuse(proposals, scores, top_k=2, rule=rule, class_power=power, max_per_video=100)
    assert det.video_ids == ["v1", "v2", "v3"] and det.label_names == ["a", "b", "c"]
    assert _rows(det, "v1") == [(s, pytest.approx(x, abs=1e-12), k) for s, x, k in v1]
    assert _rows(det, "v2") == [(s, pytest.approx(x, abs=1e-12), k) for s, x, k in v2]
    assert _rows(det, "v3") == []
    assert (report.videos, report.detections) == (3, 8)
    assert report.without_class_scores == ["v3"] and report.without_proposals == ["v4"]


def test_fuse_keeps_the_best_per_video_and_breaks_ties_by_proposal_then_class():
    seg, score, label = fuse_video(
        [[0, 1], [2, 3]], [0.5, 0.5], [0.5, 0.5, 0.0], top_k=3, rule="product", max_per_video=3
    )
    assert score.tolist() == [0.25, 0.25, 0.25]
    assert seg.tolist() == [[0, 1], [0, 1], [2, 3]] and label.tolist() == [0, 1, 0]
    proposals, scores = _inputs()
    det, _ = fuse(proposals, scores, top_k=3, rule="product", max_per_video=2)
    assert [len(p) for _, p in det.per_video()] == [2, 2, 0]
    bad = Predictions.from_videos([("v1", [[0.0, 1.0]], [-0.5], None)])
    with pytest.raises(ResultsError, match="v1.*sqrt"):
        fuse(bad, scores, rule="sqrt")
    with pytest.raises(ValueError, match="rule"):
        fuse(proposals, scores, rule="mean")


def test_oracle_class_scores_are_the_one_hot_video_labels():
    v1 = VideoAnnotation("v1", "validation", 10.0, [[0, 1], [2, 3], [4, 5]], ["b", "b", "a"])
    v2 = VideoAnnotation("v2", "validation", 10.0, np.zeros((0, 2)), [])
    oracle = oracle_class_scores(AnnotationSet({"v1": v1, "v2": v2}, ["a", "b"]))
    assert oracle.video_ids == ["v1", "v2"] and oracle.probs.tolist() == [[0, 1], [0, 0]]


def test_fusion_cli_counts_missing_videos_and_oracle(tmp_path, capsys):
    proposals, scores = _inputs()
    write_results(tmp_path / "proposals_val.json", proposals)
    write_class_scores(tmp_path / "class_scores_val.json", scores)
    out = tmp_path / "detections_val.json"
    args = [str(tmp_path / "proposals_val.json"), str(tmp_path / "class_scores_val.json"), str(out)]
    assert fusion_main([*args, "--rule", "product", "--top-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert "fused 3 videos into 4 detections" in printed
    assert "1 videos of the proposals without class scores" in printed and "v3" in printed
    assert "1 videos with class scores but no proposals" in printed and "v4" in printed
    det = load_results(out)
    assert sorted(det.video_ids) == ["v1", "v2", "v3"] and len(det) == 4
    annotations = {
        "database": {
            "v1": {
                "subset": "validation",
                "duration": 10.0,
                "annotations": [{"label": "c", "segment": [0, 1]}],
            },
            "v2": {
                "subset": "validation",
                "duration": 10.0,
                "annotations": [{"label": "a", "segment": [0, 1]}],
            },
            "v9": {
                "subset": "training",
                "duration": 10.0,
                "annotations": [{"label": "a", "segment": [0, 1]}],
            },
        }
    }
    (tmp_path / "gt.json").write_text(json.dumps(annotations))
    assert fusion_main([args[0], str(tmp_path / "gt.json"), str(out), "--oracle", "--top-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert (
        "1 videos of the proposals without class scores" in printed and "class scores but no" not in printed
    )
    det = load_results(out)
    by_video = {v: [det.label_names[k] for k in p.label_idx] for v, p in det.per_video()}
    assert by_video == {"v1": ["c", "c", "c"], "v2": ["a"], "v3": []}
    assert fusion_main([args[0], str(tmp_path / "missing.json"), str(out)]) == 2
    assert "missing.json" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ ensemble
def test_apply_and_fit_temperature_hand_cases():
    np.testing.assert_allclose(apply_temperature(np.array([[0.8, 0.2]]), 2.0), [[2 / 3, 1 / 3]], atol=1e-15)
    np.testing.assert_allclose(apply_temperature(np.array([[0.3, 0.1]]), 1.0), [[0.75, 0.25]], atol=1e-15)
    # every video scored [0.9, 0.1], 3 in 4 of label 0: the calibrated probability must be 0.75, i.e.
    # (0.9 / 0.1) ** (1 / T) = 0.75 / 0.25  ->  T = log 9 / log 3 = 2
    probs, labels = np.tile([0.9, 0.1], (8, 1)), np.array([0, 0, 0, 1, 0, 0, 0, 1])
    assert fit_temperature(probs, labels) == pytest.approx(2.0, abs=1e-5)


def test_fit_temperature_matches_a_grid_search():
    """Over-confident scores: labels drawn from the scores flattened by T = 2.5; the fit lands near it."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in apply_temperature(probs, 2.5)])
    t = fit_temperature(probs, labels)
    assert 1.5 < t < 4.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = min(grid, key=lambda g: nll(apply_temperature(probs, g), labels))
    assert t == pytest.approx(best, rel=2e-3)
    assert nll(apply_temperature(probs, t), labels) <= nll(apply_temperature(probs, best), labels) + 1e-12


A = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.2, 0.7]]
B = [[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]
VIDEOS, NAMES = ["v1", "v2", "v3", "v4"], ["x", "y", "z"]


def test_ensemble_of_two_hand_made_score_sets():
    a = ClassScores(VIDEOS, A, NAMES)
    b = ClassScores(VIDEOS[::-1], B[::-1], NAMES)  # other row order: aligned by video
    out = ensemble([a, b], weights=[1, 3])
    assert out.video_ids == VIDEOS
    np.testing.assert_allclose(out.probs, 0.25 * np.array(A) + 0.75 * np.array(B), atol=1e-15)
    scaled = ensemble([a, b], temperatures=[2.0, None])
    np.testing.assert_allclose(scaled.probs, 0.5 * apply_temperature(np.array(A), 2.0) + 0.5 * np.array(B))
    with pytest.raises(ClassScoresError, match="differ in 1 videos.*v4"):
        ensemble([a, ClassScores(VIDEOS[:3], B[:3], NAMES)])
    with pytest.raises(ClassScoresError, match="label names"):
        ensemble([a, ClassScores(VIDEOS, B, ["x", "y", "w"])])


def test_ensemble_cli_writes_scores_and_the_top_k_table(tmp_path, capsys):
    for name, probs in (("a", A), ("b", B)):
        for split in ("val", "test"):
            write_class_scores(
                tmp_path / name / f"class_scores_{split}.json", ClassScores(VIDEOS, probs, NAMES)
            )
    labels = ["x", "y", "z", "x"]
    db = {
        v: {"subset": "validation", "duration": 10.0, "annotations": [{"label": lab, "segment": [0, 1]}]}
        for v, lab in zip(VIDEOS, labels)
    }
    (tmp_path / "gt.json").write_text(json.dumps({"database": db}))
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    args = [
        *runs,
        "--annotations",
        str(tmp_path / "gt.json"),
        "--splits",
        "val",
        "test",
        "--out",
        str(tmp_path / "ens"),
    ]
    assert ensemble_main(args) == 0
    report = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    acc = report["accuracy"]["val"]
    # a: v1 right, v2 at rank 2, v3 right, v4 at rank 3; b: v1 at rank 2, the rest right
    assert {k: acc["a"][k] for k in ("top1", "top2", "top3")} == {"top1": 0.5, "top2": 0.75, "top3": 1.0}
    assert {k: acc["b"][k] for k in ("top1", "top2", "top3")} == {"top1": 0.75, "top2": 1.0, "top3": 1.0}
    assert {k: acc["ensemble"][k] for k in ("top1", "top2")} == {"top1": 0.75, "top2": 1.0}
    out = load_class_scores(tmp_path / "ens" / "class_scores_test.json")
    np.testing.assert_allclose(out.probs, (np.array(A) + np.array(B)) / 2)
    printed = capsys.readouterr().out
    assert "split val" in printed and "ensemble" in printed and "75.00" in printed
    assert ensemble_main([*args, "--calibrate", "--weights", "1", "3"]) == 0
    report = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    ids = np.array([0, 1, 2, 0])
    expected_t = [fit_temperature(np.array(p), ids) for p in (A, B)]
    assert report["temperatures"] == pytest.approx(expected_t)
    expected = 0.25 * apply_temperature(np.array(A), expected_t[0]) + 0.75 * apply_temperature(
        np.array(B), expected_t[1]
    )
    np.testing.assert_allclose(load_class_scores(tmp_path / "ens" / "class_scores_val.json").probs, expected)
    assert (
        ensemble_main(
            [
                *runs,
                "--annotations",
                str(tmp_path / "gt.json"),
                "--out",
                str(tmp_path / "e2"),
                "--splits",
                "train",
            ]
        )
        == 2
    )
    assert "class_scores_train.json" in capsys.readouterr().out
