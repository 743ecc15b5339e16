"""Evaluating a trained job (`--mode eval`): its own vocabulary and dims, checked records, nothing written back."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
import yaml

from avalign import features, hyperparams
from tests.conftest import REPO
from tests.jobs import AVLNET, MALTA, TINY_AVLNET, TINY_MALTA
from trainer import base_task, train_lib
from trainer import input as input_lib
from trainer import task as task_cli
from trainer.config import load_experiment
from trainer.localization import text

QUICK = ["train.epochs=1", "train.steps_per_epoch=2"]


def _cfg(config, records, overrides=()):
    return load_experiment(str(REPO / config), [f"data.records_dir={records}", *overrides])


def _rewrite_records(src, dst, splits, edit, schema_edit=None):
    """A copy of the records dir `src` at `dst`, with `edit(example)` applied to every record of `splits`."""
    shutil.copytree(src, dst)
    for split in splits:
        for shard in sorted((dst / split).glob("*.gz")):
            examples = []
            for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
                example = tf.train.Example.FromString(raw.numpy())
                edit(example.features.feature)
                examples.append(example.SerializeToString())
            with tf.io.TFRecordWriter(str(shard), options="GZIP") as w:
                for e in examples:
                    w.write(e)
    if schema_edit:
        path = dst / features.METADATA_FILE
        meta = json.loads(path.read_text())
        schema_edit(meta)
        path.write_text(json.dumps(meta))
    return dst


def _captions(feature, key, fn):
    texts = [fn(t.decode()).encode() for t in feature[key].bytes_list.value]
    del feature[key].bytes_list.value[:]
    feature[key].bytes_list.value.extend(texts)


def _more_mel_bins(bins):
    """Record and schema edits that turn 40-bin log-Mel records into `bins`-bin ones (as `--set audio.num_mel_bins`)."""

    def edit(feature):
        frames = feature[features.AUDIO_FRAMES].int64_list.value[0]
        old = feature[features.AUDIO_BINS].int64_list.value[0]
        audio = np.frombuffer(feature[features.AUDIO].bytes_list.value[0], "<f2").reshape(frames, old)
        wider = np.concatenate([audio, audio[:, : bins - old]], axis=1)
        feature[features.AUDIO].bytes_list.value[0] = np.ascontiguousarray(wider).tobytes()
        feature[features.AUDIO_BINS].int64_list.value[0] = bins

    def schema_edit(meta):
        meta["audio"]["dim"] = bins
        meta["config"]["audio"]["num_mel_bins"] = bins

    return edit, schema_edit


def _job_files(job):
    """Every file of a job dir but its eval outputs, with its bytes."""
    return {
        str(p.relative_to(job)): p.read_bytes()
        for p in job.rglob("*")
        if p.is_file() and p.relative_to(job).parts[0] != "eval"
    }


@pytest.fixture(scope="module")
def mel64_records(tiny_records, tmp_path_factory):
    edit, schema_edit = _more_mel_bins(64)
    dst = tmp_path_factory.mktemp("mel64") / "records"
    return _rewrite_records(tiny_records, dst, ("train", "val", "test"), edit, schema_edit)


def test_training_records_what_the_model_is_built_from(malta_job, tiny_records):
    job, _ = malta_job
    facts = json.loads((job / base_task.FACTS_FILE).read_text())
    assert facts["records"]["audio.dim"] == 40 and facts["records"]["config.audio.num_mel_bins"] == 40
    assert facts["model"]["model.audio_dim"] == 39  # 13 MFCC + deltas
    assert facts["config"]["data.caption_field"] == "text_en"
    assert facts["vocabulary"] == (job / "vocabulary.txt").read_text().split()
    assert len(facts["statistics"]["video"]["mean"]) == facts["model"]["model.video_dim"]


def test_eval_uses_the_jobs_vocabulary_and_writes_nothing_into_the_job(malta_job, tiny_records, tmp_path):
    job, trained = malta_job
    trained_eval = trained["eval"]
    # Other records whose training captions hold other words; the test split is the job's.
    other = _rewrite_records(
        tiny_records,
        tmp_path / "records",
        ("train",),
        lambda f: _captions(f, features.CAPTION_TEXT_EN, lambda t: " ".join(w + "x" for w in text.tokenize_caption(t))),
    )
    before = _job_files(job)
    vocabulary = (job / "vocabulary.txt").read_text().split()
    out = train_lib.run_experiment(_cfg(MALTA, other, TINY_MALTA), str(job), train=False)
    assert _job_files(job) == before
    assert out["task"].vocabulary == vocabulary
    assert out["eval"]["all"]["miou"] == pytest.approx(trained_eval["all"]["miou"], abs=1e-6)
    assert out["eval"]["num_captions"] == trained_eval["num_captions"]


def test_a_job_trained_with_the_older_config_layout_is_evaluated(malta_job, tiny_records):
    job, trained = malta_job
    # As a job trained before tasks owned their configs wrote them: model.localization.<key>.
    facts = json.loads((job / base_task.FACTS_FILE).read_text())
    for group in ("config", "model"):
        facts[group] = {k.replace("model.", "model.localization.", 1): v for k, v in facts[group].items()}
    (job / base_task.FACTS_FILE).write_text(json.dumps(facts))
    config = yaml.safe_load((job / "config.yaml").read_text())
    config["model"] = {"localization": config["model"]}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    out = train_lib.run_experiment(load_experiment(str(job / "config.yaml")), str(job), train=False)
    assert out["eval"]["all"]["miou"] == pytest.approx(trained["eval"]["all"]["miou"], abs=1e-6)


def test_an_empty_caption_field_is_named_with_its_split(malta_job, tiny_records, tmp_path):
    job, _ = malta_job
    # As the non-builtin formats write them: no English caption for any test video.
    no_english = _rewrite_records(
        tiny_records, tmp_path / "records", ("test",), lambda f: _captions(f, features.CAPTION_TEXT_EN, lambda t: "")
    )
    before = (job / "eval" / "test.json").read_bytes()
    message = r"split 'test': \d+ caption\(s\) of its \d+ have an empty captions/text_en "
    message += r".*data\.caption_field=text\b"
    with pytest.raises(input_lib.RecordsError, match=message):
        train_lib.run_experiment(_cfg(MALTA, no_english, TINY_MALTA), str(job), train=False)
    assert (job / "eval" / "test.json").read_bytes() == before
    # Training on them stops before any work too.
    with pytest.raises(input_lib.RecordsError, match=message):
        train_lib.run_experiment(_cfg(MALTA, no_english, TINY_MALTA + QUICK), str(tmp_path / "job"))
    assert not (tmp_path / "job" / "checkpoints").exists()


def test_only_the_languages_evaluated_need_the_caption_field(malta_job, tiny_records, tmp_path):
    job, _ = malta_job

    def edit(feature):
        if feature[features.LANGUAGE].bytes_list.value[0] == b"ja":
            _captions(feature, features.CAPTION_TEXT_EN, lambda t: "")

    ja_without_english = _rewrite_records(tiny_records, tmp_path / "records", ("test",), edit)
    with pytest.raises(input_lib.RecordsError, match=r"split 'test': \d+ caption\(s\) of its videos in \['ja'\]"):
        train_lib.run_experiment(
            _cfg(MALTA, ja_without_english, TINY_MALTA + ["data.eval_languages=[ja]"]), str(job), train=False
        )
    out = train_lib.run_experiment(
        _cfg(MALTA, ja_without_english, TINY_MALTA + ["data.eval_languages=[en]"]), str(job), train=False
    )
    assert set(out["eval"]) >= {"language_en"} and "language_ja" not in out["eval"]


def test_eval_on_records_with_other_mel_bins_stops_with_both_values(malta_job, mel64_records, capsys):
    job, _ = malta_job
    # MFCC from 64 bins still has 39 dims: only the records' own facts tell them apart.
    with pytest.raises(input_lib.RecordsError) as e:
        train_lib.run_experiment(_cfg(MALTA, mel64_records, TINY_MALTA), str(job), train=False)
    assert "audio.dim=40 in the job's records, 64 in these" in str(e.value)
    assert "config.audio.num_mel_bins=40 in the job's records, 64 in these" in str(e.value)
    assert "--set audio.num_mel_bins=40" in str(e.value)
    argv = ["--config", str(REPO / MALTA), "--job-dir", str(job), "--mode", "eval"]
    argv += ["--set", f"data.records_dir={mel64_records}"] + [a for o in TINY_MALTA for a in ("--set", o)]
    assert task_cli.main(argv) == 2
    assert "config.audio.num_mel_bins=40" in capsys.readouterr().err


def test_eval_on_records_with_another_visual_dim_stops(malta_job, tiny_records, tmp_path):
    job, _ = malta_job
    dim = json.loads((tiny_records / features.METADATA_FILE).read_text())["streams"]["visual_2d"]["dim"]
    keys = features.stream_keys("visual_2d")

    def edit(feature):
        frames = feature[keys["num_frames"]].int64_list.value[0]
        m = np.frombuffer(feature[keys["features"]].bytes_list.value[0], "<f2").reshape(frames, dim)
        feature[keys["features"]].bytes_list.value[0] = np.ascontiguousarray(m[:, : dim // 2]).tobytes()
        feature[keys["dim"]].int64_list.value[0] = dim // 2

    def schema_edit(meta):
        for group in ("visual", "streams"):
            meta[group]["visual_2d"]["dim"] = dim // 2

    narrow = _rewrite_records(tiny_records, tmp_path / "records", ("train", "val", "test"), edit, schema_edit)
    with pytest.raises(
        input_lib.RecordsError, match=rf"streams\.visual_2d\.dim={dim} in the job's records, {dim // 2}"
    ):
        train_lib.run_experiment(_cfg(MALTA, narrow, TINY_MALTA), str(job), train=False)


def test_eval_with_another_caption_field_stops(malta_job, tiny_records):
    job, _ = malta_job
    cfg = _cfg(MALTA, tiny_records, TINY_MALTA + ["data.caption_field=text"])
    with pytest.raises(
        hyperparams.ConfigError, match=r"data\.caption_field='text_en' in the job, .*'text' in this run"
    ):
        train_lib.run_experiment(cfg, str(job), train=False)


def test_eval_of_a_dir_that_never_trained_names_the_missing_facts(tiny_records, tmp_path):
    with pytest.raises(FileNotFoundError, match=base_task.FACTS_FILE):
        train_lib.run_experiment(_cfg(MALTA, tiny_records, TINY_MALTA), str(tmp_path), train=False)
    assert not (tmp_path / "vocabulary.txt").exists()


def test_retrieval_eval_on_records_with_other_mel_bins_stops(avlnet_job, tiny_records, mel64_records):
    job, trained = avlnet_job
    assert trained["task"].model_cfg.num_mel_bins == 40
    with pytest.raises(input_lib.RecordsError, match=r"audio\.dim=40 in the job's records, 64 in these"):
        train_lib.run_experiment(_cfg(AVLNET, mel64_records, TINY_AVLNET), str(job), train=False)
    # On the job's own records, evaluation runs and gives the job's metrics.
    again = train_lib.run_experiment(_cfg(AVLNET, tiny_records, TINY_AVLNET), str(job), train=False)["eval"]
    assert again["all"]["a2v"]["r1"] == pytest.approx(trained["eval"]["all"]["a2v"]["r1"], abs=1e-6)
