"""Streaming video decoding with PyAV, and the snippet windows over the decoded frames.

A video is read frame by frame and never held in memory whole: :class:`VideoReader` decodes the first video
stream, converts only the frames some snippet needs (resize + centre crop in FFmpeg's swscale, straight to RGB),
and :func:`snippet_windows` groups them into snippets. Snippet ``i`` covers frames ``[i * feat_stride,
i * feat_stride + snippet_frames)`` and sits at ``t = (i * feat_stride + 0.5 * snippet_frames) / fps``
(:func:`tal.ops.timeaxis.idx_to_sec`); only whole snippets are kept, so a video of ``N`` frames gives
:func:`snippet_count` ``= (N - snippet_frames) // feat_stride + 1`` of them.

Frame rate: by default a video is read at its own rate and must be constant (the time axis above assumes frame
``j`` at ``j / fps``): a variable frame rate is a :class:`VideoError`. With ``fps`` given, every video is
resampled to that rate by timestamps (output frame ``k`` is the last frame shown at ``k / fps``), which also
reads variable-rate videos.

Bad input raises :class:`VideoError` with the file and the problem: unreadable or empty file, no video stream,
no frame rate, no frames, a truncated file (decoding stops well before the duration the container declares),
a variable frame rate, decoding errors.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "VIDEO_SUFFIXES",
    "FrameSpec",
    "VideoError",
    "VideoReader",
    "snippet_count",
    "snippet_frame_needed",
    "snippet_windows",
]

#: file suffixes taken for videos when a folder is scanned
VIDEO_SUFFIXES = (
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".3gp",
    ".ts",
)

#: a video is truncated when decoding ends this much before the duration the container declares
TRUNCATION_TOLERANCE_SEC = 1.0
TRUNCATION_TOLERANCE_FRAC = 0.02
#: a native-rate video is variable-rate when a frame's timestamp is off its slot ``j / fps`` by more than this
VFR_TOLERANCE_FRAMES = 0.5


class VideoError(ValueError):
    """A video cannot be used; the message names the file and the problem."""


def snippet_count(frame_count: int, feat_stride: int, snippet_frames: int) -> int:
    """Number of whole snippets in ``frame_count`` frames: ``(N - snippet_frames) // feat_stride + 1``, 0 when the
    video is shorter than one snippet."""
    if frame_count < snippet_frames:
        return 0
    return (frame_count - snippet_frames) // feat_stride + 1


def snippet_frame_needed(idx: int, feat_stride: int, snippet_frames: int) -> bool:
    """True when frame ``idx`` lies in some snippet ``[i * feat_stride, i * feat_stride + snippet_frames)``
    (every frame when snippets overlap or touch; the first ``snippet_frames`` of each stride otherwise)."""
    return idx % feat_stride < snippet_frames


def snippet_windows(
    frames: Iterable[tuple[int, object]], feat_stride: int, snippet_frames: int
) -> Iterator[tuple[int, list]]:
    """Group ``(frame_idx, frame)`` pairs (increasing indices; frames outside every snippet may be absent) into
    ``(snippet_idx, [snippet_frames frames])``, emitted as soon as a snippet's last frame arrives. Holds at most
    ``snippet_frames`` frames."""
    if feat_stride < 1 or snippet_frames < 1:
        raise ValueError(f"feat_stride and snippet_frames must be >= 1, got {feat_stride}, {snippet_frames}")
    buffer: deque[tuple[int, object]] = deque()
    i = 0
    for idx, frame in frames:
        if not snippet_frame_needed(idx, feat_stride, snippet_frames):
            continue
        buffer.append((idx, frame))
        if idx == i * feat_stride + snippet_frames - 1:
            start = i * feat_stride
            window = [f for j, f in buffer if j >= start]
            if len(window) != snippet_frames:
                raise RuntimeError(f"snippet {i}: {len(window)} frames buffered, expected {snippet_frames}")
            yield i, window
            i += 1
            while buffer and buffer[0][0] < i * feat_stride:
                buffer.popleft()


@dataclass(frozen=True)
class FrameSpec:
    """How decoded frames are shaped before the backbone (torchvision's resize semantics).

    Attributes:
        resize: ``[S]``: the shorter side becomes ``S`` (aspect kept, the longer side ``int(S * long / short)``);
            ``[h, w]``: exactly that size.
        crop: ``[h, w]`` of the centre crop taken after the resize.
        interpolation: ``bilinear``, ``bicubic``, ``area``, ``nearest`` (swscale).
    """

    resize: tuple[int, ...]
    crop: tuple[int, int]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", tuple(int(s) for s in self.resize))
        object.__setattr__(self, "crop", tuple(int(s) for s in self.crop))
        if len(self.resize) not in (1, 2) or len(self.crop) != 2:
            raise ValueError(
                f"FrameSpec: resize is [S] or [h, w], crop is [h, w]; got {self.resize}, {self.crop}"
            )
        if self.interpolation.upper() not in _SWS_INTERPOLATION:
            raise ValueError(
                f"FrameSpec: interpolation {self.interpolation!r} not in {sorted(_SWS_INTERPOLATION)}"
            )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of a ``height x width`` frame after the resize."""
        if len(self.resize) == 2:
            return self.resize
        size = self.resize[0]
        if height <= width:
            return size, int(size * width / height)
        return int(size * height / width), size

    def crop_box(self, height: int, width: int) -> tuple[int, int]:
        """``(top, left)`` of the centre crop in a resized ``height x width`` frame (torchvision's rounding)."""
        ch, cw = self.crop
        if ch > height or cw > width:
            raise VideoError(f"crop {ch}x{cw} is larger than the resized frame {height}x{width}")
        return int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))


_SWS_INTERPOLATION = {"BILINEAR": "BILINEAR", "BICUBIC": "BICUBIC", "AREA": "AREA", "NEAREST": "POINT"}


class VideoReader:
    """Streaming decoder of a video file's first video stream (PyAV).

    Opening probes the file (raises :class:`VideoError` for an empty or unreadable file, no video stream, no
    frame rate). :meth:`frames` then yields ``(frame_idx, rgb)``; afterwards :attr:`frame_count` holds the
    number of frames read. Use as a context manager, or call :meth:`close`.

    Args:
        path: the video file.
        fps: ``None``: read every frame at the video's own (constant) rate; a number: resample to this rate by
            timestamps.
        threads: decoder threads (0: FFmpeg chooses).
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, threads: int = 0):
        import av

        self.path = Path(path)
        self.frame_count = 0
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise VideoError(f"{self.path}: cannot read ({e.strerror or e})") from None
        if size == 0:
            raise VideoError(f"{self.path}: empty file (0 bytes)")
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoError(
                f"{self.path}: unreadable, not a video file FFmpeg can open ({_why(e)})"
            ) from None
        try:
            if not self._container.streams.video:
                kinds = sorted({s.type for s in self._container.streams}) or ["none"]
                raise VideoError(f"{self.path}: no video stream (streams: {', '.join(kinds)})")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.thread_count = threads
            rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
            if not rate or float(rate) <= 0:
                raise VideoError(f"{self.path}: the video stream declares no frame rate")
            self.native_fps = float(rate)
            if fps is not None and not fps > 0:
                raise ValueError(f"fps must be a positive number or None, got {fps}")
            self.target_fps = float(fps) if fps is not None else None
            self.height = self._stream.codec_context.height
            self.width = self._stream.codec_context.width
            if not self.height or not self.width:
                raise VideoError(f"{self.path}: the video stream has no frame size")
            self.declared_sec = self._declared_duration()
        except BaseException:
            self._container.close()
            raise

    @property
    def fps(self) -> float:
        """The rate of the frames :meth:`frames` yields."""
        return self.target_fps or self.native_fps

    def _declared_duration(self) -> float | None:
        s = self._stream
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        if s.frames:
            return s.frames / self.native_fps
        if self._container.duration:
            return self._container.duration / 1_000_000  # AV_TIME_BASE
        return None

    def expected_frames(self) -> int | None:
        """Frames the container announces at :attr:`fps` (for progress only; the truth is :attr:`frame_count`)."""
        if self.target_fps is None and self._stream.frames:
            return int(self._stream.frames)
        return int(round(self.declared_sec * self.fps)) if self.declared_sec else None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding
    def _decoded(self) -> Iterator[tuple[float, object]]:
        """``(t_sec, av.VideoFrame)`` in presentation order, ``t_sec`` relative to the first frame."""
        import av

        t0 = None
        n = 0
        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is not None and frame.time_base is not None:
                    t = float(frame.pts * frame.time_base)
                else:  # no timestamps (raw streams): trust the nominal rate
                    t = n / self.native_fps + (t0 or 0.0)
                t0 = t if t0 is None else t0
                n += 1
                yield t - t0, frame
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: decoding failed after {n} frames ({_why(e)})") from None

    def frames(
        self,
        spec: FrameSpec | None = None,
        needed: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray | None]]:
        """Yield ``(frame_idx, rgb)`` for every frame at :attr:`fps`; ``rgb`` is ``(h, w, 3)`` uint8 shaped by
        ``spec`` (the decoded size without), or ``None`` for a frame ``needed(frame_idx)`` rejects (not converted).

        After the last frame the stream is checked: :class:`VideoError` for no frames, a truncated file, or (at
        the native rate) a variable frame rate. :attr:`frame_count` holds the number of frames yielded.
        """
        convert = _Converter(spec, self.height, self.width, self.path)
        self.frame_count = 0
        last_t = None
        if self.target_fps is None:
            slot = 1.0 / self.native_fps
            for j, (t, frame) in enumerate(self._decoded()):
                if abs(t - j * slot) > VFR_TOLERANCE_FRAMES * slot:
                    raise VideoError(
                        f"{self.path}: variable frame rate: frame {j} is shown at {t:.3f} s, not at "
                        f"{j * slot:.3f} s as {self.native_fps:g} fps implies; set fps=<rate> to resample by "
                        "timestamps, or re-encode at a constant rate"
                    )
                last_t = t
                self.frame_count = j + 1
                yield j, (convert(frame) if needed is None or needed(j) else None)
        else:
            period = 1.0 / self.target_fps
            prev = None  # (t_sec, frame, rgb or None)
            k = 0
            for t, frame in self._decoded():
                while (
                    prev is not None and k * period < t - 1e-6
                ):  # output k shows the last frame at or before it
                    yield k, self._resampled(prev, k, convert, needed)
                    k += 1
                prev = [t, frame, None]
                last_t = t
            if prev is not None:
                end = prev[0] + 1.0 / self.native_fps
                while k * period < end - 1e-6:
                    yield k, self._resampled(prev, k, convert, needed)
                    k += 1
            self.frame_count = k
        self._check_complete(last_t)

    @staticmethod
    def _resampled(prev: list, k: int, convert, needed) -> np.ndarray | None:
        if needed is not None and not needed(k):
            return None
        if prev[2] is None:  # a frame repeated by upsampling is converted once
            prev[2] = convert(prev[1])
        return prev[2]

    def _check_complete(self, last_t: float | None) -> None:
        if last_t is None or self.frame_count == 0:
            raise VideoError(f"{self.path}: no frames (zero-length video)")
        declared = self.declared_sec
        if declared:
            decoded = last_t + 1.0 / self.native_fps
            tolerance = max(TRUNCATION_TOLERANCE_SEC, TRUNCATION_TOLERANCE_FRAC * declared)
            if decoded < declared - tolerance:
                raise VideoError(
                    f"{self.path}: truncated: frames end at {decoded:.2f} s but the container declares "
                    f"{declared:.2f} s"
                )


class _Converter:
    """av.VideoFrame -> ``(h, w, 3)`` uint8 RGB, resized and centre-cropped by swscale (one reformat call)."""

    def __init__(self, spec: FrameSpec | None, height: int, width: int, path: Path):
        self.spec = spec
        if spec is None:
            self.size, self.box = (height, width), None
            return
        self.size = spec.resized_size(height, width)
        try:
            self.box = spec.crop_box(*self.size)
        except VideoError as e:
            raise VideoError(f"{path}: {e} ({width}x{height} video)") from None
        self.interpolation = _SWS_INTERPOLATION[spec.interpolation.upper()]

    def __call__(self, frame) -> np.ndarray:
        if self.spec is None:
            return frame.to_ndarray(format="rgb24")
        h, w = self.size
        rgb = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation=self.interpolation)
        top, left = self.box
        ch, cw = self.spec.crop
        return np.ascontiguousarray(rgb[top : top + ch, left : left + cw])


def _why(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {msg}"
