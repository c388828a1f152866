"""Small test videos written with PyAV: a white square that moves 2 px right per frame on black, so a frame's
index can be read back from the square's position; known frame count and frame rate (or timestamps)."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

SQUARE = 8


def frame_image(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame ``i``: ``(height, width, 3)`` uint8, black with a white square at x = ``square_x(i, width)``."""
    img = np.zeros((height, width, 3), np.uint8)
    x = square_x(i, width)
    img[10 : 10 + SQUARE, x : x + SQUARE] = 255
    img[height - 6 :, : width // 2, 0] = 200  # a red band bottom-left, a blue one bottom-right: orientation
    img[height - 6 :, width // 2 :, 2] = 200
    return img


def square_x(i: int, width: int = 64) -> int:
    return (2 * i) % (width - SQUARE)


def read_square_x(rgb: np.ndarray) -> int:
    """Left edge of the square in a decoded native-size frame."""
    cols = rgb[10 : 10 + SQUARE, :, 1].astype(float).mean(axis=0)  # green: only the square has it
    return int(np.flatnonzero(cols > 127)[0])


def write_video(
    path: Path,
    n_frames: int,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    pts_sec: list[float] | None = None,
) -> Path:
    """Encode ``n_frames`` frames with libx264 (near lossless) at ``fps``, or at the given timestamps."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "1"}
        if pts_sec is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            if pts_sec is not None:
                frame.pts, frame.time_base = round(pts_sec[i] * 1000), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    """A container holding one AAC audio stream and no video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_truncated(path: Path, n_frames: int = 50) -> Path:
    """A Matroska video cut after its first half of bytes (the header still declares the full duration)."""
    full = write_video(path.with_name(path.stem + "_full.mkv"), n_frames)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def vfr_timestamps(n_fast: int = 15, n_slow: int = 15) -> list[float]:
    """Timestamps of a variable-rate video: ``n_fast`` frames 40 ms apart, then ``n_slow`` frames 100 ms apart."""
    steps = [0.0] + [0.04] * n_fast + [0.1] * (n_slow - 1)
    return np.cumsum(steps).round(3).tolist()
