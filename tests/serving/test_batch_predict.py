"""serving.batch_predict: the Beam job's lines equal the signature's outputs; captions file, reruns, bad inputs."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from avalign import features
from serving import batch_predict

STORAGE_DTYPE = "float16"
STREAMS = ("visual_2d",)
# video_id -> (split, duration, [(caption, start, end)]).
VIDEOS = {
    "v1": ("train", 20.0, [("crack the eggs", 1.0, 4.5), ("whisk them", 5.0, 9.25)]),
    "v2": ("train", 12.5, [("heat the pan", 0.5, 3.0), ("pour", 3.0, 6.0), ("fold the omelette", 7.0, 12.0)]),
    "v3": ("val", 30.0, [("serve", 25.0, 29.0)]),
}
NUM_CAPTIONS = sum(len(c) for _, _, c in VIDEOS.values())


def _record(video_id: str) -> bytes:
    split, duration, captions = VIDEOS[video_id]
    n = len(captions)
    rng = np.random.default_rng(len(video_id) + int(duration))
    video = features.VideoFeatures(
        video_id=video_id,
        split=split,
        language="en",
        source="test",
        duration=duration,
        caption_start=np.array([c[1] for c in captions], np.float32),
        caption_end=np.array([c[2] for c in captions], np.float32),
        caption_text=[c[0] for c in captions],
        caption_text_en=[c[0] for c in captions],
        caption_audio_dependent=np.full(n, -1, np.int64),
        audio=rng.normal(size=(int(duration * 4), 8)).astype(np.float32),
        audio_rate=4.0,
        audio_present=True,
        visual={"visual_2d": rng.normal(size=(int(duration), 6)).astype(np.float32)},
        visual_rate={"visual_2d": 1.0},
        visual_extractor={"visual_2d": "test:1"},
    )
    return features.to_example(video, STORAGE_DTYPE).SerializeToString()


def write_records(records_dir, extra: dict | None = None) -> str:
    """A record set of VIDEOS (train: 2 shards, val: 1) as the preprocessing job lays it out.

    Args:
      records_dir: where to write it.
      extra: shard path relative to records_dir -> serialized records to append to it.
    """
    shards = {"train/train-00000-of-00002.tfrecord.gz": ["v1"], "train/train-00001-of-00002.tfrecord.gz": ["v2"]}
    shards["val/val-00000-of-00001.tfrecord.gz"] = ["v3"]
    extra = extra or {}
    files = {"train": {}, "val": {}, "test": {}}
    for rel, ids in shards.items():
        path = os.path.join(records_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        records = [_record(i) for i in ids] + list(extra.get(rel, []))
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for r in records:
                writer.write(r)
        files[rel.split("/")[0]][rel] = len(records)
    meta = {
        "counts": {"train": 2, "val": 1, "test": 0},
        "record_pattern": "{split}/{split}-*-of-*.tfrecord.gz",
        "files": files,
        "storage_dtype": STORAGE_DTYPE,
        "audio": {"feature": features.AUDIO, "dim": 8, "rate": 4.0},
        "visual": {"visual_2d": {"dim": 6, "rate": 1.0}},
        "streams": {"visual_2d": {"dim": 6, "rate": 1.0}},
    }
    features.write_metadata(os.path.join(records_dir, features.METADATA_FILE), meta)
    return str(records_dir)


class StandInLocalizer(tf.Module):
    """The localization export's signature with fake, deterministic spans from the caption's length and the duration."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def serve(self, examples, captions):
        return self.outputs(examples, captions)

    def outputs(self, examples, captions):
        duration = tf.map_fn(
            lambda s: features.parse_example(s, STORAGE_DTYPE, STREAMS)[features.DURATION],
            examples,
            fn_output_signature=tf.float32,
        )
        length = tf.cast(tf.strings.length(captions, unit="UTF8_CHAR"), tf.float32)
        start = tf.math.floormod(length, 7.0) / 14.0  # in [0, 0.5)
        end = start + 1.0 / (1.0 + length) + 0.1
        score = 1.0 - 1.0 / (1.0 + length)
        proposals = tf.stack([tf.stack([start, end], -1), tf.stack([0.0 * start, 0.5 + 0.0 * start], -1)], 1)
        return {
            "start_seconds": start * duration,
            "end_seconds": end * duration,
            "start": start,
            "end": end,
            "score": score,
            "duration": duration,
            "proposals_seconds": proposals * duration[:, None, None],
            "proposal_scores": tf.stack([score, score / 3.0], 1),
            "video_attention": tf.zeros([tf.shape(examples)[0], 4]),
            "audio_attention": tf.ones([tf.shape(examples)[0], 4]) / 4.0,
        }


@pytest.fixture(scope="module")
def localization_model(tmp_path_factory) -> str:
    """An export base holding version 1 of a model with the localization signature.

    A stand-in until serving.localization exports the real one; swap this
    fixture's body for that export and every test below runs on it.
    """
    base = tmp_path_factory.mktemp("localizer")
    module = StandInLocalizer()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return str(base)


@pytest.fixture
def records(tmp_path) -> str:
    return write_records(tmp_path / "records")


def _lines(output_dir) -> list[dict]:
    lines = []
    for path in sorted(glob.glob(os.path.join(output_dir, "predictions-*-of-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            lines += [json.loads(line) for line in f]
    return lines


def _deadletter(output_dir) -> list[dict]:
    with open(os.path.join(output_dir, "deadletter", "rejected.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _direct(model_dir, video_id, caption) -> dict:
    """The signature called directly on one (record, caption)."""
    model = tf.saved_model.load(os.path.join(model_dir, "1"))
    out = model.signatures["serving_default"](
        examples=tf.constant([_record(video_id)]), captions=tf.constant([caption])
    )
    return {k: v.numpy()[0] for k, v in out.items()}


def _assert_line_matches(line, model_dir):
    direct = _direct(model_dir, line["video_id"], line["caption"])
    assert line["start_seconds"] == pytest.approx(direct["start_seconds"], abs=6e-4)
    assert line["end_seconds"] == pytest.approx(direct["end_seconds"], abs=6e-4)
    assert line["duration"] == pytest.approx(direct["duration"], abs=6e-4)
    assert line["score"] == pytest.approx(direct["score"], abs=6e-5)
    expected = [
        [s, e, p] for (s, e), p in zip(direct["proposals_seconds"].tolist(), direct["proposal_scores"].tolist())
    ]
    assert np.allclose(line["proposals"], expected, atol=6e-4)


def test_localizes_each_records_own_captions(records, localization_model, tmp_path):
    out = str(tmp_path / "predictions")
    counters = batch_predict.run(["--records", records, "--model", localization_model, "--output", out])

    lines = _lines(out)
    assert len(lines) == NUM_CAPTIONS
    expected = {(v, c[0]): (split, [c[1], c[2]]) for v, (split, _, cs) in VIDEOS.items() for c in cs}
    assert {(x["video_id"], x["caption"]): (x["split"], x["truth"]) for x in lines} == expected
    for line in lines:
        _assert_line_matches(line, localization_model)
    # One file (the default), its lines in (video, caption index) order.
    assert [(x["video_id"], x["caption"]) for x in lines] == [(v, c[0]) for v in sorted(VIDEOS) for c in VIDEOS[v][2]]
    assert os.listdir(out) and sorted(os.listdir(out)) == [
        "deadletter",
        "predictions-00000-of-00001.jsonl",
        "summary.json",
    ]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["files"] == {"predictions-00000-of-00001.jsonl": NUM_CAPTIONS}
    assert (summary["videos"], summary["predictions"], summary["rejected"]) == (3, NUM_CAPTIONS, 0)
    assert summary["job"]["model"] == os.path.join(localization_model, "1")
    assert _deadletter(out) == []
    assert counters["records_read"] == 3
    assert counters["videos"] == 3
    assert counters["predictions_written"] == NUM_CAPTIONS


def test_captions_file_in_every_video_of_a_split_multiprocess(records, localization_model, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("crack the eggs\n\n  préparer la sauce  \n", encoding="utf-8")
    out = str(tmp_path / "predictions")
    argv = ["--records", records, "--model", localization_model, "--output", out, "--captions", str(captions)]
    argv += ["--split", "train", "--batch_size", "3", "--num_shards", "2"]
    batch_predict.run(argv + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])

    lines = _lines(out)
    assert sorted((x["video_id"], x["caption"]) for x in lines) == [
        (v, c) for v in ("v1", "v2") for c in ("crack the eggs", "préparer la sauce")
    ]
    assert all(x["truth"] is None and x["split"] == "train" for x in lines)
    for line in lines:
        _assert_line_matches(line, localization_model)
    assert sorted(f for f in os.listdir(out) if f.startswith("predictions")) == [
        "predictions-00000-of-00002.jsonl",
        "predictions-00001-of-00002.jsonl",
    ]


def test_rerun_replaces_earlier_outputs(records, localization_model, tmp_path):
    out = tmp_path / "predictions"
    argv = ["--records", records, "--model", localization_model, "--output", str(out)]
    batch_predict.run(argv + ["--num_shards", "3"])
    assert len(glob.glob(str(out / "predictions-*-of-00003.jsonl"))) == 3
    # What a run killed mid-write leaves: a temporary file, never a final one.
    (out / ".partial-predictions-00000-of-00002.jsonl").write_text('{"half": ')

    batch_predict.run(argv + ["--num_shards", "2", "--split", "val"])

    assert sorted(os.listdir(out)) == [
        "deadletter",
        "predictions-00000-of-00002.jsonl",
        "predictions-00001-of-00002.jsonl",
        "summary.json",
    ]
    lines = _lines(out)
    assert [(x["video_id"], x["caption"]) for x in lines] == [("v3", "serve")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predictions"] == 1 and sum(summary["files"].values()) == 1


def test_bad_records_go_to_the_dead_letter(tmp_path, localization_model):
    missing_audio = tf.train.Example.FromString(_record("v1"))
    del missing_audio.features.feature[features.AUDIO]
    extra = {"train/train-00000-of-00002.tfrecord.gz": [b"not a record", missing_audio.SerializeToString()]}
    records = write_records(tmp_path / "records", extra)
    out = str(tmp_path / "predictions")
    batch_predict.run(["--records", records, "--model", localization_model, "--output", out])

    assert len(_lines(out)) == NUM_CAPTIONS
    rejected = _deadletter(out)
    assert [(r["stage"], r["input"].rsplit("#", 1)[-1]) for r in rejected] == [
        ("ParseRecord", "1"),
        ("ParseRecord", "2"),
    ]
    assert all(r["input"].startswith(os.path.join(records, "train/train-00000-of-00002.tfrecord.gz")) for r in rejected)
    assert "audio/logmel" in rejected[1]["reason"]
    assert json.loads(open(os.path.join(out, "summary.json")).read())["rejected"] == 2


def test_bad_inputs_stop_the_job_before_it_runs(records, localization_model, tmp_path, capsys):
    out = str(tmp_path / "predictions")
    ok = ["--records", records, "--model", localization_model, "--output", out]

    with pytest.raises(FileNotFoundError, match=r"--records .*empty_dir.*no schema\.json"):
        batch_predict.run(["--records", str(tmp_path / "empty_dir"), *ok[2:]])
    (tmp_path / "no_versions").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--model .*no_versions: no exported version"):
        batch_predict.run([*ok[:2], "--model", str(tmp_path / "no_versions"), *ok[4:]])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"--captions .*empty\.txt: no caption"):
        batch_predict.run([*ok, "--captions", str(empty)])

    other = tf.Module()
    other.f = tf.function(lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(other, str(tmp_path / "other" / "3"), signatures={"serving_default": other.f})
    with pytest.raises(ValueError, match=r"other/3: signature 'serving_default' is not a localization signature"):
        batch_predict.run([*ok[:2], "--model", str(tmp_path / "other"), *ok[4:]])

    assert batch_predict.main([*ok, "--captions", str(empty)]) == 2
    assert "--captions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        batch_predict.parse_args([*ok, "--captoins", "x"])
    assert not os.path.exists(out)


class FailingLocalizer(StandInLocalizer):
    """The stand-in, failing every batch that holds the caption 'boom'."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def serve(self, examples, captions):
        tf.debugging.assert_equal(tf.reduce_any(tf.equal(captions, "boom")), False, message="caption says boom")
        return self.outputs(examples, captions)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_query_the_model_refuses_goes_to_the_dead_letter_and_its_batch_is_still_answered(
    records, tmp_path, batch_size
):
    module = FailingLocalizer()
    tf.saved_model.save(module, str(tmp_path / "failing" / "1"), signatures={"serving_default": module.serve})
    captions = tmp_path / "captions.txt"
    captions.write_text("fine\nboom\n", encoding="utf-8")
    out = str(tmp_path / "predictions")
    argv = ["--records", records, "--model", str(tmp_path / "failing"), "--output", out, "--captions", str(captions)]
    batch_predict.run(argv + ["--batch_size", str(batch_size)])

    assert sorted((x["video_id"], x["caption"]) for x in _lines(out)) == [(v, "fine") for v in sorted(VIDEOS)]
    rejected = _deadletter(out)
    assert [(r["input"], r["stage"]) for r in rejected] == [
        (f"{v} caption 1 'boom'", "RunInference") for v in sorted(VIDEOS)
    ]
    assert all("caption says boom" in r["reason"] for r in rejected)


@pytest.mark.e2e
def test_the_real_localizer_on_the_beam_jobs_records(malta_trained, tiny_records, tmp_path):
    """RunInference with the session job's exported localizer: one line per test caption, as the signature says."""
    job, _ = malta_trained
    model_dir = os.path.join(str(job), "export", "localizer")
    out = str(tmp_path / "predictions")
    argv = ["--records", str(tiny_records), "--model", model_dir, "--output", out, "--split", "test"]
    counters = batch_predict.run(argv + ["--batch_size", "4"])
    lines = _lines(out)
    schema = features.read_metadata(str(tiny_records))
    assert len(lines) == counters["predictions_written"] > 0 and _deadletter(out) == []
    served = tf.saved_model.load(os.path.join(model_dir, "1")).signatures["serving_default"]
    files = [os.path.join(str(tiny_records), rel) for rel in sorted(schema["files"]["test"])]
    records = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = features.parse_example(record, schema["storage_dtype"], tuple(schema["streams"]))
        records[parsed[features.VIDEO_ID].numpy().decode()] = (record, parsed)
    assert {x["video_id"] for x in lines} == set(records)
    for line in lines:
        record, parsed = records[line["video_id"]]
        want = served(examples=tf.constant([record.numpy()]), captions=tf.constant([line["caption"]]))
        assert line["start_seconds"] == pytest.approx(float(want["start_seconds"][0]), abs=6e-4)
        assert line["end_seconds"] == pytest.approx(float(want["end_seconds"][0]), abs=6e-4)
        assert line["truth"][1] <= float(parsed[features.DURATION]) + 2.0
