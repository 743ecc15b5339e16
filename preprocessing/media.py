"""Decoding of videos (PyAV) and audio files (tensorflow-io) into 16 kHz mono waveforms and sampled RGB frames.

Policies, which the Beam preprocessing job relies on:

- Time origin: the container's start time; frame `k` is the frame displayed at
  `k / frame_rate` seconds, for every `k` with `k / frame_rate < duration`, so a
  clip gives `ceil(duration * frame_rate)` frames (the last decoded frame holds
  until the end; the first one stands in for times before it).
- Waveform: mono float32 in [-1, 1] at `sample_rate`, exactly
  `round(duration * sample_rate)` samples: an audio track that starts late is
  preceded by silence, one that ends early is followed by silence, and encoder
  padding past the duration is dropped.
- No audio stream: the waveform is silence of the video's duration and
  `audio_present` is False; this is not an error. An audio stream that decodes no
  samples is treated the same way (and logged).
- Truncation: decoding stops at the first corrupt packet; when what was decoded
  ends more than `max(0.5 s, 5 %)` before the declared duration, `MediaError` is
  raised (or, with `allow_truncated=True`, the decoded part is returned with
  `info["truncated"] = True` and `duration` set to the decoded length). An MP4 cut
  before its index (`moov` atom at the end) cannot be opened at all and raises.
- Every failure (missing, empty, unreadable, truncated file; no video stream when
  frames are asked) raises `MediaError`, a `ValueError` naming the file and the reason;
  the last one raises its subclass `NoVideoStreamError`, so that a job can tell an
  audio-only input from a broken one. Audio files (`is_audio_file`) have no video
  stream by their kind: `decode_media` returns them without frames.
- Windows: `decode_window` (and `decode_media` with `start` / `duration`) decodes
  only [start, start + duration) after a seek, with memory bounded by the range;
  its frames and samples are the whole decode's for that range, on the same grids
  (see its docstring for the one exception, AAC noise substitution).
  `probe_duration` gives the whole decode's duration without decoding.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Optional

import av
import av.error
import numpy as np
import tensorflow as tf
import tensorflow_io as tfio
from av.video.reformatter import VideoReformatter

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga"})
# What tensorflow-io decodes in each: PCM WAV, FLAC, MPEG layer III, Ogg Vorbis.
_AUDIO_FILE_CODECS = {"wav": "pcm", "flac": "flac", "mp3": "mp3", "ogg": "vorbis", "oga": "vorbis"}
TRUNCATION_SLACK_SECONDS = 0.5
TRUNCATION_SLACK_FRACTION = 0.05
# Frame times are rational numbers turned into floats; ties within this margin count as equal.
_TIME_EPS = 1e-6


class MediaError(ValueError):
    """A media file that cannot be decoded as asked.

    Attributes:
      path: the file.
      reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NoVideoStreamError(MediaError):
    """Frames were asked of a container that has no video stream (e.g. an audio-only m4a)."""


@dataclasses.dataclass
class DecodedMedia:
    """One decoded media file.

    Attributes:
      waveform: float32 (round(duration * sample_rate),) mono in [-1, 1].
      sample_rate: Hz of `waveform`.
      audio_present: False when the file has no (decodable) audio; the waveform is
        then silence.
      frames: uint8 (T, H, W, 3) RGB frames at `frame_rate`; (0, 0, 0, 3) when none
        were asked or the file is an audio file.
      frame_rate: frames per second of `frames`; 0.0 when there are none.
      duration: seconds of media.
      info: what the file held: container, codec names, original sample rate and
        channels, video size and fps, declared and decoded durations, file size,
        whether it was truncated; for a window (`decode_window`) also
        `media_duration`, the whole file's duration.
      start: seconds from the media's origin of `waveform[0]` and `frames[0]`:
        0.0 for a whole file, the window's start for `decode_window`.
    """

    waveform: np.ndarray
    sample_rate: int
    audio_present: bool
    frames: np.ndarray
    frame_rate: float
    duration: float
    info: dict[str, Any]
    start: float = 0.0

    @property
    def num_frames(self) -> int:
        """Number of sampled video frames."""
        return int(self.frames.shape[0])


def _empty_frames() -> np.ndarray:
    return np.zeros((0, 0, 0, 3), np.uint8)


def _check_file(path: str) -> int:
    """Returns the size of `path` in bytes, raising MediaError if it is missing, not a file or empty."""
    if not os.path.exists(path):
        raise MediaError(path, "no such file")
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
    size = os.path.getsize(path)
    if size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return size


def _check_args(sample_rate: int, frame_rate: Optional[float], max_side: Optional[int]) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
    if frame_rate is not None and not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0 or None (no frames), got {frame_rate!r}.")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1 or None, got {max_side!r}.")


def _fit_size(width: int, height: int, max_side: Optional[int]) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so that the long side is at most `max_side`."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def _frame_count(duration: float, frame_rate: float) -> int:
    """Number of k >= 0 with k / frame_rate < duration."""
    return max(0, int(math.ceil(duration * frame_rate - _TIME_EPS)))


class _FrameSampler:
    """Picks, for t_k = k / frame_rate, the frame on screen at t_k, converting only those frames."""

    def __init__(self, frame_rate: float, max_side: Optional[int], limit: Optional[int], first: int = 0):
        self._frame_rate = frame_rate
        self._max_side = max_side
        self._limit = limit
        # Index k of the first target: a window's frames stay on the grid of the whole file.
        self._first = first
        self._pending: Optional[av.VideoFrame] = None
        self._pending_array: Optional[np.ndarray] = None
        # One reformatter keeps one swscale context: a frame's own to_ndarray(format=...)
        # builds a new one per call, which costs more than decoding a small frame.
        self._reformatter = VideoReformatter()
        self.frames: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        """True once every frame up to the known limit was taken."""
        return self._limit is not None and len(self.frames) >= self._limit

    def _emit_pending(self) -> None:
        if self._pending_array is None:
            frame = self._pending
            width, height = _fit_size(frame.width, frame.height, self._max_side)
            rgb = self._reformatter.reformat(frame, width=width, height=height, format="rgb24")
            self._pending_array = rgb.to_ndarray()
        self.frames.append(self._pending_array)

    def push(self, frame: av.VideoFrame, time: float) -> None:
        """Adds the next decoded frame, shown from `time` (seconds from the origin) on."""
        if self._pending is not None:
            # Every target before this frame's time showed the pending frame (or, before the
            # first frame, the first frame itself).
            while not self.done and (self._first + len(self.frames)) / self._frame_rate < time - _TIME_EPS:
                self._emit_pending()
        self._pending = frame
        self._pending_array = None

    def finish(self, count: int) -> np.ndarray:
        """Emits the last frame until `count` frames exist and returns them, (count, H, W, 3)."""
        if self._pending is not None:
            while len(self.frames) < count:
                self._emit_pending()
        frames = self.frames[:count]
        if not frames:
            return _empty_frames()
        return np.stack(frames)


def _declared_duration(container: av.container.InputContainer, streams: list[Any]) -> Optional[float]:
    """Longest declared duration among `streams`, else the container's, else None."""
    durations = [float(s.duration * s.time_base) for s in streams if s.duration is not None and s.time_base is not None]
    if durations:
        return max(durations)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def decode_video(
    path: str,
    sample_rate: int = 16000,
    frame_rate: Optional[float] = 4.0,
    max_side: Optional[int] = None,
    allow_truncated: bool = False,
) -> DecodedMedia:
    """Decodes a video (or any container PyAV reads): its audio and frames sampled at a fixed rate.

    Args:
      path: local media file (mp4, mkv, webm, ...).
      sample_rate: Hz of the returned mono waveform.
      frame_rate: frames per second to sample; None decodes no frames (and does not
        need a video stream).
      max_side: downscale frames (aspect kept) so that their long side is at most
        this many pixels; None keeps the decoded size.
      allow_truncated: return the decodable part of a truncated file instead of
        raising.

    Returns:
      The decoded media; see the module docstring for the policies.

    Raises:
      MediaError: the file is missing, empty, not media, truncated, or has
        neither stream.
      NoVideoStreamError: the file has no video stream although `frame_rate`
        was given.
      ValueError: an argument is out of range.
    """
    path = os.fspath(path)
    _check_args(sample_rate, frame_rate, max_side)
    file_size = _check_file(path)
    with _open(path) as container:
        return _decode_container(container, path, file_size, sample_rate, frame_rate, max_side, allow_truncated)


def _media_info(container, file_size: int, video, audio, declared: Optional[float]) -> dict[str, Any]:
    """What `DecodedMedia.info` says of the file: container, codecs, sizes, rates, declared duration."""
    return {
        "container": container.format.name,
        "file_size": file_size,
        "video_codec": video.codec_context.name if video is not None else None,
        "width": video.codec_context.width if video is not None else None,
        "height": video.codec_context.height if video is not None else None,
        "video_fps": float(video.average_rate) if video is not None and video.average_rate else None,
        "audio_codec": audio.codec_context.name if audio is not None else None,
        "original_sample_rate": audio.codec_context.sample_rate if audio is not None else None,
        "original_channels": audio.codec_context.channels if audio is not None else None,
        "declared_duration": declared,
    }


def _decode_container(
    container: av.container.InputContainer,
    path: str,
    file_size: int,
    sample_rate: int,
    frame_rate: Optional[float],
    max_side: Optional[int],
    allow_truncated: bool,
) -> DecodedMedia:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if frame_rate is not None and video is None:
        raise NoVideoStreamError(path, f"has no video stream, but frames were asked for (frame_rate={frame_rate})")
    if video is None and audio is None:
        raise MediaError(path, "has neither an audio nor a video stream")
    streams = [s for s in (video if frame_rate is not None else None, audio) if s is not None]
    for stream in streams:
        stream.thread_type = "AUTO"
    declared = _declared_duration(container, streams)
    origin = container.start_time / av.time_base if container.start_time is not None else 0.0
    info = _media_info(container, file_size, video, audio, declared)

    sampler = None
    if frame_rate is not None:
        limit = _frame_count(declared, frame_rate) if declared is not None else None
        sampler = _FrameSampler(frame_rate, max_side, limit)
    fallback_step = 1.0 / info["video_fps"] if info["video_fps"] else 0.0
    video_end = 0.0
    video_count = 0
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate) if audio is not None else None
    chunks: list[np.ndarray] = []
    audio_start: Optional[float] = None
    decode_error = None

    def take_audio(out_frames: list[av.AudioFrame]) -> None:
        for out in out_frames:
            chunks.append(out.to_ndarray()[0])

    try:
        for packet in container.demux(*streams):
            stream_type = packet.stream.type
            if stream_type == "video" and (sampler is None or sampler.done):
                # No frame (or no more) is needed: skip decoding, but keep the stream's extent for the
                # truncation check. A video without audio whose frames are not asked demuxes every stream.
                if packet.pts is not None and packet.time_base is not None:
                    video_end = max(video_end, float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin)
                continue
            for frame in packet.decode():
                if stream_type == "audio":
                    if audio_start is None and frame.time is not None:
                        audio_start = frame.time - origin
                    take_audio(resampler.resample(frame))
                else:
                    time = frame.time - origin if frame.time is not None else video_count * fallback_step
                    step = float(frame.duration * frame.time_base) if frame.duration else fallback_step
                    video_end = max(video_end, time + step)
                    video_count += 1
                    sampler.push(frame, time)
        if resampler is not None:
            take_audio(resampler.resample(None))
    except av.error.FFmpegError as err:
        # A corrupt or cut packet ends decoding; what was decoded is judged below.
        decode_error = f"{type(err).__name__}: {err.strerror}"
        logging.warning("%s: decoding stopped early: %s", path, decode_error)

    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    lead = int(round((audio_start or 0.0) * sample_rate))
    audio_end = (lead + samples.size) / sample_rate if samples.size else 0.0
    decoded = max(video_end, audio_end)
    info["decoded_duration"] = decoded
    info["decode_error"] = decode_error
    if sampler is not None and video_count == 0:
        raise MediaError(path, f"its video stream decoded no frames{f' ({decode_error})' if decode_error else ''}")

    duration = declared if declared is not None else decoded
    truncated = declared is not None and declared - decoded > max(
        TRUNCATION_SLACK_SECONDS, TRUNCATION_SLACK_FRACTION * declared
    )
    info["truncated"] = truncated
    if truncated:
        reason = (
            f"truncated: decoded {decoded:.2f} s of the declared {declared:.2f} s"
            f" ({decode_error or 'the streams end early'})"
        )
        if not allow_truncated:
            raise MediaError(path, reason)
        logging.warning("%s: %s; keeping the decoded part", path, reason)
        duration = decoded

    num_samples = int(round(duration * sample_rate))
    audio_present = samples.size > 0
    if audio is not None and not audio_present:
        logging.warning("%s: the audio stream (%s) decoded no samples; storing silence", path, info["audio_codec"])
    waveform = _place(samples, lead, num_samples) if audio_present else np.zeros(num_samples, np.float32)
    np.clip(waveform, -1.0, 1.0, out=waveform)
    frames = sampler.finish(_frame_count(duration, frame_rate)) if sampler is not None else _empty_frames()
    return DecodedMedia(
        waveform=waveform,
        sample_rate=sample_rate,
        audio_present=bool(audio_present),
        frames=frames,
        frame_rate=float(frame_rate) if frame_rate is not None else 0.0,
        duration=float(duration),
        info=info,
    )


def _place(samples: np.ndarray, lead: int, num_samples: int) -> np.ndarray:
    """`samples` shifted to start at sample `lead` (negative drops), cut or zero-padded to `num_samples`."""
    if lead < 0:
        samples = samples[-lead:]
        lead = 0
    out = np.zeros(num_samples, np.float32)
    count = max(0, min(samples.size, num_samples - lead))
    out[lead : lead + count] = samples[:count]
    return out


def decode_audio_file(path: str, sample_rate: int = 16000) -> DecodedMedia:
    """Decodes a standalone audio file (wav, flac, mp3, ogg) through tensorflow-io.

    The channels are averaged to mono and resampled with `tfio.audio.resample`;
    integer PCM is scaled to [-1, 1].

    Args:
      path: local audio file.
      sample_rate: Hz of the returned waveform.

    Returns:
      The decoded media, with no frames (`frames` is (0, 0, 0, 3)).

    Raises:
      MediaError: the file is missing, empty, or not readable audio.
      ValueError: `sample_rate` is not a positive integer.
    """
    path = os.fspath(path)
    _check_args(sample_rate, None, None)
    file_size = _check_file(path)
    try:
        audio = tfio.audio.AudioIOTensor(path)
        original_rate = int(audio.rate.numpy())
        data = audio.to_tensor()
    except (tf.errors.OpError, ValueError) as err:
        message = err.message if isinstance(err, tf.errors.OpError) else str(err)
        raise MediaError(path, f"not readable as audio by tensorflow-io ({message.split(' [Op:')[0].strip()})") from err
    channels = int(data.shape[-1]) if data.shape.rank == 2 else 1
    if data.dtype == tf.int16:
        data = tf.cast(data, tf.float32) / 32768.0
    elif data.dtype == tf.int32:
        data = tf.cast(data, tf.float32) / 2147483648.0
    elif data.dtype == tf.uint8:
        data = (tf.cast(data, tf.float32) - 128.0) / 128.0
    else:
        data = tf.cast(data, tf.float32)
    if data.shape.rank == 2:
        data = tf.reduce_mean(data, axis=-1)
    if int(tf.size(data)) == 0:
        raise MediaError(path, "holds no audio samples")
    if original_rate <= 0:
        raise MediaError(path, f"declares an invalid sample rate {original_rate}")
    if original_rate != sample_rate:
        data = tfio.audio.resample(data, rate_in=original_rate, rate_out=sample_rate)
    num_in = int(audio.shape[0].numpy())
    duration = num_in / original_rate
    # Resampling rounds the length its own way; the contract is round(duration * sample_rate).
    waveform = _place(data.numpy().astype(np.float32, copy=False), 0, int(round(duration * sample_rate)))
    np.clip(waveform, -1.0, 1.0, out=waveform)
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    return DecodedMedia(
        waveform=waveform,
        sample_rate=sample_rate,
        audio_present=True,
        frames=_empty_frames(),
        frame_rate=0.0,
        duration=duration,
        info={
            "container": extension,
            "file_size": file_size,
            "audio_codec": _AUDIO_FILE_CODECS.get(extension, extension),
            "sample_format": audio.dtype.name,
            "original_sample_rate": original_rate,
            "original_channels": channels,
            "declared_duration": duration,
            "decoded_duration": duration,
            "truncated": False,
        },
    )


def is_audio_file(path: str) -> bool:
    """Whether `path` is a standalone audio file by its extension (`AUDIO_EXTENSIONS`): it has no video stream."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


def decode_media(
    path: str,
    sample_rate: int = 16000,
    frame_rate: Optional[float] = 4.0,
    max_side: Optional[int] = None,
    allow_truncated: bool = False,
    start: float = 0.0,
    duration: Optional[float] = None,
) -> DecodedMedia:
    """Decodes any supported file: audio extensions (`AUDIO_EXTENSIONS`) via tensorflow-io, the rest via PyAV.

    Args:
      path: local media file.
      sample_rate: Hz of the returned waveform.
      frame_rate: frames per second for videos (ignored for audio files).
      max_side: long-side limit of video frames.
      allow_truncated: see `decode_video` (whole files only).
      start: seconds from the origin where the decoded range starts.
      duration: seconds of the range; None reads to the end. With the defaults
        (0.0, None) the file is decoded whole (`decode_video`); otherwise a video
        is decoded as a window (`decode_window`) and an audio file is decoded
        whole and cut to the range (tensorflow-io resamples whole files).

    Returns:
      The decoded media (`start` set to the range's start).

    Raises:
      MediaError: as `decode_video` (NoVideoStreamError included) /
        `decode_audio_file` / `decode_window`.
      ValueError: `start` or `duration` is out of range.
    """
    _check_window(start, duration)
    if start == 0 and duration is None:
        if is_audio_file(path):
            return decode_audio_file(path, sample_rate)
        return decode_video(path, sample_rate, frame_rate, max_side, allow_truncated)
    if not is_audio_file(path):
        return decode_window(path, start, duration, sample_rate, frame_rate, max_side)
    whole = decode_audio_file(path, sample_rate)
    if start >= whole.duration:
        raise MediaError(
            path,
            f"start={start} s is at or after the media's end ({whole.duration:.3f} s); "
            f"give a start in [0, {whole.duration:.3f})",
        )
    end = whole.duration if duration is None else min(start + float(duration), whole.duration)
    i0, i1 = int(round(start * sample_rate)), int(round(end * sample_rate))
    info = dict(whole.info, media_duration=whole.duration)
    return dataclasses.replace(
        whole, waveform=whole.waveform[i0:i1].copy(), duration=end - float(start), info=info, start=float(start)
    )


# ---------------------------------------------------------------- Windows of a file

# AAC (and most audio codecs) overlap each frame with the one before it, so the first frames
# decoded after a seek differ from the same frames decoded from the start: they are dropped.
_AUDIO_SEEK_WARMUP_FRAMES = 2
# Input seconds fed to a fresh resampler before the window: its filter needs history.
_RESAMPLER_WARMUP_SECONDS = 0.05
# How far before the window's start the first seek goes, and the first step back when a
# seek lands too late (a keyframe after the start, audio that begins too late); doubled each time.
_SEEK_MARGIN_SECONDS = 0.5
_SEEK_BACKOFF_SECONDS = 1.0


class _SeekTooLate(Exception):
    """A seek landed after what the window needs; the caller seeks further back."""


def _check_window(start: float, duration: Optional[float]) -> None:
    if isinstance(start, bool) or not isinstance(start, (int, float, np.integer, np.floating)):
        raise ValueError(f"start must be a number of seconds >= 0, got {start!r}.")
    if not (math.isfinite(start) and start >= 0):
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}.")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float, np.integer, np.floating)):
            raise ValueError(f"duration must be a number of seconds > 0 or None (to the end), got {duration!r}.")
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a finite number of seconds > 0 or None (to the end), got {duration!r}.")


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path)
    except av.error.FFmpegError as err:
        raise MediaError(
            path,
            f"cannot be opened as media ({err.strerror}); it is not a media file or is cut short (e.g. an MP4 "
            "truncated before its index)",
        ) from err


def _streams(
    container: av.container.InputContainer, path: str, frames: bool
) -> tuple[Optional[Any], Optional[Any], list[Any]]:
    """(video, audio, the streams a decode reads), raising as `decode_video` does."""
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if frames and video is None:
        raise NoVideoStreamError(path, "has no video stream, but frames were asked for")
    if video is None and audio is None:
        raise MediaError(path, "has neither an audio nor a video stream")
    return video, audio, [s for s in (video if frames else None, audio) if s is not None]


def _origin(container: av.container.InputContainer) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def probe_duration(path: str, frames: bool = True) -> float:
    """The duration in seconds that decoding `path` whole reports, read without decoding it.

    For a video it is the declared duration (the longest of the streams a decode
    reads: the video stream when `frames`, and the audio stream), which is what
    `decode_video` reports for any file it does not find truncated; a truncated
    file (which `decode_video` refuses) still gives its declared duration here.
    When nothing declares a duration, the packets are read (not decoded) and their
    extent is returned, which is what `decode_video` measures by decoding them.
    For an audio file (`is_audio_file`) it is its number of samples over its rate.

    Args:
      path: local media file.
      frames: whether the decode would take frames (`frame_rate` given): without,
        the video stream's duration does not count, as in `decode_video`.

    Returns:
      Seconds.

    Raises:
      MediaError: the file is missing, empty, not media, or has neither stream
        (NoVideoStreamError: `frames` and no video stream).
    """
    path = os.fspath(path)
    _check_file(path)
    if is_audio_file(path):
        try:
            audio = tfio.audio.AudioIOTensor(path)
            return int(audio.shape[0].numpy()) / int(audio.rate.numpy())
        except (tf.errors.OpError, ValueError) as err:
            message = err.message if isinstance(err, tf.errors.OpError) else str(err)
            raise MediaError(
                path, f"not readable as audio by tensorflow-io ({message.split(' [Op:')[0].strip()})"
            ) from err
    with _open(path) as container:
        _, _, streams = _streams(container, path, frames)
        declared = _declared_duration(container, streams)
        if declared is not None:
            return declared
        origin = _origin(container)
        end = 0.0
        try:
            for packet in container.demux(*streams):
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin)
        except av.error.FFmpegError as err:
            logging.warning("%s: reading packets stopped early: %s", path, err.strerror)
        return end


def _first_audio_time(path: str, origin: float) -> Optional[float]:
    """Time (from the origin) of the first decoded audio frame, as a whole decode sees it; None if none."""
    with _open(path) as container:
        audio = container.streams.audio[0]
        try:
            for packet in container.demux(audio):
                for frame in packet.decode():
                    if frame.time is not None:
                        return frame.time - origin
        except av.error.FFmpegError as err:
            logging.warning("%s: the audio stream's first frame cannot be decoded: %s", path, err.strerror)
    return None


def decode_window(
    path: str,
    start: float,
    duration: Optional[float] = None,
    sample_rate: int = 16000,
    frame_rate: Optional[float] = 4.0,
    max_side: Optional[int] = None,
) -> DecodedMedia:
    """Decodes the time range [start, start + duration) of a video, reading little more than that range.

    The container is seeked to a keyframe at or before `start` and decoding stops
    after the range, so memory is bounded by the range, not by the file. What is
    returned is the part of `decode_video(path, ...)` for the range:

    - frames: `frames[i]` is the whole decode's frame `k0 + i`, the frame on screen
      at `(k0 + i) / frame_rate`, for every k with `start <= k / frame_rate < end`
      (k0 the first); so consecutive windows tile the whole decode's frames.
    - waveform: samples `round(start * sample_rate)` to `round(end * sample_rate)`
      of the whole decode's waveform, `end` being the range's end cut to the
      file's duration (`probe_duration`). The first audio frames decoded after the
      seek are dropped (codecs overlap each frame with the one before) and the
      resampler starts a little before the range on an input sample where its phase
      equals the whole decode's, so the samples are the whole decode's exactly.
      One exception: an AAC track that uses perceptual noise substitution (PNS)
      has bands the decoder fills from a random generator whose state depends on
      every frame decoded before; there the samples differ at the level of that
      noise (about 1e-4 on a track at 0.3).
    - duration: `end - start`; `start`: the range's start; `info["media_duration"]`:
      the file's duration.

    Unlike `decode_video`, a window does not check the whole file for truncation
    (it does not read it); a decoding error inside the window raises.

    Args:
      path: local media file (mp4, mkv, webm, ...); not an audio file
        (`decode_media` slices those).
      start: seconds from the media's origin; must be before its end.
      duration: seconds of the range; None reads to the end. A range past the end
        is cut at the end.
      sample_rate: Hz of the returned mono waveform.
      frame_rate: frames per second to sample; None decodes no frames.
      max_side: long-side limit of the frames, as in `decode_video`.

    Returns:
      The decoded window.

    Raises:
      ValueError: `start` or `duration` is not a finite number in range, or
        another argument is out of range.
      MediaError: the file is missing, empty, not media, has neither stream,
        starts at or after `start`'s end, or fails to decode inside the range.
      NoVideoStreamError: the file has no video stream although `frame_rate`
        was given.
    """
    path = os.fspath(path)
    _check_args(sample_rate, frame_rate, max_side)
    _check_window(start, duration)
    start = float(start)
    file_size = _check_file(path)
    media_duration = probe_duration(path, frames=frame_rate is not None)
    if start >= media_duration:
        raise MediaError(
            path,
            f"start={start} s is at or after the media's end ({media_duration:.3f} s); "
            f"give a start in [0, {media_duration:.3f})",
        )
    end = media_duration if duration is None else min(start + float(duration), media_duration)
    target = start - _SEEK_MARGIN_SECONDS
    backoff = _SEEK_BACKOFF_SECONDS
    while True:
        try:
            return _decode_window_once(
                path, file_size, start, end, media_duration, sample_rate, frame_rate, max_side, max(target, 0.0)
            )
        except _SeekTooLate:
            # target > 0 here: a decode from the file's start is never too late.
            logging.info("%s: a seek to %.3f s landed after the window at %.3f s; seeking earlier", path, target, start)
            target -= backoff
            backoff *= 2


def _decode_window_once(
    path: str,
    file_size: int,
    start: float,
    end: float,
    media_duration: float,
    sample_rate: int,
    frame_rate: Optional[float],
    max_side: Optional[int],
    target: float,
) -> DecodedMedia:
    """One try of `decode_window` from a seek to `target` seconds (0: no seek).

    Raises:
      _SeekTooLate: the seek landed after the first frame or the audio the window needs.
    """
    with _open(path) as container:
        video, audio, streams = _streams(container, path, frame_rate is not None)
        for stream in streams:
            stream.thread_type = "AUTO"
        origin = _origin(container)
        info = _media_info(container, file_size, video, audio, _declared_duration(container, streams))
        info["media_duration"] = media_duration
        # Frames k0 <= k < k1 and samples i0 <= i < i1 of the whole decode.
        sampler = None
        k0 = k1 = 0
        if frame_rate is not None:
            k0, k1 = _frame_count(start, frame_rate), _frame_count(end, frame_rate)
            sampler = _FrameSampler(frame_rate, max_side, k1 - k0, first=k0)
        i0, i1 = int(round(start * sample_rate)), int(round(end * sample_rate))
        audio_start = _first_audio_time(path, origin) if audio is not None else None
        audio_window = (
            _AudioWindow(audio, audio_start, sample_rate, i0, i1, target) if audio_start is not None else None
        )
        if target > 0:
            container.seek(int(math.floor((origin + target) * av.time_base)), backward=True, any_frame=False)
        video_count = 0
        try:
            for packet in container.demux(*streams):
                if packet.stream.type == "video":
                    if sampler is None or sampler.done:
                        continue
                    for frame in packet.decode():
                        if frame.time is None:
                            raise MediaError(path, "a video frame has no timestamp; decode the file whole instead")
                        time = frame.time - origin
                        if video_count == 0 and target > 0 and time > k0 / frame_rate + _TIME_EPS:
                            raise _SeekTooLate()
                        video_count += 1
                        sampler.push(frame, time)
                elif audio_window is not None and not audio_window.done:
                    for frame in packet.decode():
                        audio_window.push(frame, origin)
                if (sampler is None or sampler.done) and (audio_window is None or audio_window.done):
                    break
            else:
                if audio_window is not None:
                    audio_window.flush()
        except av.error.FFmpegError as err:
            raise MediaError(
                path, f"decoding the window [{start:.3f}, {end:.3f}) s failed ({type(err).__name__}: {err.strerror})"
            ) from err
        if sampler is not None and video_count == 0 and k1 > k0:
            raise MediaError(path, f"its video stream decoded no frames in the window [{start:.3f}, {end:.3f}) s")
    num_samples = i1 - i0
    if audio_window is not None:
        waveform = audio_window.waveform()
    else:
        if audio is not None:
            logging.warning("%s: the audio stream (%s) decoded no samples; storing silence", path, info["audio_codec"])
        waveform = np.zeros(num_samples, np.float32)
    frames = sampler.finish(k1 - k0) if sampler is not None else _empty_frames()
    return DecodedMedia(
        waveform=waveform,
        sample_rate=sample_rate,
        audio_present=audio_window is not None,
        frames=frames,
        frame_rate=float(frame_rate) if frame_rate is not None else 0.0,
        duration=end - start,
        info=info,
        start=start,
    )


class _AudioWindow:
    """Collects samples i0 <= i < i1 of a whole decode's waveform from audio frames decoded after a seek.

    The whole decode resamples the audio stream from its first frame, which starts
    at output sample `lead`. Input sample n (counted from that frame) maps to
    output sample n * rate_out / rate_in; the window's resampler starts on an input
    sample P that is a multiple of rate_in / gcd(rate_in, rate_out), where that map
    is whole and the resampler's phase is the whole decode's, and early enough that
    its filter has warmed up before i0.
    """

    def __init__(self, stream: Any, audio_start: float, sample_rate: int, i0: int, i1: int, target: float):
        self._rate_in = stream.codec_context.sample_rate
        self._rate_out = sample_rate
        self._audio_start = audio_start
        self._lead = int(round(audio_start * sample_rate))
        self._i0, self._i1 = i0, i1
        self._seeked = target > 0
        self._step = self._rate_in // math.gcd(self._rate_in, self._rate_out)
        # Latest input sample the resampler may start on.
        need = (i0 - self._lead) / self._rate_out - _RESAMPLER_WARMUP_SECONDS
        self._latest = math.floor(need * self._rate_in) if self._seeked else 0
        if self._seeked and self._latest < 0:
            # The window needs the audio's very start: only a decode from the start has it.
            raise _SeekTooLate()
        self._frames_seen = 0
        self._first: Optional[int] = None  # whole-decode output index of chunks[0][0]
        self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        self._chunks: list[np.ndarray] = []
        self._count = 0

    @property
    def done(self) -> bool:
        """True once every sample up to i1 was produced."""
        return self._first is not None and self._lead + self._first + self._count >= self._i1

    def _take(self, out_frames: list[av.AudioFrame]) -> None:
        for out in out_frames:
            chunk = out.to_ndarray()[0]
            self._chunks.append(chunk)
            self._count += chunk.size
            # Chunks wholly before the window are dropped: what is kept is bounded by the window.
            while len(self._chunks) > 1 and self._lead + self._first + self._chunks[0].size <= self._i0:
                head = self._chunks.pop(0)
                self._first += head.size
                self._count -= head.size

    def push(self, frame: av.AudioFrame, origin: float) -> None:
        """Adds the next decoded audio frame."""
        self._frames_seen += 1
        if self._first is None:
            if self._seeked and self._frames_seen <= _AUDIO_SEEK_WARMUP_FRAMES:
                return
            if not self._seeked:
                offset = 0  # The whole decode's first frame, by definition.
            elif frame.time is None:
                raise _SeekTooLate()
            else:
                offset = int(round((frame.time - origin - self._audio_start) * self._rate_in))
            begin = max(0, -(-offset // self._step) * self._step)  # first aligned input sample in or after the frame
            if begin > self._latest:
                raise _SeekTooLate()
            if begin >= offset + frame.samples:
                return
            if begin > offset:
                frame = _cut_audio_frame(frame, begin - offset)
            self._first = begin * self._rate_out // self._rate_in
        self._take(self._resampler.resample(frame))

    def flush(self) -> None:
        """Takes the resampler's last samples (at the end of the stream)."""
        if self._first is not None:
            self._take(self._resampler.resample(None))

    def waveform(self) -> np.ndarray:
        """Samples i0 <= i < i1, silence where the audio has none; clipped to [-1, 1]."""
        if self._first is None:
            return np.zeros(self._i1 - self._i0, np.float32)
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        waveform = _place(samples, self._lead + self._first - self._i0, self._i1 - self._i0)
        np.clip(waveform, -1.0, 1.0, out=waveform)
        return waveform


def _cut_audio_frame(frame: av.AudioFrame, skip: int) -> av.AudioFrame:
    """`frame` without its first `skip` samples, in the same format, layout and rate."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data[:, skip:]
    else:
        channels = len(frame.layout.channels)
        data = data[:, skip * channels :]
    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name)
    cut.sample_rate = frame.sample_rate
    if frame.pts is not None:
        cut.pts = frame.pts + int(round(skip / frame.sample_rate / frame.time_base))
        cut.time_base = frame.time_base
    return cut
