"""Resumable training state: per-epoch commits of checkpoints, history and backup; the finished marker."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from avalign.fileio import PARTIAL_PREFIX, partial_path, publish, write_text

STATE_FILE = "state.json"
DONE_FILE = "done.json"
HISTORY_FILE = "history.csv"
BEST_CHECKPOINT = "best.weights.h5"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.weights\.h5$")


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss or weights; the epoch was not committed."""


class ResumeError(RuntimeError):
    """A job dir holds training state that this trainer cannot resume from."""


def epoch_checkpoint_name(epochs_done: int) -> str:
    """The file of the weights after `epochs_done` epochs (1-based, as Keras prints epochs)."""
    return f"epoch-{epochs_done:03d}.weights.h5"


def save_model_file(model: keras.Model, path: str) -> None:
    """`model.save_weights` (.weights.h5) or `model.save` (.keras), atomically."""
    partial = partial_path(path)
    if path.endswith(".weights.h5"):
        model.save_weights(partial)
    else:
        model.save(partial)
    publish(partial, path)


def copy_file(src: str, path: str) -> None:
    """Copies `src` to `path` atomically."""
    partial = partial_path(path)
    tf.io.gfile.copy(src, partial, overwrite=True)
    publish(partial, path)


def remove_partials(directory: str) -> None:
    """Deletes what writes cut short by a kill left behind in `directory`."""
    if not tf.io.gfile.isdir(directory):
        return
    for name in tf.io.gfile.listdir(directory):
        if name.startswith(PARTIAL_PREFIX):
            path = os.path.join(directory, name)
            (tf.io.gfile.rmtree if tf.io.gfile.isdir(path) else tf.io.gfile.remove)(path)
            logging.info("Removed %s, left by a write that did not finish", path)


@dataclasses.dataclass
class TrainingState:
    """What the last committed epoch left: the resume point of a training job.

    Attributes:
      epochs_done: epochs completed and committed (the next epoch's 0-based index).
      weights: file in the backup dir with the model's and optimizer's variables.
      history_rows: rows of history.csv that belong to committed epochs.
      monitor: the validation metric that picks the best checkpoint.
      mode: 'min' or 'max'.
      best: best value of `monitor` so far (None before the first one).
      best_epoch: 0-based epoch of `best` (None before the first one).
    """

    epochs_done: int = 0
    weights: str = ""
    history_rows: int = 0
    monitor: str = ""
    mode: str = "min"
    best: Optional[float] = None
    best_epoch: Optional[int] = None


def improves(value: Optional[float], best: Optional[float], mode: str) -> bool:
    """Whether `value` beats `best` in `mode` ('min' or 'max'); NaN and missing values never do."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def read_state(backup_dir: str) -> Optional[TrainingState]:
    """The committed state in `backup_dir`, or None when nothing was committed there.

    Raises:
      ResumeError: the state file is not one this trainer wrote.
    """
    path = os.path.join(backup_dir, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        return TrainingState(**json.loads(text))
    except (TypeError, ValueError) as e:
        raise ResumeError(f"{path}: not a training state ({e}); pass --overwrite to retrain from scratch.") from e


def _write_state(backup_dir: str, state: TrainingState) -> None:
    write_text(os.path.join(backup_dir, STATE_FILE), json.dumps(dataclasses.asdict(state), indent=2) + "\n")


def _scalar(value) -> Optional[float]:
    """A log value as a float (None if it is missing or not a number)."""
    if value is None:
        return None
    try:
        return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None


def read_history(path: str) -> list[dict]:
    """Rows of a history.csv (epoch as int, metrics as floats); [] if there is none."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {"epoch": int(raw["epoch"])}
            for key, value in raw.items():
                if key != "epoch" and value not in (None, ""):
                    number = _scalar(value)
                    row[key] = value if number is None else number
            rows.append(row)
    return rows


def write_history(path: str, rows: list[dict]) -> None:
    """Writes history rows as CSV (epoch first, then metrics by name), atomically."""
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", *keys], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def history_dict(rows: list[dict]) -> dict:
    """History rows as Keras' `History.history`: metric name -> list over epochs."""
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    return {k: [row.get(k, float("nan")) for row in rows] for k in keys}


def _epoch_checkpoints(directory: str) -> dict[int, str]:
    if not tf.io.gfile.isdir(directory):
        return {}
    found = {}
    for name in tf.io.gfile.listdir(directory):
        match = _EPOCH_FILE.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(directory, name)
    return found


def restore(
    backup_dir: str, checkpoint_dir: str, history_path: str, monitor: str, mode: str
) -> tuple[TrainingState, list[dict]]:
    """Brings the job's files back to the last committed epoch.

    What a kill left after the last commit is undone: unfinished writes,
    history rows and epoch checkpoints of the uncommitted epoch, and a best
    checkpoint that epoch wrote (the committed best epoch's checkpoint takes
    its place). Those epochs are trained again; `EpochCommit` loads the
    committed variables when training begins.

    Returns:
      (the committed state, a fresh one when there is none; its history rows).
    """
    for directory in (backup_dir, checkpoint_dir, os.path.dirname(history_path)):
        remove_partials(directory)
    state = read_state(backup_dir) or TrainingState(monitor=monitor, mode=mode)
    if (state.monitor, state.mode) != (monitor, mode):
        logging.warning(
            "The best checkpoint was chosen by %s (%s) and is now chosen by %s (%s): the best so far starts over.",
            state.monitor,
            state.mode,
            monitor,
            mode,
        )
        state = dataclasses.replace(state, monitor=monitor, mode=mode, best=None, best_epoch=None)
    rows = read_history(history_path)
    if len(rows) != state.history_rows:
        rows = rows[: state.history_rows]
        if rows:
            write_history(history_path, rows)
        elif tf.io.gfile.exists(history_path):
            tf.io.gfile.remove(history_path)
    for number, path in _epoch_checkpoints(checkpoint_dir).items():
        if number > state.epochs_done:
            tf.io.gfile.remove(path)
    best = os.path.join(checkpoint_dir, BEST_CHECKPOINT)
    committed_best = (
        os.path.join(checkpoint_dir, epoch_checkpoint_name(state.best_epoch + 1))
        if state.best_epoch is not None
        else None
    )
    if committed_best and tf.io.gfile.exists(committed_best):
        copy_file(committed_best, best)
    elif committed_best is None and tf.io.gfile.exists(best):
        tf.io.gfile.remove(best)
    return state, rows


class EpochCommit(keras.callbacks.Callback):
    """Commits each epoch: epoch checkpoint, best checkpoint, history row, then the backup.

    Every file is written under a temporary name and renamed, and the backup's
    state file, written last, is the commit: a kill at any point leaves the
    previous epoch's state, which `restore` returns to. The best value so far
    is part of the state, so a resumed job keeps the best checkpoint of its
    earlier epochs unless a later epoch beats it.

    Place it after every callback that adds to the epoch logs.
    """

    def __init__(
        self, backup_dir: str, checkpoint_dir: str, history_path: str, state: TrainingState, history: list[dict]
    ):
        super().__init__()
        self.backup_dir = backup_dir
        self.checkpoint_dir = checkpoint_dir
        self.history_path = history_path
        self.state = state
        self.history = list(history)
        self._best = (state.best, state.best_epoch)
        self._warned_missing = False

    def on_train_begin(self, logs=None):
        # Here, not before `fit`: Keras builds the metrics' variables, which the backup holds too, in `fit`.
        if self.state.weights:
            path = os.path.join(self.backup_dir, self.state.weights)
            optimizer = self.model.optimizer
            if not optimizer.built:
                # An unbuilt optimizer would skip the saved slots and steps (Keras only warns).
                with self.model.distribute_strategy.scope():
                    optimizer.build(self.model.trainable_variables)
            self.model.load_weights(path)
            logging.info(
                "Resuming after epoch %d from %s (best %s so far: %s, epoch %s)",
                self.state.epochs_done,
                path,
                self.state.monitor,
                self.state.best,
                None if self.state.best_epoch is None else self.state.best_epoch + 1,
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        checkpoint = self._save_epoch_checkpoint(epoch)
        self._save_best(epoch, logs, checkpoint)
        self._append_history(epoch, logs)
        self._save_backup(epoch, checkpoint)

    def _save_epoch_checkpoint(self, epoch: int) -> str:
        path = os.path.join(self.checkpoint_dir, epoch_checkpoint_name(epoch + 1))
        save_model_file(self.model, path)
        return path

    def _save_best(self, epoch: int, logs: dict, checkpoint: str) -> None:
        current = _scalar(logs.get(self.state.monitor))
        if current is None and not self._warned_missing:
            self._warned_missing = True
            logging.warning(
                "No %s in the epoch logs (%s): no best checkpoint is kept.", self.state.monitor, sorted(logs)
            )
        if improves(current, self._best[0], self.state.mode):
            copy_file(checkpoint, os.path.join(self.checkpoint_dir, BEST_CHECKPOINT))
            self._best = (current, epoch)

    def _append_history(self, epoch: int, logs: dict) -> None:
        row = {"epoch": epoch}
        for key, value in sorted(logs.items()):
            number = _scalar(value)
            row[key] = number if number is not None else value
        self.history.append(row)
        write_history(self.history_path, self.history)

    def _save_backup(self, epoch: int, checkpoint: str) -> None:
        name = epoch_checkpoint_name(epoch + 1)
        copy_file(checkpoint, os.path.join(self.backup_dir, name))
        previous = self.state.weights
        self.state = dataclasses.replace(
            self.state,
            epochs_done=epoch + 1,
            weights=name,
            history_rows=len(self.history),
            best=self._best[0],
            best_epoch=self._best[1],
        )
        _write_state(self.backup_dir, self.state)
        if previous and previous != name:
            path = os.path.join(self.backup_dir, previous)
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at a non-finite loss or non-finite weights, before anything is saved.

    Raises `NonFiniteLossError` from the batch whose loss is NaN or infinite,
    or at the end of an epoch whose last update made the weights non-finite.
    Place it first: the callbacks after it never see the bad epoch, and the
    epoch is not committed, so the backup stays at the last good epoch.
    """

    def __init__(self, commit: EpochCommit):
        super().__init__()
        self.commit = commit
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = _scalar((logs or {}).get("loss"))
        if loss is not None and not math.isfinite(loss):
            steps = self.params.get("steps") if self.params else None
            where = f"batch {batch + 1}" + (f"/{steps}" if steps else "")
            self._fail(f"loss is {loss} at epoch {self._epoch + 1}, {where}")

    def on_epoch_end(self, epoch, logs=None):
        loss = _scalar((logs or {}).get("loss"))
        if loss is not None and not math.isfinite(loss):
            self._fail(f"loss is {loss} at the end of epoch {epoch + 1}")
        bad = [w.path for w in self.model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(w)))]
        if bad:
            self._fail(f"{len(bad)} weight(s) are not finite after epoch {epoch + 1} (e.g. {bad[0]})")

    def _fail(self, what: str) -> None:
        state = self.commit.state
        if state.epochs_done:
            resume = (
                f"The last good state, after epoch {state.epochs_done}, is kept in "
                f"{os.path.join(self.commit.backup_dir, state.weights)}: rerunning the job resumes from there."
            )
        else:
            resume = "No epoch was completed, so a rerun starts from the beginning."
        raise NonFiniteLossError(
            f"Training stopped: {what}; nothing of that epoch was saved. {resume} "
            "Lower train.learning_rate or set train.clipnorm (or check the data) before rerunning."
        )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that, in a resumed job, counts from the committed best epoch.

    Args:
      state: the committed state the job resumes from (`monitor` and `mode`
        are the same as this callback's).
      **kwargs: `keras.callbacks.EarlyStopping` arguments.
    """

    def __init__(self, state: TrainingState, **kwargs):
        super().__init__(**kwargs)
        self.resume_state = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = self.resume_state
        if state.best_epoch is not None:
            self.best = state.best
            self.best_epoch = state.best_epoch
            self.wait = state.epochs_done - 1 - state.best_epoch


def resumable_fit(
    model: keras.Model,
    train_data,
    *,
    validation_data,
    epochs: int,
    steps_per_epoch: int,
    backup_dir: str,
    checkpoint_dir: str,
    history_path: str,
    monitor: str,
    mode: str,
    callbacks=(),
    observers=(),
    early_stopping_patience: int = 0,
    verbose: int = 2,
) -> EpochCommit:
    """`model.fit` that commits every epoch and resumes after the last committed one.

    Args:
      model: a compiled model (its optimizer built or not).
      train_data: repeated training dataset.
      validation_data: finite validation dataset (its metrics get the 'val_' prefix).
      epochs: total epochs of the job (a resumed job runs the rest).
      steps_per_epoch: training steps per epoch.
      backup_dir: where the resume point is kept (one per worker).
      checkpoint_dir: where epoch-NNN.weights.h5 and best.weights.h5 go.
      history_path: the history CSV.
      monitor: validation metric that picks the best checkpoint (and early stopping).
      mode: 'min' or 'max'.
      callbacks: run before the commit; they may add to the epoch logs.
      observers: run after the commit (e.g. TensorBoard), so they see committed epochs.
      early_stopping_patience: epochs without improvement before stopping (0: never).
      verbose: `fit` verbosity.

    Returns:
      The commit callback: its `state` and `history` are the job's after training.

    Raises:
      NonFiniteLossError: the loss or the weights became NaN or infinite; the
        epoch where it happened is not committed.
    """
    for directory in (backup_dir, checkpoint_dir):
        tf.io.gfile.makedirs(directory)
    state, rows = restore(backup_dir, checkpoint_dir, history_path, monitor, mode)
    commit = EpochCommit(backup_dir, checkpoint_dir, history_path, state, rows)
    # The guard comes first, so no other callback sees a non-finite epoch.
    every = [StopOnNonFinite(commit), *callbacks, commit, *observers]
    if early_stopping_patience:
        every.append(ResumableEarlyStopping(state, monitor=monitor, mode=mode, patience=early_stopping_patience))
    if state.epochs_done >= epochs:
        logging.info("All %d epochs are committed in %s.", epochs, backup_dir)
    model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=state.epochs_done,
        steps_per_epoch=steps_per_epoch,
        callbacks=every,
        verbose=verbose,
    )
    return commit


def read_done(job_dir: str) -> Optional[dict]:
    """The finished-training marker of `job_dir`, or None while training is not finished."""
    path = os.path.join(job_dir, DONE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_done(job_dir: str, info: dict) -> None:
    """Marks the job's training finished; written last, it lists the outputs it vouches for."""
    write_text(os.path.join(job_dir, DONE_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")


# What a training run writes into its job dir (run_experiment's --overwrite removes these).
TRAINING_OUTPUTS = (DONE_FILE, "checkpoints", HISTORY_FILE, "logs", "eval", "model.keras", "export", "config.yaml")


def remove_training_outputs(job_dir: str, backup_dir: str, is_chief: bool, extra=()) -> None:
    """Deletes a job's training outputs so that it trains from scratch.

    The chief deletes the job's shared outputs (`TRAINING_OUTPUTS` and the
    names in `extra`) and its own backup files; every other worker deletes
    only its own backup dir (they run at once).
    """
    removed = []
    if is_chief:
        for name in (*TRAINING_OUTPUTS, *extra):
            path = os.path.join(job_dir, name)
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
                removed.append(name)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
                removed.append(name)
        if tf.io.gfile.isdir(backup_dir):
            # Other workers' backups live in subdirectories of the chief's; they delete their own.
            for name in tf.io.gfile.listdir(backup_dir):
                path = os.path.join(backup_dir, name)
                if not tf.io.gfile.isdir(path):
                    tf.io.gfile.remove(path)
                    removed.append(os.path.join(os.path.basename(backup_dir), name))
    elif tf.io.gfile.isdir(backup_dir):
        tf.io.gfile.rmtree(backup_dir)
        removed.append(backup_dir)
    logging.warning("Overwrite: removed %s from %s", removed or "nothing", job_dir)
