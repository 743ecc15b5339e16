"""Hyperparameter search with KerasTuner over a config's `tune` section; each trial is a training run.

Layout of a search's job dir:

    config.yaml        the resolved config searched (its `tune` section included)
    search/            KerasTuner's project: oracle.json, one <tuner id>.json per
                       tuner, and per trial trial_<id>/trial.json (values, status,
                       score, failure message), result.json (objective, seconds)
                       and seed_<seed>/, the training job of each execution
    trials.csv, trials.md   each trial's values, objective, time, status and reason
    best_hparams.json  the best trial's values and objective, naming
    best_config.yaml   the config that trains it: `python -m trainer.task --config`
    hparams/           TensorBoard HParams data (`tensorboard --logdir JOB/hparams`)

Distributed search is KerasTuner's own: one process with `KERASTUNER_TUNER_ID=chief`
runs the oracle and serves it on `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`;
workers with other ids run trials; all share the job dir.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from typing import Any, Optional

import keras_tuner
import tensorflow as tf

from avalign import fileio, hyperparams
from trainer import checkpointing, distribute, search_space, train_lib
from trainer import input as input_lib
from trainer.config import ExperimentConfig
from trainer.registry import get_task

PROJECT = "search"
CONFIG_FILE = train_lib.CONFIG_FILE
TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"
BEST_HPARAMS = "best_hparams.json"
BEST_CONFIG = "best_config.yaml"
HPARAMS_DIR = "hparams"
RESULT_FILE = "result.json"
# What a search writes into its job dir (--overwrite removes these).
OUTPUTS = (PROJECT, TRIALS_CSV, TRIALS_MD, BEST_HPARAMS, BEST_CONFIG, HPARAMS_DIR, CONFIG_FILE)
# Settings a rerun may change and still continue the search.
RESUMABLE_CHANGES = ("tune.max_trials",)

_TUNER_ID = "KERASTUNER_TUNER_ID"
_ORACLE_IP = "KERASTUNER_ORACLE_IP"
_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"


def role() -> str:
    """'chief' (serves the oracle), 'worker' (runs trials for a chief) or 'single' (both, in one process).

    Raises:
      hyperparams.ConfigError: the KerasTuner environment is half set.
    """
    if _ORACLE_IP not in os.environ:
        return "single"
    missing = [v for v in (_ORACLE_PORT, _TUNER_ID) if not os.environ.get(v)]
    if missing:
        raise hyperparams.ConfigError(
            f"{_ORACLE_IP} is set, so this is a distributed search, but {missing} not: set "
            f"{_TUNER_ID}=chief on the oracle's process and a unique id (tuner0, tuner1, ...) on each worker, "
            f"and {_ORACLE_PORT} on all."
        )
    return "chief" if "chief" in os.environ[_TUNER_ID] else "worker"


def tuner_id() -> str:
    return os.environ.get(_TUNER_ID, "tuner0")


def check_search(cfg: ExperimentConfig) -> keras_tuner.Objective:
    """Everything about a search that can be checked before any record is read or trial runs.

    Returns:
      The objective, with its direction.

    Raises:
      hyperparams.ConfigError: a multi-worker strategy, a bad search space, an
        objective the task does not report, or settings a tuner can't run with.
    """
    if cfg.runtime.strategy == "multi_worker_mirrored":
        raise hyperparams.ConfigError(
            "runtime.strategy=multi_worker_mirrored: KerasTuner does not support a MultiWorkerMirrored strategy "
            "inside a trial. Search with 'mirrored' (all GPUs of one worker per trial) or 'default', and spread "
            f"trials over machines with KerasTuner's distributed mode ({_TUNER_ID}, {_ORACLE_IP}, {_ORACLE_PORT})."
        )
    search_space.validate_space(cfg)
    task = get_task(cfg)(cfg, "")
    names = task.tuning_objectives()
    name = cfg.tune.objective or task.monitor[0]
    if name not in names:
        raise hyperparams.ConfigError(
            f"tune.objective={name!r} is not reported by task {cfg.task!r}." + hyperparams.nearest(name, names)
        )
    if cfg.tune.tuner == "hyperband" and cfg.train.warmup_epochs:
        raise hyperparams.ConfigError(
            f"tune.tuner=hyperband trains some trials for a single epoch, so train.warmup_epochs="
            f"{cfg.train.warmup_epochs} can't hold for them; set train.warmup_epochs=0 or use another tuner."
        )
    return keras_tuner.Objective(name, cfg.tune.direction or names[name])


def make_oracle(cfg: ExperimentConfig, objective: keras_tuner.Objective) -> keras_tuner.Oracle:
    """The KerasTuner oracle of `tune.tuner` over the config's space."""
    t = cfg.tune
    common = dict(
        objective=objective,
        hyperparameters=search_space.declare(cfg),
        seed=t.seed,
        max_consecutive_failed_trials=t.max_consecutive_failed_trials,
    )
    if t.tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=t.max_trials, num_initial_points=t.num_initial_points or None, **common
        )
    if t.tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=cfg.train.epochs,
            factor=t.hyperband_factor,
            hyperband_iterations=t.hyperband_iterations,
            **common,
        )
        # The brackets decide how many trials run; max_trials caps them.
        oracle.max_trials = t.max_trials
        return oracle
    return keras_tuner.oracles.RandomSearchOracle(max_trials=t.max_trials, **common)


def _read_json(path: str) -> Optional[dict]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_json(path: str, data: dict) -> None:
    fileio.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


class ConfigTuner(keras_tuner.Tuner):
    """A KerasTuner tuner whose trial trains the search's config with the trial's values (`run_experiment`)."""

    def __init__(self, oracle, cfg: ExperimentConfig, job_dir: str, objective: keras_tuner.Objective, overwrite: bool):
        super().__init__(oracle=oracle, directory=job_dir, project_name=PROJECT, overwrite=overwrite)
        self.cfg = cfg
        self.job_dir = job_dir
        self.objective = objective
        self.task = None
        self.strategy = None

    def prepare(self) -> None:
        """Reads and checks the records once for every trial of this process, and makes its strategy."""
        self.strategy = distribute.make_strategy(self.cfg.runtime)
        self.task = train_lib.prepare_task(self.cfg, self.job_dir, train=True)

    def run_trial(self, trial, *args, **kwargs) -> dict:
        values = trial.hyperparameters.values
        trial_dir = self.get_trial_dir(trial.trial_id)
        start = time.monotonic()
        try:
            try:
                # Trials export nothing; the best config keeps the searched config's export section.
                cfg = search_space.trial_config(self.cfg, dict(values, **{"export.enabled": False}))
            except hyperparams.ConfigError as e:
                raise keras_tuner.errors.FailedTrialError(f"these values make an invalid config: {e}") from e
            executions = [
                self._execute(search_space.with_values(cfg, {"train.seed": cfg.train.seed + i}), trial_dir)
                for i in range(self.cfg.tune.executions_per_trial)
            ]
        except keras_tuner.errors.FailedTrialError as e:
            self._record(trial, trial_dir, {"status": "FAILED", "reason": str(e)}, time.monotonic() - start)
            raise
        value = float(sum(e["value"] for e in executions) / len(executions))
        self._record(trial, trial_dir, {"value": value, "executions": executions}, time.monotonic() - start)
        return {self.objective.name: value}

    def _execute(self, cfg: ExperimentConfig, trial_dir: str) -> dict:
        """Trains one execution of a trial (resuming it if a killed search left it) and scores it."""
        job = os.path.join(trial_dir, f"seed_{cfg.train.seed}")
        done = _read_json(os.path.join(job, RESULT_FILE))
        if done is not None:
            return done
        start = time.monotonic()
        try:
            out = train_lib.run_experiment(cfg, job, evaluate=False, task=self.task, strategy=self.strategy)
            value, epoch = self._score(cfg, job, out)
        except (
            checkpointing.NonFiniteLossError,
            hyperparams.ConfigError,
            input_lib.RecordsError,
            tf.errors.ResourceExhaustedError,
        ) as e:
            raise keras_tuner.errors.FailedTrialError(f"seed {cfg.train.seed}: {type(e).__name__}: {e}") from e
        result = {"seed": cfg.train.seed, "value": value, "best_epoch": epoch, "seconds": time.monotonic() - start}
        _write_json(os.path.join(job, RESULT_FILE), result)
        return result

    def _score(self, cfg: ExperimentConfig, job: str, out: dict) -> tuple[float, Optional[int]]:
        """(objective value, its epoch or None) of a finished execution."""
        name, best_max = self.objective.name, self.objective.direction == "max"
        if name.startswith("eval_"):
            if "model" in out:
                task, model = self.task, out["model"]
            else:  # training had finished before a kill: evaluate the job's trained model
                task, model = train_lib.load_trained(job, cfg)
            found = task.evaluation_objectives(task.evaluate(model, cfg.data.eval_split))
            value, epoch = found.get(name), None
        else:
            logged = out["history"].get(name)
            if logged is None:
                raise hyperparams.ConfigError(
                    f"tune.objective={name!r} is not in the epoch logs of {job} (they hold {sorted(out['history'])})."
                )
            finite = [(v, i) for i, v in enumerate(logged) if search_space.finite(v)]
            value, epoch = (max if best_max else min)(finite, default=(None, None))
        if not search_space.finite(value):
            raise checkpointing.NonFiniteLossError(f"{name} has no finite value in {job}.")
        return float(value), epoch

    def _record(self, trial, trial_dir: str, result: dict, seconds: float) -> None:
        values = {k: v for k, v in trial.hyperparameters.values.items()}
        result = dict(result, trial_id=trial.trial_id, values=values, seconds=seconds, tuner_id=tuner_id())
        result["objective"] = self.objective.name
        _write_json(os.path.join(trial_dir, RESULT_FILE), result)
        write_trial_hparams(self.job_dir, self.cfg, trial.trial_id, values, self.objective.name, result.get("value"))

    # A trial's model lives in its job dir; the tuner keeps none of its own.
    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):
        raise NotImplementedError(
            f"Trials are training jobs: {os.path.join(self.get_trial_dir(trial.trial_id), 'seed_<seed>')}."
        )


def _domain(p) -> Any:
    from tensorboard.plugins.hparams import api as hp_api

    if p.type == "choice":
        return hp_api.Discrete([float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in p.values])
    if p.type == "int":
        return hp_api.IntInterval(int(p.min), int(p.max))
    return hp_api.RealInterval(float(p.min), float(p.max))


def write_hparams_config(job_dir: str, cfg: ExperimentConfig, objective: keras_tuner.Objective) -> None:
    """The HParams experiment: the searched keys with their domains, and the objective as its metric."""
    from tensorboard.plugins.hparams import api as hp_api

    hparams = [hp_api.HParam(p.key, _domain(p)) for p in cfg.tune.space]
    if cfg.tune.tuner == "hyperband":
        hparams.append(hp_api.HParam("train.epochs", hp_api.IntInterval(1, cfg.train.epochs)))
    metric = hp_api.Metric(objective.name, display_name=f"{objective.name} ({objective.direction})")
    writer = tf.summary.create_file_writer(os.path.join(job_dir, HPARAMS_DIR))
    with writer.as_default():
        hp_api.hparams_config(hparams=hparams, metrics=[metric])
    writer.close()


def write_trial_hparams(job_dir, cfg, trial_id, values, objective: str, value: Optional[float]) -> None:
    """One HParams session per trial: its values, and its objective (none for a failed trial)."""
    from tensorboard.plugins.hparams import api as hp_api

    shown = {k: _hparam_value(v) for k, v in values.items() if not k.startswith(search_space.TUNER_PREFIX)}
    if search_space.HYPERBAND_EPOCHS in values:
        shown["train.epochs"] = int(values[search_space.HYPERBAND_EPOCHS])
    writer = tf.summary.create_file_writer(os.path.join(job_dir, HPARAMS_DIR, f"trial_{trial_id}"))
    with writer.as_default():
        hp_api.hparams(shown, trial_id=f"trial_{trial_id}")
        if value is not None:
            tf.summary.scalar(objective, value, step=0)
    writer.close()


def _hparam_value(v):
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _check_resume(cfg: ExperimentConfig, job_dir: str) -> None:
    changes = [c for c in train_lib.config_changes(cfg, job_dir) if not c.startswith(RESUMABLE_CHANGES)]
    if changes:
        raise hyperparams.ConfigError(
            f"{job_dir} holds a search of another config ({CONFIG_FILE} differs: {changes}). Rerunning the same "
            "command continues a search; pass --overwrite to delete it and search this config, or use another "
            "--job-dir."
        )


def _remove_outputs(job_dir: str) -> None:
    for name in OUTPUTS:
        path = os.path.join(job_dir, name)
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    logging.warning("Overwrite: removed the search in %s", job_dir)


def run_search(cfg: ExperimentConfig, job_dir: str, overwrite: bool = False) -> Optional[dict]:
    """Runs (or continues) the search of `cfg.tune` in `job_dir`; see the module docstring for what it writes.

    Rerunning it continues the search: finished trials are kept, a trial a kill
    interrupted runs again (its training resumes from its last committed epoch).

    Args:
      cfg: the experiment config with its `tune` section.
      job_dir: the search's dir (shared by the chief and workers of a distributed search).
      overwrite: delete an earlier search in `job_dir` first (a worker leaves
        that to its chief).

    Returns:
      `summarize`'s result, or None on a worker (the chief writes the summary).

    Raises:
      hyperparams.ConfigError: see `check_search`; or `job_dir` holds a search of another config.
      input_lib.RecordsError, FileNotFoundError: the records can't be read (before any trial).
    """
    where = role()
    objective = check_search(cfg)
    if overwrite and where == "worker":
        logging.warning("--overwrite is the chief's to do: worker %s continues the chief's search.", tuner_id())
        overwrite = False
    tf.io.gfile.makedirs(job_dir)
    if overwrite:
        _remove_outputs(job_dir)
    else:
        _check_resume(cfg, job_dir)
    if where != "worker":
        hyperparams.save(cfg, os.path.join(job_dir, CONFIG_FILE))
        write_hparams_config(job_dir, cfg, objective)
    tuner = ConfigTuner(make_oracle(cfg, objective), cfg, job_dir, objective, overwrite=overwrite)
    if where != "chief":
        tuner.prepare()
    tuner.search()
    if where == "worker":
        return None
    return summarize(cfg, job_dir, objective)


def _trials(job_dir: str) -> list[dict]:
    """Every trial of the search in `job_dir`, by id: KerasTuner's record with ours."""
    project = os.path.join(job_dir, PROJECT)
    trials = []
    for path in sorted(tf.io.gfile.glob(os.path.join(project, "trial_*", "trial.json"))):
        with tf.io.gfile.GFile(path) as f:
            kt = json.load(f)
        ours = _read_json(os.path.join(os.path.dirname(path), RESULT_FILE)) or {}
        reason = ours.get("reason") or ""
        if not reason and kt.get("message"):
            reason = [line for line in kt["message"].strip().splitlines() if line.strip()][-1]
        trials.append(
            {
                "trial_id": kt["trial_id"],
                "status": kt["status"],
                "values": kt["hyperparameters"]["values"],
                "score": kt.get("score"),
                "seconds": ours.get("seconds"),
                "executions": ours.get("executions", []),
                "tuner_id": ours.get("tuner_id"),
                "reason": reason,
                "dir": os.path.dirname(path),
            }
        )
    return sorted(trials, key=lambda t: int(t["trial_id"]))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def summarize(cfg: ExperimentConfig, job_dir: str, objective: keras_tuner.Objective) -> dict:
    """Writes the trials table (CSV and markdown) and the best trial's hparams and config; returns them.

    Returns:
      Dict with 'trials' (list), 'table' (markdown), and 'best' (best_hparams.json's content; None when no
      trial completed).
    """
    trials = _trials(job_dir)
    keys = [p.key for p in cfg.tune.space] + (["train.epochs"] if cfg.tune.tuner == "hyperband" else [])
    completed = [t for t in trials if t["status"] == "COMPLETED" and search_space.finite(t["score"])]
    sign = 1 if objective.direction == "max" else -1
    best = max(completed, key=lambda t: (sign * t["score"], -int(t["trial_id"])), default=None)
    header = ["trial", "status", "best", *keys, objective.name, "seconds", "reason"]
    rows = []
    for t in trials:
        values = dict(t["values"])
        if search_space.HYPERBAND_EPOCHS in values:
            values["train.epochs"] = values[search_space.HYPERBAND_EPOCHS]
        score = t["score"] if t["status"] == "COMPLETED" else None
        mark = "*" if t is best else ""
        rows.append(
            [t["trial_id"], t["status"], mark, *[values.get(k) for k in keys], score, t["seconds"], t["reason"]]
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    fileio.write_text(os.path.join(job_dir, TRIALS_CSV), buf.getvalue())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    fileio.write_text(os.path.join(job_dir, TRIALS_MD), table)
    out = {"trials": trials, "table": table, "best": None}
    if best is None:
        logging.warning("No trial of the search in %s completed: see %s.", job_dir, TRIALS_MD)
        for name in (BEST_HPARAMS, BEST_CONFIG):
            if tf.io.gfile.exists(os.path.join(job_dir, name)):
                tf.io.gfile.remove(os.path.join(job_dir, name))
        return out
    best_cfg = search_space.trial_config(cfg, best["values"])
    hyperparams.save(best_cfg, os.path.join(job_dir, BEST_CONFIG))
    hparams_ = {k: v for k, v in best["values"].items() if not k.startswith(search_space.TUNER_PREFIX)}
    if search_space.HYPERBAND_EPOCHS in best["values"]:
        hparams_["train.epochs"] = best_cfg.train.epochs
    out["best"] = {
        "trial_id": best["trial_id"],
        "objective": {"name": objective.name, "direction": objective.direction, "value": best["score"]},
        "hparams": hparams_,
        "executions": best["executions"],
        "config": BEST_CONFIG,
        "trial_dir": os.path.relpath(best["dir"], job_dir),
        "trials": {"total": len(trials), "completed": len(completed)},
    }
    _write_json(os.path.join(job_dir, BEST_HPARAMS), out["best"])
    return out


def objective_of(history: dict, name: str, direction: str) -> float:
    """A training run's objective as a search scores it: the best epoch's value of `name` (for comparisons)."""
    finite = [v for v in history.get(name, []) if search_space.finite(v)]
    if not finite:
        return math.nan
    return max(finite) if direction == "max" else min(finite)
