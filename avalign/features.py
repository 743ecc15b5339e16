"""The one feature schema of avalign's TFRecords: every key, dtype and shape.

One `tf.train.Example` per video. Matrices (audio frames, visual streams) are
stored as a single bytes feature of raw little-endian values plus their shape,
which is compact (float16 storage halves it) and parses with one `decode_raw`.
The writer (Beam), the reader (tf.data) and the serving signatures all go
through this module; nothing else spells a feature key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from avalign import fileio

SCHEMA_VERSION = 1
STORAGE_DTYPES = ("float16", "float32")

# Scalars and strings about the video.
VIDEO_ID = "video_id"
SPLIT = "split"
LANGUAGE = "language"
SOURCE = "source"
DURATION = "duration"
SCHEMA = "schema_version"
# Captions: parallel lists, one entry per caption.
CAPTION_TEXT = "captions/text"
CAPTION_TEXT_EN = "captions/text_en"
CAPTION_START = "captions/start"
CAPTION_END = "captions/end"
CAPTION_AUDIO_DEPENDENT = "captions/audio_dependent"
# Audio: log-Mel frames (num_frames, num_bins) at `audio/rate` frames/s.
AUDIO = "audio/logmel"
AUDIO_FRAMES = "audio/num_frames"
AUDIO_BINS = "audio/num_bins"
AUDIO_RATE = "audio/rate"
AUDIO_PRESENT = "audio/present"  # 0: the video had no audio track (silence stored).
# Visual streams: (num_frames, dim) at `<stream>/rate` vectors/s.
VISUAL_STREAMS = ("visual_2d", "visual_3d")
# Optional frozen audio-model embeddings, stored like a stream.
AUDIO_EMBEDDING = "audio_embedding"
STREAMS = VISUAL_STREAMS + (AUDIO_EMBEDDING,)


def _v(stream: str, part: str) -> str:
    return f"{stream}/{part}"


def stream_keys(stream: str) -> dict[str, str]:
    """Keys of one stream (visual or audio embedding): features, num_frames, dim, rate, extractor."""
    if stream not in STREAMS:
        raise ValueError(f"Unknown stream {stream!r}; valid: {STREAMS}.")
    return {p: _v(stream, p) for p in ("features", "num_frames", "dim", "rate", "extractor")}


@dataclasses.dataclass
class VideoFeatures:
    """Everything one record holds, as numpy (writer side).

    Attributes:
      video_id, split, language, source, duration: about the video.
      caption_start, caption_end: seconds, float arrays of equal length.
      caption_text, caption_text_en: lists of str, same length.
      caption_audio_dependent: int array, -1 unknown.
      audio: (frames, bins) log-Mel in dB; audio_rate frames/s.
      audio_present: False when the video had no audio track.
      visual: stream name -> (frames, dim) array; visual_rate and
        visual_extractor keyed the same way. The optional audio embedding
        stream ('audio_embedding') is keyed here too: every matrix beside the
        log-Mel frames is a stream with its rate and extractor.
    """

    video_id: str
    split: str
    language: str
    source: str
    duration: float
    caption_start: np.ndarray
    caption_end: np.ndarray
    caption_text: list
    caption_text_en: list
    caption_audio_dependent: np.ndarray
    audio: np.ndarray
    audio_rate: float
    audio_present: bool
    visual: dict
    visual_rate: dict
    visual_extractor: dict


def _bytes(values) -> tf.train.Feature:

    return tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values])
    )


def _floats(values) -> tf.train.Feature:

    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _ints(values) -> tf.train.Feature:

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _stored_matrix(x: np.ndarray, storage_dtype: str) -> np.ndarray:
    """`x` as stored: contiguous little-endian `storage_dtype`."""
    with np.errstate(over="ignore"):  # Overflow is checked by the caller, naming the key.
        return np.ascontiguousarray(x, dtype=np.dtype(storage_dtype).newbyteorder("<"))


def to_example(v: VideoFeatures, storage_dtype: str = "float16") -> tf.train.Example:
    """Serializes one video into a tf.train.Example.

    Raises:
      ValueError: inconsistent caption lists, non-2D matrices, non-finite
        values, or finite values past the storage dtype's range.
    """

    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}.")
    n = len(v.caption_text)
    lengths = {len(v.caption_start), len(v.caption_end), len(v.caption_text_en), len(v.caption_audio_dependent)}
    if lengths != {n}:
        raise ValueError(f"{v.video_id}: caption lists differ in length: {sorted(lengths | {n})}.")
    feats = {
        VIDEO_ID: _bytes([v.video_id]),
        SPLIT: _bytes([v.split]),
        LANGUAGE: _bytes([v.language]),
        SOURCE: _bytes([v.source]),
        DURATION: _floats([v.duration]),
        SCHEMA: _ints([SCHEMA_VERSION]),
        CAPTION_TEXT: _bytes(v.caption_text),
        CAPTION_TEXT_EN: _bytes(v.caption_text_en),
        CAPTION_START: _floats(v.caption_start),
        CAPTION_END: _floats(v.caption_end),
        CAPTION_AUDIO_DEPENDENT: _ints(v.caption_audio_dependent),
    }
    mats = {AUDIO: v.audio, **{stream_keys(s)["features"]: m for s, m in v.visual.items()}}
    stored = {}
    for key, m in mats.items():
        if m.ndim != 2:
            raise ValueError(f"{v.video_id}: {key} must be 2-D (frames, dim), got shape {m.shape}.")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{v.video_id}: {key} contains NaN or Inf.")
        stored[key] = _stored_matrix(m, storage_dtype)
        # Checked after the cast too: a finite value past the storage dtype's
        # range (65504 for float16) would be stored as inf.
        if not np.all(np.isfinite(stored[key])):
            finite_max = float(np.finfo(storage_dtype).max)
            raise ValueError(
                f"{v.video_id}: {key} holds values up to {float(np.max(np.abs(m))):.6g} in magnitude, past "
                f"{storage_dtype}'s largest finite value {finite_max:.6g}, so they would be stored as inf; "
                f"set storage_dtype=float32 or scale the features."
            )
    feats[AUDIO] = _bytes([stored[AUDIO].tobytes()])
    feats[AUDIO_FRAMES] = _ints([v.audio.shape[0]])
    feats[AUDIO_BINS] = _ints([v.audio.shape[1]])
    feats[AUDIO_RATE] = _floats([v.audio_rate])
    feats[AUDIO_PRESENT] = _ints([int(bool(v.audio_present))])
    for stream, m in v.visual.items():
        k = stream_keys(stream)
        feats[k["features"]] = _bytes([stored[k["features"]].tobytes()])
        feats[k["num_frames"]] = _ints([m.shape[0]])
        feats[k["dim"]] = _ints([m.shape[1]])
        feats[k["rate"]] = _floats([v.visual_rate[stream]])
        feats[k["extractor"]] = _bytes([v.visual_extractor[stream]])
    return tf.train.Example(features=tf.train.Features(feature=feats))


def feature_spec(streams: tuple[str, ...] = VISUAL_STREAMS) -> dict:
    """The tf.io parsing spec for records holding `streams`."""

    spec = {
        VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        SPLIT: tf.io.FixedLenFeature([], tf.string),
        LANGUAGE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        SOURCE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        DURATION: tf.io.FixedLenFeature([], tf.float32),
        SCHEMA: tf.io.FixedLenFeature([], tf.int64),
        CAPTION_TEXT: tf.io.VarLenFeature(tf.string),
        CAPTION_TEXT_EN: tf.io.VarLenFeature(tf.string),
        CAPTION_START: tf.io.VarLenFeature(tf.float32),
        CAPTION_END: tf.io.VarLenFeature(tf.float32),
        CAPTION_AUDIO_DEPENDENT: tf.io.VarLenFeature(tf.int64),
        AUDIO: tf.io.FixedLenFeature([], tf.string),
        AUDIO_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        AUDIO_BINS: tf.io.FixedLenFeature([], tf.int64),
        AUDIO_RATE: tf.io.FixedLenFeature([], tf.float32),
        AUDIO_PRESENT: tf.io.FixedLenFeature([], tf.int64),
    }
    for stream in streams:
        k = stream_keys(stream)
        spec[k["features"]] = tf.io.FixedLenFeature([], tf.string)
        spec[k["num_frames"]] = tf.io.FixedLenFeature([], tf.int64)
        spec[k["dim"]] = tf.io.FixedLenFeature([], tf.int64)
        spec[k["rate"]] = tf.io.FixedLenFeature([], tf.float32)
        spec[k["extractor"]] = tf.io.FixedLenFeature([], tf.string)
    return spec


def _decode_matrix(raw, rows, cols, storage_dtype: str, dims: Optional[int]):

    flat = tf.io.decode_raw(raw, tf.dtypes.as_dtype(storage_dtype), little_endian=True)
    m = tf.cast(tf.reshape(flat, tf.stack([rows, cols])), tf.float32)
    if dims is not None:
        m = tf.ensure_shape(m, [None, dims])
    return m


def parse_example(
    serialized,
    storage_dtype: str = "float16",
    streams: tuple[str, ...] = VISUAL_STREAMS,
    dims: Optional[Mapping[str, int]] = None,
) -> dict:
    """Parses one serialized record into dense tensors (graph-safe).

    Args:
      serialized: scalar string tensor.
      storage_dtype: the dataset's storage dtype (from its schema file).
      streams: visual streams to decode.
      dims: optional static feature dims by key (AUDIO or stream name) so
        that downstream layers see static shapes.

    Returns:
      Dict keyed by the schema keys: strings/scalars, caption lists as dense
      1-D tensors, AUDIO and each '<stream>/features' as float32 (frames, dim).
    """

    dims = dict(dims or {})
    p = tf.io.parse_single_example(serialized, feature_spec(streams))
    out = {k: (tf.sparse.to_dense(t) if isinstance(t, tf.SparseTensor) else t) for k, t in p.items()}
    out[AUDIO] = _decode_matrix(p[AUDIO], p[AUDIO_FRAMES], p[AUDIO_BINS], storage_dtype, dims.get(AUDIO))
    for stream in streams:
        k = stream_keys(stream)
        out[k["features"]] = _decode_matrix(
            p[k["features"]], p[k["num_frames"]], p[k["dim"]], storage_dtype, dims.get(stream)
        )
    return out


METADATA_FILE = "schema.json"
# Files being written carry this marker until they are renamed into place.
TEMP_MARKER = ".tmp-"


def temp_path(path: str) -> str:
    """A unique temporary name beside `path`, hidden from the record patterns (leading dot)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}{TEMP_MARKER}{uuid.uuid4().hex}")


def write_metadata(path: str, metadata: Mapping[str, Any]) -> None:
    """Writes the dataset's schema/metadata JSON (counts, dims, rates, files, config).

    The file is written under a temporary name and renamed into place, so a
    reader sees either no schema file or a complete one.
    """
    fileio.write_text(path, json.dumps({"schema_version": SCHEMA_VERSION, **metadata}, indent=2, sort_keys=True))


def invalidate_metadata(output_dir: str) -> bool:
    """Removes `<output_dir>/schema.json` before a job rewrites the records it describes.

    Until the job writes a new one, readers refuse the directory instead of
    reading a mix of old and new shards.

    Returns:
      Whether there was a schema file to remove.
    """
    path = os.path.join(output_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return False
    logging.info("Removing %s: the records it describes are about to be rewritten.", path)
    tf.io.gfile.remove(path)
    return True


def read_metadata(records_dir: str) -> dict:
    """Reads `<records_dir>/schema.json`.

    Raises:
      FileNotFoundError: the directory holds no schema file: not a records
        dir, or the job that writes it did not finish.
      ValueError: the schema version is not one this code reads.
    """
    path = os.path.join(records_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{records_dir}: no {METADATA_FILE}. The preprocessing job writes it last, once every shard is "
            f"in place, so either this is not a preprocessing output dir or the job did not finish (it failed "
            f"or was killed): rerun `python -m preprocessing.pipeline --output_dir {records_dir} ...`."
        )
    with tf.io.gfile.GFile(path) as f:
        meta = json.load(f)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {meta.get('schema_version')} is not {SCHEMA_VERSION}.")
    return meta
