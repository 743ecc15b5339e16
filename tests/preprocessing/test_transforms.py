"""The Beam job's composite stages on their own, on inputs that need no media."""

import json

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline as beam_testing
from apache_beam.testing.util import assert_that, equal_to

from avalign import features
from preprocessing import transforms
from preprocessing.config import PreprocessConfig
from preprocessing.records import SPLITS, Caption, Rejected, VideoAnnotation


def _write_activitynet(tmp_path, entries):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(entries))
    return str(path)


def _reason_kinds(rejected):
    return rejected | "ReasonKinds" >> beam.Map(lambda r: (r.input, r.stage, r.reason.split(":")[0]))


def test_read_annotations_gives_videos_and_refused_entries(tmp_path):
    path = _write_activitynet(
        tmp_path,
        {
            "v1": {"duration": 2.0, "timestamps": [[0.2, 1.5]], "sentences": ["a step"]},
            "v2": {"duration": 2.0, "timestamps": [[1.5, 0.2]], "sentences": ["backwards"]},
        },
    )
    v1 = VideoAnnotation("v1", 2.0, (Caption(0.2, 1.5, "a step"),), split="val", language="en", source="activitynet")
    backwards = json.dumps({"sentence": "backwards", "timestamp": [1.5, 0.2], "video_id": "v2"})
    with beam_testing.TestPipeline() as p:
        read = p | "ReadAnnotations" >> transforms.ReadAnnotations(path, "activitynet", {"split": "val"})
        assert_that(read.videos, equal_to([v1]))
        assert_that(
            _reason_kinds(read.rejected),
            equal_to(
                [
                    (backwards, "ReadAnnotations", "end_before_start"),
                    ("v2", "ReadAnnotations", "all_captions_rejected"),
                ]
            ),
            label="CheckRejected",
        )


@pytest.mark.parametrize(
    "max_overshoot, ends, refused",
    [
        (0.5, [1.5], ["end_past_duration: end 2.8 is 0.8 s past duration 2.0, more than max_overshoot 0.5 s"]),
        (1.0, [1.5, 2.0], []),
    ],
    ids=["beyond_tolerance_refused", "within_tolerance_clamped"],
)
def test_read_annotations_applies_the_overshoot_tolerance_it_is_given(tmp_path, max_overshoot, ends, refused):
    path = _write_activitynet(
        tmp_path, {"v1": {"duration": 2.0, "timestamps": [[0.2, 1.5], [0.5, 2.8]], "sentences": ["a", "b"]}}
    )
    kwargs = {"split": "train", "max_overshoot": max_overshoot}
    with beam_testing.TestPipeline() as p:
        read = p | "ReadAnnotations" >> transforms.ReadAnnotations(path, "activitynet", kwargs)
        assert_that(read.videos | beam.Map(lambda v: [c.end for c in v.captions]), equal_to([ends]))
        assert_that(
            read.rejected | beam.Map(lambda r: r.reason.split(" (")[0]), equal_to(refused), label="CheckRejected"
        )


def test_write_dead_letter_writes_what_it_is_given_sorted(tmp_path):
    given = [Rejected("b.mp4", "DecodeVideo", "truncated"), Rejected("a", "ReadAnnotations", "bad_time: ∞")]
    path = tmp_path / "deadletter" / "rejected.jsonl"
    with beam_testing.TestPipeline() as p:
        written = p | beam.Create(given) | "WriteDeadLetter" >> transforms.WriteDeadLetter(str(tmp_path))
        assert_that(written, equal_to([str(path)]))
    assert path.read_text(encoding="utf-8").splitlines() == [
        '{"input": "a", "reason": "bad_time: ∞", "stage": "ReadAnnotations"}',
        '{"input": "b.mp4", "reason": "truncated", "stage": "DecodeVideo"}',
    ]


def test_write_dead_letter_of_nothing_is_an_empty_file(tmp_path):
    with beam_testing.TestPipeline() as p:
        _ = p | beam.Create([]) | "WriteDeadLetter" >> transforms.WriteDeadLetter(str(tmp_path))
    assert (tmp_path / "deadletter" / "rejected.jsonl").read_bytes() == b""


def _shard_contents(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


def test_records_dead_letter_and_schema_stages_write_exactly_what_they_are_given(tmp_path):
    """WriteRecords, WriteDeadLetter and WriteSchema wired as the job wires them, on made-up records."""
    stale = tmp_path / "train" / "train-00004-of-00005.tfrecord.gz"  # left by an earlier run
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    dims = {"audio": 40}
    records = [("train", "v2", b"two", dims), ("train", "v1", b"one", dims), ("val", "v3", b"three", dims)]
    cfg = PreprocessConfig(num_shards=1)
    with beam_testing.TestPipeline() as p:
        records_pc = p | "Records" >> beam.Create(records)
        rejected = p | "Rejected" >> beam.Create([Rejected("x.mp4", "DecodeVideo", "truncated")])
        shards = records_pc | "WriteRecords" >> transforms.WriteRecords(str(tmp_path), 1, SPLITS)
        deadletter = rejected | "WriteDeadLetter" >> transforms.WriteDeadLetter(str(tmp_path))
        schema = {
            "shards": shards,
            "records": records_pc,
            "rejected": rejected,
            "deadletter": deadletter,
        } | "WriteSchema" >> transforms.WriteSchema(str(tmp_path), cfg, {"annotations": "a.json"})
        assert_that(
            shards,
            equal_to(
                [(s, f"{s}/{s}-00000-of-00001.tfrecord.gz", n) for s, n in (("train", 2), ("val", 1), ("test", 0))]
            ),
        )
        assert_that(schema, equal_to([str(tmp_path / features.METADATA_FILE)]), label="CheckSchema")
    meta = features.read_metadata(str(tmp_path))
    assert meta["files"] == {
        s: {f"{s}/{s}-00000-of-00001.tfrecord.gz": n} for s, n in (("train", 2), ("val", 1), ("test", 0))
    }
    assert meta["counts"] == {"test": 0, "train": 2, "val": 1} and meta["rejected"] == 1
    assert meta["audio"]["dim"] == 40 and meta["visual"] == {} and meta["job"] == {"annotations": "a.json"}
    assert not stale.exists()
    assert _shard_contents(tmp_path / "train" / "train-00000-of-00001.tfrecord.gz") == [b"one", b"two"]  # by video id
    assert _shard_contents(tmp_path / "test" / "test-00000-of-00001.tfrecord.gz") == []
    assert len((tmp_path / "deadletter" / "rejected.jsonl").read_text().splitlines()) == 1
