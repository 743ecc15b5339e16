"""The generic training loop: strategy, data, fit with resumable checkpoints, evaluation."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from typing import Optional

import keras
import tensorflow as tf
import yaml

from avalign import hyperparams
from trainer import base_task, checkpointing, distribute, exporters
from trainer.config import ExperimentConfig, load_experiment
from trainer.registry import get_task

CONFIG_FILE = "config.yaml"


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (for TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        opt = self.model.optimizer
        lr = opt.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr(opt.iterations) if callable(lr) else lr))


def make_optimizer(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    t = cfg.train
    total = max(1, steps_per_epoch * t.epochs)
    warmup = steps_per_epoch * t.warmup_epochs
    lr = t.learning_rate
    if t.lr_decay == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else t.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    kwargs = {"learning_rate": lr}
    if t.clipnorm:
        kwargs["global_clipnorm"] = t.clipnorm
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=t.weight_decay, **kwargs)
    return keras.optimizers.Adam(**kwargs)


def _worker_dir(path: str) -> str:
    """Non-chief workers write their (identical) checkpoints to a scratch dir."""
    if distribute.is_chief():
        return path
    return tempfile.mkdtemp(prefix="avalign_worker_")


def load_initial_weights(model: keras.Model, path: str) -> None:
    """Warm-starts `model` from a .weights.h5 or .keras file (fine-tuning).

    From a .keras file, weights move layer by layer where names and shapes
    agree, so a model with a different head (e.g. images: 2D-only visual
    branch) still takes the pretrained audio encoder; skipped layers are logged.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: a .keras source shares no layer with `model`.
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"train.init_checkpoint {path}: no such file.")
    if not path.endswith(".keras"):
        model.load_weights(path)
        logging.info("Initialized weights from %s", path)
        return
    source = keras.models.load_model(path, compile=False)
    source_layers = {layer.name: layer for layer in _all_layers(source)}
    copied, skipped = [], []
    for layer in _all_layers(model):
        src = source_layers.get(layer.name)
        if not layer.weights:
            continue
        if src is not None and [w.shape for w in src.weights] == [w.shape for w in layer.weights]:
            layer.set_weights(src.get_weights())
            copied.append(layer.name)
        else:
            skipped.append(layer.name)
    if not copied:
        raise ValueError(f"train.init_checkpoint {path}: no layer matches the model by name and shape.")
    logging.info(
        "Initialized %d layer(s) from %s; kept %d as initialized: %s", len(copied), path, len(skipped), skipped
    )


def _all_layers(model):
    """Layers of a model, nested functional models flattened (their own weights excluded)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def trained_weights(job_dir: str) -> str:
    """The weights an evaluation of `job_dir` uses: the best checkpoint, else the final model."""
    best = os.path.join(job_dir, "checkpoints", "best.weights.h5")
    return best if tf.io.gfile.exists(best) else os.path.join(job_dir, "model.keras")


def config_changes(cfg: ExperimentConfig, job_dir: str) -> list[str]:
    """Config keys where `cfg` differs from the one recorded in `job_dir` ([] if none is recorded)."""
    path = os.path.join(job_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return []
    try:
        with tf.io.gfile.GFile(path) as f:
            # Read as the config loader reads it, so that only real differences show.
            recorded = hyperparams.load_yaml(f) or {}
    except yaml.YAMLError:
        return [CONFIG_FILE]

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    old, new = flat(recorded), flat(hyperparams.to_dict(cfg))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _training_done(job_dir: str) -> Optional[dict]:
    """The job's finished-training marker, or None while its training is not finished.

    A job dir with a model.keras and no backup, from a trainer that wrote no
    marker, counts as finished too.
    """
    done = checkpointing.read_done(job_dir)
    if done is None and not tf.io.gfile.exists(os.path.join(job_dir, "backup")):
        if tf.io.gfile.exists(os.path.join(job_dir, "model.keras")):
            return {"epochs": None}
    return done


def _finished_result(cfg: ExperimentConfig, job_dir: str) -> dict:
    """What a rerun of a finished job returns: its history and its stored test metrics."""
    out = {"finished": True, "task": get_task(cfg)(cfg, job_dir)}
    rows = checkpointing.read_history(os.path.join(job_dir, checkpointing.HISTORY_FILE))
    out["history"] = checkpointing.history_dict(rows)
    eval_path = os.path.join(job_dir, "eval", f"{cfg.data.test_split}.json")
    if tf.io.gfile.exists(eval_path):
        with tf.io.gfile.GFile(eval_path) as f:
            out["eval"] = json.load(f)
    return out


def _backup_dir(job_dir: str) -> str:
    backup_dir = os.path.join(job_dir, "backup")
    if not distribute.is_chief():
        # Every worker backs up (and on a rerun restores) its own copy of the same state.
        backup_dir = os.path.join(backup_dir, f"worker{distribute.worker_index()}")
    return backup_dir


def set_up_job(cfg: ExperimentConfig, job_dir: str, train: bool, evaluate: bool, overwrite: bool):
    """Step 1: settles what this run does with the job dir, and records the config.

    Returns:
      (train, finished result or None): `train` becomes False when a finished
      job only lacks its test metrics; a finished job with nothing to do gives
      its stored result.

    Raises:
      checkpointing.ResumeError: the job dir holds a backup this trainer cannot resume.
    """
    tf.io.gfile.makedirs(job_dir)
    backup_dir = _backup_dir(job_dir)
    if train and overwrite:
        checkpointing.remove_training_outputs(job_dir, backup_dir, distribute.is_chief(), extra=(base_task.FACTS_FILE,))
    elif train:
        done = _training_done(job_dir)
        if done is not None:
            changes = config_changes(cfg, job_dir)
            logging.warning(
                "%s already finished training (%s epochs): not training again.%s Use --mode eval to "
                "evaluate it again, or --overwrite (overwrite=True) to delete its outputs and retrain.",
                job_dir,
                done.get("epochs"),
                f" This run's config differs from its {CONFIG_FILE}: {changes}." if changes else "",
            )
            eval_path = os.path.join(job_dir, "eval", f"{cfg.data.test_split}.json")
            if not evaluate or tf.io.gfile.exists(eval_path):
                return False, _finished_result(cfg, job_dir)
            logging.warning("%s has no %s yet: evaluating its trained model.", job_dir, eval_path)
            train = False
        elif tf.io.gfile.exists(os.path.join(backup_dir, "training_metadata.json")):
            raise checkpointing.ResumeError(
                f"{backup_dir} holds a Keras BackupAndRestore backup from an older avalign, which this "
                "trainer cannot resume; pass --overwrite to retrain from scratch."
            )
    if distribute.is_chief():
        # config.yaml records what trained the job; an evaluation-only run keeps
        # its own (e.g. another span decoder) beside its metrics.
        hyperparams.save(cfg, os.path.join(job_dir, CONFIG_FILE if train else os.path.join("eval", CONFIG_FILE)))
    return train, None


def prepare_task(cfg: ExperimentConfig, job_dir: str, train: bool) -> base_task.Task:
    """Step 2: the experiment's task, its records read and validated once.

    Evaluating a job checks the records against what its model was built from,
    and writes nothing there.
    """
    task = get_task(cfg)(cfg, job_dir)
    task.prepare(from_job=not train)
    return task


def steps_per_epoch(task: base_task.Task, train: bool) -> int:
    """Training steps per epoch of the task's current config.

    Raises:
      hyperparams.ConfigError: the global batch is larger than the training split.
    """
    cfg = task.cfg
    batch = cfg.train.global_batch_size
    n_train = task.num_examples(cfg.data.train_split)
    if train and n_train < batch:
        # Training batches drop their remainder, so no step would run at all.
        raise hyperparams.ConfigError(
            f"train.global_batch_size={batch} is more than the {n_train} training example(s) of split "
            f"{cfg.data.train_split!r} in {cfg.data.records_dir}: no training step would run. Set "
            f"train.global_batch_size to at most {n_train}, or train on more data."
        )
    return cfg.train.steps_per_epoch or max(1, math.ceil(n_train / batch))


def build_and_compile(
    task: base_task.Task, strategy: tf.distribute.Strategy, train: bool, cfg: Optional[ExperimentConfig] = None
) -> tuple[keras.Model, int]:
    """Step 3: the model of `cfg` (default: the task's own), built and compiled in the strategy's scope.

    The model config is resolved here, per build, so another config's `model.*`
    (a tuning trial's) takes effect on a task prepared once.

    Returns:
      (model, training steps per epoch).
    """
    task.configure(cfg)
    steps = steps_per_epoch(task, train)
    keras.utils.set_random_seed(task.cfg.train.seed)
    with strategy.scope():
        model = task.build_model()
        task.compile(model, make_optimizer(task.cfg, steps))
        # Creating the slot variables now spares Keras a second trace of the train step.
        model.optimizer.build(model.trainable_variables)
        if not train:
            # Evaluating a job means its own trained weights, even for a fine-tuning job.
            load_initial_weights(model, trained_weights(task.job_dir))
        elif task.cfg.train.init_checkpoint:
            load_initial_weights(model, task.cfg.train.init_checkpoint)
    return model, steps


def training_callbacks(task: base_task.Task, model: keras.Model) -> tuple[list, list]:
    """Step 4: (callbacks that add to the epoch logs, observers that only read them)."""
    log_dir = os.path.join(task.job_dir, "logs")
    callbacks = [LearningRateLogger(), *task.callbacks(model, log_dir)]
    observers = [keras.callbacks.TensorBoard(log_dir=_worker_dir(log_dir))]
    return callbacks, observers


def fit(task: base_task.Task, model: keras.Model, steps: int, extra_callbacks=()) -> dict:
    """Step 5: fits `model` from the last committed epoch on; saves model.keras and leaves the best weights in it.

    Args:
      task: the prepared, configured task.
      model: its built, compiled model.
      steps: training steps per epoch.
      extra_callbacks: more callbacks (e.g. a tuner's), after the task's.

    Returns:
      Dict with 'history' (per-epoch logs) and 'state' (the last commit: epochs done, best value and epoch).
    """
    cfg, job_dir = task.cfg, task.job_dir
    batch = cfg.train.global_batch_size
    train_ds = task.dataset(cfg.data.train_split, True, batch).repeat()
    val_ds = task.dataset(cfg.data.eval_split, False, batch)
    monitor, mode = task.monitor
    ckpt_dir = _worker_dir(os.path.join(job_dir, "checkpoints"))
    distribute.build_from_spec(model, train_ds.element_spec)
    distribute.fix_multi_worker_logs(model)
    callbacks, observers = training_callbacks(task, model)
    commit = checkpointing.resumable_fit(
        model,
        train_ds,
        validation_data=val_ds,
        epochs=cfg.train.epochs,
        steps_per_epoch=steps,
        backup_dir=_backup_dir(job_dir),
        checkpoint_dir=ckpt_dir,
        history_path=os.path.join(_worker_dir(job_dir), checkpointing.HISTORY_FILE),
        monitor=monitor,
        mode=mode,
        # These add to the epoch logs that the commit records.
        callbacks=[*callbacks, *extra_callbacks],
        observers=observers,
        early_stopping_patience=cfg.train.early_stopping_patience,
    )
    # The reported metrics, model.keras and the export all use the best
    # validation checkpoint, the same weights `--mode eval` picks up (with
    # early stopping too: those are the weights it would restore).
    best = os.path.join(ckpt_dir, checkpointing.BEST_CHECKPOINT)
    if tf.io.gfile.exists(best):
        model.load_weights(best)
    if distribute.is_chief():
        checkpointing.save_model_file(task.serving_model(model), os.path.join(job_dir, "model.keras"))
    return {"history": checkpointing.history_dict(commit.history), "state": commit.state}


def evaluate_and_export(task: base_task.Task, model: keras.Model, evaluate: bool, fit_result: Optional[dict]) -> dict:
    """Step 6: test metrics into eval/<split>.json; after training, the task's exports and done.json.

    Exports come from the exporters registered for the task (`exporters.for_task`),
    so the trainer never imports the serving layer; `export.enabled` turns
    them off and `export.export_base` is where they write (default
    `<job_dir>/export`).

    Returns:
      Dict with 'eval' (when evaluated) and 'export' (paths written, after training).
    """
    cfg, job_dir = task.cfg, task.job_dir
    out: dict = {}
    if fit_result is not None and distribute.is_chief():
        export_root = cfg.export.export_base or os.path.join(job_dir, "export")
        out["export"] = (
            [path for export in exporters.for_task(task.name) for path in export(task, model, export_root)]
            if cfg.export.enabled
            else []
        )
        monitor, _ = task.monitor
        state = fit_result["state"]
        checkpointing.write_done(
            job_dir,
            {
                "epochs": state.epochs_done,
                "best": {"monitor": monitor, "value": state.best, "epoch": state.best_epoch},
                "outputs": [CONFIG_FILE, base_task.FACTS_FILE, checkpointing.HISTORY_FILE, "checkpoints", "model.keras"]
                + (["export"] if out["export"] else []),
            },
        )
    if evaluate:
        metrics = task.evaluate(model, cfg.data.test_split)
        out["eval"] = metrics
        if distribute.is_chief():
            path = os.path.join(job_dir, "eval", f"{cfg.data.test_split}.json")
            tf.io.gfile.makedirs(os.path.dirname(path))
            checkpointing.write_text(path, json.dumps(metrics, indent=2, sort_keys=True))
            logging.info("Wrote %s", path)
    return out


def load_trained(job_dir: str, cfg: Optional[ExperimentConfig] = None) -> tuple[base_task.Task, keras.Model]:
    """A finished job's task (records checked against what its model was built from) and trained model.

    Reads the job dir and writes nothing into it (unlike an evaluation run, which
    records its config and metrics there).

    Args:
      job_dir: a job whose training finished.
      cfg: the config to read it with (default: the job's config.yaml).
    """
    if cfg is None:
        cfg = load_experiment(os.path.join(job_dir, CONFIG_FILE))
    task = prepare_task(cfg, job_dir, train=False)
    model, _ = build_and_compile(task, distribute.make_strategy(cfg.runtime), train=False)
    return task, model


def run_experiment(
    cfg: ExperimentConfig,
    job_dir: str,
    train: bool = True,
    evaluate: bool = True,
    overwrite: bool = False,
    task: Optional[base_task.Task] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
) -> dict:
    """Trains (resuming from the last committed epoch) and evaluates on the test split.

    The steps, each a function a tuner or a pipeline can call: `set_up_job`,
    `prepare_task`, `build_and_compile`, `fit` (with `training_callbacks`),
    `evaluate_and_export`.

    The job dir is never wiped unless `overwrite`: a killed job rerun with the
    same command resumes after its last committed epoch (see
    `checkpointing.EpochCommit`), and a rerun of a job whose training finished
    neither trains again nor touches its files; it returns the stored test
    metrics, or evaluates the trained model if they are missing.

    Args:
      cfg: the experiment config.
      job_dir: the job's output dir.
      train: train (or resume, or find training finished); False evaluates the job's trained weights.
      evaluate: evaluate on the test split and write eval/<split>.json.
      overwrite: delete the job's training outputs and backup first and train from scratch.
      task: a task already prepared on `cfg.data` (a tuning search prepares
        one for all its trials); it builds `cfg`'s model and writes into `job_dir`.
      strategy: the strategy to run under (default: `cfg.runtime`'s).

    Returns:
      Dict with 'history' (per-epoch logs), 'eval' (test metrics), 'export'
      (paths), 'task', and 'model' when one was built; 'finished' is True when
      the job had already finished training.

    Raises:
      checkpointing.NonFiniteLossError: the loss or weights became NaN or infinite
        (the backup keeps the last good epoch).
      checkpointing.ResumeError: the job dir holds a backup this trainer cannot resume.
    """
    train, finished = set_up_job(cfg, job_dir, train, evaluate, overwrite)
    if finished is not None:
        return finished
    strategy = strategy or distribute.make_strategy(cfg.runtime)
    if task is None:
        task = prepare_task(cfg, job_dir, train)
    else:
        task.job_dir = job_dir
    model, steps = build_and_compile(task, strategy, train, cfg)
    fitted = fit(task, model, steps) if train else None
    out = evaluate_and_export(task, model, evaluate, fitted)
    if fitted is not None:
        out["history"] = fitted["history"]
    distribute.barrier(strategy)
    out["model"] = model
    out["task"] = task
    return out
