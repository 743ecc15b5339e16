"""Beam job: localize captions in the videos of a record set with an exported localization SavedModel.

Usage:
  python -m serving.batch_predict --records DIR --model BASE/NAME --output DIR \
      [--captions FILE] [--split SPLIT] [--batch_size N] [--num_shards N] [Beam pipeline options]

Job flags are parsed apart from the pipeline options, which pass through to the
runner untouched (`--runner`, `--direct_num_workers`,
`--direct_running_mode=multi_processing`, `--project`, `--temp_location`,
`--setup_file` ...). An option that is neither a job flag nor a Beam option is
an error, so a mistyped flag never vanishes. On Dataflow, as for the
preprocessing job:

  python -m serving.batch_predict --records gs://b/records --model gs://b/models/localizer \
      --output gs://b/predictions --runner DataflowRunner --project P --region R \
      --temp_location gs://b/tmp --setup_file ./setup.py

--model is a SavedModel version dir (it holds saved_model.pb) or a base of
integer version dirs, of which the highest is used. Its `serving_default`
signature takes `examples` (serialized records, as the preprocessing job writes
them) and `captions` (one caption per example) and gives batch-first
`start_seconds`, `end_seconds`, `score`, `duration`, `proposals_seconds` and
`proposal_scores` (among others).

Without --captions each record's own captions are localized, and each output
line carries the caption's true span as `truth`; with --captions FILE (one
caption a line, UTF-8) every caption of the file is localized in every video,
and `truth` is null.

Before the pipeline starts, the job checks what its flags name: a records dir
without schema.json, a model dir without a version or without the signature,
a captions file without a caption, or an output dir it cannot write ends it
with exit 2 and a message naming the input. A record that cannot be read,
parsed or run goes to the dead letter with its reason; the rest completes.

Outputs under --output:
  predictions-SSSSS-of-NNNNN.jsonl   one JSON object per (video, caption), sorted by
                                     video and caption; videos sharded by a stable hash
  deadletter/rejected.jsonl          every refused record or query with stage and reason
  summary.json                       counts, inputs and the exact prediction files
                                     (written last)

Each file is written under a temporary name and renamed, so a kill leaves no
half-written file under a final name. summary.json is removed when a run
starts and written once every file of the run is in place and the prediction
files of earlier runs it does not list are removed: a directory with a
summary.json holds exactly one run's predictions.

The stages, as build_pipeline wires them:
  ReadRecords -> ToQueries -> RunInference -> FormatPredictions -> WritePredictions -> WriteSummary
       |             |             |                                                      ^
       +-- rejected -+-------------+--> MergeRejected -> WriteDeadLetter -----------------+
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import Any, Iterable, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base as inference_base
from apache_beam.options.pipeline_options import PipelineOptions

from avalign import export_util, features, fileio
from preprocessing.pipeline import beam_option_parser, check_output_dir, format_counters
from preprocessing.records import SPLITS, Rejected
from preprocessing.transforms import WriteDeadLetter, shard_of
from serving import export_base
from trainer.input import RecordsError, RecordsInfo

NAMESPACE = "avalign.serving.batch_predict"
REJECTED = "rejected"
SIGNATURE = "serving_default"
SIGNATURE_INPUTS = ("examples", "captions")
SIGNATURE_OUTPUTS = ("start_seconds", "end_seconds", "score", "duration", "proposals_seconds", "proposal_scores")
PREDICTIONS_PREFIX = "predictions"
PREDICTIONS_SUFFIX = ".jsonl"
SUMMARY_FILE = "summary.json"
# Milliseconds are finer than any caption boundary; scores keep 4 decimals.
SECONDS_DIGITS = 3
SCORE_DIGITS = 4


# ---------------------------------------------------------------- inputs, checked before the pipeline


def resolve_model_dir(model_dir: str) -> str:
    """The SavedModel dir that `model_dir` names, with its localization signature checked.

    Args:
      model_dir: a version dir (holds saved_model.pb) or a base of integer
        version dirs (the highest is used).

    Returns:
      The version dir.

    Raises:
      FileNotFoundError: `model_dir` holds neither saved_model.pb nor a version.
      ValueError: the SavedModel has no `serving_default` signature with the
        localization inputs and outputs.
    """
    if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        try:
            model_dir = export_util.latest_version_dir(model_dir)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"--model {e} Pass a SavedModel dir (holding saved_model.pb) or the export base "
                "that the localization export writes its versions into."
            ) from e
    check_signature(model_dir)
    return model_dir


def model_caption_key(version_dir: str) -> str:
    """The record field of the captions the exported model was trained on (its `data.caption_field`)."""
    from trainer.localization import data as data_lib

    try:
        field = export_base.read_metadata(version_dir)["params"].get("caption_field", "text")
    except (FileNotFoundError, tf.errors.NotFoundError, KeyError):
        field = "text"
    return data_lib.caption_key(field)


def check_signature(version_dir: str) -> None:
    """Checks the SavedModel's `serving_default` inputs and outputs, from saved_model.pb, without loading it.

    Raises:
      FileNotFoundError: `version_dir` has no saved_model.pb.
      ValueError: the signature is missing or lacks an input or output the job uses.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(version_dir, "saved_model.pb")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"--model {version_dir}: no saved_model.pb; it is not a SavedModel version dir.")
    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved.ParseFromString(f.read())
    signatures = {k: v for meta in saved.meta_graphs for k, v in meta.signature_def.items()}
    if SIGNATURE not in signatures:
        raise ValueError(
            f"--model {version_dir}: no {SIGNATURE!r} signature (it has {sorted(signatures)}); "
            "export the localization model with serving.localization."
        )
    sig = signatures[SIGNATURE]
    missing_in = [k for k in SIGNATURE_INPUTS if k not in sig.inputs]
    missing_out = [k for k in SIGNATURE_OUTPUTS if k not in sig.outputs]
    if missing_in or missing_out:
        raise ValueError(
            f"--model {version_dir}: signature {SIGNATURE!r} is not a localization signature: it lacks "
            f"inputs {missing_in} and outputs {missing_out} (it takes {sorted(sig.inputs)} and gives "
            f"{sorted(sig.outputs)}); export the localization model with serving.localization."
        )


def read_captions(path: str) -> list[str]:
    """The captions of a file, one per line (UTF-8; blank lines are skipped).

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: the file holds no caption, or is not UTF-8.
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"--captions {path}: no such file.")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--captions {path}: not UTF-8 ({e}).") from e
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise ValueError(f"--captions {path}: no caption in it; write one caption per line.")
    return captions


def record_files(records_dir: str, split: Optional[str] = None) -> tuple[RecordsInfo, list[str]]:
    """The records dir's schema and the shard files of `split` (of every split holding files, when None).

    Raises:
      FileNotFoundError: `records_dir` has no schema.json.
      ValueError: the split has no files, a listed file is missing, or no split has any.
    """
    try:
        info = RecordsInfo(records_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--records {e}") from e
    if split is not None:
        return info, info.files(split)
    files = []
    for s in SPLITS:
        if "files" in info.meta and not info.meta["files"].get(s):
            continue  # schema.json lists no file of this split.
        try:
            files += info.files(s)
        except RecordsError:
            if "files" in info.meta:
                raise  # A listed file is missing.
            # An older schema.json lists no files: a split whose pattern matches none is just empty.
    if not files:
        raise RecordsError(f"--records {records_dir}: no split ({', '.join(SPLITS)}) has a record file.")
    return info, files


# ---------------------------------------------------------------- ReadRecords, ToQueries


class Query(NamedTuple):
    """One (video, caption) to localize, the key that travels beside the record through RunInference.

    Attributes:
      video_id, split: the record's.
      caption: the caption text.
      index: the caption's index in the record (or the captions file): the
        order of the output lines.
      truth: the caption's true (start, end) in seconds, None for a caption
        from the captions file.
    """

    video_id: str
    split: str
    caption: str
    index: int
    truth: Optional[tuple[float, float]]


def _rejected(input_: str, stage: str, reason: str) -> beam.pvalue.TaggedOutput:
    Metrics.counter(NAMESPACE, f"rejected_{stage}").inc()
    logging.warning("Rejected %s at %s: %s", input_, stage, reason)
    return beam.pvalue.TaggedOutput(REJECTED, Rejected(input_, stage, reason))


class ReadRecordsFn(beam.DoFn):
    """Reads one shard file; emits (file#index, serialized record). A damaged remainder goes to the dead letter."""

    def process(self, path: str):
        compression = "GZIP" if path.endswith(".gz") else ""
        index = 0
        try:
            for record in tf.data.TFRecordDataset(path, compression_type=compression):
                Metrics.counter(NAMESPACE, "records_read").inc()
                yield f"{path}#{index}", record.numpy()
                index += 1
        except tf.errors.OpError as e:
            yield _rejected(
                f"{path}#{index}", "ReadRecords", f"file damaged from this record on: {export_base.op_error_reason(e)}"
            )


class ReadRecords(beam.PTransform):
    """Reads every record of the given shard files; applied to the pipeline.

    Returns (records, rejected): (file#index, serialized record) per record,
    and a Rejected for each file damaged part-way.
    """

    def __init__(self, files: Sequence[str]):
        super().__init__()
        self._files = list(files)

    def expand(self, pbegin):
        read = (
            pbegin
            | "Files" >> beam.Create(self._files)
            # One file per worker, not every file behind the one Create.
            | "Redistribute" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadRecordsFn()).with_outputs(REJECTED, main="records")
        )
        return read.records, read[REJECTED]


class ToQueriesFn(beam.DoFn):
    """Checks one record and emits (Query, (serialized record, caption)) per caption to localize.

    The record is parsed as the model will parse it (features.parse_example),
    so a record that would fail the model's whole batch goes to the dead
    letter alone, with its reason.
    """

    def __init__(
        self,
        storage_dtype: str,
        streams: Sequence[str],
        captions: Optional[Sequence[str]],
        caption_key: str = features.CAPTION_TEXT,
    ):
        """Initializes the DoFn.

        Args:
          storage_dtype: the records' storage dtype (schema.json).
          streams: the records' streams (schema.json).
          captions: captions to localize in every video; None for each record's own.
          caption_key: the record field of a record's own captions: the one the
            model was trained on (`caption/text` or `caption/text_en`).
        """
        self._caption_key = caption_key
        self._storage_dtype = storage_dtype
        self._streams = tuple(streams)
        self._captions = None if captions is None else list(captions)

    def setup(self):
        keys = (features.VIDEO_ID, features.SPLIT, self._caption_key, features.CAPTION_START, features.CAPTION_END)
        matrices = (features.AUDIO,) + tuple(features.stream_keys(s)["features"] for s in self._streams)

        def parse(serialized):
            parsed = features.parse_example(serialized, self._storage_dtype, self._streams)
            # The matrices' shapes, not the matrices: enough to keep their
            # decoding (and its checks) in the graph without copying them out.
            return {**{k: parsed[k] for k in keys}, **{k: tf.shape(parsed[k]) for k in matrices}}

        self._parse = tf.function(parse, input_signature=[tf.TensorSpec([], tf.string)])

    def process(self, element):
        where, serialized = element
        try:
            parsed = self._parse(tf.constant(serialized))
            video_id = parsed[features.VIDEO_ID].numpy().decode("utf-8")
            split = parsed[features.SPLIT].numpy().decode("utf-8")
        except tf.errors.InvalidArgumentError as e:
            yield _rejected(where, "ParseRecord", f"not a readable video record: {export_base.op_error_reason(e)}")
            return
        except UnicodeDecodeError as e:
            yield _rejected(where, "ParseRecord", f"video_id or split is not UTF-8: {e}")
            return
        if self._captions is not None:
            queries = [Query(video_id, split, c, i, None) for i, c in enumerate(self._captions)]
        else:
            texts = [t.decode("utf-8", errors="replace") for t in parsed[self._caption_key].numpy()]
            starts = parsed[features.CAPTION_START].numpy().tolist()
            ends = parsed[features.CAPTION_END].numpy().tolist()
            queries = [Query(video_id, split, t, i, (s, e)) for i, (t, s, e) in enumerate(zip(texts, starts, ends))]
            if not queries:
                yield _rejected(
                    video_id, "ToQueries", "the record has no caption; pass --captions FILE to localize some"
                )
                return
        Metrics.counter(NAMESPACE, "videos").inc()
        Metrics.counter(NAMESPACE, "queries").inc(len(queries))
        for q in queries:
            yield q, (serialized, q.caption)


# ---------------------------------------------------------------- RunInference


class InferenceError(ValueError):
    """The model failed on a batch; says why in one line."""


# The inference of a query the model refused on its own: the reason, instead of outputs.
ERROR_KEY = "error"


class LocalizationModelHandler(inference_base.ModelHandler):
    """Runs the localization SavedModel's `serving_default` signature on (serialized record, caption) batches.

    Beam's TFModelHandlerTensor loads with `tf.keras.models.load_model`, which
    reads Keras models, not a `tf.Module` SavedModel, and calls the model
    rather than a signature; this handler loads with `tf.saved_model.load`.
    RunInference loads it once per worker process and shares it across threads.
    """

    def __init__(self, model_dir: str, batch_size: int):
        """Initializes the handler.

        Args:
          model_dir: the SavedModel version dir.
          batch_size: the most (record, caption) pairs per signature call.

        Raises:
          ValueError: batch_size < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        super().__init__(min_batch_size=1, max_batch_size=batch_size)
        self._model_dir = model_dir

    def load_model(self):
        # The loaded object, not its signature: a signature alone lets the object
        # (and the variables it captures) be garbage collected.
        return tf.saved_model.load(self._model_dir)

    def run_inference(self, batch, model, inference_args=None):
        """The signature's outputs per element; a refused batch is rerun element by element.

        The signature refuses a whole batch for one bad caption (its checks are
        asserts over the batch): the others are then answered one at a time,
        and each element the model refuses on its own gets `{ERROR_KEY: reason}`
        as its inference, for the dead letter. A batch of one that fails raises
        `InferenceError` (RunInference's exception handling dead-letters it).
        """
        try:
            outputs = self._call(model, batch)
        except InferenceError:
            if len(batch) == 1:
                raise
            results = []
            for element in batch:
                try:
                    results += self.run_inference([element], model, inference_args)
                except InferenceError as e:
                    results.append(inference_base.PredictionResult(element, {ERROR_KEY: str(e)}, self._model_dir))
            return results
        return [
            inference_base.PredictionResult(element, {k: v[i] for k, v in outputs.items()}, self._model_dir)
            for i, element in enumerate(batch)
        ]

    @staticmethod
    def _call(model, batch) -> dict[str, np.ndarray]:
        try:
            outputs = model.signatures[SIGNATURE](
                examples=tf.constant([serialized for serialized, _ in batch], tf.string),
                captions=tf.constant([caption.encode("utf-8") for _, caption in batch], tf.string),
            )
        except tf.errors.OpError as e:
            # Said in a line: the dead letter gets the exception's text, and an
            # OpError's own is a page of graph stack.
            raise InferenceError(f"{type(e).__name__}: {export_base.op_error_reason(e)}") from e
        return {k: outputs[k].numpy() for k in SIGNATURE_OUTPUTS}

    def get_num_bytes(self, batch) -> int:
        return sum(len(serialized) + len(caption.encode("utf-8")) for serialized, caption in batch)

    def get_metrics_namespace(self) -> str:
        return "avalign_BatchPredict"


def _round(x, digits: int) -> Optional[float]:
    """`x` rounded, or None where the model gave NaN or Inf (JSON has neither)."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def prediction_line(query: Query, inference: dict[str, Any]) -> dict:
    """The output line of one (video, caption) from the signature's outputs for it."""
    s, c = SECONDS_DIGITS, SCORE_DIGITS
    proposals = [
        [_round(span[0], s), _round(span[1], s), _round(score, c)]
        for span, score in zip(np.asarray(inference["proposals_seconds"]), np.asarray(inference["proposal_scores"]))
    ]
    return {
        "video_id": query.video_id,
        "split": query.split,
        "caption": query.caption,
        "start_seconds": _round(inference["start_seconds"], s),
        "end_seconds": _round(inference["end_seconds"], s),
        "score": _round(inference["score"], c),
        "duration": _round(inference["duration"], s),
        "proposals": proposals,
        "truth": None if query.truth is None else [_round(query.truth[0], s), _round(query.truth[1], s)],
    }


def _keyed_line(query: Query, result: inference_base.PredictionResult):
    """(video_id, caption index, JSON line), what orders the line in its file; a refused query to the dead letter."""
    if ERROR_KEY in result.inference:
        reason = result.inference[ERROR_KEY].split(": ", 1)[-1]
        yield _rejected(f"{query.video_id} caption {query.index} {query.caption!r}", "RunInference", reason)
        return
    yield query.video_id, query.index, json.dumps(prediction_line(query, result.inference), ensure_ascii=False)


def _failed_batch(element):
    """Dead-letter records for every query of a batch that the signature call failed on."""
    batch, (_, _, formatted) = element
    # format_exception's last line: '<module.Class>: <message>'.
    reason = formatted[-1].strip().split(": ", 1)[-1]
    for query, _ in batch:
        yield _rejected(f"{query.video_id} caption {query.index} {query.caption!r}", "RunInference", reason).value


class Localize(beam.PTransform):
    """RunInference of the localization signature on (Query, (record, caption)) pairs.

    Returns (lines, rejected): (video_id, caption index, JSON line) per query,
    and a Rejected per query the model refused (other queries of its batch
    are still answered).
    """

    def __init__(self, model_dir: str, batch_size: int):
        super().__init__()
        self._handler = inference_base.KeyedModelHandler(LocalizationModelHandler(model_dir, batch_size))

    def expand(self, queries):
        results, failed = queries | "RunInference" >> inference_base.RunInference(
            self._handler
        ).with_exception_handling(exc_class=InferenceError)
        lines = results | "FormatPredictions" >> beam.FlatMapTuple(_keyed_line).with_outputs(REJECTED, main="lines")
        failed_batches = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch)
        rejected = (lines[REJECTED], failed_batches) | "MergeRefused" >> beam.Flatten()
        return lines.lines, rejected


# ---------------------------------------------------------------- WritePredictions, WriteSummary


def predictions_path(output_dir: str, shard: int, num_shards: int) -> str:
    """The path of a predictions shard under `output_dir`."""
    return os.path.join(output_dir, f"{PREDICTIONS_PREFIX}-{shard:05d}-of-{num_shards:05d}{PREDICTIONS_SUFFIX}")


class WritePredictionsShardFn(beam.DoFn):
    """Writes one shard's lines, sorted by video and caption, through a temporary name; emits (name, lines)."""

    def __init__(self, output_dir: str, num_shards: int):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, element):
        shard, lines = element
        ordered = [line for _, _, line in sorted(lines)]
        path = predictions_path(self._output_dir, shard, self._num_shards)
        fileio.write_text(path, "".join(line + "\n" for line in ordered))
        Metrics.counter(NAMESPACE, "predictions_written").inc(len(ordered))
        yield os.path.basename(path), len(ordered)


class WritePredictions(beam.PTransform):
    """Shards (video_id, caption index, line) by a stable hash of the video and writes every shard file.

    Every shard gets a file, empty or not, so a run's files are always the
    same set. Returns a PCollection of (file name, number of lines).
    """

    def __init__(self, output_dir: str, num_shards: int):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
        self._output_dir = output_dir
        self._num_shards = num_shards

    def expand(self, lines):
        n = self._num_shards
        empty = lines.pipeline | "AllShards" >> beam.Create([(i, None) for i in range(n)])
        keyed = lines | "KeyByShard" >> beam.Map(lambda r: (shard_of(r[0], n), r))
        return (
            (keyed, empty)
            | "MergeShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "DropPlaceholders" >> beam.MapTuple(lambda k, vs: (k, [v for v in vs if v is not None]))
            | "WriteShards" >> beam.ParDo(WritePredictionsShardFn(self._output_dir, n))
        )


def remove_stale_predictions(output_dir: str, listed: Iterable[str]) -> list[str]:
    """Removes prediction files that `listed` does not name, and temporary files a killed run left.

    Returns:
      The removed paths.
    """
    return fileio.remove_unlisted(
        output_dir,
        f"{PREDICTIONS_PREFIX}-*-of-*{PREDICTIONS_SUFFIX}",
        listed,
        f"{fileio.PARTIAL_PREFIX}{PREDICTIONS_PREFIX}-*",
    )


class WriteSummaryFn(beam.DoFn):
    """Removes earlier runs' prediction files, then writes summary.json, the job's last output."""

    def __init__(self, output_dir: str, job: dict):
        self._output_dir = output_dir
        self._job = job

    def process(self, written, videos, rejected, deadletter):
        del deadletter  # A side input only so that this runs after the dead letter is written.
        files = dict(sorted(written))
        summary = {
            "job": self._job,
            "videos": int(videos),
            "predictions": sum(files.values()),
            "rejected": int(rejected),
            "files": files,
        }
        remove_stale_predictions(self._output_dir, files)
        path = os.path.join(self._output_dir, SUMMARY_FILE)
        fileio.write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        logging.info(
            "Wrote %d predictions of %d videos to %d files in %s; %d rejected (%s).",
            summary["predictions"],
            summary["videos"],
            len(files),
            self._output_dir,
            summary["rejected"],
            os.path.join(self._output_dir, "deadletter"),
        )
        yield summary


class WriteSummary(beam.PTransform):
    """Writes summary.json once every prediction file and the dead letter are written.

    Applied to a dict of PCollections: 'written' ((file name, lines) per
    prediction file), 'queries' (for the count of videos), 'rejected' and
    'deadletter' (the written dead-letter file, waited for). Returns a
    PCollection of the summary dict.
    """

    def __init__(self, output_dir: str, job: dict):
        super().__init__()
        self._output_dir = output_dir
        self._job = job

    def expand(self, inputs):
        videos = (
            inputs["queries"]
            | "VideoOf" >> beam.MapTuple(lambda q, _: q.video_id)
            | "DistinctVideos" >> beam.Distinct()
            | "CountVideos" >> beam.combiners.Count.Globally()
        )
        n_rejected = inputs["rejected"] | "CountRejected" >> beam.combiners.Count.Globally()
        return (
            inputs["written"]
            | "AllWritten" >> beam.combiners.ToList()
            | "Write"
            >> beam.ParDo(
                WriteSummaryFn(self._output_dir, self._job),
                videos=beam.pvalue.AsSingleton(videos),
                rejected=beam.pvalue.AsSingleton(n_rejected),
                deadletter=beam.pvalue.AsList(inputs["deadletter"]),
            )
        )


# ---------------------------------------------------------------- the job


def build_pipeline(
    p: beam.Pipeline,
    records_dir: str,
    model_dir: str,
    output_dir: str,
    captions: Optional[Sequence[str]] = None,
    split: Optional[str] = None,
    batch_size: int = 32,
    num_shards: int = 1,
) -> dict:
    """Adds the job's stages to `p`, after checking the records and the model.

    Args:
      p: the pipeline.
      records_dir: a preprocessing output dir (holds schema.json).
      model_dir: a SavedModel version dir or a base of version dirs.
      output_dir: where the predictions, dead letter and summary go.
      captions: captions to localize in every video; None for each record's own.
      split: the split to read (one of SPLITS); None for every split.
      batch_size: the most (record, caption) pairs per signature call.
      num_shards: the number of prediction files.

    Returns:
      Dict of the PCollections 'lines' ((video_id, caption index, JSON line)
      per prediction), 'rejected' and 'summary'.

    Raises:
      FileNotFoundError: no schema.json in `records_dir`, no SavedModel in `model_dir`.
      ValueError: the split has no records, the model lacks the signature,
        `captions` is empty, batch_size or num_shards < 1.
    """
    if captions is not None and not any(c.strip() for c in captions):
        raise ValueError("captions: no caption given; pass at least one non-blank caption, or None.")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}.")
    info, files = record_files(records_dir, split)
    version_dir = resolve_model_dir(model_dir)
    logging.info("Localizing captions of %d record files of %s with %s.", len(files), records_dir, version_dir)
    job = {
        "records": records_dir,
        "model": version_dir,
        "captions": None if captions is None else len(captions),
        "split": split,
    }
    records, unreadable = p | "ReadRecords" >> ReadRecords(files)
    queries = records | "ToQueries" >> beam.ParDo(
        ToQueriesFn(info.storage_dtype, sorted(info.stream_dims), captions, model_caption_key(version_dir))
    ).with_outputs(REJECTED, main="queries")
    lines, failed = queries.queries | "Localize" >> Localize(version_dir, batch_size)
    written = lines | "WritePredictions" >> WritePredictions(output_dir, num_shards)
    rejected = (unreadable, queries[REJECTED], failed) | "MergeRejected" >> beam.Flatten()
    deadletter = rejected | "WriteDeadLetter" >> WriteDeadLetter(output_dir)
    summary = {
        "written": written,
        "queries": queries.queries,
        "rejected": rejected,
        "deadletter": deadletter,
    } | "WriteSummary" >> WriteSummary(output_dir, job)
    return {"lines": lines, "rejected": rejected, "summary": summary}


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into the job's flags and the Beam pipeline options.

    Raises:
      SystemExit: (via argparse) on a flag that neither side knows.
    """
    parser = argparse.ArgumentParser(
        prog="python -m serving.batch_predict",
        description=__doc__.split("\n\n")[0],
        epilog="Any other --flag must be a Beam pipeline option; it is passed to the runner untouched.",
    )
    parser.add_argument("--records", required=True, help="Records dir (a preprocessing output, with schema.json).")
    parser.add_argument("--model", required=True, help="SavedModel version dir, or a base of version dirs.")
    parser.add_argument("--output", required=True, help="Where the predictions, dead letter and summary go.")
    parser.add_argument("--captions", default=None, help="File of captions (one a line) to localize in every video.")
    parser.add_argument("--split", default=None, choices=SPLITS, help="Split to read (default: every split).")
    parser.add_argument("--batch_size", type=int, default=32, help="Most (video, caption) pairs per model call.")
    parser.add_argument("--num_shards", type=int, default=1, help="Number of prediction files.")
    args, rest = parser.parse_known_args(argv)
    _, unknown = beam_option_parser().parse_known_args(rest)
    unknown = [u for u in unknown if u.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments (neither job flags nor Beam options): {' '.join(unknown)}")
    for flag in ("batch_size", "num_shards"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}.")
    return args, rest


def run(argv=None) -> dict:
    """Runs the job; returns the final counter values.

    The inputs and the output dir are checked before the pipeline starts, so a
    bad one stops the job with an error that names it.
    """
    args, pipeline_args = parse_args(argv)
    captions = None if args.captions is None else read_captions(args.captions)
    p = beam.Pipeline(options=PipelineOptions(pipeline_args))
    build_pipeline(p, args.records, args.model, args.output, captions, args.split, args.batch_size, args.num_shards)
    check_output_dir(args.output, "--output")
    # Until the new summary is written, the directory must not pass for a
    # finished one describing a mix of old and new prediction files.
    summary = os.path.join(args.output, SUMMARY_FILE)
    if tf.io.gfile.exists(summary):
        logging.info("Removing %s: the predictions it describes are about to be rewritten.", summary)
        tf.io.gfile.remove(summary)
    result = p.run()
    result.wait_until_finish()
    counters = {}
    for c in result.metrics().query()["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    return counters


def main(argv=None) -> int:
    """Runs the job from the command line; returns the exit status (2 for a bad input or flag)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        counters = run(argv)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("Batch prediction counters:\n" + format_counters(counters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
