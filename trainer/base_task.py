"""The interface every task implements for the generic trainer."""

from __future__ import annotations

import abc
import json
import logging
import os
from typing import Any, Optional

import keras
import tensorflow as tf

from avalign import hyperparams
from trainer import checkpointing, distribute
from trainer import input as input_lib
from trainer.config import ExperimentConfig

# What a job's model was built from, recorded at training time and checked
# by every evaluation of the job (`Task.record_facts`, `Task.job_facts`).
FACTS_FILE = "training_facts.json"
# Fact groups in the order they are checked: a differing choice in the config
# explains differing records or dims, and differing records explain differing dims.
_FACT_GROUPS = ("config", "records", "model")


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def records_facts(info: input_lib.RecordsInfo, streams, log_mel: bool = True) -> dict:
    """What a model depends on in the records: feature dims, and the audio front-end that made the log-Mel.

    Args:
      info: the records.
      streams: the streams the model reads.
      log_mel: whether it reads the log-Mel frames (directly or through a view).

    Returns:
      Dict keyed by where schema.json holds each value, e.g. 'audio.dim',
      'streams.visual_2d.dim', 'config.audio.num_mel_bins'.
    """
    facts = {f"streams.{s}.dim": info.stream_dims[s] for s in streams}
    if log_mel:
        facts["audio.dim"] = info.audio_dim
        audio = info.meta.get("config", {}).get("audio", {})
        facts.update({f"config.audio.{k}": v for k, v in audio.items()})
    return facts


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
    def prepare(self, from_job: bool = False) -> None:
        """Reads and validates the records once, before any model is built (fail fast).

        Everything that depends only on the data (split counts, feature dims,
        the audio view) is settled here; what depends on the model config is
        derived per build by `configure`, so that another model config (a
        tuning trial) takes effect without reading the records again.

        Args:
          from_job: the model is the job's trained one (evaluation): what it was
            built from (feature dims, vocabulary, normalization statistics) is
            read from the job's `FACTS_FILE` and checked against this run's
            config and records, and nothing is written into the job dir.
            Otherwise it is fitted on the training split and recorded there
            with `record_facts`.
        """

    @abc.abstractmethod
    def configure(self, cfg: Optional[ExperimentConfig] = None) -> Any:
        """Resolves the model config against the records and derives what the model needs from it (per build).

        Args:
          cfg: a new experiment config to build from (e.g. a tuning trial's);
            None keeps `self.cfg`. Its data section must be the prepared one.

        Returns:
          The resolved model config (also `self.model_cfg`), every dim filled in.

        Raises:
          hyperparams.ConfigError: `cfg` changes the data section.
          input_lib.RecordsError: a model dim disagrees with the records.
        """

    def _replace_config(self, cfg: Optional[ExperimentConfig]) -> None:
        """Takes `cfg` for the next build; the records were prepared for `self.cfg.data`."""
        if cfg is None or cfg is self.cfg:
            return
        if type(cfg) is not type(self.cfg) or cfg.data != self.cfg.data:
            raise hyperparams.ConfigError(
                f"{self.name}: a new config for the next build may change model, train, runtime and eval, not the "
                f"task or data section (the records were prepared for {self.cfg.data}); prepare a new task instead."
            )
        self.cfg = cfg

    def record_facts(self, facts: dict) -> None:
        """Records in the job dir what its model is built from (the chief writes it).

        Args:
          facts: JSON-ready dict whose groups 'config' (choices of this run's
            config), 'records' (facts of the records) and 'model' (the dims the
            model takes) map a key, named as the user would set it, to a value;
            tasks add what else their model needs (e.g. a vocabulary).
        """
        if not distribute.is_chief():
            return
        tf.io.gfile.makedirs(self.job_dir)
        path = os.path.join(self.job_dir, FACTS_FILE)
        checkpointing.write_text(path, json.dumps(facts, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        logging.info("Recorded what the model is built from in %s", path)

    def job_facts(self, current: dict) -> dict:
        """The facts the job recorded when it trained, once this run is checked against them.

        Args:
          current: this run's facts, grouped as in `record_facts`; its
            'records_dir' names the records in messages.

        Returns:
          The job's recorded facts.

        Raises:
          FileNotFoundError: the job dir holds no `FACTS_FILE` (not a trained
            job, or one trained before avalign recorded it).
          hyperparams.ConfigError: a 'config' or 'model' fact differs, naming
            the key, the job's value and this run's.
          input_lib.RecordsError: a 'records' fact differs, naming the key, the
            value in the job's records and in these records.
        """
        path = os.path.join(self.job_dir, FACTS_FILE)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: evaluation reads what the job's model was built from (feature dims, "
                f"vocabulary) from it, and training writes it before the first epoch. Is {self.job_dir} a "
                f"trained job? A job trained before avalign wrote this file must be trained again."
            )
        with tf.io.gfile.GFile(path) as f:
            job = json.load(f)
        # Jobs trained before tasks owned their configs named model keys model.<task>.<key>.
        legacy = f"model.{self.name}."
        for group in _FACT_GROUPS:
            facts = job.get(group, {})
            job[group] = {("model." + k[len(legacy) :] if k.startswith(legacy) else k): v for k, v in facts.items()}
        for group in _FACT_GROUPS:
            have, want = _plain(current.get(group, {})), job.get(group, {})
            keys = [k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
            if not keys:
                continue
            if group == "records":
                diffs = "; ".join(f"{k}={want.get(k)!r} in the job's records, {have.get(k)!r} in these" for k in keys)
                settings = " ".join(f"--set {k[len('config.') :]}={want[k]}" for k in keys if k.startswith("config."))
                raise input_lib.RecordsError(
                    f"The records in {current.get('records_dir')} are not made like those job {self.job_dir} was "
                    f"trained on ({job.get('records_dir')}): {diffs}. The model only reads features made as its "
                    f"training records were: evaluate on records preprocessed with the job's settings"
                    f"{f' ({settings})' if settings else ''}, or train a job on these."
                )
            diffs = "; ".join(f"{k}={want.get(k)!r} in the job, {k}={have.get(k)!r} in this run" for k in keys)
            raise hyperparams.ConfigError(
                f"This run's config does not give the model job {self.job_dir} trained: {diffs}. Evaluation runs "
                f"the job's model as trained: set {', '.join(f'{k}={want.get(k)}' for k in keys)} (as in its "
                f"config.yaml)."
            )
        return job

    @abc.abstractmethod
    def build_model(self) -> keras.Model:
        """Builds the model of the last `configure` (called inside the strategy scope)."""

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

    def tuning_objectives(self) -> dict[str, str]:
        """What a hyperparameter search can score a trial by: name -> 'min' or 'max'.

        'val_<metric>' names are validation metrics of the epoch logs (the
        best epoch counts); 'eval_<metric>' names are `evaluation_objectives`
        of `evaluate` on the eval split. Depends on the config only (a search
        checks its objective before any record is read).
        """
        monitor, mode = self.monitor
        return {"val_loss": "min", monitor: mode}

    @staticmethod
    def evaluation_objectives(result: dict) -> dict[str, float]:
        """The overall numbers of an `evaluate` result as 'eval_<metric>' objectives (nested keys joined by '_')."""

        def flat(d: dict, prefix: str) -> dict:
            out = {}
            for k, v in d.items():
                if isinstance(v, dict):
                    out.update(flat(v, f"{prefix}{k}_"))
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{prefix}{k}"] = float(v)
            return out

        return flat(result.get("all", {}), "eval_")

    def callbacks(self, model: keras.Model, log_dir: str) -> list:
        """Task-specific callbacks (e.g. TensorBoard pictures)."""
        return []

    @abc.abstractmethod
    def evaluate(self, model: keras.Model, split: str) -> dict:
        """Final metrics of `model` on a split, JSON-ready."""

    def serving_model(self, model: keras.Model) -> keras.Model:
        """The model saved as model.keras (e.g. with in-graph preprocessing in front)."""
        return model

    @abc.abstractmethod
    def format_results(self, result: dict) -> str:
        """The test metrics of `evaluate` as a table for people."""
