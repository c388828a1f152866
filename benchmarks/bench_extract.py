"""What bounds feature extraction on this machine: decoding, frame shaping, or the backbone?

Writes one synthetic video (default 640x360, 30 fps, 20 s, H.264), then times on it, best of ``--repeats``:

1. decode only: PyAV decodes every frame, converts none (the floor of any extraction);
2. decode + shape: every frame also resized and centre-cropped to the backbone input, as RGB (swscale);
3. embed only: the backbone (default timm ``resnet18``, random init) on ready snippets in batches;
4. end to end: ``tal.features.extract`` on the video (one process, the Lightning predict loop, writing the store),
   decoding in the main process, then in one DataLoader worker (``num_workers=1``) beside the backbone; and the
   fixed cost of a run (building the model, checking the store) on a store that already holds the video.

It prints frames decoded per second, snippets embedded per second, and each time as a ratio of the decode-only
time, and says which part bounds the throughput. ``python benchmarks/bench_extract.py [--model resnet18]
[--feat-stride 8 --snippet-frames 1] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import av
import numpy as np
import torch

from tal.features import VideoReader, build_backbone, extract, snippet_count
from tal.features.decode import snippet_frame_needed


def write_video(path: Path, seconds: float, fps: int, width: int, height: int) -> int:
    """A moving bright disc and a sliding gradient over mild noise: decodes like real footage, not like a still."""
    n = int(seconds * fps)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            img = ((xx + 3 * i) % width * 255 // width).astype(np.uint8)[..., None].repeat(3, axis=2)
            cx, cy = (40 + 7 * i) % width, height // 2 + int(60 * np.sin(i / 15))
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (250, 200, 40)
            img = np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return n


def best_of(repeats: int, parts: dict) -> dict[str, float]:
    """Best wall time of each part over ``repeats`` rounds; the parts alternate within a round, so a slower
    moment of the machine weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="timm model (default resnet18)")
    p.add_argument("--feat-stride", type=int, default=8)
    p.add_argument("--snippet-frames", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16, help="snippets per forward")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--size", default="640x360")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    width, height = (int(s) for s in args.size.split("x"))
    s, k = args.feat_stride, args.snippet_frames
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        n = write_video(video, args.seconds, args.fps, width, height)
        T = snippet_count(n, s, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone = build_backbone(f"timm:{args.model}", None, k)
        spec = backbone.frame_spec

        def decode_only():
            with VideoReader(video) as r:
                for _ in r.frames(None, needed=lambda j: False):
                    pass

        def decode_shape():
            with VideoReader(video) as r:
                for _ in r.frames(spec, needed=lambda j: snippet_frame_needed(j, s, k)):
                    pass

        snippets = torch.randint(0, 256, (args.batch_size, k, *spec.crop, 3), dtype=torch.uint8)

        def embed_only():
            for start in range(0, T, args.batch_size):
                backbone(snippets[: min(args.batch_size, T - start)])

        def end_to_end(num_workers: int = 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = Path(tempfile.mkdtemp(dir=tmp))
                kwargs = {"batch_size": args.batch_size, "num_workers": num_workers, "verbose": False}
                extract(video, out, f"timm:{args.model}", None, s, k, **kwargs)

        done = Path(tmp) / "done"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extract(video, done, f"timm:{args.model}", None, s, k, verbose=False)

        def startup():  # the fixed cost of a run: build the model, check the store (all done), no predict
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                extract(video, done, f"timm:{args.model}", None, s, k, verbose=False)

        parts = {
            "startup": startup,
            "decode": decode_only,
            "shape": decode_shape,
            "embed": embed_only,
            "e2e": end_to_end,
            "e2e_worker": lambda: end_to_end(num_workers=1),
        }
        t = best_of(args.repeats, parts)

    shaped = sum(snippet_frame_needed(j, s, k) for j in range(n))
    print(
        f"video {width}x{height}, {n} frames at {args.fps} fps (H.264); timm:{args.model} on "
        f"{spec.crop[0]}x{spec.crop[1]}, feat_stride={s}, snippet_frames={k}: {T} snippets, "
        f"{shaped} frames shaped; torch threads {torch.get_num_threads()}"
    )
    t_decode, t_shape, t_embed = t["decode"], t["shape"], t["embed"]
    rows = [
        ("decode only (reference)", t_decode, f"{n / t_decode:8.0f} frames decoded/s"),
        ("decode + resize/crop to RGB", t_shape, f"{n / t_shape:8.0f} frames decoded/s"),
        (f"embed only ({args.model})", t_embed, f"{T / t_embed:8.1f} snippets embedded/s"),
    ]
    for name, key in (
        ("end to end (tal.features.extract)", "e2e"),
        ("end to end, num_workers=1", "e2e_worker"),
    ):
        rows.append((name, t[key], f"{T / t[key]:8.1f} snippets/s, {n / t[key]:.0f} frames decoded/s"))
    for name, seconds, rate in rows:
        print(f"  {name:36s} {seconds / t_decode:6.2f}x decode time   {rate}")
    bound = "the backbone" if t_embed > t_shape else "decoding"
    stream = {key: t[key] - t["startup"] for key in ("e2e", "e2e_worker")}
    print(
        f"bound by {bound}: embedding takes {t_embed / t_shape:.2f}x the time of decoding + shaping. A run's fixed "
        f"cost (model, store check, no video) is {t['startup'] / t_decode:.2f}x decode time; beyond it the run takes "
        f"{stream['e2e'] / (t_shape + t_embed):.2f}x the sum of decoding + shaping and embedding (1.0: no overhead, "
        f"no overlap), {stream['e2e_worker'] / (t_shape + t_embed):.2f}x with decoding in a DataLoader worker"
    )


if __name__ == "__main__":
    main()
