"""ActionFormer speed on CPU at the THUMOS14 configuration (input 2048, length 2304, batch 2, 20 classes).

Prints training iterations/s (forward + targets + loss + backward + AdamW step) and inference videos/s
(forward + decoding + Soft-NMS), for the local-window model (window 19) and, as the reference measured in the
same run, the same network with global attention at every level; plus the share of inference spent after the
network (candidate selection + Soft-NMS; an untrained network scores every point near the 0.01 prior, so all
2000 candidates per level reach Soft-NMS: the worst case).

    flock /tmp/tal_heavy.lock .venv/bin/python benchmarks/bench_actionformer.py [--iters 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from tal.models.actionformer import ActionFormerModule

IN_CHANNELS, NUM_CLASSES, LENGTH, BATCH = 2048, 20, 2304, 2


def make_batch(generator: torch.Generator) -> dict:
    """A THUMOS-like padded batch: videos of 2304 and 1800 positions with 10 instances each."""
    lengths = [LENGTH, 1800]
    mask = torch.arange(LENGTH)[None] < torch.tensor(lengths)[:, None]
    segments, labels = [], []
    for n in lengths:
        start = torch.rand(10, generator=generator) * (n - 200)
        segments.append(torch.stack([start, start + 10 + torch.rand(10, generator=generator) * 150], dim=1))
        labels.append(torch.randint(0, NUM_CLASSES, (10,), generator=generator))
    return {
        "video_idx": torch.arange(BATCH),
        "feats": torch.randn(BATCH, IN_CHANNELS, LENGTH, generator=generator) * mask[:, None],
        "mask": mask,
        "segments": segments,
        "labels": labels,
        "sec_per_unit": torch.full((BATCH,), 4 / 30, dtype=torch.float64),
        "offset_sec": torch.full((BATCH,), 8 / 30, dtype=torch.float64),
        "duration_sec": torch.tensor([n * 4 / 30 for n in lengths], dtype=torch.float64),
    }


def timed(fn, iters: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def measure(window_size: int, batch: dict, iters: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = ActionFormerModule(
        IN_CHANNELS, NUM_CLASSES, max_seq_len=LENGTH, network={"window_size": window_size}
    )
    model.log = lambda *a, **k: None  # no trainer attached
    model.log_dict = lambda *a, **k: None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def network_only():
        model.eval()
        with torch.no_grad():
            return model(batch["feats"], batch["mask"])

    outputs = network_only()
    train_sec, net_sec = timed(train_step, iters), timed(network_only, iters)
    post_sec = timed(lambda: model.decode(outputs, batch), iters)
    return {
        "train_it_per_s": 1 / train_sec,
        "infer_videos_per_s": BATCH / (net_sec + post_sec),
        "post_share": post_sec / (net_sec + post_sec),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(torch.Generator().manual_seed(0))
    print(f"ActionFormer, input {IN_CHANNELS} x {LENGTH}, batch {BATCH}, {args.threads} CPU threads")
    local, glob = measure(19, batch, args.iters), measure(0, batch, args.iters)
    for name, r in (("local window 19", local), ("global (reference)", glob)):
        print(
            f"{name:>20}: train {r['train_it_per_s']:.3f} it/s, inference {r['infer_videos_per_s']:.2f} videos/s "
            f"(post-processing {100 * r['post_share']:.0f}% of inference)"
        )
    print(
        f"local / global: train speed x{local['train_it_per_s'] / glob['train_it_per_s']:.2f}, "
        f"inference speed x{local['infer_videos_per_s'] / glob['infer_videos_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
