"""The interface every task implements for the generic trainer."""

from __future__ import annotations

import abc
from typing import Optional

import keras
import tensorflow as tf

from trainer.config import ExperimentConfig


class Task(abc.ABC):
    """A trainable task: its data, model, losses, metrics and evaluation.

    Attributes:
      name: registry name (set by `register_task`).
      cfg: the experiment config.
      job_dir: where the job writes.
    """

    name = ""

    def __init__(self, cfg: ExperimentConfig, job_dir: str):
        self.cfg = cfg
        self.job_dir = job_dir

    @abc.abstractmethod
    def prepare(self) -> None:
        """Reads and validates the data before any training (fail fast)."""

    @abc.abstractmethod
    def build_model(self) -> keras.Model:
        """Builds the model (called inside the strategy scope)."""

    @abc.abstractmethod
    def compile(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        """Compiles `model` with the task's losses and metrics."""

    @abc.abstractmethod
    def dataset(self, split: str, is_training: bool, batch_size: int) -> tf.data.Dataset:
        """Batched (features, labels) examples of a split."""

    @abc.abstractmethod
    def num_examples(self, split: str) -> int:
        """Examples in a split (for steps per epoch and schedules)."""

    @property
    @abc.abstractmethod
    def monitor(self) -> tuple[str, str]:
        """(validation metric name, 'min' or 'max') for early stopping and best checkpoint."""

    def callbacks(self, model: keras.Model, log_dir: str) -> list:
        """Task-specific callbacks (e.g. TensorBoard pictures)."""
        return []

    @abc.abstractmethod
    def evaluate(self, model: keras.Model, split: str) -> dict:
        """Final metrics of `model` on a split, JSON-ready."""

    def serving_model(self, model: keras.Model) -> keras.Model:
        """The model saved as model.keras (e.g. with in-graph preprocessing in front)."""
        return model

    def export(self, model: keras.Model, export_dir: str) -> Optional[str]:
        """Writes serving artifacts; returns their path (None if the task has none)."""
        return None
