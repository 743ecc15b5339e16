"""Tests of the visual extractor registry, sampling in time and input validation (`preprocessing.visual.base`)."""

import numpy as np
import pytest

from preprocessing import visual
from preprocessing.config import VisualStreamConfig
from tests.preprocessing.visual.synthetic import FPS, motion_video


def _cfg(**kw):
    return VisualStreamConfig(**kw)


# --------------------------------------------------------------------------------------
# Sampling in time.


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


# --------------------------------------------------------------------------------------
# Validation.


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
