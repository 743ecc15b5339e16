"""Retrieval clips: the visual steps of every stream line up, and visual_mask marks those all streams have."""

import numpy as np
import pytest
import tensorflow as tf

from avalign import features
from trainer.retrieval.data import ClipParser

STREAMS = ("visual_2d", "visual_3d")


def _video(steps_2d: int, steps_3d: int, start: float = 2.0, end: float = 6.0) -> dict:
    """A 10 s video at 100 audio frames/s and 1 visual step/s; step i of each stream holds i + 1."""
    video = {
        features.AUDIO: tf.ones([1000, 4]),
        features.AUDIO_PRESENT: tf.constant(True),
        features.CAPTION_START: tf.constant([start]),
        features.CAPTION_END: tf.constant([end]),
        features.VIDEO_ID: tf.constant(b"v"),
        features.LANGUAGE: tf.constant(b"en"),
    }
    for stream, steps, dim in (("visual_2d", steps_2d, 3), ("visual_3d", steps_3d, 2)):
        values = np.repeat(np.arange(1, steps + 1, dtype="float32")[:, None], dim, axis=1).reshape(steps, dim)
        video[features.stream_keys(stream)["features"]] = tf.constant(values)
    return video


def _clip(parser: ClipParser, video: dict) -> dict:
    (x, _), *rest = list(parser.clips(video))
    assert not rest
    return {k: v.numpy() for k, v in x.items()}


@pytest.mark.parametrize(
    "steps_3d, mask",
    [
        (10, [1, 1, 1, 1, 0]),  # both streams cover the 4 s caption: steps 2-5
        (4, [1, 1, 0, 0, 0]),  # the 3D stream ends after step 3: steps 4 and 5 are masked
        (0, [0, 0, 0, 0, 0]),  # no 3D features at all: no visual step
    ],
)
def test_visual_mask_marks_the_steps_every_stream_has(steps_3d, mask):
    parser = ClipParser(400, 100.0, STREAMS, {"visual_2d": 1.0, "visual_3d": 1.0})
    x = _clip(parser, _video(10, steps_3d))
    assert parser.max_visual == 5
    np.testing.assert_array_equal(x["visual_mask"], mask)
    valid = np.asarray(mask, bool)
    # The same moments in both streams (the caption starts at step 2), zeros where masked.
    want = np.arange(3, 8, dtype="float32")
    np.testing.assert_array_equal(x["visual_2d"][valid, 0], want[valid])
    np.testing.assert_array_equal(x["visual_3d"][valid, 0], want[valid])
    np.testing.assert_array_equal(x["visual_2d"][~valid], 0.0)
    np.testing.assert_array_equal(x["visual_3d"][~valid], 0.0)


def test_image_mode_takes_the_middle_step():
    parser = ClipParser(400, 100.0, ("visual_2d",), {"visual_2d": 1.0}, images=True)
    x = _clip(parser, _video(10, 0))
    np.testing.assert_array_equal(x["visual_mask"], [1])
    np.testing.assert_array_equal(x["visual_2d"], [[5, 5, 5]])  # step 4 = round((2 + 6) / 2)
