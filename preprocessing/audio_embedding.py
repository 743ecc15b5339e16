"""Frozen TF Hub / SavedModel audio embeddings (YAMNet, VGGish or alike) as an audio feature extractor."""

from __future__ import annotations

import logging
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from avalign.audio import validate_waveform


class HubAudioEmbedding:
    """A frozen TF Hub / SavedModel audio embedding model (YAMNet, VGGish or alike).

    Loaded with `tensorflow_hub.load` (a local directory or a URL), and called on a
    mono waveform at `sample_rate`. A model may return one tensor, a tuple/list (for
    YAMNet: scores, embeddings, log-Mel) or a dict; `output_key` picks the embeddings
    (an index for a sequence, a key for a dict) and may be left None only when there
    is a single output.

    Args:
      handle: TF Hub handle: a local SavedModel directory or a URL.
      output_key: which output holds the embeddings.
      hop_seconds: seconds between consecutive embedding frames (0.48 for YAMNet).
      sample_rate: waveform rate the model expects.
      signature: call this named signature instead of the object's `__call__`
        (needed for models that only export signatures).

    Raises:
      ValueError: if the handle cannot be loaded, `hop_seconds` or `sample_rate` is
        not positive, or the model is neither callable nor has `signature`.
    """

    def __init__(
        self,
        handle: str,
        output_key: Optional[Union[int, str]] = None,
        hop_seconds: float = 0.48,
        sample_rate: int = 16000,
        signature: Optional[str] = None,
    ):
        import tensorflow_hub as hub

        if hop_seconds <= 0:
            raise ValueError(f"hop_seconds must be > 0, got {hop_seconds}.")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}.")
        self.handle = handle
        self.output_key = output_key
        self.hop_seconds = float(hop_seconds)
        self.sample_rate = int(sample_rate)
        try:
            self._model = hub.load(handle)
        except (OSError, ValueError, tf.errors.OpError) as err:
            raise ValueError(f"could not load TF Hub audio model {handle!r}: {err}") from err
        self._input_name = None
        if signature is not None:
            signatures = getattr(self._model, "signatures", {})
            if signature not in signatures:
                raise ValueError(
                    f"TF Hub model {handle!r} has no signature {signature!r}; it has {sorted(signatures)}."
                )
            self._fn = signatures[signature]
            inputs = self._fn.structured_input_signature[1]
            if len(inputs) != 1:
                raise ValueError(
                    f"signature {signature!r} of {handle!r} must take one waveform input, it takes {sorted(inputs)}."
                )
            self._input_name = next(iter(inputs))
        elif callable(self._model):
            self._fn = self._model
        else:
            raise ValueError(
                f"TF Hub model {handle!r} is not callable; pass signature= one of "
                f"{sorted(getattr(self._model, 'signatures', {}))}."
            )
        logging.info("Loaded TF Hub audio model %s (output %r, %.3f s hop)", handle, output_key, hop_seconds)

    @property
    def rate(self) -> float:
        """Embedding frames per second."""
        return 1.0 / self.hop_seconds

    def _select(self, outputs: Any) -> tf.Tensor:
        key = self.output_key
        if isinstance(outputs, dict):
            if key is None and len(outputs) == 1:
                return next(iter(outputs.values()))
            if key not in outputs:
                raise ValueError(f"output_key={key!r} is not an output of {self.handle!r}; it has {sorted(outputs)}.")
            return outputs[key]
        if isinstance(outputs, (tuple, list)):
            if key is None and len(outputs) == 1:
                return outputs[0]
            if not isinstance(key, int) or not -len(outputs) <= key < len(outputs):
                raise ValueError(
                    f"output_key={key!r} does not index the {len(outputs)} outputs of {self.handle!r}; "
                    f"use an int in [0, {len(outputs)})."
                )
            return outputs[key]
        if key not in (None, 0):
            raise ValueError(f"{self.handle!r} returns a single tensor; output_key must be None or 0, got {key!r}.")
        return outputs

    def __call__(self, waveform: np.ndarray) -> tuple[np.ndarray, float]:
        """Embeds a waveform.

        Args:
          waveform: (samples,) mono float at `sample_rate`, in [-1, 1].

        Returns:
          (embeddings float32 (frames, dim), frames per second).

        Raises:
          ValueError: on a bad waveform, or if the selected output is not
            (frames, dim) (a leading batch of one is dropped).
        """
        array = validate_waveform(waveform)
        tensor = tf.constant(array)
        outputs = self._fn(**{self._input_name: tensor}) if self._input_name else self._fn(tensor)
        embeddings = np.asarray(self._select(outputs), dtype=np.float32)
        if embeddings.ndim == 3 and embeddings.shape[0] == 1:
            embeddings = embeddings[0]
        if embeddings.ndim != 2:
            raise ValueError(
                f"{self.handle!r} output {self.output_key!r} has shape {embeddings.shape}; expected (frames, dim)."
            )
        return embeddings, self.rate
