"""Beam job: raw videos + annotations -> sharded, gzipped TFRecords per split.

Usage:
  python -m preprocessing.pipeline --annotations PATH --format FORMAT \
      --videos_dir DIR --output_dir DIR [job flags] [Beam pipeline options]

Job flags are parsed apart from the pipeline options, which pass through to the
runner untouched (`--runner`, `--direct_num_workers`,
`--direct_running_mode=multi_processing`, `--project`, `--temp_location`,
`--setup_file` ...). An option that is neither a job flag nor a Beam option is
an error, so a mistyped flag never vanishes.

Before the pipeline starts, the job checks what its flags name (check_inputs,
check_output_dir): a videos dir that is not there, an output dir it cannot
write, or annotations that give no video as --format ends it with exit 2 and a
message naming the input. Bad videos and captions go to the dead letter.

Outputs under --output_dir:
  <split>/<split>-SSSSS-of-NNNNN.tfrecord.gz   one tf.train.Example per video
  schema.json                                 counts, dims, rates, resolved config and
                                              the exact shard files (written last)
  deadletter/rejected.jsonl                   every refused input with stage and reason
  config.yaml                                 the resolved job config
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import uuid
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from avalign import features, hyperparams
from preprocessing import annotations as annotations_lib
from preprocessing.config import PreprocessConfig
from preprocessing.records import SPLITS, Caption, Rejected, VideoAnnotation

REJECTED = "rejected"
NAMESPACE = "avalign.preprocessing"
RECORD_SUFFIX = ".tfrecord.gz"


def _rejected(input_: str, stage: str, reason: str) -> beam.pvalue.TaggedOutput:
    Metrics.counter(NAMESPACE, f"rejected_{stage}").inc()
    logging.warning("Rejected %s at %s: %s", input_, stage, reason)
    return beam.pvalue.TaggedOutput(REJECTED, Rejected(input_, stage, reason))


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


class ExtractFeaturesFn(beam.DoFn):
    """Decodes one video and computes its audio and visual features.

    Emits (split, video_id, serialized tf.train.Example, dims) for good videos
    and a Rejected (to the dead letter) for anything that cannot be used.
    """

    def __init__(self, cfg: PreprocessConfig, videos_dir: str):
        self._cfg = cfg
        self._videos_dir = videos_dir
        self._extractors = {}
        self._imported = {}
        self._stream_cfgs = {"visual_2d": cfg.visual.stream_2d, "visual_3d": cfg.visual.stream_3d}

    def setup(self):
        from preprocessing import imported, visual

        imports = {"visual_2d": self._cfg.imported_2d, "visual_3d": self._cfg.imported_3d}
        for name, stream_cfg in self._stream_cfgs.items():
            imported_cfg = imports[name]
            if imported_cfg.kind == "npy":
                self._imported[name] = imported.NpyFeatureSource(imported_cfg.path, imported_cfg.rate)
            elif imported_cfg.kind == "hdf5":
                key = imported_cfg.dataset_key or None
                self._imported[name] = imported.Hdf5FeatureSource(imported_cfg.path, imported_cfg.rate, key)
            elif stream_cfg.extractor:
                self._extractors[name] = visual.get_extractor(stream_cfg)
        self._audio_embedding = None
        if self._cfg.audio_embedding.handle:
            from preprocessing import audio_embedding

            emb = self._cfg.audio_embedding
            self._audio_embedding = audio_embedding.HubAudioEmbedding(
                emb.handle, emb.key(), emb.hop_seconds, self._cfg.audio.sample_rate
            )
        self._good = Metrics.counter(NAMESPACE, "videos_written")
        self._seconds = Metrics.counter(NAMESPACE, "seconds_of_media")
        self._no_audio = Metrics.counter(NAMESPACE, "videos_without_audio")
        self._captions = Metrics.counter(NAMESPACE, "captions_written")

    def _no_video_reason(self) -> str:
        streams = ", ".join(f"{s} ({self._stream_cfgs[s].extractor})" for s in sorted(self._extractors))
        return (
            f"no video stream; this job needs visual features, extracted from frames for {streams}. "
            "Give this video's visual features as imported ones (imported_2d / imported_3d), "
            "or set those streams' extractor to '' to write audio-only records"
        )

    def process(self, ann: VideoAnnotation):
        from avalign import audio
        from preprocessing import imported, media

        cfg = self._cfg
        try:
            path = annotations_lib.resolve_media_path(self._videos_dir, ann)
        except (ValueError, FileNotFoundError) as e:
            yield _rejected(ann.video_id, "ResolveMedia", str(e))
            return
        # Frames are decoded only for extractors; with imported (or no) visual
        # streams an audio-only input makes a good record.
        need_frames = bool(self._extractors)
        if need_frames and media.is_audio_file(path):
            yield _rejected(path, "DecodeVideo", self._no_video_reason())
            return
        try:
            decoded = media.decode_media(
                path,
                sample_rate=cfg.audio.sample_rate,
                frame_rate=cfg.decode_frame_rate if need_frames else None,
                max_side=cfg.max_side or None,
            )
        except media.NoVideoStreamError:
            yield _rejected(path, "DecodeVideo", self._no_video_reason())
            return
        except (media.MediaError, OSError) as e:
            yield _rejected(path, "DecodeVideo", str(e))
            return
        duration = float(decoded.duration)
        if not duration > 0:
            yield _rejected(path, "DecodeVideo", f"decoded duration is {duration}")
            return
        kept, refused = check_captions(ann, duration, cfg.max_overshoot_seconds)
        for c, reason in refused:
            yield _rejected(f"{ann.video_id} [{c.start}, {c.end}] {c.text!r}", "CheckCaptions", reason)
        if ann.captions and not kept:
            yield _rejected(ann.video_id, "CheckCaptions", "no usable caption left")
            return
        try:
            logmel = audio.compute_log_mel_numpy(decoded.waveform, cfg.audio)
            visual_feats, rates, names = {}, {}, {}
            for stream, extractor in self._extractors.items():
                visual_feats[stream] = extractor.extract(decoded.frames, decoded.frame_rate, duration)
                rates[stream] = self._stream_cfgs[stream].rate
                names[stream] = f"{extractor.name}:{extractor.version}"
            if self._audio_embedding is not None:
                emb, emb_rate = self._audio_embedding(decoded.waveform)
                visual_feats[features.AUDIO_EMBEDDING] = emb
                rates[features.AUDIO_EMBEDDING] = emb_rate
                names[features.AUDIO_EMBEDDING] = f"hub:{self._cfg.audio_embedding.handle}"
            for stream, source in self._imported.items():
                rate = self._stream_cfgs[stream].rate
                raw = source.load(ann.video_id)
                visual_feats[stream] = imported.resample_features(raw, source.rate, rate, duration)
                rates[stream] = rate
                names[stream] = f"imported:{source.version}"
            record = features.VideoFeatures(
                video_id=ann.video_id,
                split=ann.split,
                language=ann.language,
                source=ann.source,
                duration=duration,
                caption_start=np.array([c.start for c in kept], np.float32),
                caption_end=np.array([c.end for c in kept], np.float32),
                caption_text=[c.text for c in kept],
                caption_text_en=[c.text_en for c in kept],
                caption_audio_dependent=np.array([c.audio_dependent for c in kept], np.int64),
                audio=logmel,
                audio_rate=cfg.audio.frame_rate,
                audio_present=bool(decoded.audio_present),
                visual=visual_feats,
                visual_rate=rates,
                visual_extractor=names,
            )
            example = features.to_example(record, cfg.storage_dtype)
        except (ValueError, KeyError, OSError) as e:
            yield _rejected(path, "ExtractFeatures", str(e))
            return
        self._good.inc()
        self._seconds.inc(int(round(duration)))
        self._captions.inc(len(kept))
        if not decoded.audio_present:
            self._no_audio.inc()
        dims = {"audio": int(logmel.shape[1]), **{s: int(m.shape[1]) for s, m in visual_feats.items()}}
        yield ann.split, ann.video_id, example.SerializeToString(), dims


def shard_of(video_id: str, num_shards: int) -> int:
    """Stable shard index of a video (independent of runner and input order)."""
    digest = hashlib.sha1(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_path(output_dir: str, split: str, shard: int, num_shards: int) -> str:
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
    """Shards (split, video_id, bytes) by a stable hash and writes every shard file.

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
    import tensorflow as tf

    keep = set(listed)
    removed = []
    for split in splits:
        # Compared by name within the split dir: glob may spell output_dir differently.
        shards = tf.io.gfile.glob(os.path.join(output_dir, record_pattern.format(split=split)))
        stale = [p for p in shards if f"{split}/{os.path.basename(p)}" not in keep]
        leftovers = tf.io.gfile.glob(os.path.join(output_dir, split, f".{split}-*{features.TEMP_MARKER}*"))
        for path in sorted(stale) + sorted(leftovers):
            logging.warning("Removing %s: left by an earlier run, not part of this job's output.", path)
            tf.io.gfile.remove(path)
            removed.append(path)
    return removed


def _merge_dims(dims_list: Iterable[dict]) -> dict:
    merged: dict = {}
    for dims in dims_list:
        for key, value in dims.items():
            merged.setdefault(key, set()).add(value)
    return {k: sorted(v) for k, v in merged.items()}


class WriteMetadataFn(beam.DoFn):
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


def build_pipeline(
    p: beam.Pipeline,
    cfg: PreprocessConfig,
    annotations: str,
    fmt: str,
    videos_dir: str,
    output_dir: str,
    reader_kwargs: Optional[dict] = None,
) -> dict:
    """Adds the job's steps to `p`.

    Returns:
      Dict of the PCollections 'shards' ((split, path relative to output_dir,
      number of records) per written shard), 'rejected' and 'metadata'.
    """
    read = (
        p
        | "AnnotationFiles" >> beam.Create([annotations])
        | "ReadAnnotations"
        >> beam.ParDo(ReadAnnotationsFn(fmt, reader_kwargs or {})).with_outputs(REJECTED, main="videos")
    )
    extracted = (
        read.videos
        | "Redistribute" >> beam.Reshuffle()
        | "ExtractFeatures" >> beam.ParDo(ExtractFeaturesFn(cfg, videos_dir)).with_outputs(REJECTED, main="records")
    )
    records = extracted.records
    shards = records | "WriteRecords" >> WriteRecords(output_dir, cfg.num_shards, SPLITS)
    rejected = (read[REJECTED], extracted[REJECTED]) | "MergeRejected" >> beam.Flatten()
    deadletter = (
        rejected
        | "RejectedToJson" >> beam.Map(lambda r: json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True))
        | "SortRejected" >> beam.combiners.ToList()
        | "SortedLines" >> beam.FlatMap(sorted)
        | "WriteDeadLetter"
        >> beam.io.WriteToText(
            os.path.join(output_dir, "deadletter", "rejected"), file_name_suffix=".jsonl", shard_name_template=""
        )
    )
    counts = (
        records
        | "SplitOf" >> beam.Map(lambda r: r[0])
        | "CountPerSplit" >> beam.combiners.Count.PerElement()
        | "CountsDict" >> beam.combiners.ToDict()
    )
    dims = (
        records | "DimsOf" >> beam.Map(lambda r: json.dumps(r[3], sort_keys=True)) | "DistinctDims" >> beam.Distinct()
    )
    dims = dims | "ParseDims" >> beam.Map(json.loads) | "DimsList" >> beam.combiners.ToList()
    n_rejected = rejected | "CountRejected" >> beam.combiners.Count.Globally()
    job = {"annotations": annotations, "format": fmt, "videos_dir": videos_dir, "output_dir": output_dir}
    # schema.json goes last: its main input is every written shard, and the
    # dead letter's written file is a side input it waits for.
    metadata = (
        shards
        | "AllWritten" >> beam.combiners.ToList()
        | "WriteMetadata"
        >> beam.ParDo(
            WriteMetadataFn(output_dir, cfg, job),
            counts=beam.pvalue.AsSingleton(counts),
            dims=beam.pvalue.AsSingleton(dims),
            rejected=beam.pvalue.AsSingleton(n_rejected),
            deadletter=beam.pvalue.AsList(deadletter),
        )
    )
    return {"shards": shards, "rejected": rejected, "metadata": metadata}


def _beam_option_parser() -> argparse.ArgumentParser:
    """A parser that knows every flag of every registered PipelineOptions class."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)

    def add(cls):
        for sub in cls.__subclasses__():
            try:
                sub._add_argparse_args(parser)
            except argparse.ArgumentError:
                pass  # The same flag declared by two option classes.
            add(sub)

    add(PipelineOptions)
    return parser


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into the job's flags and the Beam pipeline options.

    Raises:
      SystemExit: (via argparse) on a flag that neither side knows.
    """
    parser = argparse.ArgumentParser(
        prog="python -m preprocessing.pipeline",
        description=__doc__.split("\n\n")[0],
        epilog="Any other --flag must be a Beam pipeline option; it is passed to the runner untouched.",
    )
    parser.add_argument("--annotations", required=True, help="Annotation file (or corpus dir for --format builtin).")
    parser.add_argument("--format", required=True, choices=sorted(annotations_lib.READERS), help="Annotation format.")
    parser.add_argument("--videos_dir", required=True, help="Directory the media paths are resolved in.")
    parser.add_argument("--output_dir", required=True, help="Where the TFRecords, schema and dead letter go.")
    parser.add_argument("--config", default=None, help="YAML file of PreprocessConfig.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Config override.")
    parser.add_argument("--durations", default=None, help="Durations CSV (Charades-STA, HowTo100M).")
    parser.add_argument("--split", default=None, choices=SPLITS, help="Split, for formats that carry none.")
    parser.add_argument("--language", default=None, help="Speech language code, for formats that carry none.")
    args, rest = parser.parse_known_args(argv)
    _, unknown = _beam_option_parser().parse_known_args(rest)
    unknown = [u for u in unknown if u.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments (neither job flags nor Beam options): {' '.join(unknown)}")
    return args, rest


def check_inputs(cfg: PreprocessConfig, annotations: str, fmt: str, videos_dir: str, reader_kwargs: dict) -> None:
    """Checks every input the job names before any worker starts; local or remote (gs://...) paths.

    A bad input found here would otherwise end the job with exit 0 and nothing
    written (every video dead-lettered), or crash every worker.

    Args:
      cfg: the resolved job config (its imported feature paths are checked).
      annotations: the annotation file (corpus dir for 'builtin').
      fmt: the annotation format.
      videos_dir: the directory media paths are resolved in.
      reader_kwargs: the format's reader arguments.

    Raises:
      FileNotFoundError: `videos_dir` or an imported feature path does not exist.
      ValueError: a path cannot be checked (e.g. an unknown file system), the
        reader's arguments are wrong, or the annotations give no video read as
        `fmt` (see annotations.check_annotations).
    """
    import tensorflow as tf

    from preprocessing import imported

    try:
        is_dir = tf.io.gfile.isdir(videos_dir)
        exists = is_dir or tf.io.gfile.exists(videos_dir)
    except tf.errors.OpError as e:
        raise ValueError(f"--videos_dir {videos_dir}: cannot be checked: {e.message}") from e
    if not is_dir:
        what = "is a file, not a directory" if exists else "does not exist"
        raise FileNotFoundError(
            f"--videos_dir {videos_dir} {what}; pass the directory that the annotations' media paths are relative to."
        )
    for name, imported_cfg in (("imported_2d", cfg.imported_2d), ("imported_3d", cfg.imported_3d)):
        try:
            if imported_cfg.kind == "npy":
                imported.NpyFeatureSource(imported_cfg.path, imported_cfg.rate)
            elif imported_cfg.kind == "hdf5":
                imported.Hdf5FeatureSource(imported_cfg.path, imported_cfg.rate, imported_cfg.dataset_key or None)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{name}.path: {e}") from e
    # Reads up to the first video: a missing --split or --durations, a file of
    # another format, or one whose every entry is refused stops the job here.
    annotations_lib.check_annotations(fmt, annotations, **reader_kwargs)


def check_output_dir(output_dir: str) -> None:
    """Creates `output_dir` and writes and removes a probe file in it, on any file system.

    Raises:
      ValueError: naming `output_dir` and the file system's error, if it cannot be
        created or written (a read-only place, a parent that is a file, no access).
    """
    import tensorflow as tf

    probe = os.path.join(output_dir, f".write-probe-{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(output_dir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("probe\n")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
        raise ValueError(
            f"--output_dir {output_dir}: cannot create it or write a file in it ({reason}); "
            "pass a directory that this job may create and write."
        ) from e


def run(argv=None) -> dict:
    """Runs the job; returns the final counter values.

    Every input and the output dir are checked before the pipeline starts
    (check_inputs, check_output_dir), so a bad one stops the job with an error
    that names it instead of a run that writes nothing.
    """
    args, pipeline_args = parse_args(argv)
    cfg = hyperparams.load(PreprocessConfig, args.config, args.set)
    if not os.path.exists(args.annotations) and "://" not in args.annotations:
        raise FileNotFoundError(f"--annotations {args.annotations}: no such file or directory.")
    reader_kwargs = {
        k: v for k, v in (("durations", args.durations), ("split", args.split), ("language", args.language)) if v
    }
    check_inputs(cfg, args.annotations, args.format, args.videos_dir, reader_kwargs)
    check_output_dir(args.output_dir)
    hyperparams.save(cfg, os.path.join(args.output_dir, "config.yaml"))
    options = PipelineOptions(pipeline_args)
    logging.info("Preprocessing %s (%s) -> %s", args.annotations, args.format, args.output_dir)
    # Until the new schema.json is written, the directory must not pass for
    # a finished one describing a mix of old and new shards.
    features.invalidate_metadata(args.output_dir)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, cfg, args.annotations, args.format, args.videos_dir, args.output_dir, reader_kwargs)
    result = p.result
    counters = {}
    for c in result.metrics().query()["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    return counters


def format_counters(counters: dict) -> str:
    width = max((len(k) for k in counters), default=0)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in sorted(counters.items()))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        counters = run(argv)
    except (hyperparams.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("Preprocessing counters:\n" + format_counters(counters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
