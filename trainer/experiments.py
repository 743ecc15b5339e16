"""Multi-run experiments: the paper's variant comparison over seeds, as a table.

`python -m trainer.experiments --config configs/malta_demo.yaml --records DIR --job-root DIR --seeds 0,1,2`
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import keras
import numpy as np

from trainer import train_lib
from trainer.config import load_experiment

VARIANTS = (("AV (MALTA)", "av"), ("V (ABLR)", "v"), ("A only", "a"))
COLUMNS = ("r1_iou_0.1", "r1_iou_0.3", "r1_iou_0.5", "r1_iou_0.7", "miou")
R5_COLUMNS = ("r5_iou_0.5",)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation of one metric over runs with different seeds.

    The standard deviation is the sample one (ddof=1), the "±" over seeds that
    the papers report; with one run it is undefined, NaN.

    Args:
      values: the metric of each run.

    Returns:
      (mean, std).

    Raises:
      ValueError: no values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_std needs the metric of at least one run, got none.")
    std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return float(np.mean(values)), std


def format_mean_std(values) -> str:
    """A table cell: "mean±std" of `mean_std`, or the mean alone for a single run."""
    mean, std = mean_std(values)
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f}±{std:.3f}"


def format_table(results: dict, subsets=("all", "audio_dependent", "not_audio_dependent")) -> str:
    """Rows: variant × subset; columns: R@1 at IoU, mIoU (and R@5 where every run has it), mean±std over seeds."""
    every_run = [r for runs in results.values() for r in runs]
    columns = COLUMNS + tuple(c for c in R5_COLUMNS if all(c in r.get("all", {}) for r in every_run))
    lines = [f"{'model':<12}{'subset':<22}" + "".join(f"{c:>16}" for c in columns) + f"{'seeds':>7}"]
    for name, runs in results.items():
        for subset in subsets:
            if not all(subset in r for r in runs):
                continue
            cells = [format_mean_std([r[subset][c] for r in runs]) for c in columns]
            lines.append(f"{name:<12}{subset:<22}" + "".join(f"{c:>16}" for c in cells) + f"{len(runs):>7}")
    return "\n".join(lines)


def run_or_reuse(config: str, job_dir: str, overrides, train: bool = True) -> dict:
    """Runs one experiment, or returns its metrics if `job_dir` already finished it.

    A job that was interrupted is rerun with the same command and resumes from
    its backup; a finished one (test metrics, and a model if it trained) is reused.
    (`run_experiment` itself never retrains a finished job: one killed before
    its test metrics were written is only evaluated.)
    """
    done = os.path.join(job_dir, "eval", "test.json")
    if os.path.exists(done) and (not train or os.path.exists(os.path.join(job_dir, "model.keras"))):
        with open(done) as f:
            return json.load(f)
    cfg = load_experiment(config, list(overrides))
    keras.backend.clear_session()
    print(f"--- {job_dir}", flush=True)
    return train_lib.run_experiment(cfg, job_dir, train=train)["eval"]


def write_results(job_root: str, name: str, table: str, results: dict) -> None:
    """Writes `<job_root>/<name>.txt` (the table) and `<name>.json` (every run's metrics)."""
    os.makedirs(job_root, exist_ok=True)
    with open(os.path.join(job_root, f"{name}.txt"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(job_root, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)


def compare_localization_variants(config: str, records_dir: str, job_root: str, seeds, overrides=()) -> str:
    """Trains and tests AV, V-only and A-only models with each seed; returns the table.

    Each run has its own job dir (`<job_root>/<variant>/seed<k>`), so a rerun
    resumes or reuses finished runs (their eval JSON).
    """
    results = {}
    for name, modalities in VARIANTS:
        results[name] = [
            run_or_reuse(
                config,
                os.path.join(job_root, modalities, f"seed{seed}"),
                [
                    f"data.records_dir={records_dir}",
                    f"model.modalities={modalities}",
                    f"train.seed={seed}",
                    *overrides,
                ],
            )
            for seed in seeds
        ]
    table = format_table(results)
    write_results(job_root, "comparison", table, results)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--records", required=True, help="Preprocessing output dir.")
    parser.add_argument("--job-root", required=True)
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(compare_localization_variants(args.config, args.records, args.job_root, seeds, args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
