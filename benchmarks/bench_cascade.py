"""Cascade refiner training step: one grid_sample per batch (tal) vs a per-proposal copy of the feature map.

    /work/bin/heavy python benchmarks/bench_cascade.py [--batch 16] [--proposals 128] [--length 1000]

One training step of the 3-stage refiner (forward of every stage, the cascade loss, backward, AdamW step) at
batch 16, K = 128 proposals per video, T = 1000 positions, 512 input channels, hidden width 128. The two cases
differ only in how a stage reads its 128 samples per proposal from its (B, H, T) feature map:

* ``grid``: tal's :func:`~tal.models.cascade.sampling.sample_at`, one ``grid_sample`` over the (B, H, 1, T) maps;
* ``copy``: the map copied once per proposal, (B K, H, 1, T), then one ``grid_sample`` with one row per proposal
  (what sampling "per proposal" costs when each proposal gets its own feature tensor).

Each case runs in its own subprocess from the same seed; ``peak MiB`` is the peak resident set (``VmHWM``) of
the first step above the resident set before it (model and inputs built); time is the best of ``--reps`` steps.
The script checks that both give the same loss and gradients, and prints the ratios copy / grid. (A stage samples
its own ``hidden``-wide map, so the copy is ``B K H T`` floats per stage: 1 GiB at the defaults.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def sample_at_copy(feats, positions):
    """The reference: one copy of the ``(C, T)`` map per proposal, then sampling. Same output as
    :func:`tal.models.cascade.sampling.sample_at`: ``feats (B, C, T)``, ``positions (B, K, N)`` -> ``(B, C, K, N)``."""
    import torch
    import torch.nn.functional as F

    B, C, T = feats.shape
    K, N = positions.shape[1:]
    copies = feats[:, None].expand(B, K, C, T).reshape(B * K, C, 1, T)  # B*K feature maps
    x = positions.detach().reshape(B * K, 1, N).to(feats.dtype) * (2.0 / (T - 1)) - 1.0
    grid = torch.stack([x, torch.zeros_like(x)], dim=-1)  # (B*K, 1, N, 2)
    out = F.grid_sample(copies, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(B, K, C, N).permute(0, 2, 1, 3)


def _inputs(batch: int, proposals: int, length: int, in_channels: int):
    import torch

    from tal.models.cascade import match_ground_truth

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(batch, in_channels, length, generator=gen)
    mask = torch.ones(batch, length, dtype=torch.bool)
    gts, props = [], []
    for _ in range(batch):
        centres = torch.rand(6, generator=gen) * length * 0.8 + 0.1 * length
        widths = torch.rand(6, generator=gen) * 60 + 10
        gt = torch.stack([centres - widths / 2, centres + widths / 2], dim=1)
        pick = torch.randint(0, 6, (proposals,), generator=gen)
        c = centres[pick] + (torch.rand(proposals, generator=gen) - 0.5) * widths[pick] * 0.6
        w = widths[pick] * (0.7 + 0.6 * torch.rand(proposals, generator=gen))
        props.append(torch.stack([c - w / 2, c + w / 2], dim=1).clamp(0, length - 1))
        gts.append(gt)
    proposals_t = torch.stack(props)
    pairs = [match_ground_truth(p, g) for p, g in zip(props, gts)]
    matched, has_gt = torch.stack([m for m, _ in pairs]), torch.stack([h for _, h in pairs])
    bounds = torch.tensor([[0.0, length - 1.0]] * batch)
    return feats, mask, proposals_t, bounds, matched, has_gt


def run_case(method: str, args) -> dict:
    import torch

    from tal.models.cascade import CascadeRefiner, cascade_loss, sampling

    if method == "copy":
        sampling.sample_at = sample_at_copy  # every stage reads its samples through the copy
    torch.manual_seed(0)
    feats, mask, proposals, bounds, matched, has_gt = _inputs(
        args.batch, args.proposals, args.length, args.in_channels
    )
    valid = torch.ones(proposals.shape[:2], dtype=torch.bool)
    net = CascadeRefiner(args.in_channels, 3, hidden_dim=args.hidden, dropout=0.0)
    opt = torch.optim.AdamW(net.parameters(), lr=4e-4, weight_decay=1e-5)

    def step() -> tuple[float, list]:
        opt.zero_grad(set_to_none=True)
        outs = net(feats, mask, proposals, bounds)
        loss = cascade_loss(
            outs, matched, has_gt, valid, [0.5, 0.6, 0.7], generator=torch.Generator().manual_seed(1)
        )
        loss["loss"].backward()
        grads = [p.grad.detach().clone() for p in net.parameters()][:4]
        return float(loss["loss"]), grads

    rss0 = _reset_peak()
    t0 = time.perf_counter()
    loss0, grads0 = step()  # the first step: its loss and gradients must agree between the methods
    opt.step()
    times = [time.perf_counter() - t0]
    peak = _status_kib("VmHWM") * 1024 - rss0
    sums = [float(g.double().abs().sum()) for g in grads0]
    for _ in range(args.reps - 1):
        t0 = time.perf_counter()
        step()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"time_s": min(times), "peak_bytes": peak, "loss": loss0, "grad_abs_sums": sums}


def _child(method: str, argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, *argv], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case {method} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--proposals", type=int, default=128)
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--in-channels", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args)))
        return

    import torch

    argv = [
        f"--batch={args.batch}",
        f"--proposals={args.proposals}",
        f"--length={args.length}",
        f"--in-channels={args.in_channels}",
        f"--hidden={args.hidden}",
        f"--reps={args.reps}",
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; 3-stage training step, batch {args.batch}, "
        f"K={args.proposals}, T={args.length}, C={args.in_channels}, hidden {args.hidden}, 128 samples per proposal"
    )
    rows = {m: _child(m, argv) for m in ("grid", "copy")}
    print(f"{'method':>6} {'time s':>8} {'peak MiB':>9} {'loss':>12}")
    for m, r in rows.items():
        print(f"{m:>6} {r['time_s']:>8.3f} {r['peak_bytes'] / 2**20:>9.1f} {r['loss']:>12.6f}")
    g, c = rows["grid"], rows["copy"]
    same = abs(g["loss"] - c["loss"]) <= 1e-5 * max(1.0, abs(g["loss"])) and all(
        abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(g["grad_abs_sums"], c["grad_abs_sums"])
    )
    print(f"same loss and gradients: {same}")
    print(
        f"copy / grid: time {c['time_s'] / g['time_s']:.2f}x, peak memory {c['peak_bytes'] / g['peak_bytes']:.2f}x"
    )


if __name__ == "__main__":
    main()
