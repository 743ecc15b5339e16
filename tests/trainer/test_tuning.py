"""Hyperparameter search (`python -m trainer.tune`): its checks, each tuner, failures, resuming, distributed mode."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

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
)
from trainer import train_lib, tune, tuning
from trainer.config import load_experiment

# No attention pictures (eval.num_plot_examples=0): trials need none.
TINY_SEARCH = TINY_MALTA + [
    "train.epochs=2",
    "eval.num_plot_examples=0",
    "tune.objective=val_span_miou",
    "tune.max_trials=2",
]
LR_CHOICE = "tune.space=[{key: train.learning_rate, type: choice, values: [0.005, 0.02]}]"


def _tune_args(config, records, job_dir, overrides):
    args = ["--config", str(REPO / config), "--job-dir", str(job_dir)]
    for o in [f"data.records_dir={records}", *overrides]:
        args += ["--set", o]
    return args


def _rows(job_dir):
    with open(os.path.join(job_dir, tuning.TRIALS_CSV)) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["tune.space=[{key: model.video_hiden, type: int, min: 8, max: 32}]"], "Did you mean 'model.video_hidden'"),
        (["tune.space=[{key: data.max_train_videos, type: int, min: 1, max: 4}]"], "only keys of the model, train"),
        (["tune.space=[{key: train.learning_rate, min: 0.01, max: 0.01}]"], "[0.01, 0.01] is empty"),
        (["tune.space=[{key: train.learning_rate, min: 0.1, max: 0.01}]"], "[0.1, 0.01] is inverted"),
        (["tune.space=[{key: model.dropout, min: 0.0, max: 0.5, sampling: log}]"], "a log range must lie above 0"),
        (["tune.space=[{key: model.video_hidden, type: choice, values: [16, '32']}]"], "choice value '32' (str)"),
        (["tune.space=[{key: model.video_hidden, type: float, min: 8, max: 32}]"], "use type: int"),
        (["tune.space=[{key: model.dropout, type: choice, values: [0.1, 1.5]}]"], "model.dropout: choice value 1.5"),
        (["tune.space=[{key: model.head, type: choice, values: [attention_regression, nope]}]"], "['nope'] not among"),
        (["tune.space=[{key: train.learning_rate, min: 0.0, max: 0.01}]"], "min 0.0 is not a valid value"),
        (["tune.space=[]"], "tune.space is empty"),
        ([LR_CHOICE, "tune.objective=val_r1_iou0.5"], "tune.objective='val_r1_iou0.5' is not reported"),
        ([LR_CHOICE, "runtime.strategy=multi_worker_mirrored"], "does not support a MultiWorkerMirrored"),
        ([LR_CHOICE, "tune.tuner=hyperband"], "train.warmup_epochs=1 can't hold"),
    ],
)
def test_a_bad_search_stops_before_any_work_naming_what_is_wrong(tmp_path, capsys, overrides, named):
    job = tmp_path / "search"
    # The records don't exist: the search must stop on its config before reading them.
    code = tune.main(_tune_args(MALTA, tmp_path / "no-records", job, overrides))
    assert code == 2
    assert named in capsys.readouterr().err
    assert not job.exists()


def test_objectives_are_listed_per_task(capsys):
    assert tune.main(["--config", str(REPO / AVLNET), "--job-dir", "unused", "--list-objectives"]) == 0
    listed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert listed["val_r1_mean"] == "max" and listed["eval_a2v_median_rank"] == "min"


def test_declared_objectives_are_what_training_and_evaluation_report(malta_trained, avlnet_trained):
    for _job, out in (malta_trained, avlnet_trained):
        task = out["task"]
        reported = set(out["history"]) | set(task.evaluation_objectives(out["eval"]))
        assert set(task.tuning_objectives()) <= reported


def _hparams_sessions(job_dir):
    """{run dir name: (hparam values, objective scalars)} of the HParams data, read from the event files."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = {}
    root = os.path.join(job_dir, tuning.HPARAMS_DIR)
    for dirpath, _, files in os.walk(root):
        for name in files:
            values, scalars, config = {}, {}, None
            for event in tf.compat.v1.train.summary_iterator(os.path.join(dirpath, name)):
                for v in event.summary.value:
                    if v.metadata.plugin_data.plugin_name == "hparams":
                        data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                        if data.HasField("session_start_info"):
                            values = {k: x.ListFields()[0][1] for k, x in data.session_start_info.hparams.items()}
                        if data.HasField("experiment"):
                            config = data.experiment
                    elif v.HasField("tensor"):
                        scalars[v.tag] = float(tf.make_ndarray(v.tensor))
            out[os.path.relpath(dirpath, root)] = (values, scalars, config)
    return out


def test_random_search_records_a_failed_trial_and_its_best_config_retrains_to_the_same_objective(
    tiny_records, tmp_path, capsys
):
    job = tmp_path / "search"
    # A learning rate of 1e35 makes the loss NaN in the first epoch: that trial fails, the search goes on.
    space = "tune.space=[{key: train.learning_rate, type: choice, values: [0.005, 1.0e+35]}]"
    assert tune.main(_tune_args(MALTA, tiny_records, job, TINY_SEARCH + [space])) == 0
    printed = capsys.readouterr().out
    assert "| trial | status | best | train.learning_rate | val_span_miou | seconds | reason |" in printed

    rows = {r["train.learning_rate"]: r for r in _rows(job)}
    assert (
        rows["1e+35"]["status"] == "FAILED"
        and "NonFiniteLossError: Training stopped: loss is nan" in (rows["1e+35"]["reason"])
    )
    good = rows["0.005"]
    assert good["status"] == "COMPLETED" and good["best"] == "*" and float(good["seconds"]) > 0
    best = json.loads((job / tuning.BEST_HPARAMS).read_text())
    assert best["hparams"] == {"train.learning_rate": 0.005}
    assert best["objective"]["name"] == "val_span_miou" and best["objective"]["direction"] == "max"
    assert best["objective"]["value"] == pytest.approx(float(good["val_span_miou"]))

    # The best config is a whole experiment config that the trainer takes as it is.
    cfg = load_experiment(str(job / tuning.BEST_CONFIG), ["export.enabled=false"])
    assert cfg.train.learning_rate == 0.005 and cfg.model.video_hidden == 16
    retrained = train_lib.run_experiment(cfg, str(tmp_path / "retrain"), evaluate=False)
    again = tuning.objective_of(retrained["history"], "val_span_miou", "max")
    # The same config and seed on the same machine: equal to float noise (stated tolerance 1e-4).
    assert again == pytest.approx(best["objective"]["value"], abs=1e-4)

    sessions = _hparams_sessions(job)
    assert sessions["."][2] is not None
    assert [h.name for h in sessions["."][2].hparam_infos] == ["train.learning_rate"]
    assert [m.name.tag for m in sessions["."][2].metric_infos] == ["val_span_miou"]
    completed = sessions[f"trial_{best['trial_id']}"]
    assert completed[0] == {"train.learning_rate": 0.005}
    assert completed[1]["val_span_miou"] == pytest.approx(best["objective"]["value"], abs=1e-6)


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_each_tuner_searches_retrieval_with_an_evaluation_objective(tiny_records, tmp_path, tuner):
    job = tmp_path / tuner
    space = "tune.space=[{key: train.learning_rate, min: 1e-4, max: 1e-2, sampling: log}]"
    # Hyperband over at most 2 epochs with factor 2: two 1-epoch trials, then the better one for 2 epochs.
    extra = ["tune.hyperband_factor=2", "tune.max_trials=3"] if tuner == "hyperband" else ["tune.max_trials=2"]
    overrides = TINY_AVLNET + ["train.epochs=2", f"tune.tuner={tuner}", "tune.objective=eval_a2v_r5", space, *extra]
    out = tuning.run_search(experiment_config(AVLNET, tiny_records, overrides), str(job))
    trials = out["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED"] * len(trials)
    assert len(trials) == (3 if tuner == "hyperband" else 2)
    for t in trials:
        assert 0.0 <= t["score"] <= 1.0
        assert 1e-4 <= t["values"]["train.learning_rate"] <= 1e-2
    if tuner == "hyperband":
        epochs = [t["values"]["tuner/epochs"] for t in trials]
        assert epochs == [1, 1, 2]
        # The third trial continues the better of the first two with its values, trained from scratch for 2 epochs.
        first_two = sorted(trials[:2], key=lambda t: t["score"], reverse=True)
        assert trials[2]["values"]["train.learning_rate"] == first_two[0]["values"]["train.learning_rate"]
        assert epochs_logged(os.path.join(trials[2]["dir"], "seed_0")) == [0, 1]
        assert [r["train.epochs"] for r in _rows(job)] == ["1", "1", "2"]
    best_cfg = load_experiment(str(job / tuning.BEST_CONFIG))
    assert best_cfg.train.learning_rate == out["best"]["hparams"]["train.learning_rate"]


# Runs `python -m trainer.tune`, SIGKILLing it when trial 1 commits its first epoch.
KILL_IN_SECOND_TRIAL = """
import os, signal, sys
from trainer import checkpointing, tune
write_text = checkpointing.write_text
def killing(path, text):
    write_text(path, text)
    if os.sep + "trial_1" + os.sep in path and path.endswith(checkpointing.STATE_FILE) and '"epochs_done": 1,' in text:
        os.kill(os.getpid(), signal.SIGKILL)
checkpointing.write_text = killing
sys.exit(tune.main(sys.argv[1:]))
"""


def test_a_killed_search_continues_where_it_stopped(tiny_records, tmp_path):
    job = tmp_path / "search"
    args = _tune_args(MALTA, tiny_records, job, TINY_SEARCH + [LR_CHOICE])
    killed = run_killed(KILL_IN_SECOND_TRIAL, args)
    assert killed.returncode == -9, killed.stderr[-3000:]
    first = job / tuning.PROJECT / "trial_0" / tuning.RESULT_FILE
    kept = first.read_text()
    assert epochs_logged(job / tuning.PROJECT / "trial_1" / "seed_0") == [0]
    assert not (job / tuning.TRIALS_CSV).exists()

    assert tune.main(args) == 0
    # Trial 0 is kept as it was; trial 1 resumes after its committed epoch and logs each epoch once.
    assert first.read_text() == kept
    assert epochs_logged(job / tuning.PROJECT / "trial_1" / "seed_0") == [0, 1]
    assert [r["status"] for r in _rows(job)] == ["COMPLETED", "COMPLETED"]

    # A rerun of the finished search runs nothing; --overwrite starts afresh.
    assert tune.main(args) == 0
    assert first.read_text() == kept
    # Another config in the same job dir is refused, naming the difference.
    assert tune.main(args + ["--set", "tune.objective=val_loss"]) == 2
    assert tune.main(args + ["--overwrite", "--set", "tune.max_trials=1"]) == 0
    assert [r["trial"] for r in _rows(job)] == ["0"]
    assert first.read_text() != kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_search_with_a_chief_and_two_workers_on_localhost(tiny_records, tmp_path):
    job = tmp_path / "search"
    args = _tune_args(MALTA, tiny_records, job, TINY_SEARCH + [LR_CHOICE])
    port = str(_free_port())
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(
            subprocess_env(),
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=port,
        )
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "trainer.tune", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outs = {name: p.communicate(timeout=600) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}: {outs[name][1][-3000:]}"
    assert "the chief writes the search's summary" in outs["tuner0"][0]
    rows = _rows(job)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert {r["train.learning_rate"] for r in rows} == {"0.005", "0.02"}
    # Every trial ran on a worker, none on the chief.
    results = [job / tuning.PROJECT / f"trial_{r['trial']}" / tuning.RESULT_FILE for r in rows]
    ran_on = {json.loads(path.read_text())["tuner_id"] for path in results}
    assert ran_on <= {"tuner0", "tuner1"}
    assert (job / tuning.BEST_CONFIG).exists() and "| trial | status |" in outs["chief"][0]
