"""Reruns and resumes: a finished job is left alone, a kill at any point of an epoch's commit resumes
cleanly, and a non-finite loss stops training with the last good epoch kept."""

import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from avalign import fileio
from tests.jobs import MALTA, MALTA_JOB, TINY_MALTA, epochs_logged, experiment_config, task_args
from trainer import checkpointing, train_lib
from trainer import task as task_cli


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the trainer catches it, so nothing after it runs."""


class _ScriptedMetric(keras.callbacks.Callback):
    """Puts a fixed validation value per epoch into the logs, so that the best epoch is known."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_scripted"] = self.values[epoch]


def _use_task(monkeypatch, bad_step):
    """Makes the trainer's localization task give a NaN loss at optimizer step `bad_step` (0-based)."""
    from trainer.localization.task import LocalizationTask as base

    class Faulty(base):
        def compile(self, model, optimizer):
            super().compile(model, optimizer)
            _poison(model, bad_step, gradient_only=False)

    monkeypatch.setattr(train_lib, "get_task", lambda cfg: Faulty)


def _kill_after(monkeypatch, step, epoch):
    """Kills the job right after `EpochCommit.<step>` ran for `epoch` (0-based)."""
    original = getattr(checkpointing.EpochCommit, step)

    def killing(self, at, *args):
        result = original(self, at, *args)
        if at == epoch:
            raise Killed(f"after {step} of epoch {at}")
        return result

    monkeypatch.setattr(checkpointing.EpochCommit, step, killing)


def _snapshot(job_dir):
    """Every file of a job dir with its size and modification time."""
    out = {}
    for root, _, files in os.walk(job_dir):
        for name in files:
            st = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), job_dir)] = (st.st_size, st.st_mtime_ns)
    return out


def _arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _same_weights(a, b):
    x, y = _arrays(a), _arrays(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x)


def _partials(job_dir):
    return [p for p in _snapshot(job_dir) if os.path.basename(p).startswith(checkpointing.PARTIAL_PREFIX)]


def _cli_args(records, job_dir, overrides):
    return task_args(MALTA, records, job_dir, overrides)


def test_finished_job_rerun_does_nothing_and_overwrite_retrains(malta_job, tiny_records, capsys):
    job, _ = malta_job
    overrides = MALTA_JOB
    cfg = experiment_config(MALTA, tiny_records, overrides)
    stored = json.loads((job / "eval" / "test.json").read_text())
    before = _snapshot(job)
    assert "done.json" in before and epochs_logged(job) == [0, 1]

    again = train_lib.run_experiment(cfg, str(job))
    assert again["finished"] and again["eval"] == stored and "model" not in again
    assert len(again["history"]["loss"]) == 2
    assert _snapshot(job) == before  # not a file written, not even config.yaml
    assert task_cli.main(_cli_args(tiny_records, job, overrides)) == 0
    printed = capsys.readouterr().out
    assert "training already finished" in printed and "--overwrite" in printed
    assert _snapshot(job) == before and epochs_logged(job) == [0, 1]

    with pytest.raises(SystemExit):
        task_cli.main(_cli_args(tiny_records, job, overrides) + ["--overwrite", "--mode", "eval"])
    quick = ["--set", "train.steps_per_epoch=1"]
    assert task_cli.main(_cli_args(tiny_records, job, overrides) + quick + ["--overwrite", "--mode", "train"]) == 0
    after = _snapshot(job)
    assert epochs_logged(job) == [0, 1]  # trained again from scratch, not appended to the old history
    assert after["model.keras"] != before["model.keras"] and after["done.json"] != before["done.json"]
    assert not (job / "eval").exists()  # the old metrics belonged to the removed model


def test_non_finite_loss_stops_the_job_with_exit_code_2_and_keeps_the_last_good_epoch(
    tiny_records, tmp_path, monkeypatch, capsys
):
    overrides = TINY_MALTA + ["train.epochs=2", "train.steps_per_epoch=1"]
    job = tmp_path / "job"
    # The loss of the 2nd step (epoch 2) is NaN. Before, the NaN weights were backed up and
    # the attention pictures failed on them.
    with monkeypatch.context() as m:
        _use_task(m, bad_step=1)
        assert task_cli.main(_cli_args(tiny_records, job, overrides)) == 2
    err = capsys.readouterr().err
    assert "loss is nan at epoch 2, batch 1/1" in err and "after epoch 1" in err, err
    state = checkpointing.read_state(str(job / "backup"))
    assert state.epochs_done == 1 and epochs_logged(job) == [0]
    assert all(np.isfinite(a).all() for a in _arrays(job / "backup" / state.weights).values() if a.dtype.kind == "f")
    assert sorted(os.listdir(job / "checkpoints")) == ["best.weights.h5", "epoch-001.weights.h5"]
    assert not (job / "done.json").exists() and not (job / "model.keras").exists()


# The commit protocol on a small model: each epoch sees the same batches in the same
# order, so a resumed job must end exactly where an uninterrupted one does.
MONITOR = [1.0, 0.5, 0.8, 0.9, 0.95, 0.99]  # lower is better: epoch 1 (0-based) is the best
STEPS = 4


def _model(bad_step=None, bad_gradient_only=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(inputs)))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    if bad_step is not None:
        _poison(model, bad_step, bad_gradient_only)
    return model


def _poison(model, bad_step, gradient_only):
    """Makes training step `bad_step` (0-based over the job) non-finite: its loss, or only its gradient."""
    compute_loss = model.compute_loss

    @tf.custom_gradient
    def nan_gradient(x):
        return tf.identity(x), lambda dy: dy * float("nan")

    def poisoned(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training:
            return loss
        hit = tf.equal(model.optimizer.iterations, bad_step)
        if gradient_only:
            return tf.cond(hit, lambda: nan_gradient(loss), lambda: loss)
        return loss * tf.where(hit, float("nan"), 1.0)

    object.__setattr__(model, "compute_loss", poisoned)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * STEPS, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    return train, tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


class _Strict(keras.callbacks.Callback):
    """A callback after the guard: fails on any non-finite log value or weight it is shown."""

    def on_epoch_end(self, epoch, logs=None):
        assert all(np.isfinite(v) for v in logs.values()), logs
        assert all(np.isfinite(w).all() for w in self.model.get_weights())


def _fit(job, model, epochs=4, patience=0):
    train, val = _data()
    return checkpointing.resumable_fit(
        model,
        train,
        validation_data=val,
        epochs=epochs,
        steps_per_epoch=STEPS,
        backup_dir=str(job / "backup"),
        checkpoint_dir=str(job / "checkpoints"),
        history_path=str(job / "history.csv"),
        monitor="val_scripted",
        mode="min",
        callbacks=[_ScriptedMetric(MONITOR), _Strict()],
        early_stopping_patience=patience,
        verbose=0,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted job: its final weights and history."""
    job = tmp_path_factory.mktemp("reference")
    model = _model()
    commit = _fit(job, model)
    return model.get_weights(), commit.history


def _assert_same_as_reference(job, model, reference):
    weights, history = reference
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    got = checkpointing.read_history(str(job / "history.csv"))
    assert [r["epoch"] for r in got] == [0, 1, 2, 3]  # each epoch exactly once
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in history], rtol=1e-6)
    ckpt = job / "checkpoints"
    assert sorted(os.listdir(ckpt)) == ["best.weights.h5"] + [f"epoch-00{i}.weights.h5" for i in range(1, 5)]
    # The best epoch (1) survived a resume in which later, worse epochs ran.
    assert _same_weights(ckpt / "best.weights.h5", ckpt / "epoch-002.weights.h5")
    state = checkpointing.read_state(str(job / "backup"))
    assert (state.epochs_done, state.best, state.best_epoch, state.history_rows) == (4, 0.5, 1, 4)
    assert sorted(os.listdir(job / "backup")) == ["epoch-004.weights.h5", "state.json"] and not _partials(job)


@pytest.mark.parametrize(
    "step, epoch",
    [
        ("_save_epoch_checkpoint", 0),  # nothing committed yet
        ("_save_epoch_checkpoint", 2),
        ("_save_best", 1),  # the best checkpoint written, not committed
        ("_append_history", 2),  # the history row written, not committed
        ("backup weights", 2),  # cut short while copying the backup's weights
        ("state", 1),  # cut short while writing the backup's state (the commit)
        ("_save_backup", 2),  # killed just after the commit
    ],
)
def test_a_kill_at_any_point_of_an_epoch_commit_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, reference, step, epoch
):
    job = tmp_path
    with monkeypatch.context() as m:
        if step.startswith("_"):
            _kill_after(m, step, epoch)
        else:
            target = checkpointing.STATE_FILE if step == "state" else f"epoch-{epoch + 1:03d}.weights.h5"
            publish = fileio.publish
            # The state file is written every epoch, the weights under each epoch's name.
            calls = {"left": epoch + 1 if step == "state" else 1}

            def cut_short(partial, path):
                if os.path.basename(path) == target and os.path.basename(os.path.dirname(path)) == "backup":
                    calls["left"] -= 1
                if not calls["left"]:
                    with open(partial, "r+b") as f:
                        f.truncate(os.path.getsize(partial) // 2)
                    raise Killed(f"writing {path}")
                publish(partial, path)

            # Every atomic write of the commit publishes through fileio.publish.
            m.setattr(fileio, "publish", cut_short)
            m.setattr(checkpointing, "publish", cut_short)
        with pytest.raises(Killed):
            _fit(job, _model())
    committed = checkpointing.read_state(str(job / "backup"))
    assert (committed.epochs_done if committed else 0) == epoch + (step == "_save_backup")
    model = _model()
    _fit(job, model)
    _assert_same_as_reference(job, model, reference)


@pytest.mark.parametrize("gradient_only", [False, True])
def test_non_finite_step_stops_before_any_callback_sees_it_and_keeps_the_last_good_epoch(
    tmp_path, reference, gradient_only
):
    job = tmp_path
    # Step 11 is epoch 3's last: a NaN loss there is caught at that batch; a NaN update
    # with a finite loss, when the epoch ends, before `_Strict` and the commit.
    message = r"not finite after epoch 3" if gradient_only else r"loss is nan at epoch 3, batch 4/4"
    with pytest.raises(checkpointing.NonFiniteLossError, match=message) as e:
        _fit(job, _model(bad_step=11, bad_gradient_only=gradient_only))
    assert "after epoch 2" in str(e.value) and "rerunning the job resumes from there" in str(e.value)
    state = checkpointing.read_state(str(job / "backup"))
    assert state.epochs_done == 2 and [r["epoch"] for r in checkpointing.read_history(str(job / "history.csv"))] == [
        0,
        1,
    ]
    assert not (job / "checkpoints" / "epoch-003.weights.h5").exists()
    model = _model()
    _fit(job, model)  # the rerun resumes from the last good epoch
    _assert_same_as_reference(job, model, reference)


def test_early_stopping_counts_on_from_the_committed_best_after_a_resume(tmp_path, monkeypatch):
    # Best at epoch 1, patience 2: an uninterrupted job stops after epoch 3.
    with monkeypatch.context() as m:
        _kill_after(m, "_save_epoch_checkpoint", 3)
        with pytest.raises(Killed):
            _fit(tmp_path, _model(), epochs=6, patience=2)
    _fit(tmp_path, _model(), epochs=6, patience=2)
    assert [r["epoch"] for r in checkpointing.read_history(str(tmp_path / "history.csv"))] == [0, 1, 2, 3]
