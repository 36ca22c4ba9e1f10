"""Video decoding for the local video builders: PyAV against imageio-ffmpeg.

Both decode the same H.264 (MPEG-4 part 2 where libx264 is missing) clip, keep every
``--stride``-th frame and resize it to ``--size`` squares, as ``jaxmm data
build-video-*`` does. PyAV (:func:`jaxmm.data.video_io.read_video`) decodes in-process
with FFmpeg's libraries and scales only the kept frames; imageio-ffmpeg pipes raw
frames out of an ``ffmpeg`` subprocess (its ``-vf fps=,scale=`` filters do the
selection and scaling). Reported: median seconds per clip over ``--repeats`` reads and
the imageio/PyAV ratio (> 1: PyAV is faster). decord is timed too when installed.

  python benchmarks/video_decode.py [--seconds 10] [--fps 30] [--res 480] [--repeats 5]

Only ratios from the same run on the same machine mean anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxmm.data.video_io import read_video, require_av  # noqa: E402


def make_clip(path: str, seconds: float, fps: int, res: int) -> str:
    """A moving-gradient clip (compresses like real footage, not like a flat frame)."""
    av = require_av()
    codecs = av.codecs_available
    codec = "libx264" if "libx264" in codecs else "mpeg4"
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = res, res * 4 // 3
        stream.pix_fmt = "yuv420p"
        y, x = np.mgrid[:stream.height, :stream.width]
        for i in range(int(seconds * fps)):
            frame = np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256],
                             -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return codec


def imageio_read(path: str, fps: float, size: int) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(
        path, output_params=["-vf", f"fps={fps},scale={size}:{size}"])
    next(reader)  # the metadata
    frames = [np.frombuffer(f, np.uint8).reshape(size, size, 3) for f in reader]
    return np.stack(frames)


def decord_read(path: str, fps: float, size: int) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, width=size, height=size)
    step = max(1, round(vr.get_avg_fps() / fps))
    return vr.get_batch(list(range(0, len(vr), step))).asnumpy()


def median_seconds(fn, repeats: int) -> tuple[float, int]:
    frames = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(frames)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=30, help="the clip's frame rate")
    p.add_argument("--res", type=int, default=480, help="the clip's height")
    p.add_argument("--keep-fps", type=float, default=8.0, help="frames kept per second")
    p.add_argument("--size", type=int, default=112, help="kept frames are resized to this")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip.mp4")
        codec = make_clip(path, args.seconds, args.fps, args.res)
        print(f"clip: {args.seconds:g} s, {args.fps} fps, {args.res * 4 // 3}x{args.res} "
              f"{codec}; keep {args.keep_fps:g} fps at {args.size}x{args.size}")
        readers = {"pyav": lambda: read_video(path, fps=args.keep_fps, size=args.size,
                                              max_frames=10**6)}
        for name, module, fn in (("imageio-ffmpeg", "imageio_ffmpeg", imageio_read),
                                 ("decord", "decord", decord_read)):
            try:
                __import__(module)
            except ImportError:
                print(f"{name}: not installed, skipped")
                continue
            readers[name] = (lambda f=fn: f(path, args.keep_fps, args.size))
        results = {name: median_seconds(fn, args.repeats) for name, fn in readers.items()}
    base = results["pyav"][0]
    print(f"{'reader':16s} {'s/clip':>8s} {'frames':>7s} {'vs pyav':>8s}")
    for name, (seconds, frames) in results.items():
        print(f"{name:16s} {seconds:8.3f} {frames:7d} {seconds / base:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
