"""ActionFormer speed and memory on CPU: banded local attention against the dense masked local attention (the
O(T²) reference, same function), global attention and, given its checkout, the official code, measured in the
same run.

Two configurations, ActionFormer's THUMOS14 sizes (embedding / heads 512, 4 heads, window 19, 6 levels):
THUMOS (input 2048 × 2304, 20 classes) and FineAction-like (input 2048 × 4608, 106 classes); batch 2 of videos
filling 100% and ~78% of ``max_seq_len``, 10 instances each. For each attention:

- training s/iteration: forward + targets + loss + backward + AdamW step on the padded batch;
- inference s/video: :meth:`ActionFormerModule.predict_segments` (each video at its own length, decoding and
  Soft-NMS; an untrained network scores every point near the 0.01 prior, so 2000 candidates per level reach
  Soft-NMS: the worst case); for dense local also as before this issue: the batch padded to ``max_seq_len`` in
  one forward pass;
- peak memory: the most resident memory the training (resp. inference) steps add to the process, from a fresh
  process per measurement (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``).

Each figure is the median over ``--rounds`` fresh-process measurements, taken in interleaved rounds (every row
once per round), so that a slow spell of a shared machine does not land on one row only.

Two more rows put the figures in perspective:

- ``attention-free bound``: the same network with the local attention replaced by ``v`` (its values, no cost at
  all): what no attention implementation can beat. Against the dense masked row it bounds the gain any banded
  or sliding-window attention can give (Amdahl's law: the convolutions and projections around it are the same
  in every variant).
- ``official`` (``--official PATH``): the official implementation (github.com/happyharrycn/actionformer_release,
  imported from your checkout, its NMS extension built; see experiments/actionformer_parity) at the same sizes,
  on the same two videos, with the same AdamW step; its inference is its own loop (one video at a time, padded
  to ``max_seq_len``, its C++ Soft-NMS). ``--official-python``: a Python where the official requirements import.

    /work/bin/heavy python benchmarks/bench_actionformer.py [--iters 2] [--rounds 3] [--threads 2]
        [--configs thumos fineaction]
        [--official /path/to/actionformer_release [--official-python /path/to/python]]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from tal.models.actionformer import ActionFormerModule

CONFIGS = {
    "thumos": dict(title="THUMOS", in_channels=2048, num_classes=20, max_seq_len=2304),
    "fineaction": dict(title="FineAction-like", in_channels=2048, num_classes=106, max_seq_len=4608),
}
VARIANTS = {
    "banded local": dict(window_size=19, attention="banded"),
    "dense local": dict(window_size=19, attention="dense"),
    "global": dict(window_size=0, attention="dense"),
    "attention-free bound": dict(
        window_size=19, attention="banded"
    ),  # local attention replaced by its values
}
BATCH = 2
ROOT = Path(__file__).resolve().parents[1]


def make_batch(in_channels: int, num_classes: int, max_seq_len: int, generator: torch.Generator) -> dict:
    """A padded batch of two videos, ``max_seq_len`` and ~78% of it long, with 10 instances each."""
    lengths = [max_seq_len, max_seq_len * 25 // 32]
    mask = torch.arange(max_seq_len)[None] < torch.tensor(lengths)[:, None]
    segments, labels = [], []
    for n in lengths:
        start = torch.rand(10, generator=generator) * (n - 200)
        segments.append(torch.stack([start, start + 10 + torch.rand(10, generator=generator) * 150], dim=1))
        labels.append(torch.randint(0, num_classes, (10,), generator=generator))
    return {
        "video_idx": torch.arange(BATCH),
        "feats": torch.randn(BATCH, in_channels, max_seq_len, generator=generator) * mask[:, None],
        "mask": mask,
        "segments": segments,
        "labels": labels,
        "sec_per_unit": torch.full((BATCH,), 4 / 30, dtype=torch.float64),
        "offset_sec": torch.full((BATCH,), 8 / 30, dtype=torch.float64),
        "duration_sec": torch.tensor([n * 4 / 30 for n in lengths], dtype=torch.float64),
    }


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def config_batch(config: str) -> dict:
    """The batch of :func:`make_batch` at the sizes of ``CONFIGS[config]`` (the same in every process)."""
    cfg = CONFIGS[config]
    return make_batch(
        cfg["in_channels"], cfg["num_classes"], cfg["max_seq_len"], torch.Generator().manual_seed(0)
    )


def timed(fn, iters: int) -> dict[str, float]:
    """Seconds per call of ``fn`` (one warm-up call, then ``iters``) and the peak MiB the calls add."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM) to the current one
    baseline_kib = _status_kib("VmRSS")
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sec = (time.perf_counter() - start) / iters
    return {"sec": sec, "peak_mib": (_status_kib("VmHWM") - baseline_kib) / 1024}


def measure(config: str, variant: str, phase: str, iters: int, threads: int) -> dict[str, float]:
    """Seconds per call of one ``phase`` (train: one iteration; infer: one batch) and the peak MiB it adds."""
    torch.set_num_threads(threads)
    cfg, batch = CONFIGS[config], config_batch(config)
    if variant == "attention-free bound":  # this process only: every local attention returns its values
        import tal.models.actionformer.blocks as blocks

        blocks.local_attention = lambda q, k, v, *args, **kwargs: v
    torch.manual_seed(0)
    model = ActionFormerModule(
        cfg["in_channels"], cfg["num_classes"], max_seq_len=cfg["max_seq_len"], network=VARIANTS[variant]
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

    def infer():
        model.eval()
        model.predict_segments(batch)

    @torch.no_grad()
    def infer_padded():
        model.eval()
        model.decode(model(batch["feats"], batch["mask"]), batch)

    fn = {"train": train_step, "infer": infer, "infer_padded": infer_padded}[phase]
    if phase == "train":  # AdamW's state exists before the baseline: it is the model's, not the step's
        train_step()
    return timed(fn, iters)


def measure_official(checkout: str, config: str, phase: str, iters: int, threads: int) -> dict[str, float]:
    """:func:`measure` for the official code of ``checkout`` on the same batch (its own forward, targets, losses
    and inference loop; the same AdamW step)."""
    sys.path.insert(0, str(ROOT / "experiments" / "actionformer_parity"))
    import official

    torch.set_num_threads(threads)
    cfg, batch = CONFIGS[config], config_batch(config)
    off = official.load(checkout)
    sizes = {
        "dataset.input_dim": cfg["in_channels"],
        "dataset.num_classes": cfg["num_classes"],
        "dataset.max_seq_len": cfg["max_seq_len"],
        "dataset.feat_stride": 4,
        "model.embd_dim": 512,
        "model.fpn_dim": 512,
        "model.head_dim": 512,
    }
    with tempfile.TemporaryDirectory() as data_dir:  # paths only: nothing is read from it
        model_cfg = official.config(off, data_dir, seed=0, **sizes)
    torch.manual_seed(0)
    model = official.build_model(off, model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lengths = batch["mask"].sum(1).tolist()
    videos = [
        {
            "video_id": str(i),
            "feats": batch["feats"][i, :, :n],
            "segments": batch["segments"][i],
            "labels": batch["labels"][i],
            "fps": 30.0,
            "duration": n * 4 / 30,
            "feat_stride": 4,
            "feat_num_frames": 16,
        }
        for i, n in enumerate(lengths)
    ]

    def train_step():
        model.train()
        loss = model(videos)["final_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer():  # the official evaluation loop: one video per forward pass
        model.eval()
        for video in videos:
            model([video])

    if phase == "train":
        train_step()
    return timed(train_step if phase == "train" else infer, iters)


def _child(queue, *args) -> None:
    queue.put(measure(*args))


def measure_official_fresh(python: str, *args) -> dict[str, float]:
    """:func:`measure_official` in a fresh process of ``python`` (one where the official requirements import)."""
    cmd = [python, __file__, "--_official-child", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the official measurement failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_fresh(*args) -> dict[str, float]:
    """:func:`measure` in a fresh process, so that no earlier allocation hides or inflates the peak."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def median(measurements: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over the rounds."""
    return {k: statistics.median(m[k] for m in measurements) for k in measurements[0]}


def print_ratios(res: dict, row: str, ref_row: str) -> None:
    """How many times faster ``row`` trains and infers than ``ref_row``, and the ratio of their peak memory."""
    r, ref = res[row], res[ref_row]
    print(
        f"{row} vs {ref_row}: training x{ref['train']['sec'] / r['train']['sec']:.2f} faster, inference "
        f"x{ref['infer']['sec'] / r['infer']['sec']:.2f} faster, peak memory x"
        f"{r['train']['peak_mib'] / ref['train']['peak_mib']:.2f} (training) / x"
        f"{r['infer']['peak_mib'] / ref['infer']['peak_mib']:.2f} (inference)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=2, help="timed calls after one warm-up call")
    ap.add_argument("--rounds", type=int, default=3, help="fresh-process measurements per row (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["thumos", "fineaction"])
    ap.add_argument("--official", metavar="PATH", help="a checkout of actionformer_release: measure it too")
    ap.add_argument(
        "--official-python", default=sys.executable, help="the Python to run the official code with"
    )
    ap.add_argument("--_official-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._official_child:  # a measurement of the official code, printed as one JSON line
        print(json.dumps(measure_official(*json.loads(args._official_child))))
        return
    for config in args.configs:
        cfg = CONFIGS[config]
        print(
            f"\n{cfg['title']}: input {cfg['in_channels']} x {cfg['max_seq_len']}, {cfg['num_classes']} classes, "
            f"batch {BATCH}, window 19, {args.threads} CPU threads, {args.iters} timed calls, median of "
            f"{args.rounds} interleaved rounds"
        )
        runs = {v: partial(measure_fresh, config, v) for v in VARIANTS}  # each: fn(phase, iters, threads)
        if args.official:
            runs["official"] = partial(measure_official_fresh, args.official_python, args.official, config)
        res = {v: {"train": [], "infer": []} for v in runs}
        for _ in range(args.rounds):  # interleaved, so that a slow minute of the machine hits every row alike
            for v, fn in runs.items():
                for p in ("train", "infer"):
                    res[v][p].append(fn(p, args.iters, args.threads))
        res = {v: {p: median(ms) for p, ms in phases.items()} for v, phases in res.items()}
        print(
            f"{'':>20} {'train s/it':>11} {'infer s/video':>14} {'train peak MiB':>15} {'infer peak MiB':>15}"
        )
        for v, r in res.items():
            print(
                f"{v:>20} {r['train']['sec']:>11.2f} {r['infer']['sec'] / BATCH:>14.3f} "
                f"{r['train']['peak_mib']:>15.0f} {r['infer']['peak_mib']:>15.0f}"
            )
        padded = measure_fresh(config, "dense local", "infer_padded", args.iters, args.threads)
        print(
            f"dense local, inference as before (the batch padded to max_seq_len, one pass): "
            f"{padded['sec'] / BATCH:.3f} s/video, peak {padded['peak_mib']:.0f} MiB; banded local at each "
            f"video's own length: x{padded['sec'] / res['banded local']['infer']['sec']:.2f} faster"
        )
        for v in ("banded local", "global", "attention-free bound"):
            print_ratios(res, v, "dense local")
        if args.official:
            print_ratios(res, "banded local", "official")


if __name__ == "__main__":
    main()
