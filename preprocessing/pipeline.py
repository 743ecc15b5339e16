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

The stages (preprocessing.transforms), as build_pipeline wires them:
  ReadAnnotations -> ExtractFeatures -> WriteRecords -------------------------> WriteSchema
         |                  |                                                    ^
         +-- rejected ------+--> MergeRejected -> WriteDeadLetter ---------------+
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from avalign import features, hyperparams
from preprocessing import annotations as annotations_lib
from preprocessing.config import PreprocessConfig
from preprocessing.records import SPLITS
from preprocessing.transforms import ExtractFeatures, ReadAnnotations, WriteDeadLetter, WriteRecords, WriteSchema


def reader_arguments(cfg: PreprocessConfig, reader_kwargs: Optional[dict] = None) -> dict:
    """The annotation reader's arguments: the format's own, and the config's overshoot tolerance.

    A caption's end is checked twice, against the annotation's duration (by
    the reader) and against the decoded media's (check_captions); one
    tolerance, cfg.max_overshoot_seconds, governs both.

    Args:
      cfg: the resolved job config.
      reader_kwargs: the format's reader arguments (split, durations, language).

    Raises:
      ValueError: `reader_kwargs` sets max_overshoot itself.
    """
    reader_kwargs = dict(reader_kwargs or {})
    if "max_overshoot" in reader_kwargs:
        raise ValueError(
            f"reader argument max_overshoot={reader_kwargs['max_overshoot']!r}: the tolerance comes from the "
            f"config; set max_overshoot_seconds (now {cfg.max_overshoot_seconds!r}) instead."
        )
    return {**reader_kwargs, "max_overshoot": cfg.max_overshoot_seconds}


def build_pipeline(
    p: beam.Pipeline,
    cfg: PreprocessConfig,
    annotations: str,
    fmt: str,
    videos_dir: str,
    output_dir: str,
    reader_kwargs: Optional[dict] = None,
) -> dict:
    """Adds the job's stages to `p`.

    Args:
      p: the pipeline.
      cfg: the resolved job config.
      annotations: the annotation file (corpus dir for 'builtin').
      fmt: the annotation format.
      videos_dir: the directory media paths are resolved in.
      output_dir: where the records, dead letter and schema go.
      reader_kwargs: the format's reader arguments (split, durations,
        language); the overshoot tolerance comes from `cfg`.

    Returns:
      Dict of the PCollections 'shards' ((split, path relative to output_dir,
      number of records) per written shard), 'rejected' and 'metadata'.
    """
    job = {"annotations": annotations, "format": fmt, "videos_dir": videos_dir, "output_dir": output_dir}
    read = p | "ReadAnnotations" >> ReadAnnotations(annotations, fmt, reader_arguments(cfg, reader_kwargs))
    extracted = read.videos | "ExtractFeatures" >> ExtractFeatures(cfg, videos_dir)
    shards = extracted.records | "WriteRecords" >> WriteRecords(output_dir, cfg.num_shards, SPLITS)
    rejected = (read.rejected, extracted.rejected) | "MergeRejected" >> beam.Flatten()
    deadletter = rejected | "WriteDeadLetter" >> WriteDeadLetter(output_dir)
    metadata = {
        "shards": shards,
        "records": extracted.records,
        "rejected": rejected,
        "deadletter": deadletter,
    } | "WriteSchema" >> WriteSchema(output_dir, cfg, job)
    return {"shards": shards, "rejected": rejected, "metadata": metadata}


def beam_option_parser() -> argparse.ArgumentParser:
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
    _, unknown = beam_option_parser().parse_known_args(rest)
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
      reader_kwargs: the format's reader arguments (split, durations,
        language); the overshoot tolerance comes from `cfg`.

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
    annotations_lib.check_annotations(fmt, annotations, **reader_arguments(cfg, reader_kwargs))


def check_output_dir(output_dir: str, flag: str = "--output_dir") -> None:
    """Creates `output_dir` and writes and removes a probe file in it, on any file system.

    Args:
      output_dir: the directory.
      flag: the command-line flag that gave it, named in the error.

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
            f"{flag} {output_dir}: cannot create it or write a file in it ({reason}); "
            "pass a directory that this job may create and write."
        ) from e


def checked_job(argv=None) -> tuple[argparse.Namespace, list[str], PreprocessConfig, dict]:
    """The job's flags, Beam options, config and reader arguments, with every input checked (not the output).

    Raises:
      SystemExit: (via argparse) a flag that neither the job nor Beam knows.
      hyperparams.ConfigError, FileNotFoundError, ValueError: see `check_inputs`.
    """
    args, pipeline_args = parse_args(argv)
    cfg = hyperparams.load(PreprocessConfig, args.config, args.set)
    if not os.path.exists(args.annotations) and "://" not in args.annotations:
        raise FileNotFoundError(f"--annotations {args.annotations}: no such file or directory.")
    reader_kwargs = {
        k: v for k, v in (("durations", args.durations), ("split", args.split), ("language", args.language)) if v
    }
    check_inputs(cfg, args.annotations, args.format, args.videos_dir, reader_kwargs)
    return args, pipeline_args, cfg, reader_kwargs


def run(argv=None) -> dict:
    """Runs the job; returns the final counter values.

    Every input and the output dir are checked before the pipeline starts
    (checked_job, check_output_dir), so a bad one stops the job with an error
    that names it instead of a run that writes nothing.
    """
    args, pipeline_args, cfg, reader_kwargs = checked_job(argv)
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
    """The counters as aligned `name  value` lines, sorted by name."""
    width = max((len(k) for k in counters), default=0)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in sorted(counters.items()))


def main(argv=None) -> int:
    """Runs the job from the command line; returns the exit status (2 for a bad input, config or flag)."""
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
