"""Pluggable visual feature extractors, chosen by name from a `VisualStreamConfig`.

Every extractor turns decoded frames (uint8 RGB, shape (T, H, W, 3), frame k shown
at k / frame_rate seconds) into a float32 matrix (N, dim) at the stream's `rate`,
with N = max(1, ceil(duration * rate - 1e-6)). Vector i describes time i / rate:
per-frame (2D) extractors look at the decoded frame nearest to it, per-clip (3D)
extractors at the `clip_frames` consecutive frames centred on it (indices past
either end repeat the first / last frame).

Registered extractors:

- ``builtin_2d``: weight-free appearance features (colour, shape, layout); see
  `BUILTIN_2D_LAYOUT`.
- ``builtin_3d``: weight-free motion features per clip; see `BUILTIN_3D_LAYOUT`.
- ``hub``: a frozen TF Hub / SavedModel image model ([N, S, S, 3]) or video model
  ([N, clip_frames, S, S, 3]), told apart by the rank of its input signature.
- ``keras_app``: a `keras.applications` backbone with a local weights file.

Extractors hold models, so they are not meant to be pickled: a Beam DoFn keeps the
config and calls `get_extractor` in `setup()`.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import os
import sys
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

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


class FeatureExtractor(abc.ABC):
    """Turns decoded frames into a (N, dim) float32 matrix at the stream's rate.

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


# --------------------------------------------------------------------------------------
# Built-in, weight-free extractors.

# Working resolution: frames are block-averaged by an integer factor so that their
# short side is about this many pixels (appearance needs detail, motion much less).
_WORK_SIDE_2D = 120
_WORK_SIDE_3D = 60
_BORDER = 2  # pixels of the frame's edge that estimate the background colour
_MIN_FG_DIFF = 40.0  # a pixel is foreground if a channel differs more from the background
_BG_SPREAD_FACTOR = 5.0  # ... or more than this many times the border's own spread
_MIN_FG_FRACTION = 2e-3  # less foreground than this (of the frame) means no object
_GRID = 4  # cells per side of the spatial grids
_ORIENT_BINS = 36  # 5-degree bins of unsigned gradient orientation
_ORIENT_BINS_2D = 12  # 15-degree bins in the 2D vector (groups of 3 fine bins)
_RADIAL_BINS = 8  # radial profile bins of width 0.25 equivalent-disc radius
_REVERSAL_MIN_STEP = 0.01  # frame fraction a centroid step must move to count as a direction
_BUILTIN_CHUNK = 64  # frames analysed at once: bounds memory for long videos, stays cache-friendly

BUILTIN_2D_LAYOUT: tuple[tuple[str, int], ...] = (
    ("background_rgb", 3),
    ("object_geometry", 8),
    ("object_rgb_mean_std", 6),
    ("object_rgb_histogram", 64),
    ("object_radial_profile", _RADIAL_BINS),
    ("object_texture", 1),
    ("edge_orientation_histogram", _ORIENT_BINS_2D),
    ("grid_mean_rgb", _GRID * _GRID * 3),
    ("grid_object_occupancy", _GRID * _GRID),
)
"""Blocks of a `builtin_2d` vector, in order: (name, length); 166 values in all.

- background_rgb: background colour at the frame's centre, / 255; the background
  is a colour plane a + b x + c y (a gradient) fitted to the frame's 2-pixel border.
- object_geometry: the foreground object (pixels whose colour differs from that
  plane by > max(40, 5 x the border's residual spread) in some channel): area as a
  fraction of the frame; centroid x, y in [0, 1]; spread (std) x, y as fractions of
  width / height; bounding-box fill ratio; elongation sqrt(l2 / l1) of its
  covariance's eigenvalues (1 = isotropic); boundary pixels / sqrt(area) / 10
  (compactness: higher for stars, rings, crosses).
- object_rgb_mean_std: mean then std of the object's R, G, B, / 255.
- object_rgb_histogram: the object's colours in 4 x 4 x 4 RGB bins (index
  r * 16 + g * 4 + b of the top two bits), fractions of its area.
- object_radial_profile: distances of object pixels from its centroid in units of
  the radius of a disc of the same area, bins [0, .25), ..., [1.75, inf); fractions.
  A disc fills the inner bins, a ring leaves them empty, a star reaches far out.
- object_texture: mean gradient magnitude inside the object (its eroded mask) / 255:
  0 for solid colour, high for stripes and dots.
- edge_orientation_histogram: unsigned (Sobel) gradient orientation of the object's
  pixels and their neighbours (its outline and its texture), 15-degree bins
  centred on 0 (a vertical edge), 15, ..., 165 degrees, weighted by magnitude and
  normalized to sum to 1.
- grid_mean_rgb: mean colour of each cell of a 4 x 4 grid (row-major, then R, G, B), / 255.
- grid_object_occupancy: fraction of each 4 x 4 grid cell covered by the object.
  (Both grids read every other pixel each way: layout needs no full resolution.)

Frames with no detectable object get zeros in the object and edge blocks. The
object model (one thing on a fairly plain background, told apart by its colour)
fits the built-in corpus and studio-like footage; for cluttered real video the
grids still describe the frame, and 'hub' or 'keras_app' extractors do better.
"""

BUILTIN_3D_LAYOUT: tuple[tuple[str, int], ...] = (
    ("motion_grid", _GRID * _GRID),
    ("motion_energy", 1),
    ("object_state", 3),
    ("velocity", 2),
    ("speed", 1),
    ("back_and_forth", 2),
    ("reversals", 2),
    ("acceleration", 2),
    ("scale_rate", 1),
    ("rotation_rate", 1),
    ("orientation_change", 1),
    ("visibility", 1),
)
"""Blocks of a `builtin_3d` vector, in order: (name, length); 33 values in all.

Positions are fractions of the frame's width (x) and height (y, downwards); rates
are per second, so they do not depend on the decoded frame rate. Steps between
repeated (edge-padded) frames are ignored; a step counts for the object only when
the object is visible in both of its frames.

- motion_grid: mean absolute grey-level difference of consecutive frames in each
  cell of a 4 x 4 grid (row-major), / 255.
- motion_energy: the same over the whole frame.
- object_state: mean object area fraction, centroid x, centroid y over the clip.
- velocity: net centroid displacement (x, y) per second (slide, fall).
- speed: centroid path length per second.
- back_and_forth: path length minus net displacement per second, x and y (shake).
- reversals: fraction of consecutive step pairs whose x (then y) direction flips
  (shake, bounce); steps under 1% of the frame have no direction.
- acceleration: mean change of centroid velocity (x, y) per second squared (fall).
- scale_rate: d log(object area) / dt per second (> 0 grow, < 0 shrink); the mask
  keeps part of the blended edge pixels, which overstates this for small objects.
- rotation_rate: signed rotation of the object's edge-orientation histogram in
  turns per second, clockwise on screen positive (0 when the histogram is flat).
- orientation_change: half the L1 change of that histogram per second.
- visibility: fraction of the clip's frames in which an object is detected.
"""


def _layout_slices(layout: tuple[tuple[str, int], ...]) -> dict[str, slice]:
    out, start = {}, 0
    for name, size in layout:
        out[name] = slice(start, start + size)
        start += size
    return out


BUILTIN_2D_SLICES = _layout_slices(BUILTIN_2D_LAYOUT)
BUILTIN_3D_SLICES = _layout_slices(BUILTIN_3D_LAYOUT)
BUILTIN_2D_DIM = sum(size for _, size in BUILTIN_2D_LAYOUT)
BUILTIN_3D_DIM = sum(size for _, size in BUILTIN_3D_LAYOUT)


def _work_planes(frames: np.ndarray, side: int) -> np.ndarray:
    """float32 channel planes (N, 3, H', W') of uint8 frames (N, H, W, 3).

    Frames are block-averaged by the largest integer factor that keeps their short
    side at or above `side` (none for frames already that small).
    """
    n, h, w, _ = frames.shape
    f = max(1, min(h, w) // side)
    planes = frames.transpose(0, 3, 1, 2)
    if f == 1:
        return np.ascontiguousarray(planes, dtype=np.float32)
    hh, ww = (h // f) * f, (w // f) * f
    out = np.zeros((n, 3, hh // f, ww // f), np.float32)
    for dy in range(f):
        for dx in range(f):
            out += planes[:, :, dy:hh:f, dx:ww:f]
    return out * np.float32(1.0 / (f * f))


def _grid_means(x: np.ndarray) -> np.ndarray:
    """Means of (..., H, W) over the cells of a GRID x GRID grid -> (..., GRID, GRID) float32."""
    h, w = x.shape[-2:]
    rows, cols = (np.arange(_GRID) * h) // _GRID, (np.arange(_GRID) * w) // _GRID
    sums = np.add.reduceat(np.add.reduceat(x, rows, axis=-2, dtype=np.float32), cols, axis=-1, dtype=np.float32)
    return sums / np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w))).astype(np.float32)


def _segment_sums(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of rows of `values` (K, D) per frame; frame i owns rows [starts[i], starts[i] + counts[i])."""
    padded = np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)], axis=0)
    return np.add.reduceat(padded, starts, axis=0) * (counts > 0)[:, None]


def _border_coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of every other pixel of the frame's outer _BORDER-pixel ring."""
    rows, cols = np.mgrid[0:h, 0:w]
    ring = np.zeros((h, w), bool)
    ring[:_BORDER], ring[-_BORDER:], ring[:, :_BORDER], ring[:, -_BORDER:] = True, True, True, True
    return rows[ring][::2], cols[ring][::2]


def _background_difference(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fits each frame's background as a colour plane a + b x + c y to its border.

    Backgrounds are often gradients (lighting, a tilted table): a plane leaves only
    their texture and noise as residual, so the object threshold can stay low. The
    plane is refitted once without the border pixels far off the first fit, which
    keeps an object touching the edge from pulling it towards the object's colour.

    Args:
      planes: float32 (N, 3, H, W).

    Returns:
      (N, 3) the background colour at the frame's centre; float32 (N, H, W) each
      pixel's largest channel difference from the background; (N,) the median of
      that difference over the border, the background's own spread.
    """
    h, w = planes.shape[2:]
    rows, cols = _border_coordinates(h, w)
    x = ((cols + 0.5) / w - 0.5).astype(np.float32)
    y = ((rows + 0.5) / h - 0.5).astype(np.float32)
    design = np.stack([np.ones_like(x), x, y], axis=1)  # (K, 3)
    border = planes[:, :, rows, cols]  # (N, 3, K)
    coef = border @ np.linalg.pinv(design).T.astype(np.float32)  # (N, 3, 3): a, b, c per channel
    residual = np.abs(border - coef @ design.T).max(axis=1)  # (N, K)
    # Outliers: 3 x the typical residual, but never under 12 grey levels (clean borders).
    keep = (residual <= np.maximum(3.0 * np.median(residual, axis=1, keepdims=True), 12.0)).astype(np.float32)
    gram = (design.T[None] * keep[:, None, :]) @ design + np.float32(1e-6) * np.eye(3, dtype=np.float32)
    coef = np.linalg.solve(gram[:, None], ((border * keep[:, None, :]) @ design)[..., None])[..., 0]
    spread = np.median(np.abs(border - coef @ design.T).max(axis=1), axis=1)
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
    diff = planes - (coef[:, :, 0, None, None] + coef[:, :, 1, None, None] * xs)
    diff -= coef[:, :, 2, None, None] * ys[:, None]
    np.abs(diff, out=diff)
    return coef[:, :, 0], np.maximum(np.maximum(diff[:, 0], diff[:, 1]), diff[:, 2]), spread


class _FrameAnalysis:
    """Per-frame object mask, object pixels and edge orientations shared by the built-ins.

    The object is every pixel whose colour differs from the background (a colour
    plane fitted to the frame's border) by more than max(_MIN_FG_DIFF,
    _BG_SPREAD_FACTOR x the border's own spread) in some channel. Object pixels and
    the pixels next to them are kept as sorted index lists, so that per-object
    statistics and gradients cost in proportion to the object's size rather than
    the frame's.

    Attributes (N frames of H x W working pixels):
      planes: float32 (N, 3, H, W) RGB in [0, 255].
      bg: (N, 3) background colour at the frame's centre.
      mask: bool (N, H, W) object pixels.
      fid, py, px: (K,) frame, row and column of each object pixel, by frame.
      starts: (N,) index of each frame's first object pixel in those lists.
      count: (N,) object pixels; present: (N,) whether an object was found.
      cx, cy: (N,) centroid in pixels (the frame's centre when absent).
      gray: float32 (N, H, W).
      near: (K',) flat indices of the object's pixels and their 4-neighbours
        (away from the frame's edge); near_mag: their gradient magnitudes.
      orient: (N, _ORIENT_BINS) normalized edge-orientation histogram of the
        object's pixels and their neighbours (zeros without an object).
    """

    def __init__(self, planes: np.ndarray):
        n, _, h, w = planes.shape
        self.planes = planes
        self.bg, difference, spread = _background_difference(planes)
        threshold = np.maximum(_MIN_FG_DIFF, _BG_SPREAD_FACTOR * spread).astype(np.float32)
        self.mask = difference > threshold[:, None, None]

        flat = np.flatnonzero(self.mask)
        self.fid = flat // (h * w)
        pixel = flat - self.fid * (h * w)
        self.py = pixel // w
        self.px = pixel - self.py * w
        self.count = np.bincount(self.fid, minlength=n)
        self.starts = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.present = self.count >= _MIN_FG_FRACTION * h * w
        safe = np.maximum(self.count, 1)
        sums = _segment_sums(np.stack([self.px, self.py], axis=1).astype(np.float64), self.starts, self.count)
        self.cx = np.where(self.present, sums[:, 0] / safe + 0.5, w / 2.0)
        self.cy = np.where(self.present, sums[:, 1] / safe + 0.5, h / 2.0)
        self.gray = (
            planes[:, 0] * np.float32(0.299) + planes[:, 1] * np.float32(0.587) + planes[:, 2] * np.float32(0.114)
        )

        # Sobel gradients at the object's pixels and their 4-neighbours; the smoothing
        # across each derivative keeps jagged (aliased) edges from reading as
        # horizontal or vertical ones.
        m = self.mask
        near = np.zeros_like(m)
        near[:, 1:-1, 1:-1] = m[:, 1:-1, 1:-1] | m[:, :-2, 1:-1] | m[:, 2:, 1:-1] | m[:, 1:-1, :-2] | m[:, 1:-1, 2:]
        near &= self.present[:, None, None]
        self.near = np.flatnonzero(near)
        g = self.gray.ravel()
        c = self.near
        up_left, up, up_right = g[c - w - 1], g[c - w], g[c - w + 1]
        down_left, down, down_right = g[c + w - 1], g[c + w], g[c + w + 1]
        gx = (up_right + 2.0 * g[c + 1] + down_right - up_left - 2.0 * g[c - 1] - down_left) * np.float32(0.25)
        gy = (down_left + 2.0 * down + down_right - up_left - 2.0 * up - up_right) * np.float32(0.25)
        self.near_mag = np.sqrt(gx * gx + gy * gy)
        edge = self.near_mag > 1.0  # weaker gradients are noise
        theta = np.arctan2(gy[edge], gx[edge]) % np.pi
        # Bins centred on multiples of 5 degrees, so axis-aligned edges sit mid-bin.
        bins = (theta * (_ORIENT_BINS / np.pi) + 0.5).astype(np.int64) % _ORIENT_BINS
        bins += (self.near[edge] // (h * w)) * _ORIENT_BINS
        hist = np.bincount(bins, weights=self.near_mag[edge], minlength=n * _ORIENT_BINS).reshape(n, _ORIENT_BINS)
        self.orient = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-6)


def _builtin_2d_features(planes: np.ndarray) -> np.ndarray:
    """Builtin 2D vectors (N, BUILTIN_2D_DIM) of working planes (N, 3, H, W)."""
    a = _FrameAnalysis(planes)
    n, _, h, w = planes.shape
    present = a.present.astype(np.float64)[:, None]
    safe = np.maximum(a.count, 1).astype(np.float64)
    blocks = {"background_rgb": a.bg / 255.0}

    # Per-object sums over its pixels: position moments (about the centroid) and colour.
    colours = planes.reshape(n, 3, h * w)[a.fid, :, a.py * w + a.px].astype(np.float64)  # (K, 3)
    ox = a.px + 0.5 - a.cx[a.fid]
    oy = a.py + 0.5 - a.cy[a.fid]
    per_pixel = np.concatenate([np.stack([ox * ox, oy * oy, ox * oy], axis=1), colours, colours * colours], axis=1)
    sums = _segment_sums(per_pixel, a.starts, a.count) / safe[:, None]
    var_x, var_y, cov_xy = sums[:, 0], sums[:, 1], sums[:, 2]
    mean_rgb, mean_sq = sums[:, 3:6], sums[:, 6:9]

    half_trace = (var_x + var_y) / 2.0
    half_gap = np.sqrt(((var_x - var_y) / 2.0) ** 2 + cov_xy**2)
    elongation = np.sqrt(np.maximum(half_trace - half_gap, 0.0) / np.maximum(half_trace + half_gap, 1e-6))
    cols_any, rows_any = a.mask.any(axis=1), a.mask.any(axis=2)
    bbox_w = w - np.argmax(cols_any[:, ::-1], axis=1) - np.argmax(cols_any, axis=1)
    bbox_h = h - np.argmax(rows_any[:, ::-1], axis=1) - np.argmax(rows_any, axis=1)
    fill = a.count / np.maximum(bbox_w * bbox_h, 1)
    # Interior: object pixels whose 4-neighbours all belong to the object.
    m = a.mask.ravel()
    inner = a.near[m[a.near]]
    inner = inner[m[inner - 1] & m[inner + 1] & m[inner - w] & m[inner + w]]
    inner_fid = inner // (h * w)
    interior_count = np.bincount(inner_fid, minlength=n)
    boundary = (a.count - interior_count) / np.sqrt(safe) / 10.0
    geometry = [
        a.count / (h * w),
        a.cx / w,
        a.cy / h,
        np.sqrt(var_x) / w,
        np.sqrt(var_y) / h,
        fill,
        elongation,
        boundary,
    ]
    blocks["object_geometry"] = present * np.stack(geometry, axis=1)

    std_rgb = np.sqrt(np.maximum(mean_sq - mean_rgb**2, 0.0))
    blocks["object_rgb_mean_std"] = present * np.concatenate([mean_rgb, std_rgb], axis=1) / 255.0
    q = np.minimum(colours * (1.0 / 64.0), 3.0).astype(np.int64)
    colour_bin = a.fid * 64 + q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]
    blocks["object_rgb_histogram"] = present * np.bincount(colour_bin, minlength=n * 64).reshape(n, 64) / safe[:, None]

    # Shape: distances from the centroid in radii of the disc of the same area.
    radius = np.sqrt((ox * ox + oy * oy) * (np.pi / safe)[a.fid])
    radial_bin = a.fid * _RADIAL_BINS + np.minimum((radius * 4.0).astype(np.int64), _RADIAL_BINS - 1)
    radial = np.bincount(radial_bin, minlength=n * _RADIAL_BINS).reshape(n, _RADIAL_BINS)
    blocks["object_radial_profile"] = present * radial / safe[:, None]
    inner_mag = a.near_mag[np.searchsorted(a.near, inner)]
    texture = np.bincount(inner_fid, weights=inner_mag, minlength=n) / np.maximum(interior_count, 1) / 255.0
    blocks["object_texture"] = present * texture[:, None]

    # Coarse bins of 3 fine ones, centred on 0, 15, ... degrees.
    blocks["edge_orientation_histogram"] = np.roll(a.orient, 1, axis=1).reshape(n, _ORIENT_BINS_2D, -1).sum(axis=2)
    # Layout statistics need no full resolution: every other pixel each way.
    blocks["grid_mean_rgb"] = _grid_means(planes[:, :, ::2, ::2]).transpose(0, 2, 3, 1).reshape(n, -1) / 255.0
    blocks["grid_object_occupancy"] = _grid_means(a.mask[:, ::2, ::2]).reshape(n, -1)
    return np.concatenate([blocks[name] for name, _ in BUILTIN_2D_LAYOUT], axis=1).astype(np.float32)


def _check_builtin_size(name: str, frames: np.ndarray) -> None:
    # Block averaging never takes a side below the working size, so the decoded size decides.
    smallest = 2 * _BORDER + 3
    if min(frames.shape[1:3]) < smallest:
        raise ValueError(f"{name} needs frames of at least {smallest} pixels a side, got shape {frames.shape}.")


@register_extractor("builtin_2d")
class Builtin2DExtractor(FeatureExtractor):
    """Weight-free per-frame appearance features: see `BUILTIN_2D_LAYOUT`.

    Frames are block-averaged to a short side of about 120 pixels first, so the
    cost per frame is bounded whatever the decoded size.
    """

    # Bump when the features change, so records made by different code differ in version.
    FEATURE_VERSION = 1

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        self.dim = BUILTIN_2D_DIM
        self.version = f"v{self.FEATURE_VERSION}"

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        _check_builtin_size(self.name, frames)
        idx = frame_indices(frames.shape[0], frame_rate, self.cfg.rate, n)
        unique, inverse = np.unique(idx, return_inverse=True)
        out = [
            _builtin_2d_features(_work_planes(frames[unique[i : i + _BUILTIN_CHUNK]], _WORK_SIDE_2D))
            for i in range(0, len(unique), _BUILTIN_CHUNK)
        ]
        return np.concatenate(out, axis=0)[inverse]


def _rotation_steps(h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
    """Signed rotation (degrees) taking orientation histograms h0 (P, B) to h1 (P, B).

    The peak of their circular cross-correlation, refined with a parabola. The
    correlation is weighted by cos(angle), a prior for small turns between frames:
    shapes with rotational symmetry (a square repeats every 90 degrees) correlate
    equally well at several angles, and the smallest is the likely one. 0 where
    the histograms are too flat for the peak to mean anything (a plain disc).
    """
    smooth = np.array([0.25, 0.5, 0.25])

    def _smooth(hh):
        return smooth[0] * np.roll(hh, 1, axis=1) + smooth[1] * hh + smooth[2] * np.roll(hh, -1, axis=1)

    a, b = _smooth(h0), _smooth(h1)
    shifts = np.arange(_ORIENT_BINS)
    circulant = (shifts[:, None] + shifts[None, :]) % _ORIENT_BINS  # [s, k] -> k + s
    raw = np.einsum("pk,psk->ps", a, b[:, circulant])
    signed = (shifts + _ORIENT_BINS // 2) % _ORIENT_BINS - _ORIENT_BINS // 2
    corr = raw * np.cos(signed * (np.pi / _ORIENT_BINS))
    best = np.argmax(corr, axis=1)
    rows = np.arange(corr.shape[0])
    left, mid, right = corr[rows, best - 1], corr[rows, best], corr[rows, (best + 1) % _ORIENT_BINS]
    curvature = left - 2 * mid + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    shift = (best + offset + _ORIENT_BINS / 2) % _ORIENT_BINS - _ORIENT_BINS / 2
    contrast = (raw.max(axis=1) - raw.min(axis=1)) / np.maximum(raw.max(axis=1), 1e-9)
    return np.where(contrast > 0.05, shift * (180.0 / _ORIENT_BINS), 0.0)


def _motion_features(a: _FrameAnalysis, frame_idx: np.ndarray, clips: np.ndarray, frame_rate: float) -> np.ndarray:
    """Builtin 3D vectors (N, BUILTIN_3D_DIM).

    Args:
      a: analysis of the U distinct frames that the clips use.
      frame_idx: (U,) decoded frame index of each analysed frame.
      clips: (N, L) rows of `a` making up each clip, in time order.
      frame_rate: decoded frames per second.
    """
    n, length = clips.shape
    h, w = a.gray.shape[1:]
    blocks = {}
    dt = np.diff(frame_idx[clips], axis=1) / frame_rate  # (N, L-1); 0 between repeated frames
    real = dt > 0
    real_count = np.maximum(real.sum(axis=1), 1)[:, None]
    if length > 1:
        diffs = np.abs(a.gray[clips[:, 1:]] - a.gray[clips[:, :-1]]).reshape(-1, h, w)
        cells = _grid_means(diffs).reshape(n, length - 1, -1)
        blocks["motion_grid"] = (cells * real[:, :, None]).sum(axis=1) / real_count / 255.0
    else:
        blocks["motion_grid"] = np.zeros((n, _GRID * _GRID), np.float32)
    blocks["motion_energy"] = blocks["motion_grid"].mean(axis=1, keepdims=True)

    vis = a.present[clips]  # (N, L)
    pos = np.stack([a.cx / w, a.cy / h], axis=1)[clips]  # (N, L, 2)
    area = (a.count / (h * w))[clips]
    vis_count = np.maximum(vis.sum(axis=1), 1)[:, None]
    mean_pos = np.where(vis.any(axis=1)[:, None], (pos * vis[:, :, None]).sum(axis=1) / vis_count, 0.5)
    blocks["object_state"] = np.concatenate([(area * vis).sum(axis=1, keepdims=True) / vis_count, mean_pos], axis=1)

    ok = real & vis[:, 1:] & vis[:, :-1]  # steps that say how the object moved
    span = (dt * ok).sum(axis=1)
    span_safe = np.where(span > 0, span, 1.0)[:, None]
    disp = (pos[:, 1:] - pos[:, :-1]) * ok[:, :, None]  # (N, L-1, 2)
    blocks["velocity"] = disp.sum(axis=1) / span_safe
    blocks["speed"] = np.sqrt((disp**2).sum(axis=2)).sum(axis=1, keepdims=True) / span_safe
    blocks["back_and_forth"] = (np.abs(disp).sum(axis=1) - np.abs(disp.sum(axis=1))) / span_safe

    pair_ok = ok[:, 1:] & ok[:, :-1]  # (N, L-2)
    pair_count = np.maximum(pair_ok.sum(axis=1), 1)[:, None]
    direction = np.where(np.abs(disp) > _REVERSAL_MIN_STEP, np.sign(disp), 0.0)
    flips = (direction[:, 1:] * direction[:, :-1] < 0) & pair_ok[:, :, None]
    blocks["reversals"] = flips.sum(axis=1) / pair_count
    velocity = disp / np.where(ok, dt, 1.0)[:, :, None]
    mid_dt = np.where(pair_ok, (dt[:, 1:] + dt[:, :-1]) / 2.0, 1.0)[:, :, None]
    accel = (velocity[:, 1:] - velocity[:, :-1]) / mid_dt * pair_ok[:, :, None]
    blocks["acceleration"] = accel.sum(axis=1) / pair_count

    count = np.maximum(a.count, 1.0)[clips]
    log_ratio = np.log(count[:, 1:] / count[:, :-1]) * ok
    blocks["scale_rate"] = log_ratio.sum(axis=1, keepdims=True) / span_safe
    orient = a.orient[clips]  # (N, L, B)
    h0, h1 = orient[:, :-1].reshape(-1, _ORIENT_BINS), orient[:, 1:].reshape(-1, _ORIENT_BINS)
    degrees = _rotation_steps(h0, h1).reshape(n, length - 1) * ok
    blocks["rotation_rate"] = degrees.sum(axis=1, keepdims=True) / 360.0 / span_safe
    change = 0.5 * np.abs(h1 - h0).sum(axis=1).reshape(n, length - 1) * ok
    blocks["orientation_change"] = change.sum(axis=1, keepdims=True) / span_safe
    blocks["visibility"] = vis.mean(axis=1, keepdims=True)
    return np.concatenate([blocks[name] for name, _ in BUILTIN_3D_LAYOUT], axis=1).astype(np.float32)


@register_extractor("builtin_3d")
class Builtin3DExtractor(FeatureExtractor):
    """Weight-free per-clip motion features: see `BUILTIN_3D_LAYOUT`.

    Each clip is the `clip_frames` decoded frames centred on the vector's time;
    frames are block-averaged to a short side of about 60 pixels first.
    """

    FEATURE_VERSION = 1

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        self.dim = BUILTIN_3D_DIM
        self.version = f"v{self.FEATURE_VERSION}-clip{cfg.clip_frames}"

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        _check_builtin_size(self.name, frames)
        clips = clip_indices(frames.shape[0], frame_rate, self.cfg.rate, n, self.cfg.clip_frames)
        per_chunk = max(1, _BUILTIN_CHUNK // self.cfg.clip_frames)
        out = []
        for i in range(0, n, per_chunk):
            chunk = clips[i : i + per_chunk]
            unique, inverse = np.unique(chunk, return_inverse=True)
            analysis = _FrameAnalysis(_work_planes(frames[unique], _WORK_SIDE_3D))
            out.append(_motion_features(analysis, unique, inverse.reshape(chunk.shape), frame_rate))
        return np.concatenate(out, axis=0)


# --------------------------------------------------------------------------------------
# Neural extractors: TF Hub models and Keras applications.


def resize_frames(frames: np.ndarray, image_size: int) -> tf.Tensor:
    """Resizes uint8 frames (B, H, W, 3) to float32 (B, S, S, 3) in [0, 255].

    Bilinear with antialiasing. The aspect ratio is not kept: the model sees the
    whole frame rather than a centre crop, so objects near the edges still count.
    """
    return tf.image.resize(tf.cast(frames, tf.float32), (image_size, image_size), method="bilinear", antialias=True)


def _file_digest(path: str) -> str:
    sha = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()[:16]


def _pool_output(out, where: str) -> tf.Tensor:
    """The one feature tensor of a model's output, pooled to (batch, dim)."""
    if isinstance(out, dict):
        if len(out) == 1:
            out = next(iter(out.values()))
        elif "default" in out:
            out = out["default"]
        else:
            raise ValueError(f"{where} returns several outputs {sorted(out)}; expected one, or one named 'default'.")
    out = tf.convert_to_tensor(out)
    if out.shape.rank is None or out.shape.rank < 2:
        raise ValueError(f"{where} returns shape {out.shape}; expected (batch, ..., dim).")
    if out.shape.rank > 2:
        # Spatial / temporal feature maps: average everything between batch and channels.
        out = tf.reduce_mean(out, axis=list(range(1, out.shape.rank - 1)))
    return tf.cast(out, tf.float32)


@register_extractor("hub")
class HubExtractor(FeatureExtractor):
    """A frozen TF Hub model (or any TF2 SavedModel) loaded with `hub.load`.

    `handle` is a local SavedModel directory or a hub URL. The model is called as
    the loaded object itself when it is callable (TF2 reusable SavedModel), else
    through its `serving_default` signature (or its only signature). The rank of
    its input decides the mode:

    - rank 4, [batch, S, S, 3]: an image model; vector i is the model's output for
      the frame nearest to i / rate.
    - rank 5, [batch, clip_frames, S, S, 3]: a video model; vector i is its output
      for the clip centred on i / rate.

    Inputs are float32 RGB in [0, 1] at S = image_size, the TF Hub convention.
    Outputs with more than two axes are averaged over the middle ones.
    """

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        if not cfg.handle:
            raise ValueError("The 'hub' extractor needs a handle (a SavedModel directory or TF Hub URL); got ''.")
        logger.info("Loading TF Hub model %s", cfg.handle)
        self._model = hub.load(cfg.handle)
        self._fn, self._input_name, spec, out_spec = self._resolve_callable(self._model)
        if spec.shape.rank not in (4, 5) or spec.shape[-1] not in (None, 3):
            raise ValueError(
                f"Hub model {cfg.handle} takes input of shape {spec.shape}; expected [batch, S, S, 3] (image) "
                "or [batch, frames, S, S, 3] (video)."
            )
        if spec.dtype != tf.float32:
            raise ValueError(
                f"Hub model {cfg.handle} takes {spec.dtype.name} input; the 'hub' extractor feeds float32 RGB in [0, 1]."
            )
        self.is_video = spec.shape.rank == 5
        spatial = spec.shape[-3:-1]
        for side in spatial:
            if side is not None and side != cfg.image_size:
                raise ValueError(
                    f"Hub model {cfg.handle} takes {spatial[0]}x{spatial[1]} images but image_size is {cfg.image_size}."
                )
        if self.is_video and spec.shape[1] is not None and spec.shape[1] != cfg.clip_frames:
            raise ValueError(
                f"Hub video model {cfg.handle} takes clips of {spec.shape[1]} frames but clip_frames is {cfg.clip_frames}."
            )
        self.dim = self._output_dim(out_spec)
        self.version = cfg.handle
        saved_model_pb = os.path.join(cfg.handle, "saved_model.pb")
        if tf.io.gfile.exists(saved_model_pb):
            self.version = f"{cfg.handle}@sha256:{_file_digest(saved_model_pb)}"
        logger.info("Hub %s model %s: dim %d.", "video" if self.is_video else "image", cfg.handle, self.dim)

    @staticmethod
    def _resolve_callable(model):
        """Returns (function, input keyword or None, input TensorSpec, output spec or None)."""
        concrete = getattr(model.__call__, "concrete_functions", None) if callable(model) else None
        if concrete:
            for fn in concrete:
                args, _ = fn.structured_input_signature
                if args and isinstance(args[0], tf.TensorSpec):
                    return model, None, args[0], fn.structured_outputs
        signatures = getattr(model, "signatures", {}) or {}
        if "serving_default" in signatures:
            sig = signatures["serving_default"]
        elif len(signatures) == 1:
            sig = next(iter(signatures.values()))
        else:
            raise ValueError(
                "Hub model is neither callable with one tensor nor has a 'serving_default' signature; "
                f"signatures: {sorted(signatures)}."
            )
        _, kwargs = sig.structured_input_signature
        if len(kwargs) != 1:
            raise ValueError(
                f"Hub model signature takes inputs {sorted(kwargs)}; expected exactly one image/video tensor."
            )
        name, spec = next(iter(kwargs.items()))
        return sig, name, spec, sig.structured_outputs

    def _output_dim(self, out_spec) -> int:
        if isinstance(out_spec, dict) and len(out_spec) == 1:
            out_spec = next(iter(out_spec.values()))
        if isinstance(out_spec, tf.TensorSpec) and out_spec.shape.rank and out_spec.shape[-1] is not None:
            return int(out_spec.shape[-1])
        # Unknown statically: run one blank input through the model.
        s = self.cfg.image_size
        shape = (1, self.cfg.clip_frames, s, s, 3) if self.is_video else (1, s, s, 3)
        return int(self._call(np.zeros(shape, np.float32)).shape[-1])

    def _call(self, batch) -> np.ndarray:
        x = tf.convert_to_tensor(batch, tf.float32)
        out = self._fn(x) if self._input_name is None else self._fn(**{self._input_name: x})
        return _pool_output(out, f"Hub model {self.cfg.handle}").numpy()

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        s = self.cfg.image_size
        outs = []
        if self.is_video:
            # Frames are resized batch by batch (overlapping clips resize some twice),
            # which bounds memory whatever the video's length.
            length = self.cfg.clip_frames
            clips = clip_indices(frames.shape[0], frame_rate, self.cfg.rate, n, length)
            per_batch = max(1, MODEL_BATCH_FRAMES // length)
            for i in range(0, n, per_batch):
                batch = clips[i : i + per_batch]
                images = resize_frames(frames[batch.ravel()], s) * (1.0 / 255.0)
                outs.append(self._call(tf.reshape(images, (len(batch), length, s, s, 3))))
            return np.concatenate(outs, axis=0)
        idx = frame_indices(frames.shape[0], frame_rate, self.cfg.rate, n)
        unique, inverse = np.unique(idx, return_inverse=True)
        for i in range(0, len(unique), MODEL_BATCH_FRAMES):
            outs.append(self._call(resize_frames(frames[unique[i : i + MODEL_BATCH_FRAMES]], s) * (1.0 / 255.0)))
        return np.concatenate(outs, axis=0)[inverse]


# Arguments that the keras_app extractor sets itself.
_KERAS_APP_RESERVED = (
    "weights",
    "include_top",
    "pooling",
    "input_shape",
    "input_tensor",
    "classes",
    "classifier_activation",
)


@register_extractor("keras_app")
class KerasAppExtractor(FeatureExtractor):
    """A frozen `keras.applications.<keras_app>` backbone with a local weights file.

    Built with `weights=None, include_top=False, pooling='avg'` on S x S x 3 inputs
    (S = image_size) plus the stream's `keras_app_kwargs` (e.g. `alpha` for
    MobileNet), then `load_weights(weights)`; nothing is ever downloaded. Vector i is
    the pooled output for the frame nearest to i / rate, after the application's
    own `preprocess_input`.
    """

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        apps = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        if cfg.keras_app not in apps:
            raise ValueError(f"Unknown keras_app {cfg.keras_app!r}; keras.applications has: {', '.join(apps)}.")
        if not cfg.weights:
            raise ValueError(f"keras_app {cfg.keras_app} needs a local weights file; the stream's weights is ''.")
        if not os.path.isfile(cfg.weights):
            raise FileNotFoundError(f"Weights file {cfg.weights} for keras_app {cfg.keras_app} does not exist.")
        kwargs = dict(cfg.keras_app_kwargs)
        reserved = sorted(set(kwargs) & set(_KERAS_APP_RESERVED))
        if reserved:
            raise ValueError(
                f"keras_app_kwargs may not set {reserved}: the extractor sets {list(_KERAS_APP_RESERVED)}."
            )
        builder = getattr(keras.applications, cfg.keras_app)
        preprocess = getattr(sys.modules.get(builder.__module__), "preprocess_input", None)
        if preprocess is None:
            raise ValueError(f"keras_app {cfg.keras_app} has no preprocess_input in {builder.__module__}.")
        s = cfg.image_size
        try:
            model = builder(weights=None, include_top=False, pooling="avg", input_shape=(s, s, 3), **kwargs)
        except TypeError as e:
            raise ValueError(f"keras_app {cfg.keras_app} rejects keras_app_kwargs {kwargs}: {e}") from e
        try:
            model.load_weights(cfg.weights)
        except ValueError as e:
            raise ValueError(f"Weights {cfg.weights} do not fit {cfg.keras_app}({kwargs}) at {s}x{s}: {e}") from e
        model.trainable = False
        self._model = model
        self._preprocess = preprocess
        self._fn = tf.function(self._forward, input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)])
        self.dim = int(model.output_shape[-1])
        settings = json.dumps(kwargs, sort_keys=True) if kwargs else ""
        self.version = f"{cfg.keras_app}{settings}@{s}px:sha256:{_file_digest(cfg.weights)}"
        logger.info("keras_app %s loaded from %s: dim %d.", cfg.keras_app, cfg.weights, self.dim)

    def _forward(self, images: tf.Tensor) -> tf.Tensor:
        return self._model(self._preprocess(images), training=False)

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        idx = frame_indices(frames.shape[0], frame_rate, self.cfg.rate, n)
        unique, inverse = np.unique(idx, return_inverse=True)
        outs = []
        for i in range(0, len(unique), MODEL_BATCH_FRAMES):
            images = resize_frames(frames[unique[i : i + MODEL_BATCH_FRAMES]], self.cfg.image_size)
            outs.append(self._fn(images).numpy())
        return np.concatenate(outs, axis=0)[inverse]
