"""The experiment config: task, data, model, train, runtime, eval, export."""

from __future__ import annotations

import dataclasses
from typing import Literal

from avalign import hyperparams
from trainer.localization.config import LocalizationModelConfig
from trainer.retrieval.config import RetrievalModelConfig


@dataclasses.dataclass
class DataConfig:
    """Where the records are and how examples are cut from them.

    Attributes:
      records_dir: output dir of `python -m preprocessing.pipeline` (holds schema.json).
      train_split: split trained on.
      eval_split: split validated on each epoch (early stopping, TensorBoard).
      test_split: split of the final evaluation.
      languages: keep only training videos in these speech languages (empty: all).
      eval_languages: languages of the validation and test videos (empty: the
        same as `languages`); differs for zero-shot cross-language evaluation.
      max_train_videos: keep the first N training videos by id (0: all), for
        low-resource experiments.
      visual_streams: visual streams fed to the model, concatenated.
      audio_feature: 'logmel' frames, 'mfcc' (+deltas) computed in-graph from
        them, 'avlnet': frame embeddings of an exported AVLnet audio encoder, or
        'hub': the TF Hub audio embedding stream the preprocessing job stored
        (`audio_embedding.handle`).
      audio_encoder: SavedModel dir of an exported AVLnet audio encoder (for
        audio_feature 'avlnet').
      caption_field: 'text' (caption in the annotation language) or 'text_en'.
      shuffle_buffer: examples in the training shuffle buffer.
      cache: cache parsed examples in memory after the first epoch.
      on_bad_record: 'error' stops before training on a record that lacks a
        required feature or has inconsistent dims; 'skip' counts and skips it.
      clip_source: retrieval clips: one per caption ('captions') or fixed
        windows over the whole video ('windows', for unlabeled video).
      window_seconds: window length for clip_source 'windows'.
    """

    records_dir: str = ""
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "test"
    languages: list[str] = dataclasses.field(default_factory=list)
    eval_languages: list[str] = dataclasses.field(default_factory=list)
    max_train_videos: int = hyperparams.field(0, bounds="[0, inf)")
    visual_streams: list[str] = dataclasses.field(default_factory=lambda: ["visual_2d", "visual_3d"])
    audio_feature: Literal["logmel", "mfcc", "avlnet", "hub"] = "mfcc"
    audio_encoder: str = ""
    caption_field: Literal["text", "text_en"] = "text"
    shuffle_buffer: int = hyperparams.field(1024, bounds="[1, inf)")
    cache: bool = True
    on_bad_record: Literal["error", "skip"] = "error"
    clip_source: Literal["captions", "windows"] = "captions"
    window_seconds: float = hyperparams.field(10.0, bounds="(0, inf)")

    def languages_of(self, split: str) -> list[str]:
        """The language filter of a split."""
        if split == self.train_split:
            return self.languages
        return self.eval_languages or self.languages

    def __post_init__(self):
        hyperparams.validate(self)
        if not self.visual_streams:
            raise ValueError("data.visual_streams must name at least one stream (visual_2d, visual_3d).")
        for s in self.visual_streams:
            if s not in ("visual_2d", "visual_3d"):
                raise ValueError(f"data.visual_streams: unknown stream {s!r}; valid: visual_2d, visual_3d.")
        if self.audio_feature == "avlnet" and not self.audio_encoder:
            raise ValueError("data.audio_feature 'avlnet' needs data.audio_encoder (an exported encoder dir).")


@dataclasses.dataclass
class ModelConfig:
    """Model settings per task; only the section of the experiment's task is used.

    Attributes:
      localization: the MALTA / ABLR caption localization model.
      retrieval: the AVLnet audio-visual retrieval model.
    """

    localization: LocalizationModelConfig = dataclasses.field(default_factory=LocalizationModelConfig)
    retrieval: RetrievalModelConfig = dataclasses.field(default_factory=RetrievalModelConfig)


@dataclasses.dataclass
class TrainConfig:
    """Optimization.

    Attributes:
      epochs: passes over the training data.
      global_batch_size: examples per step over all replicas.
      learning_rate: peak learning rate.
      optimizer: 'adam' or 'adamw'.
      weight_decay: decoupled weight decay for adamw.
      clipnorm: gradient clipping by global norm (0: off).
      warmup_epochs: linear warm-up before cosine decay (0 with decay 'constant': flat).
      lr_decay: 'constant' or 'cosine' to 0 at the last epoch.
      early_stopping_patience: epochs without validation improvement before
        stopping (0: off).
      seed: seed of weights init and shuffling.
      steps_per_epoch: cap on steps per epoch (0: a full pass).
      init_checkpoint: a .weights.h5 or .keras file to start from (fine-tuning).
    """

    epochs: int = hyperparams.field(10, bounds="[1, inf)")
    global_batch_size: int = hyperparams.field(32, bounds="[1, inf)")
    learning_rate: float = hyperparams.field(1e-3, bounds="(0, inf)")
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = hyperparams.field(0.0, bounds="[0, inf)")
    clipnorm: float = hyperparams.field(0.0, bounds="[0, inf)")
    warmup_epochs: int = hyperparams.field(0, bounds="[0, inf)")
    lr_decay: Literal["constant", "cosine"] = "constant"
    early_stopping_patience: int = hyperparams.field(0, bounds="[0, inf)")
    seed: int = 0
    steps_per_epoch: int = hyperparams.field(0, bounds="[0, inf)")
    init_checkpoint: str = ""

    def __post_init__(self):
        hyperparams.validate(self)
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}.")


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how training runs.

    Attributes:
      strategy: 'default' (one device), 'mirrored' (all local GPUs, or
        cpu_devices logical CPUs), 'multi_worker_mirrored' (TF_CONFIG).
      cpu_devices: split the host CPU into this many logical devices (0: no
        split); lets Mirrored run 2 replicas on a CPU-only machine.
      mixed_precision: Keras dtype policy.
      run_eagerly: debug switch.
    """

    strategy: Literal["default", "mirrored", "multi_worker_mirrored"] = "default"
    cpu_devices: int = hyperparams.field(0, bounds="[0, inf)")
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    run_eagerly: bool = False

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class EvalConfig:
    """Evaluation and its pictures.

    Attributes:
      num_plot_examples: validation captions drawn to TensorBoard each epoch.
      window_seconds: localization inference over videos longer than this uses
        overlapping windows of this length whose proposals are merged (0: off).
      window_stride_seconds: stride of those windows.
      retrieval_block_size: rows per block of the blocked rank computation (memory ~ block × items × 5 bytes).
      span_decoder: localization spans from the model's regression head
        ('head') or read off its calibrated attention ('attention': the
        contiguous segments around the attention peak holding at least
        `attention_threshold` × the peak). Both are always reported.
      attention_threshold: fraction of the peak for the 'attention' decoder.
      nms_iou: with the 'attention' decoder, R@5 is also reported: every
        attention peak proposes runs at several thresholds, and temporal NMS
        at this IoU keeps the five best distinct ones.
    """

    num_plot_examples: int = hyperparams.field(4, bounds="[0, inf)")
    window_seconds: float = hyperparams.field(0.0, bounds="[0, inf)")
    window_stride_seconds: float = hyperparams.field(0.0, bounds="[0, inf)")
    retrieval_block_size: int = hyperparams.field(1024, bounds="[1, inf)")
    span_decoder: Literal["head", "attention"] = "head"
    attention_threshold: float = hyperparams.field(0.3, bounds="(0, 1]")
    nms_iou: float = hyperparams.field(0.5, bounds="[0, 1]")

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment.

    Attributes:
      task: 'localization' (MALTA/ABLR) or 'retrieval' (AVLnet).
      data: input data.
      model: model per task.
      train: optimization.
      runtime: strategy and precision.
      eval: evaluation.
    """

    task: Literal["localization", "retrieval"] = "localization"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
