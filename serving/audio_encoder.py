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
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from avalign import audio as audio_lib
from avalign import export_util
from avalign.audio import AudioConfig


class AudioEncoderModule(tf.Module):
    """Front-end + ResDAVEnet + pooling head, with raw-input signatures.

    Args:
      encoder: `trainer.retrieval.model.audio_encoder_model(model)`.
      audio_cfg: the front-end the model was trained with.
      total_stride: frames of log-Mel per output frame.
    """

    def __init__(self, encoder: keras.Model, audio_cfg: AudioConfig, total_stride: int):
        super().__init__(name="avlnet_audio_encoder")
        self.encoder = encoder
        self.front_end = audio_lib.LogMelFrontEnd(audio_cfg)
        bins = audio_cfg.num_mel_bins
        self.sample_rate = tf.Variable(audio_cfg.sample_rate, trainable=False, dtype=tf.int32, name="sample_rate")
        self.frame_rate = tf.Variable(audio_cfg.frame_rate, trainable=False, dtype=tf.float32, name="frame_rate")
        self.total_stride = tf.Variable(total_stride, trainable=False, dtype=tf.int32, name="total_stride")
        self.embed_log_mel = tf.function(
            self._embed_log_mel,
            input_signature=[tf.TensorSpec([None, None, bins], tf.float32), tf.TensorSpec([None], tf.int32)],
        )
        self.embed_waveforms = tf.function(
            self._embed_waveforms, input_signature=[tf.TensorSpec([None, None], tf.float32)]
        )
        self.__call__ = tf.function(self._call, input_signature=[tf.TensorSpec([None], tf.float32)])

    def _embed_log_mel(self, log_mel, lengths):
        out = self.encoder({"audio": log_mel, "audio_length": lengths}, training=False)
        return {k: out[k] for k in ("frame_embeddings", "frame_mask", "pooled_embedding")}

    def _embed_waveforms(self, waveforms):
        log_mel = self.front_end.batch(waveforms)
        lengths = tf.fill([tf.shape(log_mel)[0]], tf.shape(log_mel)[1])
        return self._embed_log_mel(log_mel, lengths)

    def _call(self, waveform):
        out = self._embed_waveforms(waveform[None])
        return {"frame_embeddings": out["frame_embeddings"][0], "pooled_embedding": out["pooled_embedding"][0]}


def export_audio_encoder(model, audio_cfg: AudioConfig, base_dir: str) -> str:
    """Exports the audio branch of a trained AVLnet into `<base_dir>/<next version>/`.

    Returns:
      The version directory written.
    """
    from trainer.retrieval import model as model_lib

    module = AudioEncoderModule(model_lib.audio_encoder_model(model), audio_cfg, model.retrieval_config.total_stride)
    path = export_util.next_version_dir(base_dir)
    tf.saved_model.save(
        module,
        path,
        signatures={"serving_default": module.embed_waveforms, "embed_log_mel": module.embed_log_mel},
    )
    logging.info("Exported the AVLnet audio encoder to %s", path)
    return path
