"""Hyperparameter search entry point: `python -m trainer.tune --config X.yaml --job-dir D [--set k=v ...]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from avalign import hyperparams
from trainer.config import load_experiment

EPILOG = """\
The search space is the config's `tune` section, e.g.

  tune:
    tuner: bayesian            # random | bayesian | hyperband
    objective: val_span_r1_iou_0.5
    max_trials: 20
    space:
      - {key: train.learning_rate, type: float, min: 1e-4, max: 1e-2, sampling: log}
      - {key: model.dropout, type: float, min: 0.0, max: 0.5, step: 0.1}
      - {key: model.video_hidden, type: choice, values: [64, 128, 256]}

Each trial trains the config with its values under JOB/search/trial_<id>/seed_<seed>/.
The search writes JOB/trials.md and trials.csv, JOB/best_hparams.json and JOB/best_config.yaml
(train it with `python -m trainer.task --config JOB/best_config.yaml --job-dir NEW`), and
TensorBoard HParams data in JOB/hparams. Rerunning the same command continues the search.

Distributed (KerasTuner's chief/worker mode, one shared job dir):
  KERASTUNER_TUNER_ID=chief   KERASTUNER_ORACLE_IP=<chief ip> KERASTUNER_ORACLE_PORT=8000 python -m trainer.tune ...
  KERASTUNER_TUNER_ID=tuner0  KERASTUNER_ORACLE_IP=<chief ip> KERASTUNER_ORACLE_PORT=8000 python -m trainer.tune ...
  KERASTUNER_TUNER_ID=tuner1  ...
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tune",
        description="Search an experiment's hyperparameters with KerasTuner; every trial is a training run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--config", help="Experiment YAML with a `tune` section (configs/*.yaml).")
    parser.add_argument("--job-dir", required=True, help="The search's dir: trials, tables, best config.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a config key.")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Delete the search in --job-dir (trials included) and start afresh. Without it a rerun continues "
        "the search: finished trials are kept and an interrupted one runs again.",
    )
    parser.add_argument(
        "--list-objectives", action="store_true", help="Print the objectives the config's task reports, and exit."
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from trainer import checkpointing, tuning
    from trainer import input as input_lib
    from trainer.registry import get_task

    try:
        cfg = load_experiment(args.config, args.set)
        if args.list_objectives:
            for name, direction in sorted(get_task(cfg)(cfg, args.job_dir).tuning_objectives().items()):
                print(f"{name}\t{direction}")
            return 0
        out = tuning.run_search(cfg, args.job_dir, overwrite=args.overwrite)
    except (hyperparams.ConfigError, input_lib.RecordsError, FileNotFoundError, checkpointing.ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        # KerasTuner stops a search after tune.max_consecutive_failed_trials failures in a row.
        if "consecutive failures" not in str(e):
            raise
        print(f"error: the search stopped: {e}", file=sys.stderr)
        return 3
    if out is None:
        print(f"Worker {tuning.tuner_id()} finished: the chief writes the search's summary in {args.job_dir}.")
        return 0
    print(out["table"])
    if out["best"] is None:
        print(f"No trial completed; their reasons are in {os.path.join(args.job_dir, tuning.TRIALS_MD)}.")
        return 3
    best = out["best"]
    objective = best["objective"]
    print(
        f"Best: trial {best['trial_id']}, {objective['name']} = {objective['value']:.4g} ({objective['direction']}), "
        f"{best['hparams']}.\nTrain it: python -m trainer.task --config "
        f"{os.path.join(args.job_dir, tuning.BEST_CONFIG)} --job-dir <new job dir>"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
