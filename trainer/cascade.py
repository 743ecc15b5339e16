"""The cascade: pretrain on one language's videos, fine-tune on another's, compare.

`python -m trainer.cascade --config configs/avlnet_demo.yaml --records DIR --job-root DIR \
    --source en --target ja --seeds 0,1,2`

Rows (all evaluated on the target language's test clips):
  target only                 trained from scratch on the target's captions
  pretrained zero-shot        pretrained on the source's unlabeled videos (fixed windows)
  pretrained + FT source      then fine-tuned on the source's captions
  pretrained + FT target      then fine-tuned on the target's captions
"""

from __future__ import annotations

import argparse
import os
import sys

import tensorflow as tf

from trainer import base_task, experiments

COLUMNS = [(d, k) for d in ("a2v", "v2a") for k in (1, 5, 10)]


def format_table(rows: dict, chance: float) -> str:
    """R@1/5/10 both ways and the mean rank (averaged over directions; steadier on few clips), mean±std over seeds."""
    head = f"{'model':<26}" + "".join(f"{d + ' R@' + str(k):>14}" for d, k in COLUMNS)
    lines = [head + f"{'mean rank':>14}{'seeds':>7}"]
    for name, runs in rows.items():
        cells = [experiments.format_mean_std([r["all"][d][f"r{k}"] for r in runs]) for d, k in COLUMNS]
        cells.append(
            experiments.format_mean_std(
                [(r["all"]["a2v"]["mean_rank"] + r["all"]["v2a"]["mean_rank"]) / 2 for r in runs]
            )
        )
        lines.append(f"{name:<26}" + "".join(f"{c:>14}" for c in cells) + f"{len(runs):>7}")
    lines.append(f"(chance R@1 = {chance:.3f}, chance mean rank = {(1 / chance + 1) / 2:.1f})")
    return "\n".join(lines)


def run_cascade(
    config,
    records_dir,
    job_root,
    source_language,
    target_language,
    seeds,
    overrides=(),
    pretrain_overrides=(),
    finetune_overrides=(),
) -> str:
    """Runs the four rows for each seed and returns the table (also written to job_root).

    Args:
      overrides: `--set` overrides of every run.
      pretrain_overrides: extra overrides of the pretraining run (e.g. more epochs).
      finetune_overrides: extra overrides of the fine-tuning runs (e.g. a lower learning rate).
    """
    rows = {"target only": [], "pretrained zero-shot": [], "pretrained + FT source": [], "pretrained + FT target": []}
    chance = float("nan")
    for seed in seeds:
        base = [
            f"data.records_dir={records_dir}",
            f"train.seed={seed}",
            f"data.eval_languages=[{target_language}]",
            *overrides,
        ]
        root = os.path.join(job_root, f"seed{seed}")
        target = [f"data.languages=[{target_language}]", "data.clip_source=captions"]
        rows["target only"].append(experiments.run_or_reuse(config, os.path.join(root, "target_only"), base + target))
        pre_dir = os.path.join(root, "pretrain")
        # Pretraining sees only the source language's unlabeled videos (its
        # validation too); its own test eval is on source windows, not a row.
        pre = [
            f"data.languages=[{source_language}]",
            f"data.eval_languages=[{source_language}]",
            "data.clip_source=windows",
        ]
        experiments.run_or_reuse(config, pre_dir, base + pre + list(pretrain_overrides))
        init = [f"train.init_checkpoint={os.path.join(pre_dir, 'model.keras')}", *finetune_overrides]
        # Zero-shot: the pretrained model evaluated, untouched, on the target's
        # caption clips, the same test clips as every other row.
        # An evaluation-only job evaluates its own weights, so the job gets a copy
        # of the pretrained model (init_checkpoint records where it came from).
        zs_dir = os.path.join(root, "zero_shot")
        tf.io.gfile.makedirs(zs_dir)
        for name in ("model.keras", base_task.FACTS_FILE):
            tf.io.gfile.copy(os.path.join(pre_dir, name), os.path.join(zs_dir, name), overwrite=True)
        zero_shot = [f"train.init_checkpoint={os.path.join(pre_dir, 'model.keras')}"]
        rows["pretrained zero-shot"].append(
            experiments.run_or_reuse(config, zs_dir, base + target + zero_shot, train=False)
        )
        source = [f"data.languages=[{source_language}]", "data.clip_source=captions"]
        rows["pretrained + FT source"].append(
            experiments.run_or_reuse(config, os.path.join(root, "ft_source"), base + source + init)
        )
        rows["pretrained + FT target"].append(
            experiments.run_or_reuse(config, os.path.join(root, "ft_target"), base + target + init)
        )
        chance = rows["target only"][-1]["chance_r1"]
    table = format_table(rows, chance)
    experiments.write_results(job_root, "cascade", table, rows)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.cascade", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--records", required=True, help="Preprocessing output dir.")
    parser.add_argument("--job-root", required=True)
    parser.add_argument("--source", default="en", help="Pretraining language.")
    parser.add_argument("--target", required=True, help="Fine-tuning / evaluation language.")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override for every run.")
    parser.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE", help="Pretraining only.")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE", help="Fine-tuning only.")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    table = run_cascade(
        args.config,
        args.records,
        args.job_root,
        args.source,
        args.target,
        seeds,
        args.set,
        args.pretrain_set,
        args.finetune_set,
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
