"""The AVLnet audio-visual retrieval model: build, train with the MMS loss, reuse the audio encoder."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import keras
import tensorflow as tf
from keras import ops

from trainer import guards
from trainer.retrieval import layers as rl
from trainer.retrieval.config import RetrievalModelConfig
from trainer.retrieval.losses import mms_loss

AUDIO = "audio"
AUDIO_LENGTH = "audio_length"
AUDIO_PRESENT = "audio_present"
VISUAL_2D = "visual_2d"
VISUAL_3D = "visual_3d"
VISUAL_MASK = "visual_mask"
AUDIO_EMBEDDING = "audio_embedding"
VIDEO_EMBEDDING = "video_embedding"
VALID = "valid"
FRAME_EMBEDDINGS = "frame_embeddings"
FRAME_MASK = "frame_mask"
POOLED_EMBEDDING = "pooled_embedding"

# Layer names that `video_encoder_model` (plus "visual_3d_pool" and "visual_concat" when
# `use_3d`) and `audio_encoder_model` look up in a trained model.
_VIDEO_LAYERS = ("visual_guard", "visual_2d_pool", "video_gated_unit")
_AUDIO_LAYERS = ("audio_length_mask", "audio_guard", "resdavenet", "audio_pool", "audio_gated_unit", "audio_projection")


def _as_config(config) -> RetrievalModelConfig:
    if isinstance(config, RetrievalModelConfig):
        return config
    if isinstance(config, Mapping):
        return RetrievalModelConfig(**config)
    raise ValueError(f"config must be a RetrievalModelConfig or a mapping of its fields, got {type(config).__name__}.")


def _num_replicas() -> int:
    # keras.ops has no view of the tf.distribute strategy.
    return tf.distribute.get_strategy().num_replicas_in_sync


def _build_graph(cfg: RetrievalModelConfig):
    """Returns the (inputs, outputs) dicts of the AVLnet functional graph."""
    needed = ["num_mel_bins", "visual_2d_dim"] + (["visual_3d_dim"] if cfg.use_3d else [])
    unresolved = [name for name in needed if getattr(cfg, name) == 0]
    if unresolved:
        raise ValueError(f"{unresolved} are 0 (take from the records): set them from the records before building.")
    inputs = {
        AUDIO: keras.Input(shape=(None, cfg.num_mel_bins), name=AUDIO),
        AUDIO_LENGTH: keras.Input(shape=(), dtype="int32", name=AUDIO_LENGTH),
        AUDIO_PRESENT: keras.Input(shape=(), dtype="float32", name=AUDIO_PRESENT),
        VISUAL_2D: keras.Input(shape=(None, cfg.visual_2d_dim), name=VISUAL_2D),
    }
    if cfg.use_3d:
        inputs[VISUAL_3D] = keras.Input(shape=(None, cfg.visual_3d_dim), name=VISUAL_3D)
    inputs[VISUAL_MASK] = keras.Input(shape=(None,), dtype="float32", name=VISUAL_MASK)

    # Non-finite inputs stop at the guards, before any layer: the clip is dropped
    # from both branches (a clip with bad visual features also leaves the audio
    # batch statistics), so it changes nothing and no NaN meets a kernel.
    streams = [inputs[VISUAL_2D]] + ([inputs[VISUAL_3D]] if cfg.use_3d else [])
    visual_finite = guards.FiniteClips(name="visual_finite")(streams, inputs[VISUAL_MASK])
    audio_keep = keras.layers.Multiply(name="audio_keep")([inputs[AUDIO_PRESENT], visual_finite])
    audio_mask = rl.LengthMask(name="audio_length_mask")(inputs[AUDIO_LENGTH], inputs[AUDIO])
    (audio,), audio_mask = guards.NonFiniteGuard(name="audio_guard")([inputs[AUDIO]], audio_mask, audio_keep)

    # Audio branch: ResDAVEnet -> mean over valid frames -> GEU -> linear to the embedding size
    # (gating at the encoder width, as AVLnet does for stability at 4096-d).
    encoder = rl.ResDAVEnet(
        num_mel_bins=cfg.num_mel_bins,
        first_conv_channels=cfg.first_conv_channels,
        widths=cfg.audio_widths,
        blocks_per_stage=cfg.blocks_per_stage,
        kernel_width=cfg.kernel_width,
        name="resdavenet",
    )
    frames, frame_mask = encoder(audio, audio_mask)
    pooled = rl.MaskedMeanPooling(name="audio_pool")(frames, frame_mask)
    audio_emb = rl.GatedEmbeddingUnit(encoder.output_dim, name="audio_gated_unit")(pooled)
    audio_emb = keras.layers.Dense(cfg.embedding_dim, name="audio_projection")(audio_emb)

    # Video branch: per stream max over valid steps, L2-normalize, concatenate [2D, 3D], GEU.
    streams, visual_mask = guards.NonFiniteGuard(name="visual_guard")(streams, inputs[VISUAL_MASK])
    pooled_streams = [
        rl.MaskedMaxPooling(l2_normalize=True, name=f"{name}_pool")(stream, visual_mask)
        for name, stream in zip((VISUAL_2D, VISUAL_3D), streams)
    ]
    video = (
        pooled_streams[0]
        if len(pooled_streams) == 1
        else keras.layers.Concatenate(name="visual_concat")(pooled_streams)
    )
    video_emb = rl.GatedEmbeddingUnit(cfg.embedding_dim, trainable=not cfg.freeze_visual, name="video_gated_unit")(
        video
    )

    valid = rl.PairValidity(name=VALID)(inputs[AUDIO_PRESENT], frame_mask, visual_mask)
    outputs = {AUDIO_EMBEDDING: audio_emb, VIDEO_EMBEDDING: video_emb, VALID: valid}
    return inputs, outputs


@keras.saving.register_keras_serializable(package="avalign")
class AVLnet(keras.Model):
    """AVLnet: a functional graph from named inputs to audio and video embeddings, trained with MMS.

    Inputs (dict):
      audio: [B, T, num_mel_bins] float32 log-Mel frames (any T; padding after
        `audio_length` is ignored, whatever it holds).
      audio_length: [B] int32 valid frames of `audio`.
      audio_present: [B] float32, 0 for a clip without audio (left out of the loss and
        of the batch-norm statistics).
      visual_2d: [B, T_v, visual_2d_dim] per-step 2D features.
      visual_3d: [B, T_v, visual_3d_dim] per-step 3D features (only when `use_3d`).
      visual_mask: [B, T_v] float32 0/1 valid visual steps (an image is T_v = 1).

    A clip with NaN or Inf at a valid step of any of these inputs is dropped, as a
    clip without audio is: its values are zeroed before any layer sees them, it
    takes no part in the batch statistics and the loss leaves it out.

    Outputs (dict):
      audio_embedding: [B, embedding_dim].
      video_embedding: [B, embedding_dim].
      valid: [B] float32, 1 when the pair is usable (audio present, >= 1 valid audio
        frame and visual step, no NaN/Inf in its valid inputs). Embeddings of
        unusable pairs are finite but meaningless; the loss and the
        evaluation (`trainer.retrieval.task.embed`) skip them.

    The model is a `keras.Model` subclass only for `compute_loss`: the MMS loss
    contrasts every clip of the batch against the others, so it needs no labels and
    `model.fit(dataset_of_input_dicts)` trains it.
    """

    def __init__(self, config, **kwargs):
        """Builds the graph.

        Args:
          config: a `RetrievalModelConfig` or a mapping of its fields.
          **kwargs: base Model arguments (name, trainable).
        """
        cfg = _as_config(config)
        inputs, outputs = _build_graph(cfg)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.retrieval_config = cfg

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """MMS loss over the (per-replica) batch, plus any regularization losses.

        Under a `tf.distribute` strategy each replica contrasts the clips of its own
        batch (global batch / replicas negatives per clip) and returns its loss
        divided by the number of replicas, as Keras expects: the gradients that the
        optimizer sums over replicas are then those of the mean of the replicas'
        losses, and the logged loss is that mean.

        Args:
          x: the input dict (unused: the masks come from `y_pred["valid"]`).
          y: must be None (the loss is self-supervised).
          y_pred: the output dict of the model.
          sample_weight: must be None.
          training: unused.

        Returns:
          Scalar loss, scaled for the replica count.

        Raises:
          ValueError: labels or sample weights were given.
        """
        del x, training
        if y is not None or sample_weight is not None:
            raise ValueError(
                "AVLnet is trained without labels or sample weights: feed a dataset of input dicts "
                f"(got y={type(y).__name__}, sample_weight={type(sample_weight).__name__})."
            )
        cfg = self.retrieval_config
        loss = mms_loss(
            y_pred[AUDIO_EMBEDDING],
            y_pred[VIDEO_EMBEDDING],
            margin=cfg.margin,
            audio_present=y_pred[VALID],
            adaptive=cfg.adaptive_margin,
            adaptive_scale=cfg.adaptive_margin_scale,
        )
        for extra in self.losses:
            loss = loss + ops.sum(ops.cast(extra, "float32"))
        replicas = _num_replicas()
        return loss / replicas if replicas > 1 else loss

    def get_config(self):
        return {
            "config": dataclasses.asdict(self.retrieval_config),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(cfg: RetrievalModelConfig) -> AVLnet:
    """Builds AVLnet for `cfg` (call inside the strategy scope when distributing).

    Compile and fit (no loss argument, no labels):

        model = build_model(cfg)
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        model.fit(dataset_of_input_dicts, epochs=...)

    Args:
      cfg: the model config.

    Returns:
      The uncompiled model.

    Raises:
      ValueError: a feature size left at 0 ("from the records") was never filled in.
    """
    return AVLnet(cfg, name="avlnet")


def _branch_layers(model: AVLnet, names, branch: str) -> dict:
    """The named layers of one branch of a trained AVLnet.

    Raises:
      ValueError: `model` lacks one (it is not an AVLnet).
    """
    try:
        return {name: model.get_layer(name) for name in names}
    except ValueError as e:
        raise ValueError(f"{model.name!r} is not an AVLnet model (missing {branch} layers {names}): {e}") from e


def audio_encoder_model(model: AVLnet) -> keras.Model:
    """The audio branch of a (trained) AVLnet, sharing its weights, for export and reuse.

    Inputs (dict): `audio` [B, T, num_mel_bins] float32, `audio_length` [B] int32.
    Outputs (dict):
      frame_embeddings: [B, ceil(T / 16), audio_widths[-1]] ResDAVEnet frames
        (frame j centered on input frame 16 j; zero at invalid frames).
      frame_mask: [B, ceil(T / 16)] float32, 1 at the ceil(audio_length / 16) valid
        frames (all 0 for a clip with NaN/Inf in its valid input).
      pooled_embedding: [B, embedding_dim], the clip's audio embedding (as
        `audio_embedding` of the full model).

    Args:
      model: an `AVLnet`.

    Returns:
      A functional `keras.Model` (inference: call it with training=False).

    Raises:
      ValueError: `model` lacks the AVLnet audio layers.
    """
    layer = _branch_layers(model, _AUDIO_LAYERS, "audio")
    cfg = model.retrieval_config
    audio = keras.Input(shape=(None, cfg.num_mel_bins), name=AUDIO)
    audio_length = keras.Input(shape=(), dtype="int32", name=AUDIO_LENGTH)
    mask = layer["audio_length_mask"](audio_length, audio)
    (clean,), mask = layer["audio_guard"]([audio], mask)
    frames, frame_mask = layer["resdavenet"](clean, mask)
    pooled = layer["audio_pool"](frames, frame_mask)
    embedding = layer["audio_projection"](layer["audio_gated_unit"](pooled))
    return keras.Model(
        inputs={AUDIO: audio, AUDIO_LENGTH: audio_length},
        outputs={FRAME_EMBEDDINGS: frames, FRAME_MASK: frame_mask, POOLED_EMBEDDING: embedding},
        name="avlnet_audio_encoder",
    )


def video_encoder_model(model: AVLnet) -> keras.Model:
    """The video branch of a (trained) AVLnet, sharing its weights.

    Inputs (dict): `visual_2d` [B, T_v, visual_2d_dim], `visual_3d` [B, T_v,
    visual_3d_dim] (only when `use_3d`), `visual_mask` [B, T_v] float32.
    Output (dict): `video_embedding` [B, embedding_dim], as the full model's.

    Args:
      model: an `AVLnet`.

    Returns:
      A functional `keras.Model` (inference: call it with training=False).

    Raises:
      ValueError: `model` lacks the AVLnet video layers.
    """
    cfg = model.retrieval_config
    streams = (VISUAL_2D, VISUAL_3D) if cfg.use_3d else (VISUAL_2D,)
    names = _VIDEO_LAYERS + (("visual_3d_pool", "visual_concat") if cfg.use_3d else ())
    layer = _branch_layers(model, names, "video")
    dims = {VISUAL_2D: cfg.visual_2d_dim, VISUAL_3D: cfg.visual_3d_dim}
    inputs = {s: keras.Input(shape=(None, dims[s]), name=s) for s in streams}
    inputs[VISUAL_MASK] = keras.Input(shape=(None,), dtype="float32", name=VISUAL_MASK)
    values, mask = layer["visual_guard"]([inputs[s] for s in streams], inputs[VISUAL_MASK])
    pooled = [layer[f"{s}_pool"](v, mask) for s, v in zip(streams, values)]
    video = layer["visual_concat"](pooled) if cfg.use_3d else pooled[0]
    return keras.Model(
        inputs=inputs,
        outputs={VIDEO_EMBEDDING: layer["video_gated_unit"](video)},
        name="avlnet_video_encoder",
    )
