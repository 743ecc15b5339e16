"""Synthetic frames for the visual extractor tests: one object on a mild background, like the built-in corpus."""

import numpy as np

H, W = 120, 160
FPS = 10.0
RED, BLUE = (220, 40, 40), (40, 70, 220)


def plain_background(h=H, w=W):
    """A mild vertical gradient, float32 (h, w, 3)."""
    shade = np.linspace(0.0, 14.0, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(np.array([196.0, 204.0, 186.0], np.float32) + shade, (h, w, 3)).copy()


def shape_mask(shape, cx, cy, size, angle, h=H, w=W):
    """bool (h, w) mask of `shape` centred on (cx, cy), `size` pixels in radius, turned by `angle` degrees."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    a = np.deg2rad(angle)
    u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
    v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= size
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85 * size
    if shape == "ring":
        return (r <= size) & (r >= 0.55 * size)
    if shape == "cross":
        arm = 0.3 * size
        return ((np.abs(u) <= arm) & (np.abs(v) <= size)) | ((np.abs(v) <= arm) & (np.abs(u) <= size))
    if shape == "star":
        return r <= size * (0.6 + 0.4 * np.cos(5 * np.arctan2(v, u)))
    raise ValueError(f"unknown test shape {shape!r}")


def draw(shape="square", colour=RED, cx=80.0, cy=60.0, size=22.0, angle=0.0, texture="solid", background=None):
    """One uint8 (H, W, 3) frame."""
    img = plain_background() if background is None else background.astype(np.float32)
    mask = shape_mask(shape, cx, cy, size, angle)
    img[mask] = colour
    if texture == "striped":
        stripes = mask & ((np.arange(W)[None, :] // 4) % 2 == 0)
        img[stripes] = np.array(colour, np.float32) * 0.55
    return np.clip(img, 0, 255).astype(np.uint8)


def motion_video(kind, frames=12):
    """`frames` frames at FPS of a square undergoing `kind`."""
    out = []
    for t in range(frames):
        kw = {}
        if kind == "rotate":
            kw["angle"] = 12.0 * t
        elif kind == "slide":
            kw["cx"] = 50.0 + 5.0 * t
        elif kind == "shrink":
            kw["size"] = 30.0 * 0.9**t
        elif kind == "shake":
            kw["cx"] = 80.0 + (4.0 if t % 2 else -4.0)
        elif kind == "fall":
            kw["cy"] = 25.0 + 0.5 * t * t
        elif kind != "static":
            raise ValueError(f"unknown motion {kind!r}")
        out.append(draw(**kw))
    return np.stack(out)
