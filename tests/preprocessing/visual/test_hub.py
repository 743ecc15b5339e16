"""Tests of the `hub` extractor on TF Hub-style SavedModels built and saved here."""

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import visual
from preprocessing.config import VisualStreamConfig
from preprocessing.visual import base
from tests.preprocessing.visual.synthetic import FPS


def _cfg(**kw):
    return VisualStreamConfig(**kw)


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
    monkeypatch.setattr(base, "MODEL_BATCH_FRAMES", 3)
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
    monkeypatch.setattr(base, "MODEL_BATCH_FRAMES", batch_frames)  # 8: two clips per call
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
