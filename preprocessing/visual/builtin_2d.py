"""The `builtin_2d` extractor: weight-free per-frame appearance features (colour, shape, layout), 166 values."""

from __future__ import annotations

import numpy as np

from preprocessing.config import VisualStreamConfig
from preprocessing.visual import base
from preprocessing.visual import builtin_analysis as analysis

# Working resolution: frames are block-averaged by an integer factor so that their
# short side is about this many pixels (appearance needs detail).
_WORK_SIDE_2D = 120
_ORIENT_BINS_2D = 12  # 15-degree bins in the 2D vector (groups of 3 fine bins)
_RADIAL_BINS = 8  # radial profile bins of width 0.25 equivalent-disc radius

BUILTIN_2D_LAYOUT: tuple[tuple[str, int], ...] = (
    ("background_rgb", 3),
    ("object_geometry", 8),
    ("object_rgb_mean_std", 6),
    ("object_rgb_histogram", 64),
    ("object_radial_profile", _RADIAL_BINS),
    ("object_texture", 1),
    ("edge_orientation_histogram", _ORIENT_BINS_2D),
    ("grid_mean_rgb", analysis.GRID * analysis.GRID * 3),
    ("grid_object_occupancy", analysis.GRID * analysis.GRID),
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


BUILTIN_2D_SLICES = analysis.layout_slices(BUILTIN_2D_LAYOUT)
BUILTIN_2D_DIM = sum(size for _, size in BUILTIN_2D_LAYOUT)


def _builtin_2d_features(planes: np.ndarray) -> np.ndarray:
    """Builtin 2D vectors (N, BUILTIN_2D_DIM) of working planes (N, 3, H, W)."""
    a = analysis.FrameAnalysis(planes)
    n, _, h, w = planes.shape
    present = a.present.astype(np.float64)[:, None]
    safe = np.maximum(a.count, 1).astype(np.float64)
    blocks = {"background_rgb": a.bg / 255.0}

    # Per-object sums over its pixels: position moments (about the centroid) and colour.
    colours = planes.reshape(n, 3, h * w)[a.fid, :, a.py * w + a.px].astype(np.float64)  # (K, 3)
    ox = a.px + 0.5 - a.cx[a.fid]
    oy = a.py + 0.5 - a.cy[a.fid]
    per_pixel = np.concatenate([np.stack([ox * ox, oy * oy, ox * oy], axis=1), colours, colours * colours], axis=1)
    sums = analysis.segment_sums(per_pixel, a.starts, a.count) / safe[:, None]
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
    blocks["grid_mean_rgb"] = analysis.grid_means(planes[:, :, ::2, ::2]).transpose(0, 2, 3, 1).reshape(n, -1) / 255.0
    blocks["grid_object_occupancy"] = analysis.grid_means(a.mask[:, ::2, ::2]).reshape(n, -1)
    return np.concatenate([blocks[name] for name, _ in BUILTIN_2D_LAYOUT], axis=1).astype(np.float32)


@base.register_extractor("builtin_2d")
class Builtin2DExtractor(base.FeatureExtractor):
    """Weight-free per-frame appearance features: see `BUILTIN_2D_LAYOUT`.

    Vector i (dim `BUILTIN_2D_DIM` = 166) describes the decoded frame nearest to
    i / rate. Frames are block-averaged to a short side of about 120 pixels first,
    so the cost per frame is bounded whatever the decoded size. Config keys:
    `extractor` ('builtin_2d') and `rate`; there are no weights, and `image_size`
    and `clip_frames` are not used. Frames need at least 7 pixels a side.
    """

    # Bump when the features change, so records made by different code differ in version.
    FEATURE_VERSION = 1

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        self.dim = BUILTIN_2D_DIM
        self.version = f"v{self.FEATURE_VERSION}"

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        analysis.check_frame_size(self.name, frames)
        idx = base.frame_indices(frames.shape[0], frame_rate, self.cfg.rate, n)
        unique, inverse = np.unique(idx, return_inverse=True)
        chunk = analysis.CHUNK_FRAMES
        out = [
            _builtin_2d_features(analysis.work_planes(frames[unique[i : i + chunk]], _WORK_SIDE_2D))
            for i in range(0, len(unique), chunk)
        ]
        return np.concatenate(out, axis=0)[inverse]
