"""Builds the MALTA (audio+video), ABLR (video) and audio-only caption localizers."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np

from trainer import guards
from trainer.localization import layers, losses, metrics, text
from trainer.localization.config import LocalizationModelConfig

# Input and output names: the data pipeline's feature dict, the serving
# signature's arguments and compile()'s loss/metric keys all use these.
VIDEO = "video"
AUDIO = "audio"
SEGMENT_MASK = "segment_mask"
CAPTION = "caption"
TOKENS = "tokens"
SPAN = "span"
ATTENTION = "attention"

_NAMES = {"av": "malta", "v": "ablr", "a": "audio_only"}


def build_model(
    cfg: LocalizationModelConfig,
    vocabulary: Sequence[str],
    embedding_matrix: np.ndarray | None = None,
) -> keras.Model:
    """Builds the functional localization model, from caption token ids.

    Caption text becomes token ids in one way, `tokenize_inputs` with
    `caption_tokenizer(cfg, vocabulary)`: in tf.data for training (distributed
    `fit` can't take string inputs), and in front of the model for raw text
    (`with_text_input`).

    Inputs (a dict; every variant takes all four, so one dataset serves all):
      "video": float32 [B, M, video_dim] segment features (ignored by "a").
      "audio": float32 [B, M, audio_dim] segment features (ignored by "v").
      "segment_mask": float32 [B, M], 1 on real segments, right-padded.
        Padded segments may hold anything; a caption with NaN or Inf in a real
        segment of a stream the variant uses is treated as having no segment.
      "tokens": int32 [B, max_caption_tokens] caption ids from
        `caption_tokenizer(cfg, vocabulary)`.

    Outputs (a dict):
      "span": float32 [B, 2] normalized (start, end), 0 <= start <= end <= 1.
      "attention": float32 [B, M, 2] final video (channel 0) and audio
        (channel 1) attention weights; single-modality variants repeat their
        one attention in both channels.

    Args:
      cfg: the model config.
      vocabulary: caption vocabulary from `text.build_vocabulary`, without
        padding and OOV entries.
      embedding_matrix: optional [len(vocabulary) + 2, embedding_dim] initial
        word embeddings. When None and `cfg.fasttext_path` is set, they are read
        from that file; otherwise they are random.

    Returns:
      The uncompiled `keras.Model`; compile it with `compile_arguments(cfg)`.

    Raises:
      ValueError: a vocabulary larger than `cfg.vocab_size - 2`, or a bad
        vocabulary or embedding matrix.
    """
    if not (cfg.video_dim and cfg.audio_dim):
        raise ValueError(
            f"video_dim={cfg.video_dim} and audio_dim={cfg.audio_dim} must be set (0 means 'from the records', "
            "which the trainer resolves before building)."
        )
    vocabulary = list(vocabulary)
    num_ids = len(vocabulary) + text.NUM_SPECIAL_TOKENS
    if num_ids > cfg.vocab_size:
        raise ValueError(
            f"vocabulary has {len(vocabulary)} words, but vocab_size={cfg.vocab_size} allows at most "
            f"{cfg.vocab_size - text.NUM_SPECIAL_TOKENS} (2 ids are padding and OOV)."
        )
    if embedding_matrix is None and cfg.fasttext_path:
        embedding_matrix = text.load_fasttext_vectors(cfg.fasttext_path, vocabulary, cfg.embedding_dim)

    inputs = {
        VIDEO: keras.Input(shape=(cfg.num_segments, cfg.video_dim), dtype="float32", name=VIDEO),
        AUDIO: keras.Input(shape=(cfg.num_segments, cfg.audio_dim), dtype="float32", name=AUDIO),
        SEGMENT_MASK: keras.Input(shape=(cfg.num_segments,), dtype="float32", name=SEGMENT_MASK),
        TOKENS: keras.Input(shape=(cfg.max_caption_tokens,), dtype="int32", name=TOKENS),
    }
    caption_encoder = layers.CaptionEncoder(
        num_ids,
        cfg.embedding_dim,
        cfg.text_hidden,
        dropout=cfg.dropout,
        trainable_embeddings=cfg.trainable_embeddings,
        name="caption_encoder",
    )
    words, word_mask = caption_encoder(inputs[TOKENS])

    # NaN/Inf stop here, before any layer: padded segments become zeros, and a
    # caption with a non-finite value in a real segment of a stream the variant
    # uses keeps no segment (its attention is all zeros, as for a caption without
    # segments). float32, so that the finiteness test sees the inputs as given.
    streams = [name for name, used in ((VIDEO, cfg.uses_video), (AUDIO, cfg.uses_audio)) if used]
    clean, segment_mask = guards.NonFiniteGuard(name="input_guard", dtype="float32")(
        [inputs[name] for name in streams], inputs[SEGMENT_MASK]
    )
    clean = dict(zip(streams, clean))

    segment_states = {}
    if cfg.uses_video:
        segment_states[VIDEO] = layers.SequenceEncoder(cfg.video_hidden, cfg.dropout, name="video_encoder")(
            clean[VIDEO], segment_mask
        )
    if cfg.uses_audio:
        segment_states[AUDIO] = layers.SequenceEncoder(cfg.audio_hidden, cfg.dropout, name="audio_encoder")(
            clean[AUDIO], segment_mask
        )
    # The attention weights, the span and everything after the encoders stay in
    # float32 under a mixed-precision policy: eq. 2 takes logs of small weights.
    co_attention = layers.CoAttention(cfg.modalities, cfg.attention_units, name="co_attention", dtype="float32")(
        words, word_mask, segment_mask, **segment_states
    )
    head_input = co_attention["fused_attention"] if cfg.head == "attention_regression" else co_attention["features"]
    span = layers.SpanRegressor(cfg.regression_hidden, name=SPAN, dtype="float32")(head_input)

    model = keras.Model(
        inputs=inputs,
        outputs={SPAN: span, ATTENTION: co_attention["attention"]},
        name=f"{_NAMES[cfg.modalities]}_{cfg.head}",
    )
    if embedding_matrix is not None:
        caption_encoder.set_embedding_matrix(embedding_matrix)
    return model


def caption_tokenizer(cfg: LocalizationModelConfig, vocabulary: Sequence[str]) -> text.CaptionTokenizer:
    """The tokenizer that gives `build_model(cfg, vocabulary)` its "tokens" from raw caption text."""
    return text.CaptionTokenizer(list(vocabulary), cfg.max_caption_tokens, name="tokenizer")


def tokenize_inputs(inputs: Mapping[str, Any], tokenizer: text.CaptionTokenizer) -> dict[str, Any]:
    """`inputs` with their raw "caption" strings replaced by "tokens" ids.

    The one place caption text becomes token ids: tf.data maps batches through
    it, and `with_text_input` applies it to symbolic inputs in front of a model.

    Args:
      inputs: the model's input dict with "caption" [B] strings instead of
        "tokens" (tensors, arrays or `keras.Input`s).
      tokenizer: from `caption_tokenizer`.

    Returns:
      The same dict with "tokens" int32 [B, max_caption_tokens] for "caption".
    """
    return {**{k: v for k, v in inputs.items() if k != CAPTION}, TOKENS: tokenizer(inputs[CAPTION])}


def with_text_input(model: keras.Model, tokenizer: text.CaptionTokenizer) -> keras.Model:
    """`model` behind `tokenizer`: raw caption strings in instead of token ids, the same outputs.

    Args:
      model: a functional model with a "tokens" input (`build_model`'s, or one
        around it, e.g. with feature normalization in front).
      tokenizer: from `caption_tokenizer` for the model's vocabulary.

    Returns:
      A functional `keras.Model` named "<model.name>_text" that shares `model`'s
      weights; it saves and loads as `.keras` and exports with string inputs.
    """
    inputs = {
        name: keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)
        for name, tensor in model.input.items()
        if name != TOKENS
    }
    inputs[CAPTION] = keras.Input(shape=(), dtype="string", name=CAPTION)
    return keras.Model(inputs, model(tokenize_inputs(inputs, tokenizer)), name=f"{model.name}_text")


def compile_arguments(cfg: LocalizationModelConfig) -> dict[str, Any]:
    """Losses, loss weights and metrics for `model.compile(optimizer=..., **compile_arguments(cfg))`.

    The labels the dataset yields must be a dict: "span" [B, 2] normalized
    ground truth and "attention" [B, M] from `losses.calibration_targets`.

    Returns:
      {"loss": ..., "loss_weights": ..., "metrics": ...} keyed by output name.
    """
    return {
        "loss": {SPAN: losses.SpanSmoothL1(), ATTENTION: losses.AttentionCalibration(cfg.modalities)},
        "loss_weights": {SPAN: cfg.span_loss_weight, ATTENTION: cfg.calibration_loss_weight},
        "metrics": {SPAN: [metrics.RecallAtIoU(t) for t in metrics.DEFAULT_THRESHOLDS] + [metrics.MeanIoU()]},
    }
