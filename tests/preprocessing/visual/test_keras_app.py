"""Tests of the `keras_app` extractor on a Keras application with a local weights file."""

import re

import keras
import numpy as np
import pytest

from preprocessing import visual
from preprocessing.config import VisualStreamConfig
from tests.preprocessing.visual.synthetic import BLUE, draw


def _cfg(**kw):
    return VisualStreamConfig(**kw)


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
