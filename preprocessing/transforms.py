"""The preprocessing job's stages, as composite PTransforms and the DoFns they apply."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import TYPE_CHECKING, Iterable, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from avalign import features, fileio, hyperparams
from preprocessing import annotations as annotations_lib
from preprocessing.config import PreprocessConfig
from preprocessing.records import SPLITS, Caption, Rejected, VideoAnnotation

if TYPE_CHECKING:
    import tensorflow as tf

    from preprocessing.extract import Stream
    from preprocessing.media import DecodedMedia

REJECTED = "rejected"
NAMESPACE = "avalign.preprocessing"
RECORD_SUFFIX = ".tfrecord.gz"
DEADLETTER_PREFIX = os.path.join("deadletter", "rejected")


def _rejected(input_: str, stage: str, reason: str) -> beam.pvalue.TaggedOutput:
    Metrics.counter(NAMESPACE, f"rejected_{stage}").inc()
    logging.warning("Rejected %s at %s: %s", input_, stage, reason)
    return beam.pvalue.TaggedOutput(REJECTED, Rejected(input_, stage, reason))


# ---------------------------------------------------------------- ReadAnnotations


class ReadAnnotationsFn(beam.DoFn):
    """Reads one annotation file into VideoAnnotations; refusals go to the dead letter."""

    def __init__(self, fmt: str, reader_kwargs: dict):
        self._fmt = fmt
        self._kwargs = reader_kwargs

    def process(self, path: str):
        for item in annotations_lib.read_annotations(self._fmt, path, **self._kwargs):
            if isinstance(item, Rejected):
                Metrics.counter(NAMESPACE, "rejected_ReadAnnotations").inc()
                yield beam.pvalue.TaggedOutput(REJECTED, item)
            else:
                Metrics.counter(NAMESPACE, "videos_read").inc()
                Metrics.counter(NAMESPACE, "captions_read").inc(len(item.captions))
                yield item


class Read(NamedTuple):
    """What ReadAnnotations gives.

    Attributes:
      videos: the VideoAnnotations read.
      rejected: the entries and captions the reader refused, as Rejected.
    """

    videos: beam.PCollection
    rejected: beam.PCollection


class ReadAnnotations(beam.PTransform):
    """Reads an annotation file (a corpus dir for 'builtin') as a format; applied to the pipeline."""

    def __init__(self, path: str, fmt: str, reader_kwargs: dict):
        """Initializes the transform.

        Args:
          path: the annotation file (the corpus directory for 'builtin').
          fmt: a key of annotations.READERS.
          reader_kwargs: the format's reader arguments (split, durations,
            language, max_overshoot ...).
        """
        super().__init__()
        self._path = path
        self._fmt = fmt
        self._kwargs = dict(reader_kwargs)

    def expand(self, pbegin):
        read = (
            pbegin
            | "AnnotationFiles" >> beam.Create([self._path])
            | "Read" >> beam.ParDo(ReadAnnotationsFn(self._fmt, self._kwargs)).with_outputs(REJECTED, main="videos")
        )
        return Read(read.videos, read[REJECTED])


# ---------------------------------------------------------------- ExtractFeatures


def check_captions(
    ann: VideoAnnotation, duration: float, max_overshoot: float
) -> tuple[list[Caption], list[tuple[Caption, str]]]:
    """Validates captions against the decoded media's duration.

    A caption may end up to `max_overshoot` seconds past the media (clamped):
    container durations and annotation durations differ by a frame or two.

    Returns:
      (kept captions, [(refused caption, reason)]).
    """
    kept, refused = [], []
    for c in ann.captions:
        if not (math.isfinite(c.start) and math.isfinite(c.end)):
            refused.append((c, f"non-finite time [{c.start}, {c.end}]"))
        elif c.end <= c.start:
            refused.append((c, f"end {c.end} <= start {c.start}"))
        elif c.start >= duration:
            refused.append((c, f"starts at {c.start:.3f} s, at or after the media's end {duration:.3f} s"))
        elif c.end > duration + max_overshoot:
            refused.append((c, f"ends at {c.end:.3f} s, past the media's end {duration:.3f} s"))
        elif not c.text.strip():
            refused.append((c, "empty caption"))
        else:
            kept.append(c if c.end <= duration else Caption(c.start, duration, c.text, c.text_en, c.audio_dependent))
    return kept, refused


class _Refusal(Exception):
    """A step's refusal of a whole video: what its dead-letter record says."""

    def __init__(self, input_: str, stage: str, reason: str):
        super().__init__(reason)
        self.input = input_
        self.stage = stage
        self.reason = reason


class ExtractFeaturesFn(beam.DoFn):
    """Decodes one video and computes its audio and visual features.

    Emits (split, video_id, serialized tf.train.Example, dims) for good videos
    and a Rejected (to the dead letter) for anything that cannot be used.
    """

    def __init__(self, cfg: PreprocessConfig, videos_dir: str):
        self._cfg = cfg
        self._videos_dir = videos_dir
        self._extractor = None

    def setup(self):
        from preprocessing import extract

        # The per-video work is MediaFeatureExtractor's, which serving runs on a user's file too.
        self._extractor = extract.MediaFeatureExtractor(self._cfg)
        self._good = Metrics.counter(NAMESPACE, "videos_written")
        self._seconds = Metrics.counter(NAMESPACE, "seconds_of_media")
        self._no_audio = Metrics.counter(NAMESPACE, "videos_without_audio")
        self._captions = Metrics.counter(NAMESPACE, "captions_written")

    def process(self, ann: VideoAnnotation):
        """Decode the media, check the captions against it, compute the features, build the example."""
        try:
            path = self._media_path(ann)
            decoded, duration = self._decode(path)
        except _Refusal as refusal:
            yield _rejected(refusal.input, refusal.stage, refusal.reason)
            return
        kept, refusals = self._check_captions(ann, duration)
        yield from refusals
        if ann.captions and not kept:
            yield _rejected(ann.video_id, "CheckCaptions", "no usable caption left")
            return
        try:
            logmel, streams = self._extractor.features(decoded, duration, ann.video_id)
            example = self._example(ann, duration, kept, logmel, decoded.audio_present, streams)
        except (ValueError, KeyError, OSError) as e:
            yield _rejected(path, "ExtractFeatures", str(e))
            return
        self._count_written(duration, len(kept), decoded.audio_present)
        dims = {"audio": int(logmel.shape[1]), **{s: int(stream.matrix.shape[1]) for s, stream in streams.items()}}
        yield ann.split, ann.video_id, example.SerializeToString(), dims

    def _media_path(self, ann: VideoAnnotation) -> str:
        """The video's media file inside videos_dir.

        Raises:
          _Refusal: at ResolveMedia, naming the video, when there is no such
            file or it lies outside videos_dir.
        """
        try:
            return annotations_lib.resolve_media_path(self._videos_dir, ann)
        except (ValueError, FileNotFoundError) as e:
            raise _Refusal(ann.video_id, "ResolveMedia", str(e)) from e

    def _decode(self, path: str) -> tuple[DecodedMedia, float]:
        """Decodes the audio, and the frames when an extractor needs them.

        With imported (or no) visual streams no frame is decoded, so an
        audio-only input makes a good record.

        Returns:
          (the decoded media, its duration in seconds, > 0).

        Raises:
          _Refusal: at DecodeVideo, naming the file, when it cannot be decoded,
            has no video stream that an extractor needs, or lasts no time.
        """
        from preprocessing import extract, media

        try:
            return self._extractor.decode(path)
        except (media.NoVideoStreamError, extract.EmptyMediaError) as e:
            raise _Refusal(path, "DecodeVideo", e.reason) from e
        except (media.MediaError, OSError) as e:
            raise _Refusal(path, "DecodeVideo", str(e)) from e

    def _check_captions(
        self, ann: VideoAnnotation, duration: float
    ) -> tuple[list[Caption], list[beam.pvalue.TaggedOutput]]:
        """Checks the captions against the decoded duration (see check_captions).

        Returns:
          (kept captions, a dead-letter record per refused caption).
        """
        kept, refused = check_captions(ann, duration, self._cfg.max_overshoot_seconds)
        refusals = [
            _rejected(f"{ann.video_id} [{c.start}, {c.end}] {c.text!r}", "CheckCaptions", reason)
            for c, reason in refused
        ]
        return kept, refusals

    def _example(
        self,
        ann: VideoAnnotation,
        duration: float,
        captions: list[Caption],
        logmel: np.ndarray,
        audio_present: bool,
        streams: dict[str, Stream],
    ) -> tf.train.Example:
        """The video's tf.train.Example (raises ValueError for values it cannot store)."""
        record = features.VideoFeatures(
            video_id=ann.video_id,
            split=ann.split,
            language=ann.language,
            source=ann.source,
            duration=duration,
            caption_start=np.array([c.start for c in captions], np.float32),
            caption_end=np.array([c.end for c in captions], np.float32),
            caption_text=[c.text for c in captions],
            caption_text_en=[c.text_en for c in captions],
            caption_audio_dependent=np.array([c.audio_dependent for c in captions], np.int64),
            audio=logmel,
            audio_rate=self._cfg.audio.frame_rate,
            audio_present=bool(audio_present),
            visual={s: stream.matrix for s, stream in streams.items()},
            visual_rate={s: stream.rate for s, stream in streams.items()},
            visual_extractor={s: stream.extractor for s, stream in streams.items()},
        )
        return features.to_example(record, self._cfg.storage_dtype)

    def _count_written(self, duration: float, num_captions: int, audio_present: bool) -> None:
        self._good.inc()
        self._seconds.inc(int(round(duration)))
        self._captions.inc(num_captions)
        if not audio_present:
            self._no_audio.inc()


class Extracted(NamedTuple):
    """What ExtractFeatures gives.

    Attributes:
      records: (split, video_id, serialized tf.train.Example, dims) per good video.
      rejected: the videos and captions refused, as Rejected.
    """

    records: beam.PCollection
    rejected: beam.PCollection


class ExtractFeatures(beam.PTransform):
    """Decodes each VideoAnnotation's media and computes its features (ExtractFeaturesFn)."""

    def __init__(self, cfg: PreprocessConfig, videos_dir: str):
        super().__init__()
        self._cfg = cfg
        self._videos_dir = videos_dir

    def expand(self, videos):
        extracted = (
            videos
            # One reader emits every video; without a reshuffle the runner would
            # fuse decoding to that one step and decode them all on one worker.
            | "Redistribute" >> beam.Reshuffle()
            | "Extract"
            >> beam.ParDo(ExtractFeaturesFn(self._cfg, self._videos_dir)).with_outputs(REJECTED, main="records")
        )
        return Extracted(extracted.records, extracted[REJECTED])


# ---------------------------------------------------------------- WriteRecords


def shard_of(video_id: str, num_shards: int) -> int:
    """Stable shard index of a video (independent of runner and input order)."""
    digest = hashlib.sha1(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_path(output_dir: str, split: str, shard: int, num_shards: int) -> str:
    """The path of a split's shard file under `output_dir`."""
    return os.path.join(output_dir, split, f"{split}-{shard:05d}-of-{num_shards:05d}{RECORD_SUFFIX}")


class WriteShardFn(beam.DoFn):
    """Writes one shard: its records sorted by video id, so output is deterministic.

    The shard is written under a temporary name and renamed into place, so a
    killed worker never leaves a half-written file under a shard's name.
    Emits (split, path relative to the output dir, number of records).
    """

    def __init__(self, output_dir: str, num_shards: int):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, element):
        import tensorflow as tf

        (split, shard), records = element
        path = shard_path(self._output_dir, split, shard, self._num_shards)
        tf.io.gfile.makedirs(os.path.dirname(path))
        ordered = sorted(records, key=lambda r: r[0])
        tmp = features.temp_path(path)
        with tf.io.TFRecordWriter(tmp, options="GZIP") as writer:
            for _, serialized in ordered:
                writer.write(serialized)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        yield split, f"{split}/{os.path.basename(path)}", len(ordered)


class WriteRecords(beam.PTransform):
    """Shards (split, video_id, bytes, ...) by a stable hash and writes every shard file.

    Returns a PCollection of (split, relative path, number of records), one per shard.
    """

    def __init__(self, output_dir: str, num_shards: int, splits: Iterable[str]):
        super().__init__()
        self._output_dir = output_dir
        self._num_shards = num_shards
        self._splits = tuple(splits)

    def expand(self, records):
        n = self._num_shards
        # Every shard of every split gets a (possibly empty) file, so the layout
        # is the same whatever the data.
        empty = records.pipeline | "AllShards" >> beam.Create([((s, i), None) for s in self._splits for i in range(n)])
        keyed = records | "KeyByShard" >> beam.Map(lambda r: ((r[0], shard_of(r[1], n)), (r[1], r[2])))
        return (
            (keyed, empty)
            | "MergeShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "DropPlaceholders" >> beam.MapTuple(lambda k, vs: (k, [v for v in vs if v is not None]))
            | "WriteShards" >> beam.ParDo(WriteShardFn(self._output_dir, n))
        )


# ---------------------------------------------------------------- WriteDeadLetter


class WriteDeadLetter(beam.PTransform):
    """Writes Rejected items to <output_dir>/deadletter/rejected.jsonl, one JSON object a line.

    The lines are sorted, so the same inputs give the same file whatever order
    the runner sees them in; a run that refuses nothing writes an empty file.
    Returns a PCollection of the written file's path, which WriteSchema waits for.
    """

    def __init__(self, output_dir: str):
        super().__init__()
        self._prefix = os.path.join(output_dir, DEADLETTER_PREFIX)

    def expand(self, rejected):
        return (
            rejected
            | "ToJson" >> beam.Map(lambda r: json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True))
            | "Collect" >> beam.combiners.ToList()
            | "Sort" >> beam.FlatMap(sorted)
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", shard_name_template="")
        )


# ---------------------------------------------------------------- WriteSchema


def remove_stale_shards(output_dir: str, record_pattern: str, listed: Iterable[str], splits: Iterable[str]) -> list:
    """Removes shard files (and leftover temporary files) that `listed` does not name.

    They are what an earlier run left behind (e.g. one with another
    num_shards, or one that was killed); no schema file describes them.

    Args:
      output_dir: the job's output dir.
      record_pattern: the shard glob relative to output_dir, with '{split}'.
      listed: the shard paths (relative to output_dir) the new schema lists.
      splits: the splits to look in.

    Returns:
      The removed paths.
    """
    removed = []
    for split in splits:
        # Compared by name within the split dir: glob may spell output_dir differently.
        keep = [os.path.basename(p) for p in listed if p.startswith(f"{split}/")]
        pattern = os.path.relpath(record_pattern.format(split=split), split)
        leftovers = f".{split}-*{features.TEMP_MARKER}*"
        removed += fileio.remove_unlisted(os.path.join(output_dir, split), pattern, keep, leftovers)
    return removed


def _merge_dims(dims_list: Iterable[dict]) -> dict:
    merged: dict = {}
    for dims in dims_list:
        for key, value in dims.items():
            merged.setdefault(key, set()).add(value)
    return {k: sorted(v) for k, v in merged.items()}


class WriteSchemaFn(beam.DoFn):
    """Writes schema.json once every shard and the dead letter are written.

    schema.json (counts, dims, rates, config) lists exactly the shard files of
    this run with their record counts; shard files of earlier runs that it does
    not list are removed first, and it is written under a temporary name and
    renamed, so it is the job's last output.
    """

    def __init__(self, output_dir: str, cfg: PreprocessConfig, job: dict):
        self._output_dir = output_dir
        self._cfg = cfg
        self._job = job

    def process(self, shards, counts, dims, rejected, deadletter):
        del deadletter  # A side input only so that this runs after the dead letter is written.
        dims = _merge_dims(dims)
        inconsistent = {k: v for k, v in dims.items() if len(v) > 1}
        if inconsistent:
            raise ValueError(f"Feature dims differ between videos: {inconsistent}")
        cfg = self._cfg
        streams = {}
        for stream, stream_cfg in (("visual_2d", cfg.visual.stream_2d), ("visual_3d", cfg.visual.stream_3d)):
            if stream in dims:
                streams[stream] = {"dim": dims[stream][0], "rate": stream_cfg.rate}
        all_streams = dict(streams)
        if features.AUDIO_EMBEDDING in dims:
            all_streams[features.AUDIO_EMBEDDING] = {
                "dim": dims[features.AUDIO_EMBEDDING][0],
                "rate": 1.0 / cfg.audio_embedding.hop_seconds,
            }
        # Exactly the shard files this run wrote, each with its record count.
        files = {s: {rel: int(n) for split, rel, n in sorted(shards) if split == s} for s in SPLITS}
        record_pattern = "{split}/{split}-*-of-*" + RECORD_SUFFIX
        meta = {
            "counts": {s: int(counts.get(s, 0)) for s in sorted(set(counts) | set(SPLITS))},
            "rejected": int(rejected),
            "num_shards": cfg.num_shards,
            "record_pattern": record_pattern,
            "files": files,
            "storage_dtype": cfg.storage_dtype,
            "audio": {
                "feature": features.AUDIO,
                "dim": (dims.get("audio") or [cfg.audio.num_mel_bins])[0],
                "rate": cfg.audio.frame_rate,
            },
            "visual": streams,
            "streams": all_streams,
            "config": hyperparams.to_dict(cfg),
            "job": self._job,
        }
        listed = [rel for split_files in files.values() for rel in split_files]
        remove_stale_shards(self._output_dir, record_pattern, listed, SPLITS)
        path = os.path.join(self._output_dir, features.METADATA_FILE)
        features.write_metadata(path, meta)
        logging.info("Wrote %s listing %d shard files.", path, len(listed))
        yield path


class WriteSchema(beam.PTransform):
    """Writes schema.json, the job's last output, describing the records of this run.

    Applied to a dict of PCollections:
      shards: (split, path relative to output_dir, number of records) per
        written shard, as WriteRecords gives them.
      records: ExtractFeatures' records, for the counts per split and the dims.
      rejected: every Rejected, for their count.
      deadletter: the written dead-letter file (WriteDeadLetter), waited for.

    Returns a PCollection of schema.json's path.
    """

    def __init__(self, output_dir: str, cfg: PreprocessConfig, job: dict):
        """Initializes the transform.

        Args:
          output_dir: the job's output dir.
          cfg: the resolved job config, stored in the schema.
          job: the job's inputs and output (annotations, format, dirs), stored in the schema.
        """
        super().__init__()
        self._output_dir = output_dir
        self._cfg = cfg
        self._job = job

    def expand(self, inputs):
        records = inputs["records"]
        counts = (
            records
            | "SplitOf" >> beam.Map(lambda r: r[0])
            | "CountPerSplit" >> beam.combiners.Count.PerElement()
            | "CountsDict" >> beam.combiners.ToDict()
        )
        dims = (
            records
            | "DimsOf" >> beam.Map(lambda r: json.dumps(r[3], sort_keys=True))
            | "DistinctDims" >> beam.Distinct()
            | "ParseDims" >> beam.Map(json.loads)
            | "DimsList" >> beam.combiners.ToList()
        )
        n_rejected = inputs["rejected"] | "CountRejected" >> beam.combiners.Count.Globally()
        # The main input is every written shard and the dead letter's file is a
        # side input, so the schema is written only once both are.
        return (
            inputs["shards"]
            | "AllWritten" >> beam.combiners.ToList()
            | "Write"
            >> beam.ParDo(
                WriteSchemaFn(self._output_dir, self._cfg, self._job),
                counts=beam.pvalue.AsSingleton(counts),
                dims=beam.pvalue.AsSingleton(dims),
                rejected=beam.pvalue.AsSingleton(n_rejected),
                deadletter=beam.pvalue.AsList(inputs["deadletter"]),
            )
        )
