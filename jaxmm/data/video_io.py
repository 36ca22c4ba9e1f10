"""Video decoding for the local video builders, through PyAV (FFmpeg's libraries).

:func:`read_video` decodes a file (any container and codec FFmpeg reads: MP4/H.264,
WebM/VP9, AVI, ...) into uint8 RGB frames ``(T, H, W, 3)``, keeping frames at a fixed
rate (``fps``: the first frame at or after each tick ``k / fps`` seconds, so a 30 fps
file read at 8 fps keeps about every fourth frame) and resizing each kept frame in
FFmpeg's scaler. PyAV was chosen over imageio-ffmpeg (a pipe to an ``ffmpeg``
process) on measured speed: ``benchmarks/video_decode.py``.

PyAV is an optional dependency (``pip install 'jaxmm[video]'``); without it the video
builders fail in one line saying so.
"""

from __future__ import annotations

import numpy as np

from jaxmm.errors import DataError

__all__ = ["require_av", "read_video"]


def require_av():
    """The ``av`` module, or a one-line error saying how to install it."""
    try:
        import av
    except ImportError:
        raise DataError(
            "Decoding video needs PyAV, which is not installed.",
            hint="pip install 'jaxmm[video]' (or: pip install av)") from None
    return av


def read_video(path: str, *, fps: float | None = 8.0, size: int | tuple[int, int] | None = None,
               max_frames: int = 64) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` RGB frames of the video at ``path``.

    ``fps``: keep frames at this rate (``None``: every frame); ``size``: resize each
    frame to ``size`` x ``size`` (or ``(height, width)``; ``None``: as stored);
    ``max_frames``: stop after this many frames. Raises ``ValueError`` for a file with
    no decodable video frames (the builders count it as corrupt)."""
    av = require_av()
    height, width = (size, size) if isinstance(size, int) else (size or (None, None))
    frames: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            tick = 0
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / rate
                if fps is not None:
                    if t + 1e-6 < tick / fps:
                        continue
                    tick = int(np.floor(t * fps + 1e-6)) + 1
                kwargs = {"width": width, "height": height} if height else {}
                frames.append(frame.to_ndarray(format="rgb24", **kwargs))
                if len(frames) >= max_frames:
                    break
    except av.FFmpegError as e:
        raise ValueError(f"cannot decode video: {e}") from None
    if not frames:
        raise ValueError("no decodable video frames")
    return np.stack(frames)
