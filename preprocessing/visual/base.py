"""The visual extractor contract, its registry, and the sampling in time that every extractor shares."""

from __future__ import annotations

import abc
import hashlib
import logging
import math
from typing import Callable

import numpy as np
import tensorflow as tf

from preprocessing.config import VisualStreamConfig

logger = logging.getLogger(__name__)

# Frames (or clip frames) sent through a neural model at once.
MODEL_BATCH_FRAMES = 64

_REGISTRY: dict[str, Callable[[VisualStreamConfig], "FeatureExtractor"]] = {}


def register_extractor(name: str):
    """Class decorator that registers a `FeatureExtractor` subclass under `name`.

    The class is constructed with the stream's `VisualStreamConfig`, and its `name`
    attribute is set to `name`.

    Args:
      name: the value of `VisualStreamConfig.extractor` that selects the class.

    Returns:
      The decorator.

    Raises:
      ValueError: `name` is empty or already registered.
    """
    if not name:
        raise ValueError("Extractor name must be a non-empty string.")

    def decorator(cls):
        if name in _REGISTRY:
            raise ValueError(f"Extractor {name!r} is already registered (by {_REGISTRY[name].__name__}).")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered_extractors() -> tuple[str, ...]:
    """Names of the registered extractors, sorted."""
    return tuple(sorted(_REGISTRY))


def get_extractor(stream_cfg: VisualStreamConfig) -> "FeatureExtractor":
    """Builds the extractor that `stream_cfg.extractor` names.

    Extractors hold models, so they are not meant to be pickled: a Beam DoFn keeps
    the config and calls this in `setup()`.

    Args:
      stream_cfg: the stream's config.

    Returns:
      A ready `FeatureExtractor` (models loaded, `dim` and `version` known).

    Raises:
      ValueError: the name is empty (the stream is disabled) or not registered.
    """
    name = stream_cfg.extractor
    if name not in _REGISTRY:
        what = "is empty (the stream is disabled)" if not name else f"{name!r} is not registered"
        raise ValueError(f"Visual extractor {what}; registered extractors: {', '.join(registered_extractors())}.")
    extractor = _REGISTRY[name](stream_cfg)
    logger.info(
        "Visual extractor %s (version %s): dim %d at %g vectors/s.",
        name,
        extractor.version,
        extractor.dim,
        stream_cfg.rate,
    )
    return extractor


# --------------------------------------------------------------------------------------
# Sampling in time.


def num_vectors(duration: float, rate: float) -> int:
    """Vectors a stream at `rate` per second holds for `duration` seconds.

    Args:
      duration: seconds, >= 0.
      rate: vectors per second, > 0.

    Returns:
      max(1, ceil(duration * rate - 1e-6)); the epsilon keeps durations that are
      whole multiples of the period from gaining a vector through rounding.
    """
    return max(1, math.ceil(duration * rate - 1e-6))


def frame_indices(num_frames: int, frame_rate: float, rate: float, n: int) -> np.ndarray:
    """Index of the decoded frame nearest to each time i / rate, i < n.

    Args:
      num_frames: decoded frames available (T).
      frame_rate: decoded frames per second.
      rate: vectors per second.
      n: vectors wanted.

    Returns:
      int64 array (n,) in [0, num_frames - 1] (ties go to the later frame).
    """
    times = np.arange(n, dtype=np.float64) / rate
    return np.clip(np.floor(times * frame_rate + 0.5), 0, num_frames - 1).astype(np.int64)


def clip_indices(num_frames: int, frame_rate: float, rate: float, n: int, clip_frames: int) -> np.ndarray:
    """Frame indices of the clip of `clip_frames` consecutive frames centred on each i / rate.

    Args:
      num_frames: decoded frames available (T).
      frame_rate: decoded frames per second.
      rate: vectors per second.
      n: clips wanted.
      clip_frames: frames per clip (L).

    Returns:
      int64 array (n, L); indices outside [0, T - 1] are clamped to it, which
      repeats the first / last frame (edge padding).
    """
    centres = np.arange(n, dtype=np.float64) / rate * frame_rate
    starts = np.floor(centres - (clip_frames - 1) / 2.0 + 0.5).astype(np.int64)
    return np.clip(starts[:, None] + np.arange(clip_frames)[None, :], 0, num_frames - 1)


def validate_frames(frames: np.ndarray) -> np.ndarray:
    """Checks that `frames` is a non-empty uint8 RGB video (T, H, W, 3).

    Args:
      frames: the decoded video.

    Returns:
      `frames`, unchanged.

    Raises:
      ValueError: on any other type, dtype, rank, channel count or an empty axis.
    """
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}.")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}.")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}.")
    if 0 in frames.shape:
        raise ValueError(f"frames are empty: shape {frames.shape}.")
    return frames


def _validate_timing(frame_rate: float, duration: float) -> None:
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be a finite number > 0, got {frame_rate}.")
    if not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"duration must be a finite number >= 0, got {duration}.")


# --------------------------------------------------------------------------------------
# Helpers of the neural extractors.


def resize_frames(frames: np.ndarray, image_size: int) -> tf.Tensor:
    """Resizes uint8 frames (B, H, W, 3) to float32 (B, S, S, 3) in [0, 255].

    Bilinear with antialiasing. The aspect ratio is not kept: the model sees the
    whole frame rather than a centre crop, so objects near the edges still count.

    Args:
      frames: uint8 RGB frames (B, H, W, 3).
      image_size: the side S of the model's input.

    Returns:
      float32 (B, S, S, 3) in [0, 255].
    """
    return tf.image.resize(tf.cast(frames, tf.float32), (image_size, image_size), method="bilinear", antialias=True)


def file_digest(path: str) -> str:
    """First 16 hex digits of the SHA-256 of the file at `path`: a model's identity in `version`."""
    sha = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()[:16]


class FeatureExtractor(abc.ABC):
    """Turns decoded frames into a (N, dim) float32 matrix at the stream's rate.

    Frames are uint8 RGB, shape (T, H, W, 3), frame k shown at k / frame_rate
    seconds. The output has N = max(1, ceil(duration * rate - 1e-6)) rows, and row i
    describes time i / rate: per-frame (2D) extractors look at the decoded frame
    nearest to it (`frame_indices`), per-clip (3D) extractors at the `clip_frames`
    consecutive frames centred on it (`clip_indices`; indices past either end
    repeat the first / last frame).

    Attributes:
      name: the registered name (set by `register_extractor`).
      version: what made the features (model, weights digest, settings); it is
        recorded in the TFRecords beside the features.
      dim: length of one feature vector.
      cfg: the stream's config.
    """

    name: str = ""

    def __init__(self, cfg: VisualStreamConfig):
        self.cfg = cfg
        self.version: str = ""
        self.dim: int = 0

    def extract(self, frames: np.ndarray, frame_rate: float, duration: float) -> np.ndarray:
        """Computes the stream's features for one video.

        Args:
          frames: uint8 RGB (T, H, W, 3), frame k shown at k / frame_rate seconds.
          frame_rate: decoded frames per second.
          duration: the video's duration in seconds.

        Returns:
          float32 (N, dim), N = num_vectors(duration, rate); row i describes time i / rate.

        Raises:
          ValueError: invalid frames, frame rate or duration.
        """
        validate_frames(frames)
        _validate_timing(frame_rate, duration)
        n = num_vectors(duration, self.cfg.rate)
        out = self._extract(frames, float(frame_rate), n)
        if out.shape != (n, self.dim):
            raise ValueError(f"{self.name} produced shape {out.shape}, expected {(n, self.dim)}.")
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{self.name} produced NaN or Inf features for frames of shape {frames.shape}.")
        return out.astype(np.float32, copy=False)

    @abc.abstractmethod
    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        """Returns (n, dim) features of validated frames."""
