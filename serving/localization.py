"""The trained caption localizer (MALTA / ABLR / audio-only) as a SavedModel for TF Serving.

Signatures (loaded: `tf.saved_model.load(path).signatures[key](**inputs)`):

  serving_default  (function key 'records')
      examples  string [B]  serialized tf.train.Example video records (the Beam job's)
      captions  string [B]  one caption per record (repeat a record for more captions)
  localize  (function key 'features')
      captions      string [B]
      video         float32 [B, M, Dv]  visual segment features: the means of the
                    records' visual streams (concatenated, `data.visual_streams` order)
                    over M equal segments of `duration` seconds
      log_mel       float32 [B, T, bins] log-Mel frames (the one front-end's) of those
                    seconds; frames past `duration` are ignored, so a batch may be padded
      segment_mask  float32 [B, M]  1 on real segments
      duration      float32 [B]  seconds the M segments cover
  localize_waveform  (function key 'waveform'): as `localize`, with
      waveform      float32 [B, samples] mono audio at the front-end's sample rate,
                    turned into log-Mel frames in the graph by the one front-end

Every signature returns, batch first (seconds from the start of the record or
of the given features; normalized values are fractions of `duration`):
  start_seconds, end_seconds, start, end, score [B]  the decoded span (the
      `eval.span_decoder` the job was evaluated with) and its attention mass
  duration [B]
  proposals_seconds [B, K, 2], proposal_scores [B, K]  the R@K decoder's spans
      (attention peaks, temporal NMS); rows with fewer than K distinct ones are
      padded with (0, 0) spans scored -1
  video_attention, audio_attention [B, M]  the final attention weights

Bad input (an empty caption, one with no word the model knows (all out of its vocabulary), NaN or Inf
features, a non-positive duration, a waveform without samples, mismatched
batch sizes) fails the call with INVALID_ARGUMENT naming the input; a served
model never answers NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from avalign import audio as audio_lib
from avalign import features
from serving import export_base
from trainer.localization import data as data_lib
from trainer.localization import decoding

# Spans returned per caption by the R@K decoder (R@5 is what the papers report).
TOP_K = 5
_OUTPUT_KEYS = (
    "start_seconds",
    "end_seconds",
    "start",
    "end",
    "score",
    "duration",
    "proposals_seconds",
    "proposal_scores",
    "video_attention",
    "audio_attention",
)


@dataclasses.dataclass(frozen=True)
class LocalizerSpec:
    """What a localization export needs besides the model, all JSON-ready (recorded as its params).

    Attributes:
      num_segments: M.
      video_dim: Dv, the width of a visual segment feature.
      audio_feature: the job's `data.audio_feature` ('logmel', 'mfcc', 'avlnet', 'hub').
      audio: the records' audio front-end (`AudioConfig` as a dict).
      audio_rate: log-Mel frames per second.
      storage_dtype: the records' storage dtype.
      visual_streams: the visual streams the model reads, in order.
      streams: every stream parsed from a record.
      stream_rates: stream -> vectors per second in the records.
      stream_dims: stream -> vector width in the records.
      caption_field: 'text' or 'text_en'.
      span_decoder: 'head' or 'attention'.
      attention_threshold: the attention decoder's fraction of the peak.
      nms_iou: the R@K decoder's NMS IoU.
      top_k: K.
      window_seconds: the predictor cuts a longer video into windows of this
        length (the job's `eval.window_seconds`, else its longest training video).
      window_stride_seconds: their stride (0: half a window).
    """

    num_segments: int
    video_dim: int
    audio_feature: str
    audio: dict
    audio_rate: float
    storage_dtype: str
    visual_streams: tuple
    streams: tuple
    stream_rates: dict
    stream_dims: dict
    caption_field: str
    span_decoder: str
    attention_threshold: float
    nms_iou: float
    window_seconds: float = 0.0
    window_stride_seconds: float = 0.0
    top_k: int = TOP_K

    @property
    def audio_config(self) -> audio_lib.AudioConfig:
        return audio_lib.AudioConfig(**self.audio)

    @property
    def takes_audio_frames(self) -> bool:
        """Whether the model's audio comes from log-Mel frames (all but 'hub', whose records hold embeddings)."""
        return self.audio_feature != "hub"

    @classmethod
    def from_task(cls, task) -> "LocalizerSpec":
        """The spec of a prepared and configured `trainer.localization.task.LocalizationTask`."""
        cfg, info = task.cfg, task.info
        return cls(
            num_segments=task.model_cfg.num_segments,
            video_dim=task.model_cfg.video_dim,
            audio_feature=cfg.data.audio_feature,
            audio=dataclasses.asdict(info.audio_config),
            audio_rate=float(info.audio_rate),
            storage_dtype=info.storage_dtype,
            visual_streams=tuple(cfg.data.visual_streams),
            streams=tuple(task.streams),
            stream_rates={s: float(info.stream_rates[s]) for s in task.streams},
            stream_dims={s: int(info.stream_dims[s]) for s in task.streams},
            caption_field=cfg.data.caption_field,
            span_decoder=cfg.eval.span_decoder,
            attention_threshold=float(cfg.eval.attention_threshold),
            nms_iou=float(cfg.eval.nms_iou),
            window_seconds=float(cfg.eval.window_seconds) or _longest_video(info, cfg.data.train_split),
            window_stride_seconds=float(cfg.eval.window_stride_seconds),
        )


class LocalizationModule(export_base.ExportModule):
    """The localizer with raw-input signatures: records, segment features + log-Mel, or + waveform.

    Args:
      model: the trained model with raw caption text in (`task.serving_model(model)`):
        inputs "video", "audio" (segment features of the audio view),
        "segment_mask", "caption"; outputs "span", "attention".
      tokenizer: the model's caption tokenizer (for the unknown-words check).
      spec: what else the export needs (`LocalizerSpec.from_task`).
      audio_view: the task's audio view (parsed record -> (features, rate));
        an AVLnet encoder it calls is saved with the module.
    """

    def __init__(self, model: keras.Model, tokenizer, spec: LocalizerSpec, audio_view):
        super().__init__(dataclasses.asdict(spec), model, name="localizer")
        self.spec = spec
        self.tokenizer = tokenizer
        self._audio_view = audio_view
        # Tracked, so that an AVLnet audio encoder the view calls is saved with the module.
        self.audio_encoder = getattr(audio_view, "encoder", None)
        self.front_end = audio_lib.LogMelFrontEnd(spec.audio_config) if spec.takes_audio_frames else None
        self._parser = data_lib.LocalizationParser(
            spec.num_segments,
            spec.visual_streams,
            spec.stream_rates,
            spec.audio_rate,
            audio_view,
            spec.caption_field,
        )
        m, dv = spec.num_segments, spec.video_dim
        text = tf.TensorSpec([None], tf.string)
        self.serve_records = tf.function(
            self.serve,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="examples"),
                tf.TensorSpec([None], tf.string, name="captions"),
            ],
        )
        segment_inputs = [
            text,
            tf.TensorSpec([None, m, dv], tf.float32),
            None,
            tf.TensorSpec([None, m], tf.float32),
            tf.TensorSpec([None], tf.float32),
        ]
        self.localize = self.localize_waveform = None
        if spec.takes_audio_frames:
            bins = spec.audio_config.num_mel_bins
            self.localize = tf.function(
                self._localize_log_mel,
                input_signature=[
                    *segment_inputs[:2],
                    tf.TensorSpec([None, None, bins], tf.float32),
                    *segment_inputs[3:],
                ],
            )
            self.localize_waveform = tf.function(
                self._localize_waveform,
                input_signature=[*segment_inputs[:2], tf.TensorSpec([None, None], tf.float32), *segment_inputs[3:]],
            )

    @classmethod
    def from_task(cls, task, model: keras.Model) -> "LocalizationModule":
        """The module of a trained localization task's model (sharing its weights)."""
        return cls(task.serving_model(model), task.tokenizer, LocalizerSpec.from_task(task), task.audio_view)

    @property
    def default_function_keys(self) -> dict[str, str]:  # type: ignore[override]
        keys = {"records": "serving_default"}
        if self.spec.takes_audio_frames:
            keys.update({"features": "localize", "waveform": "localize_waveform"})
        return keys

    def functions(self) -> Mapping[str, tf.types.experimental.PolymorphicFunction]:
        found = {"records": self.serve_records}
        if self.spec.takes_audio_frames:
            found.update({"features": self.localize, "waveform": self.localize_waveform})
        return found

    # -- the signatures' bodies ---------------------------------------------------------

    def serve(self, examples: tf.Tensor, captions: tf.Tensor) -> dict[str, tf.Tensor]:
        """Localizes each caption in its video record, through the training data pipeline's code."""
        examples, captions = export_base.after_checks(
            _same_batch({"examples": examples, "captions": captions}), examples, captions
        )
        dims = dict(self.spec.stream_dims)
        m, dv = self.spec.num_segments, self.spec.video_dim
        audio_dim = self.model.input["audio"].shape[-1]

        def one(serialized):
            video = features.parse_example(serialized, self.spec.storage_dtype, self.spec.streams, dims)
            seg = self._parser.video_segments(video)
            return seg["video"], seg["audio"], video[features.DURATION]

        video, audio, duration = tf.map_fn(
            one,
            examples,
            fn_output_signature=(
                tf.TensorSpec([m, dv], tf.float32),
                tf.TensorSpec([m, audio_dim], tf.float32),
                tf.TensorSpec([], tf.float32),
            ),
        )
        checks = _check_finite("examples", {"video features": video, "audio features": audio})
        checks += _check_duration(duration, "examples: duration")
        video, audio, duration = export_base.after_checks(checks, video, audio, duration)
        mask = tf.ones([tf.shape(examples)[0], m], tf.float32)
        return self._localize_segments(captions, video, audio, mask, duration)

    def _localize_log_mel(self, captions, video, log_mel, segment_mask, duration) -> dict[str, tf.Tensor]:
        checks = _same_batch(
            {
                "captions": captions,
                "video": video,
                "log_mel": log_mel,
                "segment_mask": segment_mask,
                "duration": duration,
            }
        )
        checks.append(
            tf.debugging.assert_positive(
                tf.shape(log_mel)[1],
                message="localize: log_mel has no frames (expected [batch, frames, bins], frames > 0)",
            )
        )
        checks += _check_finite("localize", {"video": video, "log_mel": log_mel})
        checks += _check_duration(duration, "duration")
        video, log_mel, duration = export_base.after_checks(checks, video, log_mel, duration)
        m, audio_dim = self.spec.num_segments, self.model.input["audio"].shape[-1]

        def one(args):
            frames, seconds = args
            feats, rate = self._audio_view({features.AUDIO: frames})
            return data_lib.segment_means(feats, rate, seconds, m)

        audio = tf.map_fn(one, (log_mel, duration), fn_output_signature=tf.TensorSpec([m, audio_dim], tf.float32))
        audio = export_base.after_checks(_check_finite("localize", {"audio features of log_mel": audio}), audio)
        return self._localize_segments(captions, video, audio, segment_mask, duration)

    def _localize_waveform(self, captions, video, waveform, segment_mask, duration) -> dict[str, tf.Tensor]:
        checks = _same_batch({"captions": captions, "waveform": waveform})
        checks.append(
            tf.debugging.assert_positive(
                tf.shape(waveform)[1],
                message="localize_waveform: waveform has no samples (expected [batch, samples > 0])",
            )
        )
        checks += _check_finite("localize_waveform", {"waveform": waveform})
        waveform = export_base.after_checks(checks, waveform)
        return self._localize_log_mel(captions, video, self.front_end.batch(waveform), segment_mask, duration)

    def _localize_segments(self, captions, video, audio, segment_mask, duration) -> dict[str, tf.Tensor]:
        """The model and the span decoders on segment features."""
        checks = _check_captions(captions, self.tokenizer(captions))
        checks.append(
            tf.debugging.assert_equal(
                tf.reduce_all((segment_mask == 0) | (segment_mask == 1)), True, message="segment_mask must be 0 or 1"
            )
        )
        video, audio, segment_mask = export_base.after_checks(checks, video, audio, segment_mask)
        out = self.inference_step({"video": video, "audio": audio, "segment_mask": segment_mask, "caption": captions})
        attention = tf.cast(out["attention"], tf.float32)
        if self.spec.span_decoder == "attention":
            span = tf.cast(decoding.attention_span(attention, self.spec.attention_threshold), tf.float32)
        else:
            span = tf.cast(out["span"], tf.float32)
        proposals, proposal_scores = decoding.top_k_proposals(
            attention, self.spec.top_k, self.spec.attention_threshold, self.spec.nms_iou
        )
        duration = tf.cast(duration, tf.float32)
        return {
            "start_seconds": span[:, 0] * duration,
            "end_seconds": span[:, 1] * duration,
            "start": span[:, 0],
            "end": span[:, 1],
            "score": tf.cast(decoding.span_mass(attention, span), tf.float32),
            "duration": duration,
            "proposals_seconds": proposals * duration[:, None, None],
            "proposal_scores": proposal_scores,
            "video_attention": attention[..., 0],
            "audio_attention": attention[..., 1],
        }


def _longest_video(info, split: str) -> float:
    """Seconds of the longest video of a split (read from the records' durations alone)."""
    spec = {features.DURATION: tf.io.FixedLenFeature([], tf.float32)}
    longest = 0.0
    for path in info.files(split):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            longest = max(longest, float(tf.io.parse_single_example(record, spec)[features.DURATION]))
    return float(np.ceil(longest))


def _same_batch(inputs: Mapping[str, tf.Tensor]) -> list:
    """Checks that every input has the first input's batch size, naming those that differ."""
    (first, ref), *rest = inputs.items()
    return [
        tf.debugging.assert_equal(
            tf.shape(value)[0],
            tf.shape(ref)[0],
            message=f"{name} and {first} must have the same batch size (one row per caption)",
        )
        for name, value in rest
    ]


def _check_finite(where: str, tensors: Mapping[str, tf.Tensor]) -> list:
    return [
        tf.debugging.assert_all_finite(value, f"{where}: {name} holds NaN or Inf") for name, value in tensors.items()
    ]


def _check_duration(duration: tf.Tensor, name: str) -> list:
    return [
        tf.debugging.assert_all_finite(duration, f"{name} holds NaN or Inf"),
        tf.debugging.assert_positive(duration, message=f"{name} must be > 0 seconds"),
    ]


def _check_captions(captions: tf.Tensor, tokens: tf.Tensor) -> list:
    """Every caption must hold a word, and a word the model's vocabulary knows (id > 1); failures name the captions."""
    return [
        tf.debugging.Assert(tf.reduce_all(ok), [message, tf.boolean_mask(captions, tf.logical_not(ok))], summarize=8)
        for ok, message in (
            (tf.reduce_any(tokens > 0, axis=1), "captions: empty (no word after normalization):"),
            (
                tf.reduce_any(tokens > 1, axis=1),
                "captions: no word the model knows (another language or script?):",
            ),
        )
    ]
