"""Keras layers of the MALTA / ABLR co-attention caption localizer.

Reading of the paper (Konda et al., section 3, and ABLR, which it builds on):

* Encoders. Each modality goes through a single-layer bidirectional LSTM; at
  every time step the forward and backward hidden states are concatenated,
  [h_fwd_t; h_bwd_t], and "a linear layer applied to its hidden states" (with a
  ReLU, as in ABLR's fusion layer) maps that 2H vector back to H. The result is
  one H-wide state per segment or word. The caption's sentence vector is the
  mean of its word states over real (non-padding) tokens, as in ABLR; the paper's
  "final hidden state" wording is not followed because a masked mean is what
  ABLR's released model computes and it does not depend on padding.
* Co-attention, three steps: (1) the sentence vector guides one attention over
  the video segments and one over the audio segments; (2) the concatenated
  attended video and audio vectors guide an attention over the caption's word
  states (the word sequence, not the sentence mean); (3) the attended caption
  guides the video and audio attentions again, with step 1's parameters.
* The final video and audio attentions a_V, a_A are what eq. 2 calibrates and,
  summed and renormalized, what the attention-regression head reads.
"""

from __future__ import annotations

import keras
from keras import ops

from trainer.localization.config import MODALITIES

_NEG_INF = -1e9


def _validate_units(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _validate_rate(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}.")


def masked_softmax(logits, mask=None):
    """Softmax over the last axis that gives masked positions exactly zero weight.

    Args:
      logits: float tensor [..., N].
      mask: bool or 0/1 float tensor [..., N]; None means all valid.

    Returns:
      float32 weights [..., N] summing to 1 over valid positions, and all zeros
      on a row with no valid position (never NaN).
    """
    logits = ops.cast(logits, "float32")
    if mask is None:
        return ops.softmax(logits, axis=-1)
    valid = ops.cast(mask, "float32") > 0.5
    logits = ops.where(valid, logits, _NEG_INF)
    logits = logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    exp = ops.exp(logits) * ops.cast(valid, "float32")
    total = ops.sum(exp, axis=-1, keepdims=True)
    # A fully masked row has total 0: divide by 1 instead and keep its zeros.
    return exp / ops.where(total > 0, total, 1.0)


def masked_mean(sequence, mask):
    """Mean of `sequence` [B, N, D] over the positions where `mask` [B, N] is set.

    Rows with no valid position give zeros.
    """
    weights = ops.cast(ops.cast(mask, "float32") > 0.5, sequence.dtype)
    total = ops.sum(sequence * ops.expand_dims(weights, -1), axis=1)
    count = ops.sum(weights, axis=1, keepdims=True)
    return total / ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="avalign")
class AdditiveAttention(keras.layers.Layer):
    """Guided additive attention: e_i = w^T tanh(W g + U x_i + b), a = softmax(e).

    Calling one instance twice shares W, U, b and w between the calls, which is
    how MALTA's step 3 reuses step 1's parameters; the guides of both calls must
    then have the same width.

    Args:
      units: width of the tanh layer.
      **kwargs: base layer arguments.

    Raises:
      ValueError: `units` is not a positive integer.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        _validate_units("units", units)
        self.units = units

    def build(self, sequence_shape, guide_shape, sequence_mask_shape=None):
        self.guide_kernel = self.add_weight(
            name="guide_kernel", shape=(guide_shape[-1], self.units), initializer="glorot_uniform"
        )
        self.sequence_kernel = self.add_weight(
            name="sequence_kernel", shape=(sequence_shape[-1], self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.score_kernel = self.add_weight(name="score_kernel", shape=(self.units, 1), initializer="glorot_uniform")
        self.built = True

    def call(self, sequence, guide, sequence_mask=None):
        """Attends over `sequence`.

        Args:
          sequence: [B, N, D] states x_i.
          guide: [B, G] guidance vector g.
          sequence_mask: optional [B, N] bool or 0/1 float; padded positions get
            weight 0.

        Returns:
          (attended [B, D], weights [B, N]).
        """
        projected = ops.matmul(sequence, self.sequence_kernel)
        projected = projected + ops.expand_dims(ops.matmul(guide, self.guide_kernel), 1) + self.bias
        logits = ops.squeeze(ops.matmul(ops.tanh(projected), self.score_kernel), axis=-1)
        weights = ops.cast(masked_softmax(logits, sequence_mask), sequence.dtype)
        attended = ops.sum(ops.expand_dims(weights, -1) * sequence, axis=1)
        return attended, weights

    def compute_output_shape(self, sequence_shape, guide_shape, sequence_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1]), tuple(sequence_shape[:2])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="avalign")
class SequenceEncoder(keras.layers.Layer):
    """Bidirectional LSTM, then Dense+ReLU over each step's [forward; backward] states.

    Padded steps are skipped by the LSTMs (so the backward pass starts at the
    last real step) and their output states are zeros.

    Args:
      units: LSTM units per direction and output width.
      dropout: dropout rate on the BiLSTM outputs during training.
      **kwargs: base layer arguments.

    Raises:
      ValueError: `units` not positive or `dropout` outside [0, 1).
    """

    def __init__(self, units: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        _validate_units("units", units)
        _validate_rate(dropout)
        self.units = units
        self.dropout = dropout
        self.bilstm = keras.layers.Bidirectional(
            keras.layers.LSTM(units, return_sequences=True, dtype=self.dtype_policy),
            merge_mode="concat",
            name="bilstm",
            dtype=self.dtype_policy,
        )
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=self.dtype_policy)
        self.fuse = keras.layers.Dense(units, activation="relu", name="fuse", dtype=self.dtype_policy)

    def build(self, sequence_shape, sequence_mask_shape=None):
        self.bilstm.build(sequence_shape)
        self.fuse.build(tuple(sequence_shape[:-1]) + (2 * self.units,))
        self.built = True

    def call(self, sequence, sequence_mask=None, training=None):
        """Encodes a padded sequence.

        Args:
          sequence: [B, T, D] features.
          sequence_mask: optional [B, T] bool or 0/1 float, 1 on real steps;
            padding must be at the end (right-padded, as the data pipeline
            writes it), which cuDNN requires.
          training: whether dropout is active.

        Returns:
          [B, T, units] states, zero on padded steps.
        """
        valid = lstm_mask = None
        if sequence_mask is not None:
            valid = ops.cast(sequence_mask, "float32") > 0.5
            # cuDNN rejects a sequence with no valid step (CUDNN_STATUS_BAD_PARAM,
            # tensorflow#36139), so such a row runs its first step; its outputs
            # are zeroed below like every padded step's.
            first_step = ops.cumsum(ops.ones_like(valid, dtype="int32"), axis=-1) == 1
            empty_row = ops.logical_not(ops.any(valid, axis=-1, keepdims=True))
            lstm_mask = ops.logical_or(valid, ops.logical_and(empty_row, first_step))
        states = self.bilstm(sequence, mask=lstm_mask, training=training)
        states = self.dropout_layer(states, training=training)
        states = self.fuse(states)
        if valid is not None:
            states = states * ops.expand_dims(ops.cast(valid, states.dtype), -1)
        return states

    def compute_output_shape(self, sequence_shape, sequence_mask_shape=None):
        return tuple(sequence_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "dropout": self.dropout})
        return config


@keras.saving.register_keras_serializable(package="avalign")
class CaptionEncoder(keras.layers.Layer):
    """Word embeddings, then a `SequenceEncoder` over the caption's tokens.

    Args:
      vocabulary_size: number of token ids, padding (0) and OOV (1) included.
      embedding_dim: embedding width.
      units: BiLSTM units per direction and output width.
      dropout: dropout rate on the BiLSTM outputs.
      trainable_embeddings: whether the embedding matrix is fine-tuned.
      **kwargs: base layer arguments.

    Raises:
      ValueError: a non-positive size, or `dropout` outside [0, 1).
    """

    def __init__(
        self,
        vocabulary_size: int,
        embedding_dim: int,
        units: int,
        dropout: float = 0.0,
        trainable_embeddings: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate_units("vocabulary_size", vocabulary_size)
        _validate_units("embedding_dim", embedding_dim)
        _validate_units("units", units)
        _validate_rate(dropout)
        self.vocabulary_size = vocabulary_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.dropout = dropout
        self.trainable_embeddings = bool(trainable_embeddings)
        self.embedding = keras.layers.Embedding(
            vocabulary_size,
            embedding_dim,
            trainable=self.trainable_embeddings,
            name="embedding",
            dtype=self.dtype_policy,
        )
        self.encoder = SequenceEncoder(units, dropout, name="word_encoder", dtype=self.dtype_policy)

    def build(self, token_ids_shape):
        self.embedding.build(token_ids_shape)
        self.encoder.build(tuple(token_ids_shape) + (self.embedding_dim,))
        self.built = True

    def set_embedding_matrix(self, matrix) -> None:
        """Overwrites the word embeddings (e.g. with `load_fasttext_vectors`).

        Raises:
          ValueError: `matrix` is not [vocabulary_size, embedding_dim].
        """
        shape = tuple(ops.shape(matrix))
        if shape != (self.vocabulary_size, self.embedding_dim):
            raise ValueError(
                f"embedding matrix has shape {shape}, expected ({self.vocabulary_size}, {self.embedding_dim})."
            )
        self.embedding.embeddings.assign(ops.cast(matrix, self.embedding.embeddings.dtype))

    def call(self, token_ids, training=None):
        """Encodes token ids.

        Args:
          token_ids: int [B, L], 0 = padding.
          training: whether dropout is active.

        Returns:
          (word states [B, L, units], word mask [B, L] float 0/1).
        """
        mask = ops.not_equal(token_ids, 0)
        states = self.encoder(self.embedding(token_ids), mask, training=training)
        return states, ops.cast(mask, states.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "embedding_dim": self.embedding_dim,
                "units": self.units,
                "dropout": self.dropout,
                "trainable_embeddings": self.trainable_embeddings,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="avalign")
class CoAttention(keras.layers.Layer):
    """MALTA's three-step co-attention among video, audio and caption words.

    With `modalities="v"` (ABLR) or `"a"` the missing branch is absent: step 2's
    guide is the one attended modality, and both channels of the `attention`
    output hold the one attention.

    Args:
      modalities: "av", "v" or "a".
      units: width of every attention's tanh layer.
      **kwargs: base layer arguments.

    Raises:
      ValueError: unknown `modalities` or non-positive `units`.
    """

    def __init__(self, modalities: str = "av", units: int = 256, **kwargs):
        super().__init__(**kwargs)
        if modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {modalities!r}.")
        _validate_units("units", units)
        self.modalities = modalities
        self.units = units

        def attention(name):
            return AdditiveAttention(units, name=name, dtype=self.dtype_policy)

        self.video_attention = attention("video_attention") if "v" in modalities else None
        self.audio_attention = attention("audio_attention") if "a" in modalities else None
        self.word_attention = attention("word_attention")

    def _check_inputs(self, video, audio):
        if self.video_attention is not None and video is None:
            raise ValueError(f"CoAttention(modalities={self.modalities!r}) needs `video` states.")
        if self.audio_attention is not None and audio is None:
            raise ValueError(f"CoAttention(modalities={self.modalities!r}) needs `audio` states.")

    def build(self, words_shape, word_mask_shape, segment_mask_shape, video_shape=None, audio_shape=None):
        self._check_inputs(video_shape, audio_shape)
        sentence_shape = (words_shape[0], words_shape[-1])
        guide_width = 0
        if self.video_attention is not None:
            self.video_attention.build(video_shape, sentence_shape)
            guide_width += video_shape[-1]
        if self.audio_attention is not None:
            self.audio_attention.build(audio_shape, sentence_shape)
            guide_width += audio_shape[-1]
        self.word_attention.build(words_shape, (words_shape[0], guide_width))
        self.built = True

    def _attend_segments(self, guide, video, audio, segment_mask):
        """Runs the video and audio attentions (whichever exist) with one guide."""
        results = {}
        if self.video_attention is not None:
            results["video"] = self.video_attention(video, guide, segment_mask)
        if self.audio_attention is not None:
            results["audio"] = self.audio_attention(audio, guide, segment_mask)
        return results

    def call(self, words, word_mask, segment_mask, video=None, audio=None):
        """Runs the three steps.

        Args:
          words: [B, L, H_t] word states.
          word_mask: [B, L], 1 on real tokens.
          segment_mask: [B, M], 1 on real segments.
          video: [B, M, H_v] video states (required when the variant uses video).
          audio: [B, M, H_a] audio states (required when the variant uses audio).

        Returns:
          A dict:
            "attention": [B, M, 2] final video (channel 0) and audio (channel 1)
              attention weights;
            "fused_attention": [B, M] their sum renormalized over real segments;
            "features": [B, H_v + H_a + H_t] attended video, audio and caption;
            "word_attention": [B, L] step-2 weights over the words.
        """
        self._check_inputs(video, audio)
        sentence = masked_mean(words, word_mask)
        step1 = self._attend_segments(sentence, video, audio, segment_mask)
        word_guide = ops.concatenate([attended for attended, _ in step1.values()], axis=-1)
        attended_text, word_weights = self.word_attention(words, word_guide, word_mask)
        step3 = self._attend_segments(attended_text, video, audio, segment_mask)

        video_weights = step3["video"][1] if "video" in step3 else step3["audio"][1]
        audio_weights = step3["audio"][1] if "audio" in step3 else step3["video"][1]
        summed = video_weights + audio_weights
        total = ops.sum(summed, axis=-1, keepdims=True)
        fused = summed / ops.where(total > 0, total, ops.ones_like(total))
        features = ops.concatenate([attended for attended, _ in step3.values()] + [attended_text], axis=-1)
        return {
            "attention": ops.stack([video_weights, audio_weights], axis=-1),
            "fused_attention": fused,
            "features": features,
            "word_attention": word_weights,
        }

    def get_config(self):
        config = super().get_config()
        config.update({"modalities": self.modalities, "units": self.units})
        return config


@keras.saving.register_keras_serializable(package="avalign")
class SpanRegressor(keras.layers.Layer):
    """Dense+ReLU, Dense(2), sigmoid, then sorted: a normalized (start, end).

    Sorting the two sigmoid outputs (start = min, end = max) guarantees
    start <= end without privileging either output unit; the gradient of each
    target flows to whichever unit currently holds it. ABLR's own head ends in
    a ReLU with no upper bound and no ordering; its hidden Dense has no
    activation, which would make the two Denses one linear map, so a ReLU is
    used here.

    Args:
      hidden_units: width of the hidden Dense.
      **kwargs: base layer arguments.

    Raises:
      ValueError: `hidden_units` is not a positive integer.
    """

    def __init__(self, hidden_units: int, **kwargs):
        super().__init__(**kwargs)
        _validate_units("hidden_units", hidden_units)
        self.hidden_units = hidden_units
        self.hidden = keras.layers.Dense(hidden_units, activation="relu", name="hidden", dtype=self.dtype_policy)
        self.output_dense = keras.layers.Dense(2, name="output", dtype=self.dtype_policy)

    def build(self, inputs_shape):
        self.hidden.build(inputs_shape)
        self.output_dense.build(tuple(inputs_shape[:-1]) + (self.hidden_units,))
        self.built = True

    def call(self, inputs):
        """Maps [B, F] features to a [B, 2] (start, end) in [0, 1]."""
        bounds = ops.sigmoid(self.output_dense(self.hidden(inputs)))
        return ops.stack([ops.min(bounds, axis=-1), ops.max(bounds, axis=-1)], axis=-1)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (2,)

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_units": self.hidden_units})
        return config
