"""The trained AVLnet as a TF Serving SavedModel: embed speech, embed video, score them, or embed whole records.

Signatures (inputs -> outputs, batch first; E = embedding size, F = ceil(T / 16)):
  serving_default      examples [N] string, serialized `tf.train.Example` records
                       as the Beam job writes them -> per clip, C in all:
                       audio_embedding [C, E], video_embedding [C, E], video_id [C],
                       start [C], end [C] (seconds), valid [C] (1: a usable pair)
  embed_audio          waveform [B, samples] float32 at the records' sample rate
                       (equal lengths) -> audio_embedding [B, E],
                       frame_embeddings [B, F, D], frame_mask [B, F]
  embed_audio_log_mel  log_mel [B, T, bins] float32 (the avalign front-end's dB),
                       audio_length [B] int32 valid frames -> the same outputs
  embed_video          visual_2d [B, T_v, D_2d], visual_3d [B, T_v, D_3d] (when the
                       model reads 3D features), visual_mask [B, T_v] float32 0/1
                       -> video_embedding [B, E]
  score                audio_embedding [N_a, E], video_embedding [N_v, E]
                       -> similarity [N_a, N_v], the dot products that training
                       and the retrieval metrics rank by (higher: closer)

The waveform runs through the records' log-Mel front-end in-graph, and records go
through the task's own parsing and clip cutting (evaluation mode), so every output
is what the in-memory model gives on the same input. Inputs of the wrong shape,
empty waveforms, lengths out of range and NaN/Inf fail with an
`InvalidArgumentError` that names the input, never with a NaN answer.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import tensorflow as tf

from avalign import audio as audio_lib
from avalign import features
from avalign.audio import AudioConfig
from serving import export_base
from trainer.retrieval import data as data_lib
from trainer.retrieval import model as model_lib

# Clips per step when `serving_default` gathers the clips of its records.
_CLIPS_PER_STEP = 256


def _shaped(x: tf.Tensor, name: str, shape: list) -> tf.Tensor:
    """`x` checked at run time against `shape`; a loaded signature does not check the ranks it is fed."""
    return tf.ensure_shape(x, shape, name=f"check_{name}")


def _assert_finite(x: tf.Tensor, name: str) -> tf.Operation:
    return tf.debugging.assert_all_finite(x, f"{name} holds NaN or Inf; send finite values")


def _assert_clips(x: tf.Tensor, name: str) -> tf.Operation:
    # ResDAVEnet's convolutions fail on an empty batch with an error naming no input.
    return tf.debugging.assert_positive(tf.shape(x)[0], f"{name} holds no clip (a batch of 0); send at least one")


class RetrievalModule(export_base.ExportModule):
    """AVLnet with raw-input signatures for both retrieval directions (see the module docstring).

    Function keys (see `export_base.ExportModule`) and the signatures they are
    exported as: 'records' -> `serving_default`, 'waveform' -> `embed_audio`,
    'log_mel' -> `embed_audio_log_mel`, 'video' -> `embed_video`, 'score' -> `score`.

    Args:
      model: the trained AVLnet.
      audio_cfg: the log-Mel front-end its records were made with.
      parser: the task's `ClipParser` (how clips are cut from a record).
      storage_dtype: the records' storage dtype.
      dims: the records' feature sizes: `avalign.features.AUDIO` and each
        stream of `parser.streams` -> size.

    Raises:
      ValueError: the records' sizes or streams differ from the model's.
    """

    default_function_keys = {
        "records": "serving_default",
        "waveform": "embed_audio",
        "log_mel": "embed_audio_log_mel",
        "video": "embed_video",
        "score": "score",
    }

    def __init__(
        self,
        model: model_lib.AVLnet,
        audio_cfg: AudioConfig,
        parser: data_lib.ClipParser,
        storage_dtype: str,
        dims: Mapping[str, int],
    ):
        cfg = model.retrieval_config
        streams = (model_lib.VISUAL_2D, model_lib.VISUAL_3D) if cfg.use_3d else (model_lib.VISUAL_2D,)
        want = {features.AUDIO: cfg.num_mel_bins, **{s: getattr(cfg, f"{s}_dim") for s in streams}}
        if tuple(parser.streams) != streams or {k: dims.get(k) for k in want} != want:
            raise ValueError(
                f"The records give streams {tuple(parser.streams)} of sizes {dict(dims)} but the model reads "
                f"{streams} of sizes {want}: export the model with the task that trained it."
            )
        if audio_cfg.num_mel_bins != cfg.num_mel_bins:
            raise ValueError(
                f"The front-end makes {audio_cfg.num_mel_bins} log-Mel bins but the model reads {cfg.num_mel_bins}: "
                f"pass the records' audio config (task.info.audio_config)."
            )
        super().__init__(
            {
                "audio": dataclasses.asdict(audio_cfg),
                "model": dataclasses.asdict(cfg),
                "records": {"storage_dtype": storage_dtype, "streams": list(streams), "dims": dict(dims)},
                "clips": {
                    "max_audio_frames": parser.max_audio_frames,
                    "audio_rate": parser.audio_rate,
                    "max_visual_steps": parser.max_visual,
                    "images": parser.images,
                    "clip_source": parser.clip_source,
                    "window_seconds": parser.window_seconds,
                },
            },
            model,
            preprocessor=audio_lib.LogMelFrontEnd(audio_cfg),
            name="avlnet_retrieval",
        )
        self.audio_encoder = model_lib.audio_encoder_model(model)
        self.video_encoder = model_lib.video_encoder_model(model)
        self._parser = parser
        self._storage_dtype = storage_dtype
        self._dims = dict(dims)
        self._streams = streams
        # Variables, not constants: a loaded model tells its clients what to send.
        self.sample_rate = tf.Variable(audio_cfg.sample_rate, trainable=False, dtype=tf.int32, name="sample_rate")
        self.frame_rate = tf.Variable(audio_cfg.frame_rate, trainable=False, dtype=tf.float32, name="frame_rate")
        self.total_stride = tf.Variable(cfg.total_stride, trainable=False, dtype=tf.int32, name="total_stride")

        # Built here, not as decorated methods: the widths and streams come from the model.
        emb = cfg.embedding_dim
        self.embed_records = tf.function(self.serve, input_signature=[tf.TensorSpec([None], tf.string)])
        self.embed_audio = tf.function(self._embed_waveform, input_signature=[tf.TensorSpec([None, None], tf.float32)])
        self.embed_audio_log_mel = tf.function(
            self._embed_log_mel,
            input_signature=[
                tf.TensorSpec([None, None, cfg.num_mel_bins], tf.float32),
                tf.TensorSpec([None], tf.int32),
            ],
        )
        visual = [tf.TensorSpec([None, None, want[s]], tf.float32) for s in streams]
        mask = tf.TensorSpec([None, None], tf.float32)
        if cfg.use_3d:
            self.embed_video = tf.function(self._embed_video_3d, input_signature=[*visual, mask])
        else:
            self.embed_video = tf.function(self._embed_video_2d, input_signature=[*visual, mask])
        self.score = tf.function(
            self._score,
            input_signature=[tf.TensorSpec([None, emb], tf.float32), tf.TensorSpec([None, emb], tf.float32)],
        )

    @classmethod
    def from_task(cls, task, model: model_lib.AVLnet) -> "RetrievalModule":
        """The module of a trained AVLnet and the task that trained it (sharing the model's weights).

        Args:
          task: a configured `trainer.retrieval.task.RetrievalTask` (as
            `trainer.train_lib.load_trained` returns it).
          model: its trained AVLnet.
        """
        dims = {s: task.info.stream_dims[s] for s in task.streams}
        dims[features.AUDIO] = task.info.audio_dim
        return cls(model, task.info.audio_config, task.parser, task.info.storage_dtype, dims)

    def functions(self) -> Mapping[str, tf.types.experimental.PolymorphicFunction]:
        return {
            "records": self.embed_records,
            "waveform": self.embed_audio,
            "log_mel": self.embed_audio_log_mel,
            "video": self.embed_video,
            "score": self.score,
        }

    def serve(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        """Both embeddings of every clip of serialized records [N], cut as the task cuts evaluation clips."""
        x, meta = self._clips(_shaped(examples, "examples", [None]))
        keys = (model_lib.AUDIO_EMBEDDING, model_lib.VIDEO_EMBEDDING, model_lib.VALID)
        emb = self.model.retrieval_config.embedding_dim
        # Records without a clip (no captions) are an empty answer; ResDAVEnet can't run on an empty batch.
        out = tf.cond(
            tf.size(x[model_lib.AUDIO_LENGTH]) > 0,
            lambda: {k: v for k, v in self.inference_step(x).items() if k in keys},
            lambda: {k: tf.zeros([0, emb] if k != model_lib.VALID else [0]) for k in keys},
        )
        return {**out, "video_id": meta["video_id"], "start": meta["start"], "end": meta["end"]}

    def _clips(self, examples: tf.Tensor):
        """The batched (features, meta) of all clips of the records, in record order."""
        videos = tf.data.Dataset.from_tensor_slices(examples).map(
            lambda s: features.parse_example(s, self._storage_dtype, self._streams, self._dims)
        )
        clips = videos.flat_map(lambda v: self._parser.clips(v, is_training=False))
        # Records may hold no clip at all (no captions): start from an empty batch.
        empty = tf.nest.map_structure(lambda s: tf.zeros([0, *s.shape], s.dtype), clips.element_spec)
        return clips.batch(_CLIPS_PER_STEP).reduce(
            empty, lambda acc, batch: tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), acc, batch)
        )

    def _embed_waveform(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        waveform = _shaped(waveform, "waveform", [None, None])
        checks = [
            _assert_clips(waveform, "waveform"),
            tf.debugging.assert_positive(
                tf.shape(waveform)[1], "waveform has 0 samples; send at least one sample per clip"
            ),
            _assert_finite(waveform, "waveform"),
        ]
        waveform = export_base.after_checks(checks, waveform)
        log_mel = self.preprocessor.batch(waveform)
        return self._encode_audio(log_mel, tf.fill([tf.shape(log_mel)[0]], tf.shape(log_mel)[1]))

    def _embed_log_mel(self, log_mel: tf.Tensor, audio_length: tf.Tensor) -> dict[str, tf.Tensor]:
        log_mel = _shaped(log_mel, "log_mel", [None, None, self.model.retrieval_config.num_mel_bins])
        audio_length = _shaped(audio_length, "audio_length", [None])
        frames = tf.shape(log_mel)[1]
        checks = [
            _assert_clips(log_mel, "log_mel"),
            tf.debugging.assert_equal(
                tf.shape(audio_length)[0], tf.shape(log_mel)[0], "audio_length must hold one length per log_mel clip"
            ),
            tf.debugging.assert_positive(audio_length, "audio_length must be >= 1 (a clip needs a valid frame)"),
            tf.debugging.assert_less_equal(audio_length, frames, "audio_length must be <= the frames of log_mel"),
        ]
        audio_length = export_base.after_checks(checks, audio_length)
        # Padding after audio_length may hold anything (the model ignores it).
        valid = tf.sequence_mask(audio_length, frames)[..., None]
        checks = [_assert_finite(tf.where(valid, log_mel, tf.zeros_like(log_mel)), "log_mel")]
        log_mel, audio_length = export_base.after_checks(checks, log_mel, audio_length)
        return self._encode_audio(log_mel, audio_length)

    def _encode_audio(self, log_mel: tf.Tensor, audio_length: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.audio_encoder({model_lib.AUDIO: log_mel, model_lib.AUDIO_LENGTH: audio_length}, training=False)
        return {
            model_lib.AUDIO_EMBEDDING: out[model_lib.POOLED_EMBEDDING],
            model_lib.FRAME_EMBEDDINGS: out[model_lib.FRAME_EMBEDDINGS],
            model_lib.FRAME_MASK: out[model_lib.FRAME_MASK],
        }

    def _embed_video_2d(self, visual_2d: tf.Tensor, visual_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._encode_video({model_lib.VISUAL_2D: visual_2d}, visual_mask)

    def _embed_video_3d(
        self, visual_2d: tf.Tensor, visual_3d: tf.Tensor, visual_mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return self._encode_video({model_lib.VISUAL_2D: visual_2d, model_lib.VISUAL_3D: visual_3d}, visual_mask)

    def _encode_video(self, streams: dict[str, tf.Tensor], visual_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        visual_mask = _shaped(visual_mask, model_lib.VISUAL_MASK, [None, None])
        shape = tf.shape(visual_mask)
        valid = visual_mask > 0
        checks = [
            tf.debugging.assert_equal(
                tf.logical_or(tf.equal(visual_mask, 0.0), tf.equal(visual_mask, 1.0)),
                True,
                "visual_mask must hold only 0 (padding) or 1 (a valid step)",
            ),
            tf.debugging.assert_equal(
                tf.reduce_any(valid, axis=1), True, "visual_mask has a clip with no valid step; mark at least one"
            ),
        ]
        for name, x in streams.items():
            x = streams[name] = _shaped(x, name, [None, None, self._dims[name]])
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(x)[:2],
                    shape,
                    f"{name} must be [batch, steps, dim] with the batch and steps of visual_mask",
                )
            )
        names = list(streams)
        visual_mask, *values = export_base.after_checks(checks, visual_mask, *streams.values())
        streams = dict(zip(names, values))
        valid = visual_mask > 0
        checks = [_assert_finite(tf.where(valid[..., None], x, tf.zeros_like(x)), name) for name, x in streams.items()]
        visual_mask, *values = export_base.after_checks(checks, visual_mask, *streams.values())
        streams = dict(zip(streams, values))
        out = self.video_encoder({**streams, model_lib.VISUAL_MASK: visual_mask}, training=False)
        return {model_lib.VIDEO_EMBEDDING: out[model_lib.VIDEO_EMBEDDING]}

    def _score(self, audio_embedding: tf.Tensor, video_embedding: tf.Tensor) -> dict[str, tf.Tensor]:
        emb = self.model.retrieval_config.embedding_dim
        audio_embedding = _shaped(audio_embedding, model_lib.AUDIO_EMBEDDING, [None, emb])
        video_embedding = _shaped(video_embedding, model_lib.VIDEO_EMBEDDING, [None, emb])
        checks = [
            _assert_finite(audio_embedding, model_lib.AUDIO_EMBEDDING),
            _assert_finite(video_embedding, model_lib.VIDEO_EMBEDDING),
        ]
        audio_embedding, video_embedding = export_base.after_checks(checks, audio_embedding, video_embedding)
        # Unnormalized dot products: what the MMS loss trains and `trainer.retrieval.metrics` ranks.
        return {"similarity": tf.matmul(audio_embedding, video_embedding, transpose_b=True)}
