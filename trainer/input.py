"""tf.data over avalign's TFRecords: list shards, decode with the one feature spec, validate."""

from __future__ import annotations

import logging
import os
from typing import Optional

import tensorflow as tf

from avalign import features

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
      readable: shard path -> number of records before the point where the
        file is damaged, for files that `validate_records` found damaged and
        skips the remainder of.
      skipped_records: shard path -> indices of records that
        `validate_records` skips.
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
        self.readable: dict[str, int] = {}
        self.skipped_records: dict[str, set] = {}
        self._checked_splits: set = set()

    def check_streams(self, streams) -> None:
        missing = [s for s in streams if s not in self.stream_dims]
        if missing:
            raise RecordsError(
                f"{self.records_dir}: records lack stream(s) {missing}; they hold {sorted(self.stream_dims)}."
            )

    def files(self, split: str) -> list[str]:
        """Exactly the shard files schema.json lists for `split`.

        Shard files in the directory that schema.json does not list (left by
        another run) are ignored, with a warning.

        Raises:
          RecordsError: a listed file is missing, or the split has no files.
        """
        pattern = os.path.join(self.records_dir, self.meta["record_pattern"].format(split=split))
        if "files" not in self.meta:
            # Written before schema.json listed its files: all there is to go on is the pattern.
            logging.warning(
                "%s: schema.json does not list its shard files (an older preprocessing job wrote it); reading "
                "every file matching %s. Rerun the preprocessing job to pin the exact files.",
                self.records_dir,
                pattern,
            )
            files = sorted(tf.io.gfile.glob(pattern))
        else:
            files = [os.path.join(self.records_dir, f) for f in sorted(self.meta["files"].get(split, {}))]
            missing = [f for f in files if not tf.io.gfile.exists(f)]
            if missing:
                raise RecordsError(
                    f"{missing[0]} is listed in {self.records_dir}/{features.METADATA_FILE} but missing"
                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: the records dir changed "
                    f"after the preprocessing job wrote it; rerun the job."
                )
            if split not in self._checked_splits:
                self._checked_splits.add(split)
                listed = {os.path.basename(f) for f in files}
                stray = sorted(f for f in tf.io.gfile.glob(pattern) if os.path.basename(f) not in listed)
                if stray:
                    logging.warning(
                        "%s: ignoring %d shard file(s) of split %r that %s does not list (left by another run): %s",
                        self.records_dir,
                        len(stray),
                        split,
                        features.METADATA_FILE,
                        ", ".join(stray),
                    )
        if not files:
            raise RecordsError(f"No records for split {split!r} in {self.records_dir} (pattern {pattern}).")
        return files

    def listed_records(self, path: str) -> Optional[int]:
        """How many records schema.json says the shard `path` holds (None if it does not say)."""
        rel = os.path.relpath(path, self.records_dir)
        n = self.meta.get("files", {}).get(rel.split("/", 1)[0], {}).get(rel)
        return None if n is None else int(n)

    def count(self, split: str) -> int:
        return int(self.meta["counts"].get(split, 0))

    @property
    def audio_config(self):
        """The AudioConfig the records were made with (for the MFCC view)."""
        from avalign import hyperparams
        from avalign.audio import AudioConfig

        return hyperparams.from_dict(AudioConfig, self.meta["config"]["audio"])


def _shard_records(info: RecordsInfo, files: list[str]):
    """A function file -> dataset of its records, leaving out what validation skipped."""
    skipped = sorted(f"{f}#{i}" for f, indices in info.skipped_records.items() for i in indices)

    def records(path, take):
        ds = tf.data.TFRecordDataset(path, compression_type="GZIP").take(take)
        if skipped:
            keys = tf.constant(skipped)

            def keep(i, _):
                key = tf.strings.join([path, tf.strings.as_string(i)], separator="#")
                return tf.logical_not(tf.reduce_any(tf.equal(keys, key)))

            ds = ds.enumerate().filter(keep).map(lambda _, r: r)
        return ds

    takes = [info.readable.get(f, -1) for f in files]
    return records, takes


def read_videos(info: RecordsInfo, split: str, streams, languages=(), max_videos: int = 0) -> tf.data.Dataset:
    """A dataset of parsed video records (one element per video), in a fixed order.

    Files are read in sorted order, interleaved deterministically, so every
    call yields the same videos in the same order. Shuffling is the task's, on
    the clips or captions it cuts from the videos when training; under a
    multi-worker strategy tf.data's auto-sharding of the task's dataset splits
    the data. Records that `validate_records` skipped (bad records, the
    damaged remainder of a file) are left out.

    Args:
      info: the records dir.
      split: the split whose files to read.
      streams: the streams to parse.
      languages: keep only videos in these languages (all when empty).
      max_videos: keep only the first this many videos (all when 0).
    """
    info.check_streams(streams)
    files = info.files(split)
    records, takes = _shard_records(info, files)
    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(takes, tf.int64)))
    ds = ds.interleave(
        records,
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


def _first_line(e: tf.errors.OpError) -> str:
    """An op error's message without TF's '{{function_node ...}}' and '[Op:...]' wrapping."""
    msg = e.message.splitlines()[0] if e.message else type(e).__name__
    if msg.startswith("{{function_node"):
        msg = msg.split("}}", 1)[-1]
    return msg.split(" [Op:", 1)[0].strip()


def validate_records(info: RecordsInfo, split: str, streams, on_bad_record: str = "error") -> dict:
    """Checks every record of a split before training starts.

    A damaged shard (cut short, bytes flipped) is reported with the file, the
    index of the first record that cannot be read and its byte offset in the
    uncompressed stream. With on_bad_record 'skip', bad records and the
    damaged remainder of a file are counted, logged and remembered in `info`
    so that `read_videos` leaves them out too.

    Returns:
      Counts: videos, captions, skipped (bad records), damaged_files,
      unread (records in damaged remainders, as far as schema.json says how
      many records each file holds), and empty_captions (caption text key ->
      video language -> captions whose text under that key is empty or
      blank; languages without any are left out).

    Raises:
      RecordsError: on the first bad record or damaged file when
        on_bad_record is 'error', naming the file, the record and the field.
    """
    spec = features.feature_spec(tuple(streams))
    counts = {"videos": 0, "captions": 0, "skipped": 0, "damaged_files": 0, "unread": 0}
    counts["empty_captions"] = {key: {} for key in (features.CAPTION_TEXT, features.CAPTION_TEXT_EN)}

    def bad(reason: str, fix: str = "") -> None:
        if on_bad_record == "error":
            raise RecordsError(reason + fix)
        logging.warning("Skipping: %s", reason)

    for f in info.files(split):
        listed = info.listed_records(f)
        records = iter(tf.data.TFRecordDataset(f, compression_type="GZIP"))
        index, offset = 0, 0
        while True:
            try:
                raw = next(records)
            except StopIteration:
                break
            except tf.errors.DataLossError as e:
                left = f"; {listed - index} of its {listed} records are lost" if listed is not None else ""
                bad(
                    f"{f} is damaged (cut short or corrupted) at record #{index}, uncompressed byte offset "
                    f"{offset}: {_first_line(e)}{left}",
                    ". Rerun the preprocessing job, or set data.on_bad_record=skip to train without the rest "
                    "of this file.",
                )
                info.readable[f] = index
                counts["damaged_files"] += 1
                counts["unread"] += max(listed - index, 0) if listed is not None else 0
                break
            i, index = index, index + 1
            offset += len(raw.numpy()) + 16  # TFRecord framing: length, its CRC, data, its CRC.
            try:
                p = tf.io.parse_single_example(raw, spec)
            except tf.errors.InvalidArgumentError as e:
                bad(f"{f}: record #{i} misses a required feature: {_first_line(e)}")
                info.skipped_records.setdefault(f, set()).add(i)
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
            if problems:
                bad(f"{f}: record #{i}, video {vid}: " + "; ".join(problems))
                info.skipped_records.setdefault(f, set()).add(i)
                counts["skipped"] += 1
                continue
            counts["videos"] += 1
            counts["captions"] += int(tf.size(p[features.CAPTION_TEXT].values))
            language = p[features.LANGUAGE].numpy().decode()
            for key, by_language in counts["empty_captions"].items():
                blank = int(tf.reduce_sum(tf.cast(tf.equal(tf.strings.strip(p[key].values), ""), tf.int32)))
                if blank:
                    by_language[language] = by_language.get(language, 0) + blank
        if f not in info.readable and listed is not None and index != listed:
            reason = (
                f"{f} holds {index} records but {features.METADATA_FILE} lists {listed}: the file changed after "
                f"the preprocessing job wrote it; rerun the job"
            )
            if on_bad_record == "error":
                raise RecordsError(reason + ".")
            logging.warning("%s (reading the %d records it holds).", reason, index)
    return counts


def read_split(info: RecordsInfo, data_cfg, split: str, streams) -> tf.data.Dataset:
    """`read_videos` with the data config's language filter and training-set cap for `split`."""
    return read_videos(
        info,
        split,
        streams,
        languages=data_cfg.languages_of(split),
        max_videos=data_cfg.max_train_videos if split == data_cfg.train_split else 0,
    )
