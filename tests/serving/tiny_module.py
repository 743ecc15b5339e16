"""A tiny export with a float and a string input and two outputs, for the REST JSON and client tests."""

import keras
import numpy as np
import tensorflow as tf

from serving import export_base

FEATURES = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], "float32")
# Not UTF-8, with a NUL: only b64 carries these through JSON.
WORDS = np.array([b"\xff\x00raw", b"text"], dtype=object)
PREFIX = b"tag:"


class TinyModule(export_base.ExportModule):
    """Dense logits of 'features' and 'words' tagged with a prefix; 'logits_only' serves the features alone."""

    default_function_keys = {"both": "serving_default", "logits_only": "logits_only"}

    def __init__(self, seed: int = 0):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((3,), name="features")
        model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs), name="tiny_rest")
        super().__init__({"units": 2}, model, name="tiny_rest_module")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.string)])
    def predict(self, features, words):
        return self.serve(features, words)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def predict_logits(self, features):
        return {"logits": self.inference_step(features)}

    def serve(self, features, words):
        # The name ends in _bytes: TF Serving sends such a string output as {"b64": ...}.
        return {"logits": self.inference_step(features), "tagged_bytes": tf.strings.join([PREFIX, words])}

    def functions(self):
        return {"both": self.predict, "logits_only": self.predict_logits}


def in_memory(module: TinyModule) -> dict[str, np.ndarray]:
    """The module's outputs on FEATURES and WORDS, in this process."""
    return {k: v.numpy() for k, v in module.serve(tf.constant(FEATURES), tf.constant(WORDS)).items()}
