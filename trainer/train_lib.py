"""The generic training loop: strategy, data, fit with resumable checkpoints, evaluation."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile

import keras
import tensorflow as tf

from avalign import hyperparams
from trainer import distribute
from trainer.config import ExperimentConfig
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


def run_experiment(cfg: ExperimentConfig, job_dir: str, train: bool = True, evaluate: bool = True) -> dict:
    """Trains (resuming if the job dir holds a backup) and evaluates on the test split.

    The job dir is never wiped: a killed job rerun with the same command
    resumes from `job_dir/backup`.

    Returns:
      Dict with 'history' (per-epoch logs) and 'eval' (test metrics) when run.
    """
    tf.io.gfile.makedirs(job_dir)
    if distribute.is_chief():
        # config.yaml records what trained the job; an evaluation-only run keeps
        # its own (e.g. another span decoder) beside its metrics.
        hyperparams.save(cfg, os.path.join(job_dir, CONFIG_FILE if train else os.path.join("eval", CONFIG_FILE)))
    strategy = distribute.make_strategy(cfg.runtime)
    keras.utils.set_random_seed(cfg.train.seed)
    task = get_task(cfg.task)(cfg, job_dir)
    task.prepare()
    batch = cfg.train.global_batch_size
    n_train = task.num_examples(cfg.data.train_split)
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(n_train / batch))
    with strategy.scope():
        model = task.build_model()
        task.compile(model, make_optimizer(cfg, steps))
        # Creating the slot variables now spares Keras a second trace of the train step.
        model.optimizer.build(model.trainable_variables)
        if not train:
            # Evaluating a job means its own trained weights, even for a fine-tuning job.
            load_initial_weights(model, trained_weights(job_dir))
        elif cfg.train.init_checkpoint:
            load_initial_weights(model, cfg.train.init_checkpoint)
    out: dict = {}
    if train:
        train_ds = task.dataset(cfg.data.train_split, True, batch).repeat()
        val_ds = task.dataset(cfg.data.eval_split, False, batch)
        monitor, mode = task.monitor
        ckpt_dir = _worker_dir(os.path.join(job_dir, "checkpoints"))
        tf.io.gfile.makedirs(ckpt_dir)
        log_dir = os.path.join(job_dir, "logs")
        # Every worker backs up (and on a rerun restores) its own copy of the same state.
        backup_dir = os.path.join(job_dir, "backup")
        if not distribute.is_chief():
            backup_dir = os.path.join(backup_dir, f"worker{distribute.worker_index()}")
        # Order matters: callbacks that add to the epoch logs (learning rate,
        # task metrics) run before those that read them.
        callbacks = [
            # double_checkpoint keeps the previous backup, used when a kill during a
            # write left the latest one truncated.
            keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
            keras.callbacks.TerminateOnNaN(),
            LearningRateLogger(),
            *task.callbacks(model, log_dir),
            keras.callbacks.ModelCheckpoint(
                os.path.join(ckpt_dir, "epoch-{epoch:03d}.weights.h5"), save_weights_only=True
            ),
            keras.callbacks.ModelCheckpoint(
                os.path.join(ckpt_dir, "best.weights.h5"),
                save_weights_only=True,
                save_best_only=True,
                monitor=monitor,
                mode=mode,
            ),
            keras.callbacks.CSVLogger(os.path.join(_worker_dir(job_dir), "history.csv"), append=True),
            keras.callbacks.TensorBoard(log_dir=_worker_dir(log_dir)),
        ]
        if cfg.train.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, mode=mode, patience=cfg.train.early_stopping_patience, restore_best_weights=True
                )
            )
        distribute.build_from_spec(model, train_ds.element_spec)
        distribute.fix_multi_worker_logs(model)
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.train.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=2,
        )
        out["history"] = history.history
        # The reported metrics, model.keras and the export all use the best
        # validation checkpoint, the same weights `--mode eval` picks up.
        best = os.path.join(ckpt_dir, "best.weights.h5")
        if tf.io.gfile.exists(best) and not cfg.train.early_stopping_patience:
            model.load_weights(best)
        if distribute.is_chief():
            task.serving_model(model).save(os.path.join(job_dir, "model.keras"))
            out["export"] = task.export(model, os.path.join(job_dir, "export"))
    if evaluate:
        metrics = task.evaluate(model, cfg.data.test_split)
        out["eval"] = metrics
        if distribute.is_chief():
            path = os.path.join(job_dir, "eval", f"{cfg.data.test_split}.json")
            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "w") as f:
                json.dump(metrics, f, indent=2, sort_keys=True)
            logging.info("Wrote %s", path)
    distribute.barrier(strategy)
    out["model"] = model
    out["task"] = task
    return out
