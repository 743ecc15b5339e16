"""Tiny experiment settings and helpers that the end-to-end trainer tests share."""

import csv
import os
import sys

from avalign import hyperparams
from tests.conftest import REPO
from trainer.config import ExperimentConfig

MALTA = "configs/malta_demo.yaml"
AVLNET = "configs/avlnet_demo.yaml"

# Widths small enough for a few seconds of training on 2 CPU cores.
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
# The shared jobs' own settings (conftest's malta_job and avlnet_job).
MALTA_JOB = TINY_MALTA + ["train.epochs=2"]
AVLNET_JOB = TINY_AVLNET + ["train.epochs=2"]


def experiment_config(config, records, overrides=()) -> ExperimentConfig:
    """The experiment YAML `config` (relative to the repo) on `records`, with `overrides`."""
    return hyperparams.load(ExperimentConfig, str(REPO / config), [f"data.records_dir={records}", *overrides])


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


def epochs_logged(job_dir) -> list[int]:
    """The epochs in a job's history.csv, in order."""
    with open(os.path.join(job_dir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]
