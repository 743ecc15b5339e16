"""The localization task's config: its data, model (MALTA / ABLR) and eval sections, registered as task 'localization'."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from avalign import hyperparams
from trainer import config as config_lib
from trainer import registry

MODALITIES = ("av", "v", "a")
HEADS = ("attention_regression", "feature_regression")
_POSITIVE = "[1, inf)"
_FROM_RECORDS = "0 takes it from the records"


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

    num_segments: int = hyperparams.field(128, bounds=_POSITIVE)
    video_dim: int = hyperparams.field(4096, bounds="[0, inf)", why=_FROM_RECORDS)
    audio_dim: int = hyperparams.field(128, bounds="[0, inf)", why=_FROM_RECORDS)
    video_hidden: int = hyperparams.field(256, bounds=_POSITIVE)
    audio_hidden: int = hyperparams.field(64, bounds=_POSITIVE)
    text_hidden: int = hyperparams.field(256, bounds=_POSITIVE)
    attention_units: int = hyperparams.field(256, bounds=_POSITIVE)
    regression_hidden: int = hyperparams.field(64, bounds=_POSITIVE)
    embedding_dim: int = hyperparams.field(300, bounds=_POSITIVE)
    vocab_size: int = hyperparams.field(
        20000, bounds="[3, inf)", why="padding, out-of-vocabulary and at least one word"
    )
    max_caption_tokens: int = hyperparams.field(32, bounds=_POSITIVE)
    modalities: Literal["av", "v", "a"] = "av"
    head: Literal["attention_regression", "feature_regression"] = "attention_regression"
    dropout: float = hyperparams.field(0.5, bounds="[0, 1)")
    fasttext_path: Optional[str] = None
    trainable_embeddings: bool = True
    span_loss_weight: float = hyperparams.field(1.0, bounds="[0, inf)")
    calibration_loss_weight: float = hyperparams.field(5.0, bounds="[0, inf)")

    def __post_init__(self):
        hyperparams.validate(self)
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {self.modalities!r}.")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}.")
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


@dataclasses.dataclass
class LocalizationDataConfig(config_lib.DataConfig):
    """The shared data settings, plus what the localization model reads from the records.

    Attributes:
      visual_streams: visual streams fed to the model, concatenated.
      audio_feature: 'logmel' frames, 'mfcc' (+deltas) computed in-graph from
        them, 'avlnet': frame embeddings of an exported AVLnet audio encoder, or
        'hub': the TF Hub audio embedding stream the preprocessing job stored
        (`audio_embedding.handle`).
      audio_encoder: SavedModel dir of an exported AVLnet audio encoder (for
        audio_feature 'avlnet').
      caption_field: 'text' (caption in the annotation language) or 'text_en'.
    """

    visual_streams: list[str] = dataclasses.field(default_factory=lambda: ["visual_2d", "visual_3d"])
    audio_feature: Literal["logmel", "mfcc", "avlnet", "hub"] = "mfcc"
    audio_encoder: str = ""
    caption_field: Literal["text", "text_en"] = "text"

    def __post_init__(self):
        super().__post_init__()
        if not self.visual_streams:
            raise ValueError("data.visual_streams must name at least one stream (visual_2d, visual_3d).")
        for s in self.visual_streams:
            if s not in ("visual_2d", "visual_3d"):
                raise ValueError(f"data.visual_streams: unknown stream {s!r}; valid: visual_2d, visual_3d.")
        if self.audio_feature == "avlnet" and not self.audio_encoder:
            raise ValueError("data.audio_feature 'avlnet' needs data.audio_encoder (an exported encoder dir).")


@dataclasses.dataclass
class LocalizationEvalConfig(config_lib.EvalConfig):
    """How spans are decoded and scored.

    Attributes:
      num_plot_examples: validation captions whose attention is drawn to
        TensorBoard each epoch.
      window_seconds: inference over videos longer than this uses overlapping
        windows of this length whose proposals are merged (0: off).
      window_stride_seconds: stride of those windows.
      span_decoder: spans from the model's regression head ('head') or read
        off its calibrated attention ('attention': the contiguous segments
        around the attention peak holding at least `attention_threshold` × the
        peak). Both are always reported.
      attention_threshold: fraction of the peak for the 'attention' decoder.
      nms_iou: with the 'attention' decoder, R@5 is also reported: every
        attention peak proposes runs at several thresholds, and temporal NMS
        at this IoU keeps the five best distinct ones.
    """

    num_plot_examples: int = hyperparams.field(4, bounds="[0, inf)")
    window_seconds: float = hyperparams.field(0.0, bounds="[0, inf)")
    window_stride_seconds: float = hyperparams.field(0.0, bounds="[0, inf)")
    span_decoder: Literal["head", "attention"] = "head"
    attention_threshold: float = hyperparams.field(0.3, bounds="(0, 1]")
    nms_iou: float = hyperparams.field(0.5, bounds="[0, 1]")


@registry.register_config("localization")
@dataclasses.dataclass
class LocalizationConfig(config_lib.ExperimentConfig):
    """A caption localization experiment (MALTA, ABLR or audio-only by `model.modalities`)."""

    task: str = "localization"
    data: LocalizationDataConfig = dataclasses.field(default_factory=LocalizationDataConfig)
    model: LocalizationModelConfig = dataclasses.field(default_factory=LocalizationModelConfig)
    eval: LocalizationEvalConfig = dataclasses.field(default_factory=LocalizationEvalConfig)
