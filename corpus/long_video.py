"""Long test videos (tens of minutes to hours), written quickly: a tiny moving square and stepped tones."""

from __future__ import annotations

import fractions
import math
import os
from typing import Union

import av
import numpy as np

from corpus.synthetic import X264_PARAMS, video_codec

# The tone changes every this many seconds; its frequency is a whole number of Hz, so every
# step starts at phase 0 and the track needs no running state.
TONE_STEP_SECONDS = 1
_TONE_HZ = (200, 1800)
_SQUARE = 12
_PERIOD_X, _PERIOD_Y = 7.3, 11.9  # Seconds for one sweep of the square across and down.


def _check(name: str, value, low: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value < low:
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} >= {low}, got {value!r}.")


def _tones(minutes: float, seed: int) -> np.ndarray:
    """Integer Hz of the tone in each TONE_STEP_SECONDS step."""
    steps = int(math.ceil(minutes * 60 / TONE_STEP_SECONDS)) + 1
    return np.random.default_rng(seed).integers(_TONE_HZ[0], _TONE_HZ[1], size=steps)


def _audio(start: int, stop: int, sample_rate: int, tones: np.ndarray) -> np.ndarray:
    """Samples [start, stop) of the track: the step's tone at 0.3, silent in every 5th step."""
    n = np.arange(start, stop, dtype=np.int64)
    step = n // (TONE_STEP_SECONDS * sample_rate)
    within = (n - step * TONE_STEP_SECONDS * sample_rate) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * tones[step] * within)
    wave[step % 5 == 4] = 0.0
    return wave.astype(np.float32)


def _frame(index: int, fps: int, width: int, height: int, tones: np.ndarray) -> np.ndarray:
    """The yuv420p planes of frame `index`, (height * 3 // 2, width): a bright square moving over grey."""
    t = index / fps
    step = int(t // TONE_STEP_SECONDS)
    planes = np.empty((height * 3 // 2, width), np.uint8)
    luma = planes[:height]
    # The background's brightness follows the tone, so the picture changes with the sound too.
    luma[:] = 40 + (int(tones[step]) - _TONE_HZ[0]) * 100 // (_TONE_HZ[1] - _TONE_HZ[0])
    side = min(_SQUARE, width, height)
    x = int(round((width - side) * (0.5 - 0.5 * math.cos(2 * math.pi * t / _PERIOD_X))))
    y = int(round((height - side) * (0.5 - 0.5 * math.cos(2 * math.pi * t / _PERIOD_Y))))
    luma[y : y + side, x : x + side] = 235
    chroma = planes[height:].reshape(2, height // 2, width // 2)
    chroma[0] = 128 + (step % 7) * 12 - 36  # U and V shift with the step: the colour changes too.
    chroma[1] = 128 - (step % 5) * 15 + 30
    return planes


def write_long_video(
    path: Union[str, os.PathLike],
    minutes: float,
    seed: int = 0,
    fps: int = 4,
    width: int = 64,
    height: int = 48,
    sample_rate: int = 16000,
    keyframe_seconds: int = 10,
) -> str:
    """Writes a long mp4 cheaply: tiny frames at a low rate and a mono AAC track of stepped tones.

    The picture is a bright square sweeping over a background whose brightness and
    colour change with the tone; the tone changes every TONE_STEP_SECONDS second to
    a random whole-Hz frequency (from `seed`) and every 5th step is silent, so
    audio and visual features vary over time. The encoders run single-threaded in
    bit-exact mode and the frames are drawn straight in YUV, so the same arguments
    write the same bytes.

    Args:
      path: the mp4 to write (overwritten).
      minutes: its duration; > 0.
      seed: the tone sequence's seed.
      fps: frames per second.
      width: frame width in pixels; even.
      height: frame height in pixels; even.
      sample_rate: Hz of the audio track.
      keyframe_seconds: seconds between keyframes (what a seek lands on).

    Returns:
      `path`, as a string.

    Raises:
      ValueError: an argument is out of range.
    """
    _check("minutes", minutes, 0)
    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}.")
    for name, value, low in (
        ("fps", fps, 1),
        ("sample_rate", sample_rate, 8000),
        ("keyframe_seconds", keyframe_seconds, 1),
    ):
        _check(name, value, low, integer=True)
    for name, value in (("width", width), ("height", height)):
        _check(name, value, 16, integer=True)
        if value % 2:
            raise ValueError(f"{name} must be even (yuv420p halves it), got {value}.")
    _check("seed", seed, 0, integer=True)
    path = os.fspath(path)
    tones = _tones(minutes, seed)
    n_frames = int(round(minutes * 60 * fps))
    codec = video_codec()
    with av.open(path, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        vstream = container.add_stream(codec, rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.codec_context.thread_count = 1
        vstream.codec_context.flags |= av.codec.context.Flags.bitexact
        gop = str(keyframe_seconds * fps)
        if codec == "libx264":
            vstream.codec_context.options = {
                "preset": "ultrafast",
                "crf": "28",
                "threads": "1",
                "g": gop,
                "x264-params": X264_PARAMS,
            }
        else:
            vstream.codec_context.qscale = True
            vstream.codec_context.global_quality = 6
            vstream.codec_context.options = {"g": gop}
        astream = container.add_stream("aac", rate=sample_rate)
        astream.codec_context.layout = "mono"
        astream.codec_context.thread_count = 1
        # No perceptual noise substitution: the decoder fills such bands from a random generator
        # whose state depends on every frame decoded before, which no seek can reproduce.
        astream.codec_context.options = {"aac_coder": "fast", "aac_pns": "0"}
        astream.codec_context.bit_rate = 32000
        astream.codec_context.flags |= av.codec.context.Flags.bitexact
        for f in range(n_frames):
            vframe = av.VideoFrame.from_ndarray(_frame(f, fps, width, height, tones), format="yuv420p")
            vframe.pts = f
            vframe.time_base = fractions.Fraction(1, fps)
            container.mux(vstream.encode(vframe))
            a, b = f * sample_rate // fps, (f + 1) * sample_rate // fps
            aframe = av.AudioFrame.from_ndarray(_audio(a, b, sample_rate, tones)[None], format="flt", layout="mono")
            aframe.sample_rate = sample_rate
            aframe.pts = a
            aframe.time_base = fractions.Fraction(1, sample_rate)
            container.mux(astream.encode(aframe))
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
    return path
