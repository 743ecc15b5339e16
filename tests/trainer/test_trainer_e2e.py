"""The trainer end to end on generated videos: fit, strategies, resume, evaluation, bad input."""

import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from avalign import hyperparams
from tests.conftest import REPO
from tests.jobs import (
    AVLNET,
    MALTA,
    TINY_AVLNET,
    TINY_MALTA,
    epochs_logged,
    experiment_config,
    run_killed,
    subprocess_env,
    task_cmd,
)
from trainer import input as input_lib
from trainer import train_lib
from trainer.config import load_experiment


def test_localization_end_to_end(malta_job):
    job, out = malta_job
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
    assert epochs_logged(job) == [0, 1]
    # TensorBoard: scalars with R@1 and the learning rate, and the attention pictures.
    tags = set()
    for root, _, files in os.walk(job / "logs"):
        for f in files:
            for e in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
                tags |= {v.tag for v in e.summary.value}
    assert {"epoch_span_r1_iou_0.5", "epoch_learning_rate", "attention_vs_truth"} <= tags, tags
    assert set(out["history"]) >= {"loss", "val_span_miou"}


def test_eval_mode_reproduces_the_metrics(malta_job, tiny_records):
    job, out = malta_job
    cfg = experiment_config(MALTA, tiny_records, TINY_MALTA)
    again = train_lib.run_experiment(cfg, str(job), train=False)["eval"]
    assert again["all"]["miou"] == pytest.approx(out["eval"]["all"]["miou"], abs=1e-6)


def test_windowed_inference_over_videos_longer_than_the_window(malta_job, tiny_records):
    job, out = malta_job
    cfg = experiment_config(MALTA, tiny_records, TINY_MALTA + ["eval.window_seconds=8", "eval.window_stride_seconds=4"])
    windowed = train_lib.run_experiment(cfg, str(job), train=False)["eval"]
    assert windowed["num_captions"] == out["eval"]["num_captions"]
    assert 0.0 <= windowed["all"]["miou"] <= 1.0


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
        env = subprocess_env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        cmd = task_cmd(
            MALTA,
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


# Runs the trainer CLI, but SIGKILLs the process while it writes the backup state of the
# epoch given as argv[1] (1-based), leaving that file half written under its temporary name.
KILL_WHILE_COMMITTING = """
import os, signal, sys
from trainer import checkpointing, task
epoch = int(sys.argv.pop(1))
write_text = checkpointing.write_text
def killing(path, text):
    if path.endswith(checkpointing.STATE_FILE) and f'"epochs_done": {epoch},' in text:
        partial = os.path.join(os.path.dirname(path), checkpointing.PARTIAL_PREFIX + os.path.basename(path))
        with open(partial, "w") as f:
            f.write(text[: len(text) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    write_text(path, text)
checkpointing.write_text = killing
sys.exit(task.main(sys.argv[1:]))
"""


def test_killed_mirrored_job_resumes_where_it_stopped(tiny_records, tmp_path):
    # Two replicas (2 logical CPUs) under MirroredStrategy, killed mid-commit, then resumed.
    overrides = ["train.epochs=3", "train.steps_per_epoch=2", "runtime.strategy=mirrored", "runtime.cpu_devices=2"]
    cmd = task_cmd(MALTA, tiny_records, tmp_path, TINY_MALTA + overrides)
    killed = run_killed(KILL_WHILE_COMMITTING, ["2", *cmd[3:]])
    assert killed.returncode == -9, killed.stderr[-3000:]
    # Killed during epoch 2's commit: its checkpoint and history row were written, its
    # backup state only partly.
    assert epochs_logged(tmp_path) == [0, 1]
    assert (tmp_path / "checkpoints" / "epoch-002.weights.h5").exists()
    assert json.loads((tmp_path / "backup" / "state.json").read_text())["epochs_done"] == 1
    assert (tmp_path / "backup" / ".partial-state.json").exists()
    rerun = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # The rerun resumes after the last committed epoch, redoes epoch 2 and logs every
    # epoch exactly once.
    assert "Resuming after epoch 1 " in rerun.stderr, rerun.stderr[-3000:]
    assert "Strategy mirrored with 2 replica(s)" in rerun.stderr
    assert epochs_logged(tmp_path) == [0, 1, 2]
    assert not list((tmp_path / "backup").glob(".partial-*"))
    assert (tmp_path / "done.json").exists() and (tmp_path / "eval" / "test.json").exists()


def test_dims_that_disagree_with_records_stop_before_training(tiny_records, tmp_path):
    cfg = experiment_config(MALTA, tiny_records, TINY_MALTA + ["model.video_dim=4096"])
    with pytest.raises(input_lib.RecordsError, match=r"video_dim=4096 but the records give \d+"):
        train_lib.run_experiment(cfg, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_a_batch_larger_than_the_training_set_stops_before_training(tiny_records, tmp_path):
    # Training batches drop their remainder: such a job used to "train" zero steps and exit 0.
    cfg = experiment_config(MALTA, tiny_records, TINY_MALTA + ["train.global_batch_size=1000"])
    with pytest.raises(hyperparams.ConfigError, match=r"train.global_batch_size=1000 is more than the \d+ training"):
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
    cfg = experiment_config(MALTA, bad, TINY_MALTA)
    with pytest.raises(input_lib.RecordsError, match=r"train-00000-of-00002.*misses a required feature"):
        train_lib.run_experiment(cfg, str(tmp_path / "job"))
    skipping = experiment_config(MALTA, bad, TINY_MALTA + ["data.on_bad_record=skip"])
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


def test_retrieval_end_to_end_and_hub_loadable_encoder(avlnet_job):
    import tensorflow_hub as hub

    job, out = avlnet_job
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
    from avalign import audio
    from trainer.retrieval import model as model_lib

    log_mel = audio.log_mel(tf.constant(wave))[None]
    lengths = tf.constant([log_mel.shape[1]], tf.int32)
    ref = model_lib.audio_encoder_model(out["model"])({"audio": log_mel, "audio_length": lengths}, training=False)
    got = encoder.embed_log_mel(log_mel, lengths)
    np.testing.assert_allclose(got["pooled_embedding"], ref["pooled_embedding"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single["pooled_embedding"], got["pooled_embedding"][0], rtol=1e-4, atol=1e-5)


def test_malta_trained_on_avlnet_audio_features(avlnet_job, tiny_records, tmp_path):
    job, _ = avlnet_job
    cfg = experiment_config(
        MALTA,
        tiny_records,
        TINY_MALTA
        + ["train.epochs=1", "data.audio_feature=avlnet", f"data.audio_encoder={job / 'export' / 'audio_encoder'}"]
        + ["export.enabled=true"],
    )
    out = train_lib.run_experiment(cfg, str(tmp_path))
    assert out["task"].model_cfg.audio_dim == 16  # the encoder's last ResDAVEnet width
    assert (tmp_path / "eval" / "test.json").exists()
    # The exported localizer carries the encoder: it serves with the encoder's own export gone.
    shutil.rmtree(job / "export" / "audio_encoder")
    served = tf.saved_model.load(str(tmp_path / "export" / "localizer" / "1")).signatures["localize"]
    task = out["task"]
    m, bins = task.model_cfg.num_segments, task.info.audio_dim
    got = served(
        captions=tf.constant([" ".join(task.vocabulary[:3])]),
        video=tf.zeros([1, m, task.model_cfg.video_dim]),
        log_mel=tf.random.stateless_normal([1, 300, bins], seed=[0, 1]),
        segment_mask=tf.ones([1, m]),
        duration=tf.constant([3.0]),
    )
    assert np.all(np.isfinite(got["audio_attention"].numpy()))


def test_images_mode_fine_tunes_from_the_video_model(avlnet_job, tiny_records, tmp_path):
    import keras

    job, _ = avlnet_job
    overrides = TINY_AVLNET + ["train.epochs=1", f"train.init_checkpoint={job / 'model.keras'}"]
    cfg = experiment_config("configs/avlnet_images_demo.yaml", tiny_records, overrides + ["model.freeze_visual=true"])
    # Loaded, not yet trained: the audio encoder is the video model's; the 2D-only
    # visual unit has another input width and keeps its initialization.
    from trainer.registry import get_task

    task = get_task(cfg)(cfg, str(tmp_path / "loaded"))
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
        config=str(REPO / AVLNET),
        records_dir=str(tiny_records),
        job_root=str(tmp_path),
        source_language="en",
        target_language="ja",
        seeds=[0],
        overrides=TINY_AVLNET + ["train.epochs=1", "train.global_batch_size=4"],  # 5 ja train clips
    )
    rows = [line.split()[0:2] for line in table.splitlines()[1:-1]]
    assert [" ".join(r) for r in rows] == ["target only", "pretrained zero-shot", "pretrained +", "pretrained +"]
    assert "chance R@1" in table
    saved = json.loads((tmp_path / "cascade.json").read_text())
    # Every row is evaluated on the target language's test clips only.
    clips = {name: runs[0]["num_clips"] for name, runs in saved.items()}
    assert len(set(clips.values())) == 1, clips
    pre_cfg = load_experiment(tmp_path / "seed0" / "pretrain" / "config.yaml")
    assert pre_cfg.data.languages == ["en"] and pre_cfg.data.clip_source == "windows"
    ft_cfg = load_experiment(tmp_path / "seed0" / "ft_target" / "config.yaml")
    assert ft_cfg.data.languages == ["ja"] and ft_cfg.train.init_checkpoint.endswith("pretrain/model.keras")
