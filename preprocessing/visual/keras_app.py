"""The `keras_app` extractor: pooled features of a frozen `keras.applications` backbone with a local weights file."""

from __future__ import annotations

import json
import logging
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from preprocessing.config import VisualStreamConfig
from preprocessing.visual import base

logger = logging.getLogger(__name__)

# Arguments that the keras_app extractor sets itself.
_KERAS_APP_RESERVED = (
    "weights",
    "include_top",
    "pooling",
    "input_shape",
    "input_tensor",
    "classes",
    "classifier_activation",
)


@base.register_extractor("keras_app")
class KerasAppExtractor(base.FeatureExtractor):
    """A frozen `keras.applications.<keras_app>` backbone with a local weights file.

    Built with `weights=None, include_top=False, pooling='avg'` on S x S x 3 inputs
    (S = image_size) plus the stream's `keras_app_kwargs` (e.g. `alpha` for
    MobileNet), then `load_weights(weights)`; nothing is ever downloaded. Vector i is
    the pooled output for the frame nearest to i / rate, after the application's
    own `preprocess_input` (frames resized by `base.resize_frames`); `dim` is the
    backbone's channel count (e.g. 1280 for MobileNetV2 at alpha 1.0).

    Config keys: `extractor` ('keras_app'), `keras_app` (a class name in
    `keras.applications`), `weights`, `image_size`, `keras_app_kwargs` (not any
    of `_KERAS_APP_RESERVED`) and `rate`. `version` names the application, its
    kwargs, the input size and the weights file's digest.
    """

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        apps = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        if cfg.keras_app not in apps:
            raise ValueError(f"Unknown keras_app {cfg.keras_app!r}; keras.applications has: {', '.join(apps)}.")
        if not cfg.weights:
            raise ValueError(f"keras_app {cfg.keras_app} needs a local weights file; the stream's weights is ''.")
        if not os.path.isfile(cfg.weights):
            raise FileNotFoundError(f"Weights file {cfg.weights} for keras_app {cfg.keras_app} does not exist.")
        kwargs = dict(cfg.keras_app_kwargs)
        reserved = sorted(set(kwargs) & set(_KERAS_APP_RESERVED))
        if reserved:
            raise ValueError(
                f"keras_app_kwargs may not set {reserved}: the extractor sets {list(_KERAS_APP_RESERVED)}."
            )
        builder = getattr(keras.applications, cfg.keras_app)
        preprocess = getattr(sys.modules.get(builder.__module__), "preprocess_input", None)
        if preprocess is None:
            raise ValueError(f"keras_app {cfg.keras_app} has no preprocess_input in {builder.__module__}.")
        s = cfg.image_size
        try:
            model = builder(weights=None, include_top=False, pooling="avg", input_shape=(s, s, 3), **kwargs)
        except TypeError as e:
            raise ValueError(f"keras_app {cfg.keras_app} rejects keras_app_kwargs {kwargs}: {e}") from e
        try:
            model.load_weights(cfg.weights)
        except ValueError as e:
            raise ValueError(f"Weights {cfg.weights} do not fit {cfg.keras_app}({kwargs}) at {s}x{s}: {e}") from e
        model.trainable = False
        self._model = model
        self._preprocess = preprocess
        self._fn = tf.function(self._forward, input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)])
        self.dim = int(model.output_shape[-1])
        settings = json.dumps(kwargs, sort_keys=True) if kwargs else ""
        self.version = f"{cfg.keras_app}{settings}@{s}px:sha256:{base.file_digest(cfg.weights)}"
        logger.info("keras_app %s loaded from %s: dim %d.", cfg.keras_app, cfg.weights, self.dim)

    def _forward(self, images: tf.Tensor) -> tf.Tensor:
        return self._model(self._preprocess(images), training=False)

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        idx = base.frame_indices(frames.shape[0], frame_rate, self.cfg.rate, n)
        unique, inverse = np.unique(idx, return_inverse=True)
        outs = []
        for i in range(0, len(unique), base.MODEL_BATCH_FRAMES):
            images = base.resize_frames(frames[unique[i : i + base.MODEL_BATCH_FRAMES]], self.cfg.image_size)
            outs.append(self._fn(images).numpy())
        return np.concatenate(outs, axis=0)[inverse]
