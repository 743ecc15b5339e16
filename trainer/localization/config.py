"""Typed config of the MALTA / ABLR caption localization model."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

MODALITIES = ("av", "v", "a")
HEADS = ("attention_regression", "feature_regression")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


@dataclasses.dataclass
class LocalizationModelConfig:
    """Architecture, vocabulary and loss weights of the localization model.

    The defaults are the paper's sizes (MALTA section 4, ABLR for what MALTA
    does not state); CPU runs override the widths and `num_segments`.

    Attributes:
      num_segments: M, the fixed number of segments every video is cut into.
        The attention-regression head has an M-wide input layer, so a trained
        model only accepts this M.
      video_dim: width of one video segment's feature vector (4096 for C3D);
        0 in a config file takes it from the records (the trainer fills it in,
        and a non-zero value that disagrees with the records is an error).
      audio_dim: width of one audio segment's feature vector (128 for VGGish); 0 as above.
      video_hidden: units of the video BiLSTM (each direction) and of the
        Dense+ReLU that fuses its two directions.
      audio_hidden: the same for audio; the paper uses a smaller audio branch.
      text_hidden: the same for the caption's words.
      attention_units: width of the additive attentions' tanh layer.
      regression_hidden: units of the hidden Dense of the span head (ABLR: 64).
      embedding_dim: width of the word embeddings (300 for fastText).
      vocab_size: the most token ids the embedding may hold, padding (id 0)
        and out-of-vocabulary (id 1) included; the vocabulary passed to
        `build_model` holds at most `vocab_size - 2` words.
      max_caption_tokens: captions are cut or padded to this many tokens.
      modalities: "av" (MALTA: audio, video and text co-attention), "v" (ABLR:
        video only) or "a" (audio only). Every variant takes the same inputs.
      head: "attention_regression" regresses (start, end) from the fused
        final attention weights; "feature_regression" from the attended
        video, audio and caption features.
      dropout: rate applied to the BiLSTM outputs during training (ABLR: 0.5).
      fasttext_path: optional fastText `.vec` file that initializes the word
        embeddings; random initialization when unset.
      trainable_embeddings: whether the word embeddings are fine-tuned.
      span_loss_weight: weight of the smooth-L1 span loss (eq. 1).
      calibration_loss_weight: weight of the attention calibration loss (eq. 2).
    """

    num_segments: int = 128
    video_dim: int = 4096
    audio_dim: int = 128
    video_hidden: int = 256
    audio_hidden: int = 64
    text_hidden: int = 256
    attention_units: int = 256
    regression_hidden: int = 64
    embedding_dim: int = 300
    vocab_size: int = 20000
    max_caption_tokens: int = 32
    modalities: Literal["av", "v", "a"] = "av"
    head: Literal["attention_regression", "feature_regression"] = "attention_regression"
    dropout: float = 0.5
    fasttext_path: Optional[str] = None
    trainable_embeddings: bool = True
    span_loss_weight: float = 1.0
    calibration_loss_weight: float = 5.0

    def __post_init__(self):
        for name in (
            "num_segments",
            "video_hidden",
            "audio_hidden",
            "text_hidden",
            "attention_units",
            "regression_hidden",
            "embedding_dim",
            "max_caption_tokens",
        ):
            _check_positive(name, getattr(self, name))
        _check_positive("vocab_size", self.vocab_size)
        for name in ("video_dim", "audio_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a positive integer, or 0 to take it from the records; got {value!r}.")
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be >= 3 (padding, out-of-vocabulary and at least one word), got {self.vocab_size}."
            )
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {self.modalities!r}.")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        for name in ("span_loss_weight", "calibration_loss_weight"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if self.span_loss_weight == 0 and self.calibration_loss_weight == 0:
            raise ValueError("span_loss_weight and calibration_loss_weight are both 0: nothing would be trained.")
        if self.fasttext_path is not None and not self.fasttext_path.strip():
            raise ValueError(f"fasttext_path must be a file path or unset, got {self.fasttext_path!r}.")

    @property
    def uses_video(self) -> bool:
        """Whether the variant has a video branch."""
        return "v" in self.modalities

    @property
    def uses_audio(self) -> bool:
        """Whether the variant has an audio branch."""
        return "a" in self.modalities
