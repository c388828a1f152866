"""Fused BM layer vs the dense public-BMN algorithm: time and peak memory of forward + backward.

    flock /tmp/tal_heavy.lock .venv/bin/python benchmarks/bench_bm_layer.py [--lengths 100 200 400] [--skip-step]

Each case runs in its own subprocess. ``peak MiB`` is the peak resident set (``VmHWM``, what ``ru_maxrss``
reports) of set-up + forward + backward above the resident set after the imports; the set-up is the one-time
sampling operator (fused, cached) or the dense mask (dense), also shown alone as ``setup MiB``.
Batch 1, C = 128 → 512 channels, N = 32, D = L / 2; time is the best forward + backward. The last case measures a full BMN training
step (LGTE + dilated GCNeXt, L = 400, batch 8) against an 8 GiB budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

GIB = 1024**3


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS; returns the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _peak() -> int:
    return _status_kib("VmHWM") * 1024


def dense_mask(length: int, max_duration: int, num_sample: int = 32, num_points: int = 3):
    """The public BMN mask ``(T, N, D, T)`` float32, scattered from the same positions/weights (the unit tests
    prove these equal public BMN's loops)."""
    import numpy as np
    import torch

    from tal.models.bmn import bm_interp_weights, bm_sample_positions

    positions, valid = bm_sample_positions(length, max_duration, num_sample, num_points)
    idx, w = bm_interp_weights(positions, length)  # (D, T, N*P, 2)
    w = np.where(valid[..., None, None], w, 0.0) / num_points
    d, t, k, _ = np.indices(idx.shape, sparse=True)
    mask = torch.zeros(length, num_sample, max_duration, length)
    flat = ((idx * num_sample + k // num_points) * max_duration + d) * length + t
    mask.view(-1).index_add_(0, torch.from_numpy(flat.reshape(-1)), torch.from_numpy(w.reshape(-1)).float())
    return mask


def run_case(method: str, length: int, reps: int) -> dict:
    import torch
    from torch import nn

    from tal.models.bmn import BoundaryMatching, bm_sampling_operator

    torch.manual_seed(0)
    max_duration = length // 2
    x = torch.randn(1, 128, length, requires_grad=True)
    t0 = time.perf_counter()
    rss0 = _reset_peak()
    if method == "fused":
        layer = BoundaryMatching(128, 512)
        bm_sampling_operator(length, max_duration)  # one-time, cached
        setup = None

        def step():
            layer(x, max_duration).sum().backward()
    else:
        conv3d = nn.Conv3d(128, 512, (32, 1, 1))
        setup = dense_mask(length, max_duration)

        def step():
            sampled = torch.matmul(x, setup.view(length, -1)).view(1, 128, 32, max_duration, length)
            conv3d(sampled).sum().backward()

    setup_s = time.perf_counter() - t0
    setup_peak = _peak()
    times = []
    _reset_peak()
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "time_s": min(times),
        "peak_bytes": max(setup_peak, _peak()) - rss0,
        "setup_s": setup_s,
        "setup_bytes": setup_peak - rss0,
    }


def run_train_step(length: int, batch: int, in_channels: int) -> dict:
    import torch

    from tal.models.bmn import BMN, bmn_loss, bmn_targets, valid_map_mask

    torch.manual_seed(0)
    net = BMN(in_channels, length // 2, lgte=True, gcnext=True, dilations=(1, 2, 3))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    feats = torch.randn(batch, in_channels, length)
    mask = torch.ones(batch, length, dtype=torch.bool)
    segments = [torch.tensor([[10.0, 60.0], [100.0, 130.0], [250.0, 330.0]]) * length / 400] * batch
    target = bmn_targets(segments, length, length // 2)
    map_valid = valid_map_mask(mask.sum(1), length, length // 2)
    from tal.models.bmn import bm_sampling_operator

    bm_sampling_operator(length, length // 2)
    base = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    losses = bmn_loss(net(feats, mask), target, mask, map_valid)
    losses["loss"].backward()
    opt.step()
    return {"time_s": time.perf_counter() - t0, "peak_bytes": _peak() - base, "rss_bytes": _peak()}


def _child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--reps", type=int, default=2, help="repetitions per case (best time kept)")
    ap.add_argument("--skip-step", action="store_true", help="skip the full training step")
    ap.add_argument("--step-batch", type=int, default=8)
    ap.add_argument("--step-in-channels", type=int, default=1024)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "step":
            res = run_train_step(int(rest[0]), int(rest[1]), int(rest[2]))
        else:
            res = run_case(kind, int(rest[0]), int(rest[1]))
        print(json.dumps(res))
        return

    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; forward+backward, batch 1, C=128->512"
    )
    header = f"{'L':>5} {'method':>6} {'time s':>8} {'peak MiB':>9} {'setup s':>8} {'setup MiB':>9}"
    print(header)
    rows = {}
    for length in args.lengths:
        for method in ("fused", "dense"):
            reps = 1 if (method == "dense" and length >= 400) else args.reps
            r = rows[length, method] = _child([method, str(length), str(reps)])
            print(
                f"{length:>5} {method:>6} {r['time_s']:>8.3f} {r['peak_bytes'] / 2**20:>9.1f} "
                f"{r['setup_s']:>8.2f} {r['setup_bytes'] / 2**20:>9.1f}",
                flush=True,
            )
    print("\nratios dense / fused (higher is better for fused)")
    print(f"{'L':>5} {'speed-up':>9} {'peak memory':>12}")
    for length in args.lengths:
        f, d = rows[length, "fused"], rows[length, "dense"]
        print(f"{length:>5} {d['time_s'] / f['time_s']:>8.1f}x {d['peak_bytes'] / f['peak_bytes']:>11.1f}x")
    if 400 in args.lengths:
        f, d = rows[400, "fused"], rows[400, "dense"]
        speed, mem = d["time_s"] / f["time_s"], d["peak_bytes"] / f["peak_bytes"]
        print(
            f"targets at L=400: speed-up {speed:.1f}x (>= 5: {speed >= 5}), memory {mem:.1f}x (>= 10: {mem >= 10})"
        )
    if not args.skip_step:
        r = _child(["step", "400", str(args.step_batch), str(args.step_in_channels)])
        print(
            f"\nfull BMN training step (LGTE + GCNeXt d=1,2,3, fused BM layer), L=400, batch {args.step_batch}, "
            f"C_in={args.step_in_channels}: {r['time_s']:.1f} s, step peak {r['peak_bytes'] / GIB:.2f} GiB above "
            f"the model and data, process peak RSS {r['rss_bytes'] / GIB:.2f} GiB -> fits in 8 GiB: "
            f"{r['rss_bytes'] < 8 * GIB}"
        )


if __name__ == "__main__":
    main()
