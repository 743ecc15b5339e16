"""The `hub` extractor: features from a frozen TF Hub image or video model (any TF2 SavedModel)."""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from preprocessing.config import VisualStreamConfig
from preprocessing.visual import base

logger = logging.getLogger(__name__)


def _pool_output(out, where: str) -> tf.Tensor:
    """The one feature tensor of a model's output, pooled to (batch, dim)."""
    if isinstance(out, dict):
        if len(out) == 1:
            out = next(iter(out.values()))
        elif "default" in out:
            out = out["default"]
        else:
            raise ValueError(f"{where} returns several outputs {sorted(out)}; expected one, or one named 'default'.")
    out = tf.convert_to_tensor(out)
    if out.shape.rank is None or out.shape.rank < 2:
        raise ValueError(f"{where} returns shape {out.shape}; expected (batch, ..., dim).")
    if out.shape.rank > 2:
        # Spatial / temporal feature maps: average everything between batch and channels.
        out = tf.reduce_mean(out, axis=list(range(1, out.shape.rank - 1)))
    return tf.cast(out, tf.float32)


@base.register_extractor("hub")
class HubExtractor(base.FeatureExtractor):
    """A frozen TF Hub model (or any TF2 SavedModel) loaded with `hub.load`.

    `handle` is a local SavedModel directory or a hub URL. The model is called as
    the loaded object itself when it is callable (TF2 reusable SavedModel), else
    through its `serving_default` signature (or its only signature). The rank of
    its input decides the mode:

    - rank 4, [batch, S, S, 3]: an image model; vector i is the model's output for
      the frame nearest to i / rate.
    - rank 5, [batch, clip_frames, S, S, 3]: a video model; vector i is its output
      for the clip centred on i / rate.

    Inputs are float32 RGB in [0, 1] at S = image_size, the TF Hub convention.
    Outputs with more than two axes are averaged over the middle ones; `dim` is
    the model's output depth (from its signature, else from one blank input), and
    `version` is the handle plus a digest of a local `saved_model.pb`.

    Config keys: `extractor` ('hub'), `handle`, `rate`, `image_size` (must match
    the model's input side when it is fixed) and, for video models, `clip_frames`
    (must match the model's clip length when it is fixed).

    Attributes:
      is_video: whether the model takes clips (rank-5 input) rather than images.
    """

    def __init__(self, cfg: VisualStreamConfig):
        super().__init__(cfg)
        if not cfg.handle:
            raise ValueError("The 'hub' extractor needs a handle (a SavedModel directory or TF Hub URL); got ''.")
        logger.info("Loading TF Hub model %s", cfg.handle)
        self._model = hub.load(cfg.handle)
        self._fn, self._input_name, spec, out_spec = self._resolve_callable(self._model)
        if spec.shape.rank not in (4, 5) or spec.shape[-1] not in (None, 3):
            raise ValueError(
                f"Hub model {cfg.handle} takes input of shape {spec.shape}; expected [batch, S, S, 3] (image) "
                "or [batch, frames, S, S, 3] (video)."
            )
        if spec.dtype != tf.float32:
            raise ValueError(
                f"Hub model {cfg.handle} takes {spec.dtype.name} input; the 'hub' extractor feeds float32 RGB in [0, 1]."
            )
        self.is_video = spec.shape.rank == 5
        spatial = spec.shape[-3:-1]
        for side in spatial:
            if side is not None and side != cfg.image_size:
                raise ValueError(
                    f"Hub model {cfg.handle} takes {spatial[0]}x{spatial[1]} images but image_size is {cfg.image_size}."
                )
        if self.is_video and spec.shape[1] is not None and spec.shape[1] != cfg.clip_frames:
            raise ValueError(
                f"Hub video model {cfg.handle} takes clips of {spec.shape[1]} frames but clip_frames is {cfg.clip_frames}."
            )
        self.dim = self._output_dim(out_spec)
        self.version = cfg.handle
        saved_model_pb = os.path.join(cfg.handle, "saved_model.pb")
        if tf.io.gfile.exists(saved_model_pb):
            self.version = f"{cfg.handle}@sha256:{base.file_digest(saved_model_pb)}"
        logger.info("Hub %s model %s: dim %d.", "video" if self.is_video else "image", cfg.handle, self.dim)

    @staticmethod
    def _resolve_callable(model):
        """Returns (function, input keyword or None, input TensorSpec, output spec or None)."""
        concrete = getattr(model.__call__, "concrete_functions", None) if callable(model) else None
        if concrete:
            for fn in concrete:
                args, _ = fn.structured_input_signature
                if args and isinstance(args[0], tf.TensorSpec):
                    return model, None, args[0], fn.structured_outputs
        signatures = getattr(model, "signatures", {}) or {}
        if "serving_default" in signatures:
            sig = signatures["serving_default"]
        elif len(signatures) == 1:
            sig = next(iter(signatures.values()))
        else:
            raise ValueError(
                "Hub model is neither callable with one tensor nor has a 'serving_default' signature; "
                f"signatures: {sorted(signatures)}."
            )
        _, kwargs = sig.structured_input_signature
        if len(kwargs) != 1:
            raise ValueError(
                f"Hub model signature takes inputs {sorted(kwargs)}; expected exactly one image/video tensor."
            )
        name, spec = next(iter(kwargs.items()))
        return sig, name, spec, sig.structured_outputs

    def _output_dim(self, out_spec) -> int:
        if isinstance(out_spec, dict) and len(out_spec) == 1:
            out_spec = next(iter(out_spec.values()))
        if isinstance(out_spec, tf.TensorSpec) and out_spec.shape.rank and out_spec.shape[-1] is not None:
            return int(out_spec.shape[-1])
        # Unknown statically: run one blank input through the model.
        s = self.cfg.image_size
        shape = (1, self.cfg.clip_frames, s, s, 3) if self.is_video else (1, s, s, 3)
        return int(self._call(np.zeros(shape, np.float32)).shape[-1])

    def _call(self, batch) -> np.ndarray:
        x = tf.convert_to_tensor(batch, tf.float32)
        out = self._fn(x) if self._input_name is None else self._fn(**{self._input_name: x})
        return _pool_output(out, f"Hub model {self.cfg.handle}").numpy()

    def _extract(self, frames: np.ndarray, frame_rate: float, n: int) -> np.ndarray:
        s = self.cfg.image_size
        outs = []
        if self.is_video:
            # Frames are resized batch by batch (overlapping clips resize some twice),
            # which bounds memory whatever the video's length.
            length = self.cfg.clip_frames
            clips = base.clip_indices(frames.shape[0], frame_rate, self.cfg.rate, n, length)
            per_batch = max(1, base.MODEL_BATCH_FRAMES // length)
            for i in range(0, n, per_batch):
                batch = clips[i : i + per_batch]
                images = base.resize_frames(frames[batch.ravel()], s) * (1.0 / 255.0)
                outs.append(self._call(tf.reshape(images, (len(batch), length, s, s, 3))))
            return np.concatenate(outs, axis=0)
        idx = base.frame_indices(frames.shape[0], frame_rate, self.cfg.rate, n)
        unique, inverse = np.unique(idx, return_inverse=True)
        for i in range(0, len(unique), base.MODEL_BATCH_FRAMES):
            outs.append(
                self._call(base.resize_frames(frames[unique[i : i + base.MODEL_BATCH_FRAMES]], s) * (1.0 / 255.0))
            )
        return np.concatenate(outs, axis=0)[inverse]
