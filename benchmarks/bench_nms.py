"""Soft-NMS speed: ``tal.ops.soft_nms`` vs the sequential transcription of ActionFormer's C++ loop.

2,000 and 5,000 candidate segments per video, 20 classes, Gaussian (sigma 0.5) and linear Soft-NMS,
``min_score=1e-3``, ``max_segments=100`` (ActionFormer's inference settings). Both run in this process;
results are asserted equal.

    flock /tmp/tal_heavy.lock .venv/bin/python benchmarks/bench_nms.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_eval import soft_nms_reference  # noqa: E402
from tal.ops import nms, soft_nms  # noqa: E402


def candidates(n, num_classes, seed):
    """Detector-like candidates: clusters of overlapping segments around 60 "actions" of a 300 s video."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(60, generator=g) * 300
    width = torch.rand(60, generator=g) * 30 + 2
    k = torch.randint(0, 60, (n,), generator=g)
    mid = centre[k] + torch.randn(n, generator=g) * 0.2 * width[k]
    half = width[k] * (0.5 + 0.2 * torch.randn(n, generator=g)).clamp(min=0.05)
    segs = torch.stack([mid - half, mid + half], 1)
    scores = torch.rand(n, generator=g) ** 2
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return segs, scores, labels


def best_time(repeats, fn, *args, **kwargs):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    torch.set_num_threads(1)
    print(
        "per-video times; tal = best of 10 runs (1 thread), reference = 1 run of the sequential C++ transcription"
    )
    for n in (2000, 5000):
        segs, scores, labels = candidates(n, 20, seed=n)
        for method in ("gaussian", "linear"):
            kwargs = dict(method=method, sigma=0.5, iou_threshold=0.3, min_score=1e-3, max_segments=100)
            soft_nms(segs, scores, labels, **kwargs)  # warm-up
            t_tal, (out_segs, out_scores, _) = best_time(10, soft_nms, segs, scores, labels, **kwargs)
            args = (segs.tolist(), scores.tolist(), labels.tolist(), method, 0.5, 0.3, 1e-3, 100, False)
            t_ref, (ref_idx, ref_scores) = best_time(1, soft_nms_reference, *args)
            assert torch.equal(out_segs, segs[ref_idx])
            torch.testing.assert_close(out_scores, torch.tensor(ref_scores), rtol=1e-5, atol=1e-7)
            print(
                f"soft_nms {method:8s} N={n}, 20 classes, top-100: tal {1e3 * t_tal:7.2f} ms | "
                f"reference {1e3 * t_ref:8.1f} ms | ratio {t_ref / t_tal:6.1f}x | equal: yes"
            )
        t_hard, keep = best_time(10, nms, segs, scores, 0.5, labels=labels, max_segments=100)
        print(f"nms (hard)        N={n}, 20 classes, top-100: tal {1e3 * t_hard:7.2f} ms ({len(keep)} kept)")


if __name__ == "__main__":
    main()
