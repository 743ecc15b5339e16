"""The trainer end to end on generated videos: fit, strategies, resume, evaluation, bad input."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from avalign import hyperparams
from tests.conftest import REPO
from trainer import input as input_lib
from trainer import train_lib
from trainer.config import ExperimentConfig

TINY_MALTA = [
    "model.localization.num_segments=16",
    "model.localization.video_hidden=16",
    "model.localization.audio_hidden=8",
    "model.localization.text_hidden=16",
    "model.localization.attention_units=16",
    "model.localization.regression_hidden=16",
    "model.localization.embedding_dim=16",
    "model.localization.vocab_size=500",
    "train.global_batch_size=8",
    "train.warmup_epochs=0",
    "train.lr_decay=constant",
    "eval.num_plot_examples=2",
]
TINY_AVLNET = [
    "model.retrieval.audio_widths=[8,8,16,16]",
    "model.retrieval.first_conv_channels=8",
    "model.retrieval.embedding_dim=16",
    "model.retrieval.max_audio_frames=256",
    "train.global_batch_size=8",
    "train.warmup_epochs=0",
    "train.lr_decay=constant",
]


def _cfg(config, records, overrides):
    return hyperparams.load(ExperimentConfig, str(REPO / config), [f"data.records_dir={records}", *overrides])


def _task_cmd(config, records, job_dir, overrides):
    cmd = [sys.executable, "-m", "trainer.task", "--config", str(REPO / config), "--job-dir", str(job_dir)]
    for o in [f"data.records_dir={records}", *overrides]:
        cmd += ["--set", o]
    return cmd


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))


def _epochs_logged(job_dir):
    with open(job_dir / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def malta_run(tiny_records, tmp_path_factory):
    job = tmp_path_factory.mktemp("malta")
    out = train_lib.run_experiment(
        _cfg("configs/malta_demo.yaml", tiny_records, TINY_MALTA + ["train.epochs=2"]), str(job)
    )
    return job, out


def test_localization_end_to_end(malta_run):
    job, out = malta_run
    result = json.loads((job / "eval" / "test.json").read_text())
    for key in ("r1_iou_0.1", "r1_iou_0.3", "r1_iou_0.5", "r1_iou_0.7", "miou", "snapped_r1_iou_0.5"):
        assert 0.0 <= result["all"][key] <= 1.0
    assert result["num_captions"] > 0 and "language_en" in result
    # The attention decoder also ranks proposals: R@5 after NMS never falls below R@1.
    for subset in ("all", "language_en"):
        for m in ("0.1", "0.3", "0.5", "0.7"):
            assert result[subset][f"r1_iou_{m}"] <= result[subset][f"r5_iou_{m}"] <= 1.0
    assert (job / "config.yaml").exists() and (job / "model.keras").exists()
    assert sorted(os.listdir(job / "checkpoints"))[:2] == ["best.weights.h5", "epoch-001.weights.h5"]
    assert _epochs_logged(job) == [0, 1]
    # TensorBoard: scalars with R@1 and the learning rate, and the attention pictures.
    tags = set()
    for root, _, files in os.walk(job / "logs"):
        for f in files:
            for e in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
                tags |= {v.tag for v in e.summary.value}
    assert {"epoch_span_r1_iou_0.5", "epoch_learning_rate", "attention_vs_truth"} <= tags, tags
    assert set(out["history"]) >= {"loss", "val_span_miou"}


def test_eval_mode_reproduces_the_metrics(malta_run, tiny_records):
    job, out = malta_run
    cfg = _cfg("configs/malta_demo.yaml", tiny_records, TINY_MALTA)
    again = train_lib.run_experiment(cfg, str(job), train=False)["eval"]
    assert again["all"]["miou"] == pytest.approx(out["eval"]["all"]["miou"], abs=1e-6)


def test_windowed_inference_over_videos_longer_than_the_window(malta_run, tiny_records):
    job, out = malta_run
    cfg = _cfg(
        "configs/malta_demo.yaml", tiny_records, TINY_MALTA + ["eval.window_seconds=8", "eval.window_stride_seconds=4"]
    )
    windowed = train_lib.run_experiment(cfg, str(job), train=False)["eval"]
    assert windowed["num_captions"] == out["eval"]["num_captions"]
    assert 0.0 <= windowed["all"]["miou"] <= 1.0


def test_mirrored_two_replicas(tiny_records, tmp_path):
    cmd = _task_cmd(
        "configs/malta_demo.yaml",
        tiny_records,
        tmp_path,
        TINY_MALTA + ["train.epochs=1", "runtime.strategy=mirrored", "runtime.cpu_devices=2"],
    )
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Strategy mirrored with 2 replica(s)" in proc.stderr
    assert (tmp_path / "eval" / "test.json").exists()


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_mirrored_two_workers_on_localhost(tiny_records, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        cmd = _task_cmd(
            "configs/malta_demo.yaml",
            tiny_records,
            tmp_path / "job",
            TINY_MALTA + ["train.epochs=1", "runtime.strategy=multi_worker_mirrored"],
        )
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "Strategy multi_worker_mirrored with 2 replica(s)" in outs[0][1]
    assert (tmp_path / "job" / "eval" / "test.json").exists()  # the chief (worker 0) writes it


def test_killed_job_resumes_where_it_stopped(tiny_records, tmp_path):
    cmd = _task_cmd("configs/malta_demo.yaml", tiny_records, tmp_path, TINY_MALTA + ["train.epochs=6"])
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (tmp_path / "history.csv").exists() and len(_epochs_logged(tmp_path)) >= 2:
            break
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _epochs_logged(tmp_path)
    assert 2 <= len(done_before) < 6
    # As if the kill had landed while the next backup was being written: a cut-short
    # file under its temporary name, which the rerun ignores and deletes.
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    committed = tmp_path / "backup" / state["weights"]
    (tmp_path / "backup" / ".partial-epoch-099.weights.h5").write_bytes(committed.read_bytes()[:96])
    rerun = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    epochs = _epochs_logged(tmp_path)
    # The rerun resumes from the last committed epoch instead of starting over, and
    # every epoch is logged exactly once: rows after that commit are redone.
    assert f"Resuming after epoch {len(done_before) - 1}" in rerun.stderr or (
        f"Resuming after epoch {len(done_before)}" in rerun.stderr
    ), rerun.stderr[-3000:]
    assert epochs == list(range(6)), epochs
    assert not list((tmp_path / "backup").glob(".partial-*"))


def test_dims_that_disagree_with_records_stop_before_training(tiny_records, tmp_path):
    cfg = _cfg("configs/malta_demo.yaml", tiny_records, TINY_MALTA + ["model.localization.video_dim=4096"])
    with pytest.raises(input_lib.RecordsError, match=r"video_dim=4096 but the records give \d+"):
        train_lib.run_experiment(cfg, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_record_missing_a_feature_is_named(tiny_records, tmp_path):
    import shutil

    bad = tmp_path / "records"
    shutil.copytree(tiny_records, bad)
    shard = sorted((bad / "train").glob("*.gz"))[0]
    example = tf.train.Example()
    example.features.feature["video_id"].bytes_list.value.append(b"broken")
    with tf.io.TFRecordWriter(str(shard), options="GZIP") as w:
        w.write(example.SerializeToString())
    cfg = _cfg("configs/malta_demo.yaml", bad, TINY_MALTA)
    with pytest.raises(input_lib.RecordsError, match=r"train-00000-of-00002.*misses a required feature"):
        train_lib.run_experiment(cfg, str(tmp_path / "job"))
    skipping = _cfg("configs/malta_demo.yaml", bad, TINY_MALTA + ["data.on_bad_record=skip"])
    info = input_lib.RecordsInfo(skipping.data.records_dir)
    counts = input_lib.validate_records(info, "train", ("visual_2d", "visual_3d"), "skip")
    assert counts["skipped"] == 1


def test_cli_rejects_unknown_flags_and_keys(tmp_path):
    from trainer import task

    with pytest.raises(SystemExit):
        task.main(["--job-dir", str(tmp_path), "--epochs", "3"])
    assert task.main(["--job-dir", str(tmp_path), "--set", "train.epoch=3"]) == 2
    assert task.main(["--job-dir", str(tmp_path), "--set", "data.records_dir=/nonexistent"]) == 2
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def avlnet_run(tiny_records, tmp_path_factory):
    job = tmp_path_factory.mktemp("avlnet")
    out = train_lib.run_experiment(
        _cfg("configs/avlnet_demo.yaml", tiny_records, TINY_AVLNET + ["train.epochs=2"]), str(job)
    )
    return job, out


def test_retrieval_end_to_end_and_hub_loadable_encoder(avlnet_run):
    import tensorflow_hub as hub

    job, out = avlnet_run
    result = json.loads((job / "eval" / "test.json").read_text())
    for d in ("a2v", "v2a"):
        assert {"r1", "r5", "r10", "median_rank"} <= set(result["all"][d])
    export = job / "export" / "audio_encoder" / "1"
    encoder = hub.load(str(export))
    wave = np.random.default_rng(0).normal(scale=0.1, size=16000 * 3).astype("float32")
    single = encoder(tf.constant(wave))
    assert single["pooled_embedding"].shape == (16,)
    assert single["frame_embeddings"].shape == (int(np.ceil(301 / 16)), 16)
    # The exported encoder gives the in-memory model's pooled embedding for the same log-Mel.
    from preprocessing import audio
    from trainer.retrieval import model as model_lib

    log_mel = audio.log_mel(tf.constant(wave))[None]
    lengths = tf.constant([log_mel.shape[1]], tf.int32)
    ref = model_lib.audio_encoder_model(out["model"])({"audio": log_mel, "audio_length": lengths}, training=False)
    got = encoder.embed_log_mel(log_mel, lengths)
    np.testing.assert_allclose(got["pooled_embedding"], ref["pooled_embedding"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single["pooled_embedding"], got["pooled_embedding"][0], rtol=1e-4, atol=1e-5)


def test_malta_trained_on_avlnet_audio_features(avlnet_run, tiny_records, tmp_path):
    job, _ = avlnet_run
    cfg = _cfg(
        "configs/malta_demo.yaml",
        tiny_records,
        TINY_MALTA
        + ["train.epochs=1", "data.audio_feature=avlnet", f"data.audio_encoder={job / 'export' / 'audio_encoder'}"],
    )
    out = train_lib.run_experiment(cfg, str(tmp_path))
    assert out["task"].model_cfg.audio_dim == 16  # the encoder's last ResDAVEnet width
    assert (tmp_path / "eval" / "test.json").exists()


def test_images_mode_fine_tunes_from_the_video_model(avlnet_run, tiny_records, tmp_path):
    import keras

    job, _ = avlnet_run
    overrides = TINY_AVLNET + ["train.epochs=1", f"train.init_checkpoint={job / 'model.keras'}"]
    cfg = _cfg("configs/avlnet_images_demo.yaml", tiny_records, overrides + ["model.retrieval.freeze_visual=true"])
    # Loaded, not yet trained: the audio encoder is the video model's; the 2D-only
    # visual unit has another input width and keeps its initialization.
    from trainer.registry import get_task

    task = get_task("retrieval")(cfg, str(tmp_path / "loaded"))
    task.prepare()
    loaded = task.build_model()
    train_lib.load_initial_weights(loaded, cfg.train.init_checkpoint)
    video_model = keras.models.load_model(job / "model.keras", compile=False)
    for a, b in zip(loaded.get_layer("resdavenet").get_weights(), video_model.get_layer("resdavenet").get_weights()):
        np.testing.assert_array_equal(a, b)
    out = train_lib.run_experiment(cfg, str(tmp_path / "trained"))
    assert out["eval"]["num_clips"] > 0 and (tmp_path / "trained" / "eval" / "test.json").exists()


def test_cascade_end_to_end(tiny_records, tmp_path):
    from trainer import cascade

    table = cascade.run_cascade(
        config=str(REPO / "configs/avlnet_demo.yaml"),
        records_dir=str(tiny_records),
        job_root=str(tmp_path),
        source_language="en",
        target_language="ja",
        seeds=[0],
        overrides=TINY_AVLNET + ["train.epochs=1"],
    )
    rows = [line.split()[0:2] for line in table.splitlines()[1:-1]]
    assert [" ".join(r) for r in rows] == ["target only", "pretrained zero-shot", "pretrained +", "pretrained +"]
    assert "chance R@1" in table
    saved = json.loads((tmp_path / "cascade.json").read_text())
    # Every row is evaluated on the target language's test clips only.
    clips = {name: runs[0]["num_clips"] for name, runs in saved.items()}
    assert len(set(clips.values())) == 1, clips
    pre_cfg = hyperparams.load(ExperimentConfig, tmp_path / "seed0" / "pretrain" / "config.yaml")
    assert pre_cfg.data.languages == ["en"] and pre_cfg.data.clip_source == "windows"
    ft_cfg = hyperparams.load(ExperimentConfig, tmp_path / "seed0" / "ft_target" / "config.yaml")
    assert ft_cfg.data.languages == ["ja"] and ft_cfg.train.init_checkpoint.endswith("pretrain/model.keras")
