"""The trained AVLnet audio encoder as a SavedModel that `tensorflow_hub.load` opens.

Loaded object (`m = hub.load(path)` or `tf.saved_model.load(path)`):
  m(waveform)                       waveform [samples] float32 at m.sample_rate Hz
      -> {"frame_embeddings": [ceil(T/16), D], "pooled_embedding": [E]}
  m.embed_waveforms(waveforms)      [B, samples] (equal lengths)
      -> {"frame_embeddings": [B, ceil(T/16), D], "frame_mask": [B, ceil(T/16)],
          "pooled_embedding": [B, E]}
  m.embed_log_mel(log_mel, lengths) [B, T, bins] log-Mel dB frames (the avalign
      front-end's), lengths [B] int32 valid frames -> same dict
  m.sample_rate, m.frame_rate (log-Mel frames/s), m.total_stride (16): variables
Signatures `serving_default` (waveforms) and `embed_log_mel` serve TF Serving too.
The waveform path runs the same log-Mel front-end as preprocessing, in-graph.
`assets.extra/avalign.json` records what made the export (`serving.export_base`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

import keras
import tensorflow as tf

from avalign import audio as audio_lib
from avalign import hyperparams
from avalign.audio import AudioConfig
from serving import export_base
from trainer.retrieval import model as model_lib

# The encoder model's outputs that the module serves, in this order.
_OUTPUTS = ("frame_embeddings", "frame_mask", "pooled_embedding")
# Under the trainer's export dir, as `RetrievalTask.export` has always written it.
EXPORT_NAME = "audio_encoder"


class AudioEncoderModule(export_base.ExportModule):
    """Front-end + ResDAVEnet + pooling head, with raw-input signatures.

    Function keys (see `export_base.ExportModule`): 'waveforms' is
    `embed_waveforms`, exported as `serving_default`; 'log_mel' is
    `embed_log_mel`, exported under that name.

    Args:
      encoder: `trainer.retrieval.model.audio_encoder_model(model)`.
      audio_cfg: the front-end the model was trained with.
      total_stride: frames of log-Mel per output frame.
    """

    default_function_keys = {"waveforms": "serving_default", "log_mel": "embed_log_mel"}

    def __init__(self, encoder: keras.Model, audio_cfg: AudioConfig, total_stride: int):
        super().__init__(
            {"audio": dataclasses.asdict(audio_cfg), "total_stride": total_stride},
            encoder,
            preprocessor=audio_lib.LogMelFrontEnd(audio_cfg),
            name="avlnet_audio_encoder",
        )
        bins = audio_cfg.num_mel_bins
        # Variables, not constants: a loaded encoder tells its rates and stride to its users.
        self.sample_rate = tf.Variable(audio_cfg.sample_rate, trainable=False, dtype=tf.int32, name="sample_rate")
        self.frame_rate = tf.Variable(audio_cfg.frame_rate, trainable=False, dtype=tf.float32, name="frame_rate")
        self.total_stride = tf.Variable(total_stride, trainable=False, dtype=tf.int32, name="total_stride")
        # Built here, not as decorated methods: the log-Mel width comes from the config.
        self.embed_log_mel = tf.function(
            self._embed_log_mel,
            input_signature=[tf.TensorSpec([None, None, bins], tf.float32), tf.TensorSpec([None], tf.int32)],
        )
        self.embed_waveforms = tf.function(self.serve, input_signature=[tf.TensorSpec([None, None], tf.float32)])
        self.__call__ = tf.function(self._call, input_signature=[tf.TensorSpec([None], tf.float32)])

    @classmethod
    def from_avlnet(cls, model: model_lib.AVLnet, audio_cfg: AudioConfig) -> "AudioEncoderModule":
        """The module of a trained AVLnet's audio branch (sharing its weights)."""
        return cls(model_lib.audio_encoder_model(model), audio_cfg, model.retrieval_config.total_stride)

    def functions(self) -> Mapping[str, tf.types.experimental.PolymorphicFunction]:
        return {"waveforms": self.embed_waveforms, "log_mel": self.embed_log_mel}

    def serve(self, waveforms: tf.Tensor) -> dict[str, tf.Tensor]:
        """Embeddings of equal-length waveforms [B, samples], through the training front-end."""
        log_mel = self.preprocessor.batch(waveforms)
        lengths = tf.fill([tf.shape(log_mel)[0]], tf.shape(log_mel)[1])
        return self._embed_log_mel(log_mel, lengths)

    def _embed_log_mel(self, log_mel: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.inference_step({"audio": log_mel, "audio_length": lengths})
        return {k: out[k] for k in _OUTPUTS}

    def _call(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.serve(waveform[None])
        return {"frame_embeddings": out["frame_embeddings"][0], "pooled_embedding": out["pooled_embedding"][0]}


def export_audio_encoder(
    model: model_lib.AVLnet,
    audio_cfg: AudioConfig,
    base_dir: str,
    metadata: Optional[Mapping[str, Any]] = None,
) -> str:
    """Exports the audio branch of a trained AVLnet into `<base_dir>/<next version>/`.

    Args:
      model: the trained AVLnet.
      audio_cfg: the front-end its records were made with.
      base_dir: the encoder's directory of versions.
      metadata: JSON-ready facts of what made the model, recorded in the
        export's `assets.extra/avalign.json`.

    Returns:
      The version directory written.
    """
    return export_base.export(AudioEncoderModule.from_avlnet(model, audio_cfg), base_dir, metadata=metadata)


def export_after_training(task, model: model_lib.AVLnet, export_root: str) -> list[str]:
    """The trainer's export hook for retrieval (entry point `avalign.exporters`: `retrieval`).

    Writes the audio encoder into `<export_root>/audio_encoder/<next version>/`,
    recording the task, the job dir, the resolved config and its digest.

    Args:
      task: the `trainer.retrieval.task.RetrievalTask` that trained `model`
        (prepared: its `info` holds the records' audio front-end).
      model: the trained AVLnet (best weights loaded).
      export_root: the job's export dir.

    Returns:
      The one version directory written.
    """
    metadata = {
        "task": task.name,
        "job_dir": task.job_dir,
        "config_sha256": hyperparams.digest(task.cfg),
        "config": hyperparams.to_dict(task.cfg),
    }
    base = os.path.join(export_root, EXPORT_NAME)
    return [export_audio_encoder(model, task.info.audio_config, base, metadata=metadata)]
