"""Localization examples: one per (video, caption), video and audio as M segment means.

Times are seconds in the records and normalized to [0, 1] here, the one place
where that conversion happens (`normalized_span`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from avalign import features
from trainer.localization import decoding, losses

# Names of the per-caption tensors that are not model inputs, kept for evaluation.
META_KEYS = ("video_id", "language", "duration", "start", "end", "audio_dependent")


def segment_means(feats: tf.Tensor, rate, duration, num_segments: int, start=0.0) -> tf.Tensor:
    """Means of the feature vectors inside each of `num_segments` equal segments of a span.

    Vector i describes time i / rate. The span is [start, start + duration)
    (the whole video by default; a window for long-video inference). A segment
    that holds no vector (a short span with many segments) takes the vector
    nearest its centre.

    Args:
      feats: [T, D] float32.
      rate: vectors per second.
      duration: seconds covered by the M segments.
      num_segments: M.
      start: seconds where the span begins.

    Returns:
      [M, D] float32.
    """
    rate = tf.cast(rate, tf.float32)
    start = tf.cast(start, tf.float32)
    duration = tf.maximum(tf.cast(duration, tf.float32), 1e-3)
    n = tf.shape(feats)[0]
    times = tf.range(n, dtype=tf.float32) / rate - start
    seg = tf.cast(tf.floor(times / duration * num_segments), tf.int32)
    # Vectors outside the span (another window's; a last audio frame centred
    # exactly at the end) go to a discarded bucket.
    seg = tf.where((seg < 0) | (seg >= num_segments), num_segments, seg)
    sums = tf.math.unsorted_segment_sum(feats, seg, num_segments + 1)[:num_segments]
    counts = tf.math.unsorted_segment_sum(tf.ones([n], tf.float32), seg, num_segments + 1)[:num_segments]
    centres = start + (tf.range(num_segments, dtype=tf.float32) + 0.5) * duration / num_segments
    nearest = tf.gather(feats, tf.clip_by_value(tf.cast(tf.round(centres * rate), tf.int32), 0, n - 1))
    return tf.where(counts[:, None] > 0, sums / tf.maximum(counts, 1.0)[:, None], nearest)


def window_starts(duration: float, window: float, stride: float) -> np.ndarray:
    """Starts (seconds) of overlapping windows covering [0, duration]; the last ends at duration."""
    if duration <= window:
        return np.zeros(1)
    stride = stride if stride > 0 else window / 2.0
    starts = np.arange(0.0, duration - window + 1e-6, stride)
    if starts[-1] + window < duration - 1e-6:
        starts = np.append(starts, duration - window)
    return starts


def merge_windows(starts, window: float, spans, attention, duration: float):
    """Merges one caption's per-window predictions into one span over the whole video.

    Each window's proposal is scored by the attention mass its model put
    inside the proposed span (`decoding.span_mass`).

    Args:
      starts: [K] window starts, seconds.
      window: window length, seconds.
      spans: [K, 2] normalized spans within each window.
      attention: [K, M, 2] attention weights.
      duration: the video's duration, seconds.

    Returns:
      (span normalized to the whole video [2], score, index of the chosen window).
    """
    spans = np.asarray(spans, np.float64)
    scores = decoding.span_mass(np.asarray(attention, np.float64), spans).numpy()
    best = int(np.argmax(scores))
    absolute = np.asarray(starts, np.float64)[best] + spans[best] * min(window, duration)
    return np.clip(absolute / duration, 0.0, 1.0), float(scores[best]), best


def normalized_span(start, end, duration) -> tf.Tensor:
    """Seconds -> [start, end] as fractions of the duration, clipped to [0, 1]."""
    duration = tf.maximum(tf.cast(duration, tf.float32), 1e-3)
    span = tf.stack([tf.cast(start, tf.float32), tf.cast(end, tf.float32)], axis=-1) / duration
    return tf.clip_by_value(span, 0.0, 1.0)


def caption_key(caption_field: str) -> str:
    """The record key of `data.caption_field` ('text' or 'text_en')."""
    return features.CAPTION_TEXT if caption_field == "text" else features.CAPTION_TEXT_EN


class LocalizationParser:
    """Turns parsed video records into per-caption (features, labels, meta) elements.

    Args:
      num_segments: M.
      streams: visual streams concatenated into the video features.
      stream_rates: stream -> vectors per second.
      audio_rate: audio frames per second.
      audio_view: callable parsed record -> ([T', D], frames per second of T'),
        the audio features the model sees (log-Mel, MFCC or encoder embeddings).
      caption_field: 'text' or 'text_en'.
    """

    def __init__(self, num_segments, streams, stream_rates, audio_rate, audio_view, caption_field="text"):
        self.num_segments = num_segments
        self.streams = tuple(streams)
        self.stream_rates = dict(stream_rates)
        self.audio_rate = audio_rate
        self.audio_view = audio_view
        self.caption_key = caption_key(caption_field)

    def video_segments(self, video: dict, start=0.0, length=None, audio=None) -> dict:
        """Segment means of one video's visual and audio features, over the video or a window.

        Args:
          video: a parsed record.
          start, length: the window in seconds (default: the whole video).
          audio: the audio view's (features, rate) if already computed.
        """
        m = self.num_segments
        length = video[features.DURATION] if length is None else length
        vis = [
            segment_means(video[features.stream_keys(s)["features"]], self.stream_rates[s], length, m, start)
            for s in self.streams
        ]
        audio, audio_rate = audio if audio is not None else self.audio_view(video)
        return {
            "video": tf.concat(vis, axis=-1),
            "audio": segment_means(audio, audio_rate, length, m, start),
        }

    def captions(self, video: dict) -> tf.data.Dataset:
        """Per-caption elements of one video (the video's segments computed once)."""
        seg = self.video_segments(video)
        duration = video[features.DURATION]
        n = tf.shape(video[self.caption_key])[0]
        starts, ends = video[features.CAPTION_START], video[features.CAPTION_END]
        span = normalized_span(starts, ends, duration)
        mask = tf.ones([n, self.num_segments], tf.float32)
        x = {
            "video": tf.repeat(seg["video"][None], n, axis=0),
            "audio": tf.repeat(seg["audio"][None], n, axis=0),
            "segment_mask": mask,
            "caption": video[self.caption_key],
        }
        y = {"span": span, "attention": losses.calibration_targets(span, mask)}
        meta = {
            "video_id": tf.repeat(video[features.VIDEO_ID][None], n),
            "language": tf.repeat(video[features.LANGUAGE][None], n),
            "duration": tf.repeat(duration[None], n),
            "start": starts,
            "end": ends,
            "audio_dependent": video[features.CAPTION_AUDIO_DEPENDENT],
        }
        return tf.data.Dataset.from_tensor_slices((x, y, meta))
