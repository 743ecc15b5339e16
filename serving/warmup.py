"""TF Serving warmup requests: `assets.extra/tf_serving_warmup_requests`, PredictionLog TFRecords.

TF Serving replays these requests when it loads a version, before it serves
it, so the first real request does not pay for graph optimization and memory
allocation. It reads at most `MAX_REQUESTS` of them.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving's limit (servables/tensorflow/saved_model_warmup_util: kMaxNumRecords).
MAX_REQUESTS = 1000


def predict_log(model_name: str, signature_name: str, inputs: Mapping[str, np.ndarray]) -> bytes:
    """One serialized PredictionLog holding a PredictRequest for `signature_name` with `inputs`."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
    for name, value in sorted(inputs.items()):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def warmup_file(model_name: str, requests: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> bytes:
    """The contents of a warmup file: a TFRecord file of one PredictionLog per (signature, inputs).

    Raises:
      ValueError: no request, or more than TF Serving reads.
    """
    if not requests:
        raise ValueError("no warmup request given.")
    if len(requests) > MAX_REQUESTS:
        raise ValueError(f"{len(requests)} warmup requests; TF Serving reads at most {MAX_REQUESTS}.")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, WARMUP_FILE)
        with tf.io.TFRecordWriter(path) as writer:
            for signature, inputs in requests:
                writer.write(predict_log(model_name, signature, inputs))
        with open(path, "rb") as f:
            return f.read()


def read_requests(path: str) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """(model name, signature name, inputs) of every request in a warmup file, as TF Serving reads them.

    Raises:
      ValueError: a record that is not a PredictionLog holding a predict request.
    """
    out = []
    for i, record in enumerate(_records(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: record {i} is a {log.WhichOneof('log_type')} log, not a predict log.")
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        out.append((request.model_spec.name, request.model_spec.signature_name or "serving_default", inputs))
    return out


def _records(path: str) -> Iterable[bytes]:
    for record in tf.data.TFRecordDataset(path):
        yield record.numpy()
