"""Tiny experiment settings and helpers that the end-to-end trainer tests share."""

import csv
import os
import subprocess
import sys

from tests.conftest import REPO
from trainer.config import ExperimentConfig, load_experiment

MALTA = "configs/malta_demo.yaml"
AVLNET = "configs/avlnet_demo.yaml"

# Widths small enough for a few seconds of training on 2 CPU cores.
TINY_MALTA = [
    "model.num_segments=16",
    "model.video_hidden=16",
    "model.audio_hidden=8",
    "model.text_hidden=16",
    "model.attention_units=16",
    "model.regression_hidden=16",
    "model.embedding_dim=16",
    "model.vocab_size=500",
    "train.global_batch_size=8",
    "train.warmup_epochs=0",
    "train.lr_decay=constant",
    "eval.num_plot_examples=2",
    # Exporting a localizer takes seconds; the tests that serve one turn it back on.
    "export.enabled=false",
]
TINY_AVLNET = [
    "model.audio_widths=[8,8,16,16]",
    "model.first_conv_channels=8",
    "model.embedding_dim=16",
    "model.max_audio_frames=256",
    "train.global_batch_size=8",
    "train.warmup_epochs=0",
    "train.lr_decay=constant",
]
# The shared jobs' own settings (conftest's malta_job and avlnet_job).
MALTA_JOB = TINY_MALTA + ["train.epochs=2", "export.enabled=true"]
AVLNET_JOB = TINY_AVLNET + ["train.epochs=2"]


def experiment_config(config, records, overrides=()) -> ExperimentConfig:
    """The experiment YAML `config` (relative to the repo) on `records`, with `overrides`."""
    return load_experiment(str(REPO / config), [f"data.records_dir={records}", *overrides])


def task_args(config, records, job_dir, overrides=()) -> list[str]:
    """`python -m trainer.task` arguments for the same experiment."""
    args = ["--config", str(REPO / config), "--job-dir", str(job_dir)]
    for o in [f"data.records_dir={records}", *overrides]:
        args += ["--set", o]
    return args


def task_cmd(config, records, job_dir, overrides=()) -> list[str]:
    """The whole `python -m trainer.task` command line, for a subprocess."""
    return [sys.executable, "-m", "trainer.task", *task_args(config, records, job_dir, overrides)]


def subprocess_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))


def run_killed(script: str, args) -> subprocess.CompletedProcess:
    """Runs `python -c script *args` in the repo (a script that kills itself partway), capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def epochs_logged(job_dir) -> list[int]:
    """The epochs in a job's history.csv, in order."""
    with open(os.path.join(job_dir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]
