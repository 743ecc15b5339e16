"""Trainer entry point: `python -m trainer.task --config X.yaml --job-dir D [--set k=v ...]`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

from avalign import hyperparams
from trainer import registry
from trainer.config import load_experiment


def _config_keys(cls, prefix="") -> list[str]:
    lines = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            lines += _config_keys(hints[f.name], key + ".")
        else:
            lines.append(f"  {key} = {getattr(defaults, f.name)!r}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train and evaluate an avalign experiment (localization or retrieval).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(
            f"Config keys of task {name!r} for --set (defaults):\n"
            + "\n".join(_config_keys(registry.get_config_class(name)))
            for name in registry.task_names()
        ),
    )
    parser.add_argument("--config", help="Experiment YAML (configs/*.yaml); code defaults if omitted.")
    parser.add_argument("--job-dir", required=True, help="Output dir: checkpoints, logs, eval JSON, model.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a config key.")
    parser.add_argument(
        "--mode",
        choices=("train_and_eval", "train", "eval"),
        default="train_and_eval",
        help="What to run. A job whose training finished is not trained again (eval still evaluates it).",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Delete the job dir's training outputs (backup, checkpoints, history, logs, eval, model, export) "
        "and train from scratch. Without it a killed job resumes and a finished one is left as it is.",
    )
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.overwrite and args.mode == "eval":
        parser.error("--overwrite deletes training outputs and retrains; it does not go with --mode eval.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from trainer import checkpointing, train_lib
    from trainer import input as input_lib

    try:
        cfg = load_experiment(args.config, args.set)
        out = train_lib.run_experiment(
            cfg,
            args.job_dir,
            train=args.mode != "eval",
            evaluate=args.mode != "train",
            overwrite=args.overwrite,
        )
    except (
        hyperparams.ConfigError,
        input_lib.RecordsError,
        FileNotFoundError,
        checkpointing.NonFiniteLossError,
        checkpointing.ResumeError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out.get("finished"):
        print(
            f"{args.job_dir}: training already finished; nothing was run. "
            "Use --mode eval to evaluate it again, or --overwrite to retrain from scratch."
        )
    if "eval" in out:
        print(out["task"].format_results(out["eval"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
