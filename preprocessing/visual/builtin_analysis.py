"""Per-frame analysis that the built-in extractors share: background plane, object mask and pixels, edges, grids."""

from __future__ import annotations

import numpy as np

_BORDER = 2  # pixels of the frame's edge that estimate the background colour
_MIN_FG_DIFF = 40.0  # a pixel is foreground if a channel differs more from the background
_BG_SPREAD_FACTOR = 5.0  # ... or more than this many times the border's own spread
_MIN_FG_FRACTION = 2e-3  # less foreground than this (of the frame) means no object
GRID = 4  # cells per side of the spatial grids
ORIENT_BINS = 36  # 5-degree bins of unsigned gradient orientation
CHUNK_FRAMES = 64  # frames analysed at once: bounds memory for long videos, stays cache-friendly


def layout_slices(layout: tuple[tuple[str, int], ...]) -> dict[str, slice]:
    """Slice of each named block of a feature vector laid out as `layout`, (name, length) in order."""
    out, start = {}, 0
    for name, size in layout:
        out[name] = slice(start, start + size)
        start += size
    return out


def check_frame_size(name: str, frames: np.ndarray) -> None:
    """Raises ValueError when `frames` (T, H, W, 3) are too small for extractor `name` to find a background."""
    # Block averaging never takes a side below the working size, so the decoded size decides.
    smallest = 2 * _BORDER + 3
    if min(frames.shape[1:3]) < smallest:
        raise ValueError(f"{name} needs frames of at least {smallest} pixels a side, got shape {frames.shape}.")


def work_planes(frames: np.ndarray, side: int) -> np.ndarray:
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


def grid_means(x: np.ndarray) -> np.ndarray:
    """Means of (..., H, W) over the cells of a GRID x GRID grid -> (..., GRID, GRID) float32."""
    h, w = x.shape[-2:]
    rows, cols = (np.arange(GRID) * h) // GRID, (np.arange(GRID) * w) // GRID
    sums = np.add.reduceat(np.add.reduceat(x, rows, axis=-2, dtype=np.float32), cols, axis=-1, dtype=np.float32)
    return sums / np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w))).astype(np.float32)


def segment_sums(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
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


class FrameAnalysis:
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
      orient: (N, ORIENT_BINS) normalized edge-orientation histogram of the
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
        sums = segment_sums(np.stack([self.px, self.py], axis=1).astype(np.float64), self.starts, self.count)
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
        bins = (theta * (ORIENT_BINS / np.pi) + 0.5).astype(np.int64) % ORIENT_BINS
        bins += (self.near[edge] // (h * w)) * ORIENT_BINS
        hist = np.bincount(bins, weights=self.near_mag[edge], minlength=n * ORIENT_BINS).reshape(n, ORIENT_BINS)
        self.orient = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-6)
