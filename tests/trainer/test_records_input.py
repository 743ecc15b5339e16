"""The trainer reads exactly the shards schema.json lists, and names a damaged one."""

import json
import logging
import shutil

import pytest
import tensorflow as tf

from avalign import features
from tests.conftest import REPO
from trainer import input as input_lib
from trainer.config import load_experiment
from trainer.registry import get_task

STREAMS = ("visual_2d", "visual_3d")
# tiny_records has 2 shards per split; train-00000 holds 5 of the 6 train videos.
SHARD = "train/train-00000-of-00002.tfrecord.gz"


@pytest.fixture
def records(tiny_records, tmp_path):
    """A copy of tiny_records that a test may damage."""
    out = tmp_path / "records"
    shutil.copytree(tiny_records, out)
    return out


def _videos(info, split):
    return [v[features.VIDEO_ID].numpy() for v in input_lib.read_videos(info, split, STREAMS)]


def test_stray_shard_is_ignored_with_a_warning(records, caplog):
    """A shard an earlier run left (another num_shards) is not read: 6 train videos, not 11."""
    shutil.copy(records / SHARD, records / "train" / "train-00002-of-00003.tfrecord.gz")
    info = input_lib.RecordsInfo(str(records))
    with caplog.at_level(logging.WARNING):
        videos = _videos(info, "train")
        _videos(info, "train")
    assert len(videos) == len(set(videos)) == info.count("train") == 6
    warnings = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert len(warnings) == 1 and "train-00002-of-00003" in warnings[0], warnings  # once, naming the file
    assert [f.rsplit("/", 2)[-2:] for f in info.files("train")] == [
        ["train", "train-00000-of-00002.tfrecord.gz"],
        ["train", "train-00001-of-00002.tfrecord.gz"],
    ]


def test_listed_shard_that_is_missing_is_an_error(records):
    (records / "train" / "train-00001-of-00002.tfrecord.gz").unlink()
    info = input_lib.RecordsInfo(str(records))
    with pytest.raises(input_lib.RecordsError, match=r"train-00001-of-00002.tfrecord.gz is listed in .* but missing"):
        info.files("train")


def test_records_dir_without_schema_says_the_job_did_not_finish(records):
    (records / features.METADATA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"job did not finish \(it failed or was killed\): rerun"):
        input_lib.RecordsInfo(str(records))


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "cut":
        data = data[: len(data) // 2]
    else:  # flip bytes in the middle
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["cut", "flip"])
def test_damaged_shard_is_named_with_the_record_and_offset(records, how):
    _damage(records / SHARD, how)
    info = input_lib.RecordsInfo(str(records))
    with pytest.raises(
        input_lib.RecordsError,
        match=r"train-00000-of-00002.tfrecord.gz is damaged .* at record #\d+, uncompressed byte offset \d+: .*"
        r"of its 5 records are lost.*on_bad_record=skip",
    ):
        input_lib.validate_records(info, "train", STREAMS, "error")


@pytest.mark.parametrize("how", ["cut", "flip"])
def test_skip_leaves_out_the_damaged_remainder(records, how):
    _damage(records / SHARD, how)
    info = input_lib.RecordsInfo(str(records))
    counts = input_lib.validate_records(info, "train", STREAMS, "skip")
    assert counts["damaged_files"] == 1 and counts["unread"] >= 1
    assert counts["videos"] + counts["unread"] == 6
    # The read path stops where validation found the damage: no DataLossError, the same videos.
    assert len(_videos(info, "train")) == counts["videos"]


@pytest.mark.parametrize(
    "config", ["configs/malta_demo.yaml", "configs/avlnet_demo.yaml"], ids=["localization", "retrieval"]
)
def test_both_tasks_train_on_the_readable_records_of_a_damaged_shard(records, tmp_path, config):
    _damage(records / SHARD, "cut")
    cfg = load_experiment(str(REPO / config), [f"data.records_dir={records}", "data.on_bad_record=skip"])
    (tmp_path / "job").mkdir()
    task = get_task(cfg)(cfg, str(tmp_path / "job"))
    task.prepare()
    task.configure()
    assert task.counts["train"]["damaged_files"] == 1
    n = 0
    for batch in task.dataset("train", False, 4):  # localization: (inputs, labels); retrieval: inputs
        inputs = batch[0] if isinstance(batch, tuple) else batch
        n += int(tf.shape(next(iter(inputs.values())))[0])
    assert n == task.num_examples("train") > 0
    strict = load_experiment(str(REPO / config), [f"data.records_dir={records}"])
    with pytest.raises(input_lib.RecordsError, match="train-00000-of-00002.tfrecord.gz is damaged"):
        get_task(strict)(strict, str(tmp_path / "strict")).prepare()


def test_shard_with_other_records_than_listed_is_an_error(records):
    meta = json.loads((records / features.METADATA_FILE).read_text())
    meta["files"]["train"][SHARD] = 7
    (records / features.METADATA_FILE).write_text(json.dumps(meta))
    info = input_lib.RecordsInfo(str(records))
    with pytest.raises(input_lib.RecordsError, match=r"train-00000-of-00002.tfrecord.gz holds 5 records but .* 7"):
        input_lib.validate_records(info, "train", STREAMS, "error")
    assert input_lib.validate_records(info, "train", STREAMS, "skip")["videos"] == 6
