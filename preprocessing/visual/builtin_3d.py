"""The `builtin_3d` extractor: weight-free per-clip motion features (motion energy, trajectory, rotation), 33 values."""

from __future__ import annotations

import numpy as np

from preprocessing.config import VisualStreamConfig
from preprocessing.visual import base
from preprocessing.visual import builtin_analysis as analysis

# Working resolution: frames are block-averaged by an integer factor so that their
# short side is about this many pixels (motion needs much less detail than appearance).
_WORK_SIDE_3D = 60
_REVERSAL_MIN_STEP = 0.01  # frame fraction a centroid step must move to count as a direction

BUILTIN_3D_LAYOUT: tuple[tuple[str, int], ...] = (
    ("motion_grid", analysis.GRID * analysis.GRID),
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


BUILTIN_3D_SLICES = analysis.layout_slices(BUILTIN_3D_LAYOUT)
BUILTIN_3D_DIM = sum(size for _, size in BUILTIN_3D_LAYOUT)


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
    shifts = np.arange(analysis.ORIENT_BINS)
    circulant = (shifts[:, None] + shifts[None, :]) % analysis.ORIENT_BINS  # [s, k] -> k + s
    raw = np.einsum("pk,psk->ps", a, b[:, circulant])
    signed = (shifts + analysis.ORIENT_BINS // 2) % analysis.ORIENT_BINS - analysis.ORIENT_BINS // 2
    corr = raw * np.cos(signed * (np.pi / analysis.ORIENT_BINS))
    best = np.argmax(corr, axis=1)
    rows = np.arange(corr.shape[0])
    left, mid, right = corr[rows, best - 1], corr[rows, best], corr[rows, (best + 1) % analysis.ORIENT_BINS]
    curvature = left - 2 * mid + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    shift = (best + offset + analysis.ORIENT_BINS / 2) % analysis.ORIENT_BINS - analysis.ORIENT_BINS / 2
    contrast = (raw.max(axis=1) - raw.min(axis=1)) / np.maximum(raw.max(axis=1), 1e-9)
    return np.where(contrast > 0.05, shift * (180.0 / analysis.ORIENT_BINS), 0.0)


def _motion_features(
    a: analysis.FrameAnalysis, frame_idx: np.ndarray, clips: np.ndarray, frame_rate: float
) -> np.ndarray:
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
        cells = analysis.grid_means(diffs).reshape(n, length - 1, -1)
        blocks["motion_grid"] = (cells * real[:, :, None]).sum(axis=1) / real_count / 255.0
    else:
        blocks["motion_grid"] = np.zeros((n, analysis.GRID * analysis.GRID), np.float32)
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
    h0, h1 = orient[:, :-1].reshape(-1, analysis.ORIENT_BINS), orient[:, 1:].reshape(-1, analysis.ORIENT_BINS)
    degrees = _rotation_steps(h0, h1).reshape(n, length - 1) * ok
    blocks["rotation_rate"] = degrees.sum(axis=1, keepdims=True) / 360.0 / span_safe
    change = 0.5 * np.abs(h1 - h0).sum(axis=1).reshape(n, length - 1) * ok
    blocks["orientation_change"] = change.sum(axis=1, keepdims=True) / span_safe
    blocks["visibility"] = vis.mean(axis=1, keepdims=True)
    return np.concatenate([blocks[name] for name, _ in BUILTIN_3D_LAYOUT], axis=1).astype(np.float32)


@base.register_extractor("builtin_3d")
class Builtin3DExtractor(base.FeatureExtractor):
    """Weight-free per-clip motion features: see `BUILTIN_3D_LAYOUT`.

    Vector i (dim `BUILTIN_3D_DIM` = 33) describes the clip of `clip_frames`
    decoded frames centred on i / rate; frames are block-averaged to a short side
    of about 60 pixels first. Config keys: `extractor` ('builtin_3d'), `rate` and
    `clip_frames` (recorded in `version`); there are no weights, and `image_size`
    is not used. Frames need at least 7 pixels a side.
    """

    FEATURE_VERSION = 1

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        self.dim = BUILTIN_3D_DIM
        self.version = f"v{self.FEATURE_VERSION}-clip{cfg.clip_frames}"

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        analysis.check_frame_size(self.name, frames)
        clips = base.clip_indices(frames.shape[0], frame_rate, self.cfg.rate, n, self.cfg.clip_frames)
        per_chunk = max(1, analysis.CHUNK_FRAMES // self.cfg.clip_frames)
        out = []
        for i in range(0, n, per_chunk):
            chunk = clips[i : i + per_chunk]
            unique, inverse = np.unique(chunk, return_inverse=True)
            frame_analysis = analysis.FrameAnalysis(analysis.work_planes(frames[unique], _WORK_SIDE_3D))
            out.append(_motion_features(frame_analysis, unique, inverse.reshape(chunk.shape), frame_rate))
        return np.concatenate(out, axis=0)
