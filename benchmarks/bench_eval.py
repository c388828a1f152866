"""Speed of ``tal.eval`` on a synthetic FineAction-sized prediction set vs the official loop algorithm.

4,174 videos, 106 classes, ~6 instances and 100 predictions per video (~417k predictions). Prints, in one run:
the wall time of the whole command ``python -m tal.eval GT.json PRED.json`` (a fresh process: imports, JSON
parsing, evaluation, printing), the time of ``tal.eval.evaluate_detection`` (and of ``evaluate_proposals``)
in process, and of the slow reference (``tests/reference_eval.py``, a transcription of the official code). The
reference is run on a random subsample of classes and extrapolated by prediction count; both results are
asserted identical on those classes.

    .venv/bin/python benchmarks/bench_eval.py [--ref-classes 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_eval import detection_ap_reference, ground_truth_from_rows  # noqa: E402
from tal.eval import Predictions, evaluate_detection, evaluate_proposals  # noqa: E402
from tal.formats import write_results  # noqa: E402


def synthetic_fineaction(rng, num_videos=4174, num_classes=106, gt_per_video=6, preds_per_video=100):
    """Ground-truth rows and flat predictions: 60% jittered GT copies (20% relabelled), 40% random."""
    names = [f"action_{c:03d}" for c in range(num_classes)]
    n_gt = rng.poisson(gt_per_video - 1, num_videos) + 1
    gt_video = np.repeat(np.arange(num_videos), n_gt)
    video_class = rng.integers(0, num_classes, (num_videos, 2))  # most videos hold one or two classes
    gt_label = video_class[gt_video, (rng.uniform(size=len(gt_video)) < 0.2).astype(int)]
    gt_start = rng.uniform(0, 150, len(gt_video))
    gt_end = gt_start + rng.gamma(2.0, 8.0, len(gt_video)) + 0.5
    gt_rows = [(f"v{v}", names[c], s, e) for v, c, s, e in zip(gt_video, gt_label, gt_start, gt_end)]

    num_pred = num_videos * preds_per_video
    pred_video = np.repeat(np.arange(num_videos), preds_per_video)
    first_gt = np.r_[0, np.cumsum(n_gt)[:-1]]
    pick = first_gt[pred_video] + (rng.uniform(size=num_pred) * n_gt[pred_video]).astype(int)
    copy = rng.uniform(size=num_pred) < 0.6
    length = gt_end[pick] - gt_start[pick]
    start = np.where(
        copy, gt_start[pick] + rng.normal(0, 0.15, num_pred) * length, rng.uniform(0, 150, num_pred)
    )
    end = np.where(
        copy, gt_end[pick] + rng.normal(0, 0.15, num_pred) * length, start + rng.gamma(2.0, 8.0, num_pred)
    )
    label = np.where(
        copy & (rng.uniform(size=num_pred) < 0.8),
        gt_label[pick],
        video_class[pred_video, rng.integers(0, 2, num_pred)],
    )
    label = np.where(rng.uniform(size=num_pred) < 0.1, rng.integers(0, num_classes, num_pred), label)
    score = np.round(rng.uniform(size=num_pred) * np.where(copy, 1.0, 0.5), 3)  # rounding creates ties
    preds = Predictions(
        [f"v{v}" for v in range(num_videos)], pred_video, np.c_[start, end], score, label, names
    )
    return gt_rows, names, preds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref-classes", type=int, default=4, help="classes evaluated by the slow reference")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    gt_rows, names, preds = synthetic_fineaction(rng)
    gt = ground_truth_from_rows(gt_rows, names)
    print(
        f"synthetic set: {len(gt)} videos, {len(names)} classes, {len(gt_rows)} instances, {len(preds)} predictions"
    )

    with tempfile.TemporaryDirectory() as tmp:
        gt_path, pred_path = Path(tmp) / "gt.json", Path(tmp) / "pred.json"
        gt_path.write_text(json.dumps(gt.to_database()))
        write_results(pred_path, preds)
        cli = [sys.executable, "-m", "tal.eval", str(gt_path), str(pred_path)]
        cli_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run(cli, capture_output=True, text=True, check=True)
            cli_times.append(time.perf_counter() - t0)
        size_mb = pred_path.stat().st_size / 1e6
    t_cli = min(cli_times)
    cli_average = next(line for line in out.stdout.splitlines() if "average" in line).split("│")[-2].strip()
    print(
        f"whole command `python -m tal.eval GT PRED` ({size_mb:.0f} MB of predictions): {t_cli:.2f} s (best of 3; "
        f"{', '.join(f'{t:.2f}' for t in cli_times)}); average mAP {cli_average} %; "
        f"target < 2 s: {'met' if t_cli < 2 else 'MISSED'}"
    )

    evaluate_detection(gt, preds, "anet")  # warm-up (imports, allocator)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        result = evaluate_detection(gt, preds, "anet")
        times.append(time.perf_counter() - t0)
    t_tal = min(times)
    print(
        f"tal.eval.evaluate_detection: {t_tal:.3f} s (best of 3; {', '.join(f'{t:.3f}' for t in times)}); "
        f"average mAP {result.average_map:.6f}"
    )
    t0 = time.perf_counter()
    proposals = Predictions(preds.video_ids, preds.video_idx, preds.segments_sec, preds.scores)
    prop = evaluate_proposals(gt, proposals, 100)
    print(f"tal.eval.evaluate_proposals: {time.perf_counter() - t0:.3f} s; {prop.metrics()}")

    # slow reference on a random subsample of classes, extrapolated by prediction count
    sampled = sorted(rng.choice(len(names), args.ref_classes, replace=False).tolist())
    sampled_names = {names[c] for c in sampled}
    pred_rows = [
        (preds.video_ids[v], names[lab], s, e, sc)
        for v, lab, (s, e), sc in zip(
            preds.video_idx.tolist(),
            preds.label_idx.tolist(),
            preds.segments_sec.tolist(),
            preds.scores.tolist(),
        )
        if names[lab] in sampled_names
    ]
    sub_gt = [r for r in gt_rows if r[1] in sampled_names]
    t0 = time.perf_counter()
    ref = detection_ap_reference(sub_gt, pred_rows, np.linspace(0.5, 0.95, 10))
    t_ref_sample = time.perf_counter() - t0
    fraction = len(pred_rows) / len(preds)
    t_ref = t_ref_sample / fraction
    print(
        f"reference (official loops) on {len(sampled)} of {len(names)} classes ({len(pred_rows)} predictions): "
        f"{t_ref_sample:.2f} s -> extrapolated to all predictions: {t_ref:.1f} s"
    )
    for name in sorted(ref):
        column = result.class_names.index(name)
        assert np.array_equal(result.ap[:, column], ref[name]), name
    print(f"identical AP on the {len(ref)} sampled classes: yes")
    print(
        f"speed-up tal / reference: {t_ref / t_tal:.0f}x ; target < 2 s: {'met' if t_tal < 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
