"""Typed configs of the preprocessing job and its visual extractors (the audio front-end's is `avalign.audio.AudioConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from avalign import hyperparams
from avalign.audio import AudioConfig
from preprocessing.annotations.validation import DEFAULT_MAX_OVERSHOOT


@dataclasses.dataclass
class VisualStreamConfig:
    """One visual feature stream.

    Attributes:
      extractor: registered extractor name ('builtin_2d', 'builtin_3d', 'hub',
        'keras_app', or '' to disable the stream).
      rate: feature vectors per second of video.
      handle: TF Hub handle (local path or URL) for 'hub'.
      keras_app: Keras application name for 'keras_app' (e.g. 'MobileNetV2').
      weights: local weights file for 'keras_app'.
      image_size: side in pixels that frames are resized to before extraction.
      clip_frames: frames per clip for 3D (per-short-clip) extractors.
      keras_app_kwargs: extra constructor arguments of the Keras application that
        the weights file depends on (e.g. {'alpha': 0.35} for MobileNetV2).
    """

    extractor: str = "builtin_2d"
    rate: float = 2.0
    handle: str = ""
    keras_app: str = ""
    weights: str = ""
    image_size: int = hyperparams.field(112, bounds="[1, inf)")
    clip_frames: int = hyperparams.field(4, bounds="[1, inf)")
    keras_app_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        hyperparams.validate(self)
        if self.extractor and self.rate <= 0:  # any finite rate while the stream is off
            raise ValueError(f"visual rate must be > 0, got {self.rate}.")


@dataclasses.dataclass
class VisualConfig:
    """Per-frame (2D) and per-clip (3D) visual streams, as AVLnet uses.

    Attributes:
      stream_2d: the per-frame stream.
      stream_3d: the per-short-clip stream.
    """

    stream_2d: VisualStreamConfig = dataclasses.field(default_factory=VisualStreamConfig)
    stream_3d: VisualStreamConfig = dataclasses.field(
        default_factory=lambda: VisualStreamConfig(extractor="builtin_3d")
    )


@dataclasses.dataclass
class ImportedFeaturesConfig:
    """Pre-extracted features used instead of a decoded video stream.

    Attributes:
      kind: '' (decode video), 'npy' (a directory of <video_id>.npy files) or
        'hdf5' (one file keyed by video id, ActivityNet C3D style).
      path: the directory or file.
      rate: feature vectors per second in the files.
      dataset_key: for HDF5 groups, the dataset inside each video's group.
    """

    kind: str = ""
    path: str = ""
    rate: float = 1.0
    dataset_key: str = ""

    def __post_init__(self):
        hyperparams.validate(self)
        if self.kind not in ("", "npy", "hdf5"):
            raise ValueError(f"imported kind must be '', 'npy' or 'hdf5', got {self.kind!r}.")
        if self.kind and not self.path:
            raise ValueError(f"imported features of kind {self.kind!r} need a path.")
        if self.kind and self.rate <= 0:
            raise ValueError(f"imported rate must be > 0, got {self.rate}.")


@dataclasses.dataclass
class AudioEmbeddingConfig:
    """An optional frozen TF Hub audio embedding stored beside the log-Mel frames.

    Attributes:
      handle: TF Hub handle (local SavedModel dir or URL) of a YAMNet/VGGish-style
        model taking a 16 kHz waveform; '' disables the stream.
      output_key: which output holds the embeddings: an index into a tuple
        output ('1' for YAMNet) or a key of a dict output; '' for a single output.
      hop_seconds: seconds between embedding frames (0.48 for YAMNet, 0.96 for VGGish).
    """

    handle: str = ""
    output_key: str = ""
    hop_seconds: float = hyperparams.field(0.48, bounds="(0, inf)")

    def __post_init__(self):
        hyperparams.validate(self)

    def key(self):
        """output_key as the model wants it: an int index, a str key, or None."""
        if not self.output_key:
            return None
        return int(self.output_key) if self.output_key.lstrip("-").isdigit() else self.output_key


@dataclasses.dataclass
class PreprocessConfig:
    """The preprocessing job: decoding, features and output layout.

    Attributes:
      audio: the audio front-end.
      audio_embedding: an optional TF Hub audio embedding stream.
      visual: the visual feature streams.
      imported_2d: pre-extracted features replacing the 2D stream.
      imported_3d: pre-extracted features replacing the 3D stream.
      decode_frame_rate: frames per second decoded for the visual extractors
        (3D clips span clip_frames / decode_frame_rate seconds).
      max_side: frames are downscaled so their long side is at most this many
        pixels before extraction (0 keeps the decoded size).
      storage_dtype: 'float16' (compact) or 'float32' for feature matrices.
      num_shards: TFRecord shards per split.
      max_overshoot_seconds: how far a caption may end past a video's duration
        before it is rejected (it is clamped within this tolerance). It applies
        to both checks: against the annotation's duration when the file is read
        (the readers' `max_overshoot`, whose default is this one) and against the
        decoded media's duration in the job.
    """

    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    audio_embedding: AudioEmbeddingConfig = dataclasses.field(default_factory=AudioEmbeddingConfig)
    visual: VisualConfig = dataclasses.field(default_factory=VisualConfig)
    imported_2d: ImportedFeaturesConfig = dataclasses.field(default_factory=ImportedFeaturesConfig)
    imported_3d: ImportedFeaturesConfig = dataclasses.field(default_factory=ImportedFeaturesConfig)
    decode_frame_rate: float = hyperparams.field(4.0, bounds="(0, inf)")
    max_side: int = hyperparams.field(160, bounds="[0, inf)")
    storage_dtype: str = "float16"
    num_shards: int = hyperparams.field(4, bounds="[1, inf)")
    max_overshoot_seconds: float = hyperparams.field(DEFAULT_MAX_OVERSHOOT, bounds="[0, inf)")

    def __post_init__(self):
        hyperparams.validate(self)
        if self.storage_dtype not in ("float16", "float32"):
            raise ValueError(f"storage_dtype must be 'float16' or 'float32', got {self.storage_dtype!r}.")
