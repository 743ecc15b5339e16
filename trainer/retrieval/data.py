"""Retrieval clips: a fixed-length log-Mel window and the visual features over the same span."""

from __future__ import annotations

import math

import tensorflow as tf

from avalign import features

META_KEYS = ("video_id", "language", "start", "end")


class ClipParser:
    """Cuts clips out of parsed video records.

    A clip is a caption's span (or a fixed window for unlabeled video). Its
    audio is cropped to `max_audio_frames` (a random offset when training,
    the start otherwise) or zero-padded, with `audio_length` valid frames; the
    visual streams cover the same seconds, the same steps of each, padded to a
    fixed count. `visual_mask` marks the steps that every stream has: none
    when a stream is empty, and the model then leaves the clip out.

    Args:
      max_audio_frames: frames per clip (1024 = 10.24 s at 100 frames/s).
      audio_rate: audio frames per second.
      streams: visual streams (their rates must be equal).
      stream_rates: stream -> vectors per second.
      images: one frame per clip (the middle of its span): images with spoken captions.
      clip_source: 'captions' or 'windows'.
      window_seconds: window length for 'windows'.

    Raises:
      ValueError: visual streams at different rates.
    """

    def __init__(
        self,
        max_audio_frames,
        audio_rate,
        streams,
        stream_rates,
        images=False,
        clip_source="captions",
        window_seconds=10.0,
    ):
        rates = {stream_rates[s] for s in streams}
        if len(rates) != 1:
            raise ValueError(
                f"Retrieval needs visual streams at one rate; got {dict((s, stream_rates[s]) for s in streams)}."
            )
        self.max_audio_frames = int(max_audio_frames)
        self.audio_rate = float(audio_rate)
        self.streams = tuple(streams)
        self.rate = rates.pop()
        self.images = images
        self.clip_source = clip_source
        self.window_seconds = window_seconds
        self.max_visual = 1 if images else int(math.ceil(self.max_audio_frames / self.audio_rate * self.rate)) + 1

    def spans(self, video: dict):
        """(starts, ends) in seconds of the clips of one video."""
        if self.clip_source == "captions":
            return video[features.CAPTION_START], video[features.CAPTION_END]
        duration = video[features.DURATION]
        starts = tf.range(0.0, tf.maximum(duration - 0.5, 0.0) + 1e-3, self.window_seconds)
        return starts, tf.minimum(starts + self.window_seconds, duration)

    def _clip(self, video, start, end, is_training):
        logmel = video[features.AUDIO]
        total = tf.shape(logmel)[0]
        a0 = tf.clip_by_value(tf.cast(tf.round(start * self.audio_rate), tf.int32), 0, total)
        a1 = tf.clip_by_value(tf.cast(tf.round(end * self.audio_rate), tf.int32), a0, total)
        length = tf.minimum(a1 - a0, self.max_audio_frames)
        slack = a1 - a0 - length
        if is_training:
            offset = tf.random.uniform([], 0, slack + 1, dtype=tf.int32)
        else:
            offset = tf.zeros([], tf.int32)
        a0 = a0 + offset
        audio = logmel[a0 : a0 + length]
        audio = tf.pad(audio, [[0, self.max_audio_frames - length], [0, 0]])
        # The visual span follows the audio window actually taken.
        t0 = tf.cast(a0, tf.float32) / self.audio_rate
        t1 = tf.cast(a0 + length, tf.float32) / self.audio_rate
        x = {
            "audio": tf.ensure_shape(audio, [self.max_audio_frames, logmel.shape[-1]]),
            "audio_length": tf.maximum(length, 1),
            "audio_present": tf.cast(video[features.AUDIO_PRESENT], tf.float32) * tf.cast(length > 0, tf.float32),
        }
        # One span of steps for every stream, so that step j of each stream is the
        # same moment, cut from the steps that every stream has: a step a stream
        # lacks (a shorter or empty 3D stream) is padding in all of them and
        # masked, since the model pools every stream under the one visual_mask.
        n = tf.reduce_min(tf.stack([tf.shape(video[features.stream_keys(s)["features"]])[0] for s in self.streams]))
        last = tf.maximum(n - 1, 0)
        if self.images:
            v0 = tf.clip_by_value(tf.cast(tf.round((t0 + t1) / 2.0 * self.rate), tf.int32), 0, last)
            v1 = tf.minimum(v0 + 1, n)
        else:
            v0 = tf.clip_by_value(tf.cast(tf.floor(t0 * self.rate), tf.int32), 0, last)
            v1 = tf.clip_by_value(tf.cast(tf.math.ceil(t1 * self.rate), tf.int32), tf.minimum(v0 + 1, n), n)
            v1 = tf.minimum(v1, v0 + self.max_visual)
        count = v1 - v0
        for s in self.streams:
            feats = video[features.stream_keys(s)["features"]]
            x[s] = tf.ensure_shape(
                tf.pad(feats[v0:v1], [[0, self.max_visual - count], [0, 0]]), [self.max_visual, feats.shape[-1]]
            )
        x["visual_mask"] = tf.sequence_mask(count, self.max_visual, dtype=tf.float32)
        return x

    def clips(self, video: dict, is_training: bool = False) -> tf.data.Dataset:
        """Per-clip (features, meta) elements of one video (random crops when training)."""
        starts, ends = self.spans(video)
        idx = tf.range(tf.shape(starts)[0])

        def one(i):
            x = self._clip(video, starts[i], ends[i], is_training)
            meta = {
                "video_id": video[features.VIDEO_ID],
                "language": video[features.LANGUAGE],
                "start": starts[i],
                "end": ends[i],
            }
            return x, meta

        return tf.data.Dataset.from_tensor_slices(idx).map(one)
