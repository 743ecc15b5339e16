"""Tests of the visual feature extractors: registry, built-ins, TF Hub and Keras applications."""

import logging
import re
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from preprocessing import visual
from preprocessing.config import VisualStreamConfig

H, W = 120, 160
FPS = 10.0
RED, BLUE = (220, 40, 40), (40, 70, 220)


# --------------------------------------------------------------------------------------
# Little synthetic frames: one object on a mild background, like the built-in corpus.


def _background(h=H, w=W):
    shade = np.linspace(0.0, 14.0, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(np.array([196.0, 204.0, 186.0], np.float32) + shade, (h, w, 3)).copy()


def _shape_mask(shape, cx, cy, size, angle, h=H, w=W):
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
    img = _background() if background is None else background.astype(np.float32)
    mask = _shape_mask(shape, cx, cy, size, angle)
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


def _cfg(**kw):
    return VisualStreamConfig(**kw)


@pytest.fixture(scope="module")
def e2d():
    return visual.get_extractor(_cfg(extractor="builtin_2d", rate=2.0))


@pytest.fixture(scope="module")
def e3d():
    return visual.get_extractor(_cfg(extractor="builtin_3d", rate=2.0, clip_frames=4))


def _vec2d(extractor, frame):
    return extractor.extract(frame[None], FPS, 0.1)[0]


# --------------------------------------------------------------------------------------
# Sampling in time and validation.


@pytest.mark.parametrize(
    "duration, rate, expected",
    [
        (0.0, 2.0, 1),
        (0.4, 2.0, 1),
        (0.5, 2.0, 1),
        (0.51, 2.0, 2),
        (1.0, 2.0, 2),
        (10.0, 2.0, 20),
        (2.5, 1.0, 3),
        (3.0, 0.5, 2),
        (0.3 * 3, 10.0 / 3, 3),
    ],
)
def test_num_vectors(duration, rate, expected):
    assert visual.num_vectors(duration, rate) == expected


def test_frame_and_clip_indices():
    np.testing.assert_array_equal(visual.frame_indices(10, 4.0, 2.0, 5), [0, 2, 4, 6, 8])
    # Frame rate 3, rate 2: times 0, .5, 1, 1.5 fall at frames 0, 1.5, 3, 4.5 -> 0, 2 (ties go later), 3, 3 (clamped).
    np.testing.assert_array_equal(visual.frame_indices(4, 3.0, 2.0, 4), [0, 2, 3, 3])
    clips = visual.clip_indices(10, 4.0, 2.0, 5, 4)
    np.testing.assert_array_equal(clips, [[0, 0, 1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8], [7, 8, 9, 9]])
    np.testing.assert_array_equal(visual.clip_indices(10, 4.0, 2.0, 2, 3), [[0, 0, 1], [1, 2, 3]])


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


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 3), np.uint8), "(T, H, W, 3)"),
        (np.zeros((2, 8, 8, 4), np.uint8), "(T, H, W, 3)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        ([[[[0, 0, 0]]]], "numpy array"),
    ],
)
def test_invalid_frames(e2d, frames, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        e2d.extract(frames, FPS, 1.0)


def test_invalid_timing_and_tiny_frames(e2d, e3d):
    frames = motion_video("static", 2)
    with pytest.raises(ValueError, match="frame_rate must be .* got 0"):
        e2d.extract(frames, 0.0, 1.0)
    with pytest.raises(ValueError, match="duration must be .* got -1"):
        e3d.extract(frames, FPS, -1.0)
    with pytest.raises(ValueError, match=r"at least 7 pixels a side, got shape \(2, 4, 4, 3\)"):
        e2d.extract(np.zeros((2, 4, 4, 3), np.uint8), FPS, 1.0)


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
    blank = _vec2d(e2d, _background().astype(np.uint8))
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
        area = _shape_mask("circle", cx, 60.0, 22.0, 0.0).mean()
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
    monkeypatch.setattr(visual, "_BUILTIN_CHUNK", 3)  # 3 frames, or 1 clip of 4 frames, at a time
    for extractor in (e2d, e3d):
        np.testing.assert_array_equal(extractor.extract(frames, FPS, 2.5), whole[extractor.name])


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


# --------------------------------------------------------------------------------------
# Registry.


def test_unknown_extractor_lists_registered():
    with pytest.raises(ValueError, match="'resnet3d' is not registered.*builtin_2d, builtin_3d, hub, keras_app"):
        visual.get_extractor(_cfg(extractor="resnet3d"))
    with pytest.raises(ValueError, match="empty.*disabled"):
        visual.get_extractor(_cfg(extractor=""))


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="'builtin_2d' is already registered"):
        visual.register_extractor("builtin_2d")(type("Other", (visual.FeatureExtractor,), {}))
    assert {"builtin_2d", "builtin_3d", "hub", "keras_app"} <= set(visual.registered_extractors())


# --------------------------------------------------------------------------------------
# TF Hub models, built and saved here.

PROJECTION = np.array([[1.0, -2.0, 0.5, 0.0, 3.0], [0.25, 1.0, -1.0, 2.0, 0.0], [-0.5, 0.0, 2.0, 1.0, 1.0]], np.float32)
BIAS = np.array([0.1, 0.0, -0.2, 0.3, 0.0], np.float32)


def _image_model(size):
    """A callable image model (TF2 reusable SavedModel style): mean colour of each image, projected."""

    class ImageModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(PROJECTION)
            self.b = tf.Variable(BIAS)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2]) @ self.w + self.b

    return ImageModel()


class _FeatureMapModel(tf.Module):
    """Image model returning a spatial feature map whose depth is unknown until run."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(PROJECTION)
        self.b = tf.Variable(BIAS)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        feature_map = tf.einsum("bhwc,cd->bhwd", images, self.w) + self.b
        return tf.reshape(feature_map, tf.concat([tf.shape(feature_map)[:3], [-1]], axis=0))


class _VideoModel(tf.Module):
    """Video model served through a signature only: mean colour of each clip, projected."""

    def __init__(self, clip_frames):
        super().__init__()
        self.w = tf.Variable(PROJECTION)
        self.embed = tf.function(
            self._embed, input_signature=[tf.TensorSpec([None, clip_frames, None, None, 3], tf.float32, name="clips")]
        )

    def _embed(self, clips):
        return {"embedding": tf.reduce_mean(clips, axis=[1, 2, 3]) @ self.w}


@pytest.fixture(scope="module")
def hub_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    paths = {name: str(root / name) for name in ("image", "image32", "map", "video")}
    tf.saved_model.save(_FeatureMapModel(), paths["map"])
    tf.saved_model.save(_image_model(None), paths["image"])
    tf.saved_model.save(_image_model(32), paths["image32"])
    video = _VideoModel(4)
    tf.saved_model.save(video, paths["video"], signatures={"serving_default": video.embed})
    return paths


def _colour_video(num_frames):
    """Frames of one flat colour each, different per frame; returns frames and colours in [0, 1]."""
    k = np.arange(num_frames)[:, None]
    colours = np.concatenate([(k * 17) % 256, (k * 41 + 30) % 256, 255 - (k * 23) % 256], axis=1).astype(np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (num_frames, 24, 40, 3)).copy()
    return frames, colours.astype(np.float32) / 255.0


def test_hub_image_model(hub_models):
    extractor = visual.get_extractor(_cfg(extractor="hub", handle=hub_models["image"], rate=2.0, image_size=16))
    assert not extractor.is_video and extractor.dim == 5
    assert extractor.version.startswith(hub_models["image"] + "@sha256:")
    frames, colours = _colour_video(23)  # 2.3 s at 10 fps -> 5 vectors at frames 0, 5, 10, 15, 20
    out = extractor.extract(frames, FPS, 2.3)
    expected = colours[[0, 5, 10, 15, 20]] @ PROJECTION + BIAS
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_hub_image_model_batches(hub_models, monkeypatch):
    monkeypatch.setattr(visual, "MODEL_BATCH_FRAMES", 3)
    extractor = visual.get_extractor(_cfg(extractor="hub", handle=hub_models["image32"], rate=10.0, image_size=32))
    frames, colours = _colour_video(8)
    np.testing.assert_allclose(extractor.extract(frames, FPS, 0.8), colours @ PROJECTION + BIAS, atol=1e-4)


def test_hub_feature_map_model_is_pooled(hub_models):
    extractor = visual.get_extractor(_cfg(extractor="hub", handle=hub_models["map"], rate=2.0, image_size=12))
    assert extractor.dim == 5  # found by running the model: its signature leaves the depth unknown
    frames, colours = _colour_video(23)
    np.testing.assert_allclose(extractor.extract(frames, FPS, 2.3), colours[::5] @ PROJECTION + BIAS, atol=1e-5)


@pytest.mark.parametrize("batch_frames", [64, 8])
def test_hub_video_model(hub_models, monkeypatch, batch_frames):
    monkeypatch.setattr(visual, "MODEL_BATCH_FRAMES", batch_frames)  # 8: two clips per call
    extractor = visual.get_extractor(
        _cfg(extractor="hub", handle=hub_models["video"], rate=2.0, clip_frames=4, image_size=8)
    )
    assert extractor.is_video and extractor.dim == 5
    frames, colours = _colour_video(15)
    out = extractor.extract(frames, FPS, 1.5)  # clips centred on frames 0, 5, 10
    clips = [[0, 0, 1, 2], [4, 5, 6, 7], [9, 10, 11, 12]]
    expected = np.stack([colours[c].mean(axis=0) for c in clips]) @ PROJECTION
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_hub_shape_mismatches(hub_models):
    with pytest.raises(ValueError, match="takes 32x32 images but image_size is 16"):
        visual.get_extractor(_cfg(extractor="hub", handle=hub_models["image32"], image_size=16))
    with pytest.raises(ValueError, match="clips of 4 frames but clip_frames is 8"):
        visual.get_extractor(_cfg(extractor="hub", handle=hub_models["video"], clip_frames=8))
    with pytest.raises(ValueError, match="needs a handle"):
        visual.get_extractor(_cfg(extractor="hub"))


# --------------------------------------------------------------------------------------
# Keras applications with a local weights file.


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, 96 px) with non-default weights, saved locally."""
    model = keras.applications.MobileNetV2(
        weights=None, include_top=False, pooling="avg", input_shape=(96, 96, 3), alpha=0.35
    )
    rng = np.random.default_rng(1)
    for var in model.weights:
        var.assign(var.numpy() + rng.normal(0.0, 0.05, var.shape).astype(np.float32))
    path = str(tmp_path_factory.mktemp("keras") / "mobilenet.weights.h5")
    model.save_weights(path)
    return model, path


def test_keras_app_matches_in_memory_model(mobilenet_weights):
    model, path = mobilenet_weights
    cfg = _cfg(
        extractor="keras_app", keras_app="MobileNetV2", weights=path, image_size=96, keras_app_kwargs={"alpha": 0.35}
    )
    extractor = visual.get_extractor(cfg)
    assert extractor.dim == model.output_shape[-1]
    assert extractor.version.startswith('MobileNetV2{"alpha": 0.35}@96px:sha256:')
    frames = np.stack([draw(shape="star"), draw(shape="ring", colour=BLUE), draw(shape="cross", texture="striped")])
    out = extractor.extract(frames, 2.0, 1.5)  # one frame per vector
    images = keras.applications.mobilenet_v2.preprocess_input(visual.resize_frames(frames, 96))
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert np.std(out) > 0


def test_keras_app_errors(tmp_path, mobilenet_weights):
    missing = str(tmp_path / "nowhere.weights.h5")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        visual.get_extractor(_cfg(extractor="keras_app", keras_app="MobileNetV2", weights=missing))
    with pytest.raises(ValueError, match="Unknown keras_app 'MobileNetV9'.*MobileNetV2"):
        visual.get_extractor(_cfg(extractor="keras_app", keras_app="MobileNetV9", weights=missing))
    with pytest.raises(ValueError, match="needs a local weights file"):
        visual.get_extractor(_cfg(extractor="keras_app", keras_app="MobileNetV2"))
    _, path = mobilenet_weights
    with pytest.raises(ValueError, match=r"may not set \['weights'\]"):
        visual.get_extractor(
            _cfg(extractor="keras_app", keras_app="MobileNetV2", weights=path, keras_app_kwargs={"weights": "imagenet"})
        )
