"""The Beam job's outputs are atomic and self-describing; stored values are what was computed."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from avalign import features
from preprocessing import pipeline, transforms
from trainer import input as input_lib


@pytest.fixture(scope="module")
def two_video_corpus(tiny_corpus, tmp_path_factory):
    """Two videos of the tiny corpus (one train, one val), for quick reruns of the job."""
    root = tmp_path_factory.mktemp("two_videos")
    ann = json.loads((tiny_corpus / "annotations.json").read_text())
    splits = json.loads((tiny_corpus / "splits.json").read_text())
    keep = {"train": splits["train"][:1], "val": splits["val"][:1], "test": []}
    ids = keep["train"] + keep["val"]
    (root / "annotations.json").write_text(json.dumps({v: ann[v] for v in ids}))
    (root / "splits.json").write_text(json.dumps(keep))
    (root / "videos").mkdir()
    for vid in ids:
        shutil.copy(tiny_corpus / "videos" / f"{vid}.mp4", root / "videos")
    return root


def _run(corpus, out, *overrides):
    argv = ["--annotations", str(corpus), "--format", "builtin", "--videos_dir", str(corpus), "--output_dir", str(out)]
    for o in overrides:
        argv += ["--set", o]
    return pipeline.run(argv)


def _shard_files(out):
    return sorted(str(p.relative_to(out)) for p in out.glob("*/*") if p.parent.name in ("train", "val", "test"))


def test_rerun_with_other_num_shards_leaves_exactly_its_own_shards(tiny_records, two_video_corpus, tmp_path):
    """A rerun into a dir holding 10 videos in 2 shards/split writes 2 videos in 3 shards/split, and only those."""
    out = tmp_path / "records"
    shutil.copytree(tiny_records, out)
    _run(two_video_corpus, out, "num_shards=3")
    meta = features.read_metadata(str(out))
    listed = {s: [f"{s}/{s}-{i:05d}-of-00003.tfrecord.gz" for i in range(3)] for s in ("train", "val", "test")}
    assert {s: sorted(meta["files"][s]) for s in meta["files"]} == listed
    # The old run's shards (and any temporary file) are gone: the dir holds exactly what schema.json lists.
    assert _shard_files(out) == sorted(f for fs in listed.values() for f in fs)
    assert sum(meta["files"]["train"][f] for f in listed["train"]) == meta["counts"]["train"] == 1
    info = input_lib.RecordsInfo(str(out))
    assert len(list(input_lib.read_videos(info, "train", ("visual_2d",)))) == 1
    assert len(list(input_lib.read_videos(info, "val", ("visual_2d",)))) == 1


def test_job_that_dies_leaves_no_schema_describing_old_and_new_shards(
    tiny_records, two_video_corpus, tmp_path, monkeypatch
):
    out = tmp_path / "records"
    shutil.copytree(tiny_records, out)

    def die(self, element):
        raise OSError("worker killed while writing shards")

    monkeypatch.setattr(transforms.WriteShardFn, "process", die)
    with pytest.raises(Exception, match="worker killed"):
        _run(two_video_corpus, out, "num_shards=3")
    assert not (out / features.METADATA_FILE).exists()
    with pytest.raises(FileNotFoundError, match=r"did not finish .*rerun"):
        input_lib.RecordsInfo(str(out))


def test_schema_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / features.METADATA_FILE
    features.write_metadata(str(path), {"counts": {"train": 1}})
    features.write_metadata(str(path), {"counts": {"train": 2}})
    assert json.loads(path.read_text())["counts"] == {"train": 2}
    assert [p.name for p in tmp_path.iterdir()] == [features.METADATA_FILE]  # no temporary file left
    assert features.invalidate_metadata(str(tmp_path)) and not path.exists()
    assert not features.invalidate_metadata(str(tmp_path))


def _video(matrix):
    return features.VideoFeatures(
        video_id="v",
        split="train",
        language="en",
        source="test",
        duration=2.0,
        caption_start=np.array([0.0], np.float32),
        caption_end=np.array([1.0], np.float32),
        caption_text=["a"],
        caption_text_en=["a"],
        caption_audio_dependent=np.array([-1]),
        audio=np.zeros((200, 4), np.float32),
        audio_rate=100.0,
        audio_present=True,
        visual={"visual_2d": matrix},
        visual_rate={"visual_2d": 1.0},
        visual_extractor={"visual_2d": "test:1"},
    )


def test_values_past_float16_range_are_refused_not_stored_as_inf():
    big = np.array([[1.0, 70000.0], [-2.0, 3.0]], np.float32)  # finite, but past float16's 65504
    with pytest.raises(ValueError, match=r"visual_2d/features .*70000.*65504.*storage_dtype=float32"):
        features.to_example(_video(big), "float16")
    example = features.to_example(_video(big), "float32")
    parsed = features.parse_example(tf.constant(example.SerializeToString()), "float32", ("visual_2d",))
    np.testing.assert_array_equal(parsed["visual_2d/features"].numpy(), big)
    # Within range, float16 storage is unchanged: values round to the nearest float16.
    ok = np.array([[1.0, 65504.0], [-2.0, 3.1]], np.float32)
    parsed = features.parse_example(
        tf.constant(features.to_example(_video(ok), "float16").SerializeToString()), "float16", ("visual_2d",)
    )
    np.testing.assert_array_equal(parsed["visual_2d/features"].numpy(), ok.astype(np.float16).astype(np.float32))
