"""Tests of the built-in, weight-free extractors (`builtin_2d`, `builtin_3d` and their shared `builtin_analysis`)."""

import logging
import time

import numpy as np
import pytest

from preprocessing import visual
from preprocessing.config import VisualStreamConfig
from preprocessing.visual import builtin_analysis
from tests.preprocessing.visual.synthetic import BLUE, FPS, RED, H, W, draw, motion_video, plain_background, shape_mask


def _cfg(**kw):
    return VisualStreamConfig(**kw)


def _vec2d(extractor, frame):
    return extractor.extract(frame[None], FPS, 0.1)[0]


# --------------------------------------------------------------------------------------
# Shapes and layouts.


@pytest.mark.parametrize("name", ["builtin_2d", "builtin_3d"])
@pytest.mark.parametrize(
    "duration, rate, frame_rate",
    [(0.05, 2.0, 10.0), (1.0, 2.0, 10.0), (3.3, 2.0, 4.0), (2.0, 0.5, 10.0), (1.2, 5.0, 25.0)],
)
def test_builtin_shapes(name, duration, rate, frame_rate):
    extractor = visual.get_extractor(_cfg(extractor=name, rate=rate))
    frames = motion_video("slide", frames=max(1, int(round(duration * frame_rate))))
    out = extractor.extract(frames, frame_rate, duration)
    n = visual.num_vectors(duration, rate)
    assert out.shape == (n, extractor.dim)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))


def test_builtin_dims_and_layouts(e2d, e3d):
    assert e2d.dim == visual.BUILTIN_2D_DIM == 166
    assert e3d.dim == visual.BUILTIN_3D_DIM == 33
    assert e2d.name == "builtin_2d" and e3d.name == "builtin_3d"
    assert e2d.version and e3d.version.endswith("clip4")
    ends = [s.stop for s in visual.BUILTIN_2D_SLICES.values()]
    assert ends[-1] == e2d.dim and sorted(ends) == ends


# --------------------------------------------------------------------------------------
# What the built-in features see.


def test_builtin_2d_distinguishes_colour(e2d):
    red, blue = _vec2d(e2d, draw(colour=RED)), _vec2d(e2d, draw(colour=BLUE))
    nudged = _vec2d(e2d, draw(colour=RED, cx=81.0))
    s = visual.BUILTIN_2D_SLICES
    # Same geometry, different colour blocks.
    np.testing.assert_allclose(red[s["object_geometry"]], blue[s["object_geometry"]], atol=1e-6)
    np.testing.assert_allclose(red[s["object_rgb_mean_std"]][:3], np.array(RED) / 255.0, atol=1e-5)
    np.testing.assert_allclose(blue[s["object_rgb_mean_std"]][:3], np.array(BLUE) / 255.0, atol=1e-5)
    assert np.abs(red[s["object_rgb_histogram"]] - blue[s["object_rgb_histogram"]]).sum() == pytest.approx(2.0)
    assert np.linalg.norm(red - blue) > 20 * np.linalg.norm(red - nudged)


@pytest.mark.parametrize("other", ["circle", "star", "ring", "cross"])
def test_builtin_2d_distinguishes_shape(e2d, other):
    square = _vec2d(e2d, draw(shape="square"))
    nudged = _vec2d(e2d, draw(shape="square", cx=81.0, cy=61.0))
    different = _vec2d(e2d, draw(shape=other))
    s = visual.BUILTIN_2D_SLICES
    # Colour is the same, shape blocks differ well beyond a one-pixel move.
    np.testing.assert_allclose(square[s["object_rgb_mean_std"]], different[s["object_rgb_mean_std"]], atol=1e-6)
    shape_blocks = ("object_geometry", "object_radial_profile", "edge_orientation_histogram")
    sub = np.concatenate([np.arange(e2d.dim)[s[b]] for b in shape_blocks])
    assert np.linalg.norm(square[sub] - different[sub]) > 5 * np.linalg.norm(square[sub] - nudged[sub]) + 0.05


def test_builtin_2d_geometry_and_texture(e2d):
    s = visual.BUILTIN_2D_SLICES
    ring = _vec2d(e2d, draw(shape="ring"))
    circle = _vec2d(e2d, draw(shape="circle", cx=40.0, cy=30.0))
    geometry = circle[s["object_geometry"]]
    assert geometry[1] == pytest.approx(0.25, abs=0.01) and geometry[2] == pytest.approx(0.25, abs=0.01)
    assert geometry[0] == pytest.approx(np.pi * 22**2 / (H * W), rel=0.03)
    # A ring has no pixels near its centre; a disc does.
    assert ring[s["object_radial_profile"]][:2].sum() == 0 and circle[s["object_radial_profile"]][:2].sum() > 0.05
    solid, striped = _vec2d(e2d, draw(texture="solid")), _vec2d(e2d, draw(texture="striped"))
    assert striped[s["object_texture"]][0] > 10 * solid[s["object_texture"]][0] + 0.02
    blank = _vec2d(e2d, plain_background().astype(np.uint8))
    assert not np.any(blank[s["object_geometry"]]) and not np.any(blank[s["edge_orientation_histogram"]])


def test_builtin_2d_block_averages_large_frames(e2d):
    small = np.stack([draw(shape="star"), draw(shape="cross", colour=BLUE)])
    large = np.repeat(np.repeat(small, 3, axis=1), 3, axis=2)  # 360 x 480, averaged back by 3
    np.testing.assert_allclose(e2d.extract(large, FPS, 0.2), e2d.extract(small, FPS, 0.2), atol=1e-5)


def test_builtin_2d_gradient_background(e2d):
    # A strong diagonal lighting gradient (80 grey levels) with sensor noise, like the corpus's tables.
    yy, xx = np.mgrid[0:H, 0:W]
    ramp = 80.0 * (xx / W + yy / H) / 2.0
    noise = np.random.default_rng(3).normal(0.0, 2.0, (H, W, 3))
    background = np.array([150.0, 160.0, 140.0]) + ramp[..., None] + noise
    s = visual.BUILTIN_2D_SLICES
    empty = _vec2d(e2d, np.clip(background, 0, 255).astype(np.uint8))
    assert not np.any(empty[s["object_geometry"]])
    np.testing.assert_allclose(empty[s["background_rgb"]], (np.array([150.0, 160.0, 140.0]) + 40.0) / 255.0, atol=0.01)
    for cx in (80.0, 8.0):  # in the middle, and cut by the left edge
        frame = draw(shape="circle", colour=(35, 160, 55), cx=cx, background=background)
        area = shape_mask("circle", cx, 60.0, 22.0, 0.0).mean()
        assert _vec2d(e2d, frame)[s["object_geometry"]][0] == pytest.approx(area, rel=0.05)


MOTIONS = ("static", "rotate", "slide", "shrink", "shake", "fall")


@pytest.fixture(scope="module")
def motion_vectors(e3d):
    # 12 frames at 10 fps, 2 clips/s: vector 1 is the clip of frames 4..7, away from the padded edges.
    return {kind: e3d.extract(motion_video(kind), FPS, 1.2)[1] for kind in MOTIONS}


def _part(vectors, kind, block, k=0):
    return float(vectors[kind][visual.BUILTIN_3D_SLICES[block]][k])


def test_builtin_3d_static_is_still(motion_vectors):
    v = motion_vectors["static"]
    s = visual.BUILTIN_3D_SLICES
    assert _part(motion_vectors, "static", "visibility") == 1.0
    for block in ("motion_grid", "motion_energy", "velocity", "speed", "back_and_forth", "reversals", "acceleration"):
        assert not np.any(v[s[block]]), block
    for block in ("scale_rate", "rotation_rate", "orientation_change"):
        assert v[s[block]][0] == 0.0, block
    for kind in MOTIONS[1:]:
        assert _part(motion_vectors, kind, "motion_energy") > 1e-3, kind


def test_builtin_3d_rotation(motion_vectors):
    # 12 degrees a frame at 10 fps = 1/3 turn per second, clockwise on screen.
    assert _part(motion_vectors, "rotate", "rotation_rate") == pytest.approx(1 / 3, rel=0.25)
    for kind in ("static", "slide", "shrink", "fall"):
        assert abs(_part(motion_vectors, kind, "rotation_rate")) < 0.2 * _part(
            motion_vectors, "rotate", "rotation_rate"
        )
        assert _part(motion_vectors, kind, "orientation_change") < 0.3 * _part(
            motion_vectors, "rotate", "orientation_change"
        )
    assert _part(motion_vectors, "rotate", "speed") < 0.02


def test_builtin_3d_slide(motion_vectors):
    # 5 pixels a frame at 10 fps over 160 pixels = 0.3125 frame widths per second.
    assert _part(motion_vectors, "slide", "velocity", 0) == pytest.approx(50 / W, rel=0.1)
    assert abs(_part(motion_vectors, "slide", "velocity", 1)) < 0.02
    for kind in ("static", "rotate", "shrink"):
        assert _part(motion_vectors, kind, "speed") < 0.1 * _part(motion_vectors, "slide", "speed")


def test_builtin_3d_shrink(motion_vectors):
    # Area scales by 0.81 a frame: d log(area) / dt = 10 * log(0.81). The mask keeps
    # part of the blended edge pixels at the 60-pixel working size, which overstates
    # the relative change of small objects a little.
    assert _part(motion_vectors, "shrink", "scale_rate") == pytest.approx(10 * np.log(0.81), rel=0.35)
    for kind in ("static", "rotate", "slide", "shake", "fall"):
        assert abs(_part(motion_vectors, kind, "scale_rate")) < 0.25 * abs(
            _part(motion_vectors, "shrink", "scale_rate")
        )


def test_builtin_3d_shake_and_fall(motion_vectors):
    assert _part(motion_vectors, "shake", "reversals", 0) == 1.0
    # +8, -8, +8 pixels: 24 travelled, 8 net, in 0.3 s over 160 pixels.
    assert _part(motion_vectors, "shake", "back_and_forth", 0) == pytest.approx(16 / W / 0.3, rel=0.1)
    for kind in ("slide", "fall", "rotate"):
        assert _part(motion_vectors, kind, "reversals", 0) == 0.0 and _part(motion_vectors, kind, "reversals", 1) == 0.0
        assert _part(motion_vectors, kind, "back_and_forth", 0) < 0.1 * _part(
            motion_vectors, "shake", "back_and_forth", 0
        )
    # Falling: downwards and speeding up (y grows by 0.5 t^2 pixels; 1 pixel/frame^2 = 100 px/s^2).
    assert _part(motion_vectors, "fall", "velocity", 1) > 0.3
    assert _part(motion_vectors, "fall", "acceleration", 1) == pytest.approx(100 / H, rel=0.25)
    assert abs(_part(motion_vectors, "slide", "acceleration", 0)) < 0.1


def test_builtin_deterministic(e2d, e3d):
    frames = np.stack([draw(shape="star", angle=7.0 * t, cx=40.0 + 3 * t, texture="striped") for t in range(30)])
    for extractor in (e2d, e3d):
        first = extractor.extract(frames, FPS, 3.0)
        again = visual.get_extractor(extractor.cfg).extract(frames.copy(), FPS, 3.0)
        np.testing.assert_array_equal(first, again)


def test_builtin_chunking_does_not_change_features(e2d, e3d, monkeypatch):
    frames = np.stack([draw(shape="cross", angle=9.0 * t, cx=30.0 + 4 * t, colour=BLUE) for t in range(25)])
    whole = {e.name: e.extract(frames, FPS, 2.5) for e in (e2d, e3d)}
    monkeypatch.setattr(builtin_analysis, "CHUNK_FRAMES", 3)  # 3 frames, or 1 clip of 4 frames, at a time
    analysed, frame_analysis = [], builtin_analysis.FrameAnalysis

    def counting_analysis(planes):
        analysed.append(len(planes))
        return frame_analysis(planes)

    monkeypatch.setattr(builtin_analysis, "FrameAnalysis", counting_analysis)
    for extractor in (e2d, e3d):
        np.testing.assert_array_equal(extractor.extract(frames, FPS, 2.5), whole[extractor.name])
    assert analysed and max(analysed) <= 4  # the smaller chunks were used


def test_builtin_throughput(e2d, e3d):
    """The job must run at >= 100x real time: at 2 vectors/s a stream must make far more than 200 vectors/s."""
    rng = np.random.default_rng(0)
    frames = np.stack(
        [
            draw(shape=("star", "cross", "ring")[t % 3], angle=5.0 * t, cx=30.0 + (t % 100), texture="striped")
            for t in range(300)
        ]
    )
    frames = np.clip(frames.astype(np.int16) + rng.integers(-4, 5, frames.shape), 0, 255).astype(np.uint8)
    rates = {}
    for extractor in (e2d, e3d):
        extractor.extract(frames[:20], FPS, 2.0)
        start = time.process_time()
        out = extractor.extract(frames, FPS, 30.0)  # 60 vectors
        rates[extractor.name] = len(out) / max(time.process_time() - start, 1e-9)
    logging.getLogger(__name__).info("Built-in throughput, vectors per CPU second (160x120, 10 fps): %s", rates)
    for name, rate in rates.items():
        assert rate > 200, f"{name}: {rate:.0f} vectors/s"
