"""The retrieval task's config: its data, model (AVLnet: ResDAVEnet audio, 2D/3D visual heads, MMS loss) and eval sections."""

from __future__ import annotations

import dataclasses
from typing import Literal

from avalign import hyperparams
from trainer import config as config_lib
from trainer import registry

# The four stride-2 stages of ResDAVEnet reduce the time axis 16-fold.
NUM_STAGES = 4
_FROM_RECORDS = "0 takes it from the records"


@dataclasses.dataclass
class RetrievalModelConfig:
    """AVLnet model and loss hyper-parameters.

    The defaults are the paper's model (Rouditchenko et al., AVLnet and its cascade):
    ResDAVEnet widths 128-256-512-1024, 4096-d embeddings, ResNet-152 (2048-d) and
    ResNeXt-101 (2048-d) visual features. Small CPU configs shrink `audio_widths`,
    `first_conv_channels` and `embedding_dim`.

    `num_mel_bins`, `visual_2d_dim` and `visual_3d_dim` may be 0 in a config file,
    meaning "take it from the records"; the task fills them in before `build_model`,
    which requires them positive.

    Attributes:
      num_mel_bins: log-Mel bins per audio frame (the first convolution spans all of them).
      audio_widths: channels of the four residual stages of ResDAVEnet; each stage halves
        the time axis, so there must be exactly four.
      first_conv_channels: channels of the first convolution (full frequency axis x 1 frame).
      blocks_per_stage: basic residual blocks per stage (the first one strides 2 in time).
      kernel_width: width in frames of the residual blocks' 1-D convolutions (odd, so that
        the symmetric "same" padding is exact).
      embedding_dim: size of the shared audio-visual embedding space.
      visual_2d_dim: size of a per-step 2D (appearance) visual feature, e.g. ResNet-152.
      visual_3d_dim: size of a per-step 3D (motion) visual feature, e.g. ResNeXt-101.
      use_3d: whether the video branch takes 3D features; False is the image mode of the
        paper (2D features only, so the model runs on images and on videos).
      freeze_visual: keep the visual gated embedding unit fixed (not trained); meant for
        fine-tuning a pretrained model on images with spoken captions.
      margin: the MMS margin subtracted from the matching-pair scores.
      adaptive_margin: use the adaptive mean margin (margin_i = adaptive_margin_scale *
        (S_ii - mean_{j != i} S_ij)) instead of the fixed `margin`.
      adaptive_margin_scale: the scale of the adaptive mean margin (0.5 in AVLnet's code).
      max_audio_frames: frames of audio the input pipeline crops/pads each clip to
        (1024 = 10.24 s for pretraining; 5120 = 51.2 s for fine-tuning on clips up to 50 s).
        The model itself accepts any length.
    """

    num_mel_bins: int = hyperparams.field(40, bounds="[0, inf)", why=_FROM_RECORDS)
    audio_widths: list[int] = hyperparams.field(default_factory=lambda: [128, 256, 512, 1024], bounds="[1, inf)")
    first_conv_channels: int = hyperparams.field(128, bounds="[1, inf)")
    blocks_per_stage: int = hyperparams.field(2, bounds="[1, inf)")
    kernel_width: int = hyperparams.field(9, bounds="[1, inf)")
    embedding_dim: int = hyperparams.field(4096, bounds="[1, inf)")
    visual_2d_dim: int = hyperparams.field(2048, bounds="[0, inf)", why=_FROM_RECORDS)
    visual_3d_dim: int = hyperparams.field(2048, bounds="[0, inf)", why=_FROM_RECORDS)
    use_3d: bool = True
    freeze_visual: bool = False
    margin: float = hyperparams.field(0.001, bounds="[0, inf)")
    adaptive_margin: bool = False
    adaptive_margin_scale: float = hyperparams.field(0.5, bounds="[0, 1]")
    max_audio_frames: int = hyperparams.field(
        1024, bounds=f"[{2**NUM_STAGES}, inf)", why="at least the encoder's total stride"
    )

    def __post_init__(self):
        hyperparams.validate(self)
        if len(self.audio_widths) != NUM_STAGES:
            raise ValueError(
                f"audio_widths must be {NUM_STAGES} positive integers (one per stride-2 stage), got {self.audio_widths!r}."
            )
        if self.kernel_width % 2 != 1:
            raise ValueError(f"kernel_width must be odd for symmetric 'same' padding, got {self.kernel_width}.")

    @property
    def total_stride(self) -> int:
        """Input frames per output frame of the audio encoder (16)."""
        return 2**NUM_STAGES


@dataclasses.dataclass
class RetrievalDataConfig(config_lib.DataConfig):
    """The shared data settings, plus how clips are cut from the records.

    Attributes:
      clip_source: one clip per caption ('captions') or fixed windows over the
        whole video ('windows', for unlabeled video).
      window_seconds: window length for clip_source 'windows'.
    """

    clip_source: Literal["captions", "windows"] = "captions"
    window_seconds: float = hyperparams.field(10.0, bounds="(0, inf)")


@dataclasses.dataclass
class RetrievalEvalConfig(config_lib.EvalConfig):
    """How retrieval is scored.

    Attributes:
      retrieval_block_size: rows per block of the blocked rank computation
        (memory ~ block × items × 5 bytes).
    """

    retrieval_block_size: int = hyperparams.field(1024, bounds="[1, inf)")


@registry.register_config("retrieval")
@dataclasses.dataclass
class RetrievalConfig(config_lib.ExperimentConfig):
    """An audio-visual retrieval experiment (AVLnet on videos, or on images with `model.use_3d: false`)."""

    task: str = "retrieval"
    data: RetrievalDataConfig = dataclasses.field(default_factory=RetrievalDataConfig)
    model: RetrievalModelConfig = dataclasses.field(default_factory=RetrievalModelConfig)
    eval: RetrievalEvalConfig = dataclasses.field(default_factory=RetrievalEvalConfig)
