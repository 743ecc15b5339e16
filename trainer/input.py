"""tf.data over avalign's TFRecords: list shards, decode with the one feature spec, validate."""

from __future__ import annotations

import logging
import os
from typing import Optional

import tensorflow as tf

from preprocessing import features

AUTOTUNE = tf.data.AUTOTUNE


class RecordsError(ValueError):
    """The records don't fit the config (missing stream, wrong dims, no files)."""


class RecordsInfo:
    """What a records dir holds, read from its schema.json.

    Attributes:
      records_dir: the directory.
      meta: the parsed schema.json.
      storage_dtype: dtype of the stored matrices.
      audio_dim: log-Mel bins.
      audio_rate: audio frames per second.
      stream_dims: stream (visual, or the optional audio embedding) -> dim.
      stream_rates: stream -> vectors per second.
    """

    def __init__(self, records_dir: str):
        if not records_dir:
            raise RecordsError("data.records_dir is empty: point it at a preprocessing output dir.")
        self.records_dir = records_dir
        self.meta = features.read_metadata(records_dir)
        self.storage_dtype = self.meta["storage_dtype"]
        self.audio_dim = int(self.meta["audio"]["dim"])
        self.audio_rate = float(self.meta["audio"]["rate"])
        streams = self.meta.get("streams", self.meta["visual"])
        self.stream_dims = {k: int(v["dim"]) for k, v in streams.items()}
        self.stream_rates = {k: float(v["rate"]) for k, v in streams.items()}

    def check_streams(self, streams) -> None:
        missing = [s for s in streams if s not in self.stream_dims]
        if missing:
            raise RecordsError(
                f"{self.records_dir}: records lack stream(s) {missing}; they hold {sorted(self.stream_dims)}."
            )

    def files(self, split: str) -> list[str]:
        pattern = os.path.join(self.records_dir, self.meta["record_pattern"].format(split=split))
        files = sorted(tf.io.gfile.glob(pattern))
        if not files:
            raise RecordsError(f"No records for split {split!r} matching {pattern}.")
        return files

    def count(self, split: str) -> int:
        return int(self.meta["counts"].get(split, 0))

    @property
    def audio_config(self):
        """The AudioConfig the records were made with (for the MFCC view)."""
        from avalign import hyperparams
        from preprocessing.config import AudioConfig

        return hyperparams.from_dict(AudioConfig, self.meta["config"]["audio"])


def read_videos(
    info: RecordsInfo,
    split: str,
    streams,
    is_training: bool,
    seed: int = 0,
    languages=(),
    max_videos: int = 0,
    input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
    """A dataset of parsed video records (one element per video).

    Files are read in sorted order and, when training, shuffled by seed; the
    dataset is sharded by input pipeline under multi-worker strategies.
    """
    info.check_streams(streams)
    files = info.files(split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(4, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    dims = {s: info.stream_dims[s] for s in streams}
    dims[features.AUDIO] = info.audio_dim
    ds = ds.map(
        lambda s: features.parse_example(s, info.storage_dtype, tuple(streams), dims),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if languages:
        langs = tf.constant(list(languages))
        ds = ds.filter(lambda v: tf.reduce_any(tf.equal(v[features.LANGUAGE], langs)))
    if max_videos:
        ds = ds.take(max_videos)
    return ds


def validate_records(info: RecordsInfo, split: str, streams, on_bad_record: str = "error") -> dict:
    """Checks every record of a split before training starts.

    Returns:
      Counts: videos, captions, skipped (with reasons logged).

    Raises:
      RecordsError: on the first bad record when on_bad_record is 'error',
        naming the video and the field.
    """
    spec = features.feature_spec(tuple(streams))
    counts = {"videos": 0, "captions": 0, "skipped": 0}
    for f in info.files(split):
        for raw in tf.data.TFRecordDataset(f, compression_type="GZIP"):
            try:
                p = tf.io.parse_single_example(raw, spec)
            except tf.errors.InvalidArgumentError as e:
                reason = f"{f}: record #{counts['videos'] + counts['skipped']} misses a required feature: {e.message.splitlines()[0]}"
                if on_bad_record == "error":
                    raise RecordsError(reason) from None
                logging.warning("Skipping: %s", reason)
                counts["skipped"] += 1
                continue
            vid = p[features.VIDEO_ID].numpy().decode()
            problems = []
            if int(p[features.AUDIO_BINS]) != info.audio_dim:
                problems.append(f"{features.AUDIO_BINS}={int(p[features.AUDIO_BINS])} but schema says {info.audio_dim}")
            for s in streams:
                dim = int(p[features.stream_keys(s)["dim"]])
                if dim != info.stream_dims[s]:
                    problems.append(f"{s}/dim={dim} but schema says {info.stream_dims[s]}")
            n_captions = int(tf.size(p[features.CAPTION_TEXT].values))
            if problems:
                reason = f"{f}: video {vid}: " + "; ".join(problems)
                if on_bad_record == "error":
                    raise RecordsError(reason)
                logging.warning("Skipping: %s", reason)
                counts["skipped"] += 1
                continue
            counts["videos"] += 1
            counts["captions"] += n_captions
    return counts


def read_split(info: RecordsInfo, data_cfg, split: str, streams, is_training: bool, seed: int = 0) -> tf.data.Dataset:
    """`read_videos` with the data config's language filter and training-set cap for `split`."""
    return read_videos(
        info,
        split,
        streams,
        is_training,
        seed=seed,
        languages=data_cfg.languages_of(split),
        max_videos=data_cfg.max_train_videos if split == data_cfg.train_split else 0,
    )
