"""Exports a trained job for TF Serving: `python -m serving.export --job-dir DIR --export-base BASE --model-name NAME`.

Writes `BASE/NAME/<next integer version>/`, a SavedModel with the task's
signatures (`serving.localization`, `serving.retrieval`) and in
`assets.extra/`:

  avalign.json                 what made the export: task, job, config digest,
                               the signatures' inputs and outputs, the module's params
  config.yaml                  the job's resolved config
  metrics.json                 the best epoch's validation metrics and the
                               job's test metrics (eval/<split>.json) when present
  schema.json                  the records' schema, with the preprocessing config
                               that made them (the predictor extracts features from
                               a new video with it)
  vocabulary.txt               the caption vocabulary (localization)
  tf_serving_warmup_requests   PredictionLog requests TF Serving replays on load

A new version never overwrites an existing one (`export_base.export`). The
same export runs when training finishes (config `export.*`), through the
trainer's `avalign.exporters` entry point (`export_after_training`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from avalign import features, hyperparams
from serving import export_base, warmup
from trainer import checkpointing

CONFIG_ASSET = "config.yaml"
METRICS_ASSET = "metrics.json"
SCHEMA_ASSET = "schema.json"
VOCABULARY_ASSET = "vocabulary.txt"
# The model name of each task's export when the config and the command give none.
DEFAULT_MODEL_NAMES = {"localization": "localizer", "retrieval": "retriever"}


def build_module(task, model) -> export_base.ExportModule:
    """The export module of a trained task's model.

    Raises:
      ValueError: a task without a serving module.
    """
    if task.name == "localization":
        from serving import localization

        return localization.LocalizationModule.from_task(task, model)
    if task.name == "retrieval":
        from serving import retrieval

        return retrieval.RetrievalModule.from_task(task, model)
    raise ValueError(f"task {task.name!r} has no serving module (known: {sorted(DEFAULT_MODEL_NAMES)}).")


def job_assets(task) -> dict[str, str]:
    """The job's config, metrics, records schema and vocabulary, as `assets.extra/` files."""
    assets = {
        CONFIG_ASSET: hyperparams.to_yaml(task.cfg),
        METRICS_ASSET: json.dumps(job_metrics(task), indent=1, sort_keys=True) + "\n",
        SCHEMA_ASSET: json.dumps(task.info.meta, indent=1, sort_keys=True) + "\n",
    }
    vocabulary = getattr(task, "vocabulary", None)
    if vocabulary:
        assets[VOCABULARY_ASSET] = "\n".join(vocabulary) + "\n"
    return assets


def job_metrics(task) -> dict[str, Any]:
    """The validation metrics of the job's best epoch (by the task's monitor) and its test metrics, if evaluated."""
    rows = checkpointing.read_history(os.path.join(task.job_dir, checkpointing.HISTORY_FILE))
    monitor, mode = task.monitor
    out: dict[str, Any] = {"monitor": monitor, "epochs": len(rows)}
    scored = [r for r in rows if np.isfinite(r.get(monitor, np.nan))]
    if scored:
        pick = min if mode == "min" else max
        out["best_epoch"] = pick(scored, key=lambda r: r[monitor])
    eval_dir = os.path.join(task.job_dir, "eval")
    if tf.io.gfile.isdir(eval_dir):
        for name in sorted(tf.io.gfile.listdir(eval_dir)):
            if name.endswith(".json"):
                with tf.io.gfile.GFile(os.path.join(eval_dir, name)) as f:
                    out.setdefault("eval", {})[name[: -len(".json")]] = json.load(f)
    return out


def warmup_requests(task, module, count: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Up to `count` representative requests: real validation captions, batch 1 and the training batch size.

    Each signature gets its share; a localization request pairs a validation
    record (or its segment features and audio) with one of its own captions.
    """
    if count <= 0:
        return []
    maker = _WARMUP.get(task.name)
    return maker(task, module, count) if maker else []


def _localization_warmup(task, module, count: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    records = task.info.files(task.cfg.data.eval_split)
    serialized = next(iter(tf.data.TFRecordDataset(records[:1], compression_type="GZIP")))
    video = features.parse_example(serialized, task.info.storage_dtype, task.streams)
    caption = video[task.parser.caption_key][0].numpy()
    duration = np.float32(video[features.DURATION].numpy())
    segments = task.parser.video_segments(video)
    sizes = sorted({1, min(task.cfg.train.global_batch_size, 32)})
    requests = []
    for batch in sizes:
        requests.append(
            (
                "serving_default",
                {
                    "examples": np.array([serialized.numpy()] * batch, object),
                    "captions": np.array([caption] * batch, object),
                },
            )
        )
        if module.spec.takes_audio_frames:
            log_mel = video[features.AUDIO].numpy()
            common = {
                "captions": np.array([caption] * batch, object),
                "video": np.repeat(segments["video"].numpy()[None], batch, 0),
                "segment_mask": np.ones([batch, module.spec.num_segments], np.float32),
                "duration": np.full([batch], duration, np.float32),
            }
            requests.append(("localize", {**common, "log_mel": np.repeat(log_mel[None], batch, 0)}))
    return requests[:count]


def _retrieval_warmup(task, module, count: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    info, mcfg = task.info, module.model.retrieval_config
    rng = np.random.default_rng(0)
    seconds = mcfg.max_audio_frames / info.audio_rate
    samples = int(round(seconds * info.audio_config.sample_rate))
    streams = ["visual_2d"] + (["visual_3d"] if mcfg.use_3d else [])
    steps = max(1, int(round(seconds * max(info.stream_rates[s] for s in streams))))
    records = info.files(task.cfg.data.eval_split)
    serialized = next(iter(tf.data.TFRecordDataset(records[:1], compression_type="GZIP"))).numpy()
    requests = [("serving_default", {"examples": np.array([serialized], object)})]
    for batch in sorted({1, min(task.cfg.train.global_batch_size, 32)}):
        requests.append(
            ("embed_audio", {"waveform": (0.05 * rng.standard_normal((batch, samples))).astype(np.float32)})
        )
        video = {s: rng.standard_normal((batch, steps, info.stream_dims[s])).astype(np.float32) for s in streams}
        requests.append(("embed_video", {**video, "visual_mask": np.ones((batch, steps), np.float32)}))
        embeddings = rng.standard_normal((batch + 32, mcfg.embedding_dim)).astype(np.float32)
        requests.append(("score", {"audio_embedding": embeddings[:batch], "video_embedding": embeddings[batch:]}))
    return requests[:count]


_WARMUP: Mapping[str, Callable] = {"localization": _localization_warmup, "retrieval": _retrieval_warmup}


def export_trained(
    task,
    model,
    export_base_dir: str,
    model_name: Optional[str] = None,
    num_warmup_requests: int = 8,
) -> str:
    """Exports a trained task's model into `<export_base_dir>/<model_name>/<next version>/`.

    Args:
      task: the prepared task (`train_lib.load_trained` or the trainer's).
      model: its trained model.
      export_base_dir: the directory of served models.
      model_name: the served model's name (default: the task's, see `DEFAULT_MODEL_NAMES`).
      num_warmup_requests: warmup requests to write (0: none).

    Returns:
      The version directory written.
    """
    name = model_name or DEFAULT_MODEL_NAMES.get(task.name, task.name)
    module = build_module(task, model)
    assets = job_assets(task)
    requests = warmup_requests(task, module, num_warmup_requests)
    if requests:
        assets[warmup.WARMUP_FILE] = warmup.warmup_file(name, requests)
    metadata = {
        "task": task.name,
        "model_name": name,
        "job_dir": task.job_dir,
        "config_sha256": hyperparams.digest(task.cfg),
        "warmup_requests": len(requests),
    }
    return export_base.export(module, os.path.join(export_base_dir, name), metadata=metadata, assets=assets)


def export_after_training(task, model, export_root: str) -> list[str]:
    """The trainer's export hook (entry point `avalign.exporters`): the served model, by `export.*`.

    Retrieval also writes its audio encoder (`serving.audio_encoder`), which
    localization jobs use as an audio front-end.
    """
    cfg = task.cfg.export
    paths = [export_trained(task, model, export_root, cfg.model_name or None, cfg.warmup_requests)]
    if task.name == "retrieval":
        from serving import audio_encoder

        paths += audio_encoder.export_after_training(task, model, export_root)
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.export",
        description="Export a trained job as a versioned SavedModel for TF Serving: BASE/NAME/<version>/.",
    )
    parser.add_argument("--job-dir", required=True, help="A job whose training finished (python -m trainer.task).")
    parser.add_argument("--export-base", required=True, help="Directory of served models (local or gs://).")
    parser.add_argument("--model-name", help="The served model's name (default: localizer / retriever by task).")
    parser.add_argument(
        "--warmup-requests",
        type=int,
        default=8,
        help=f"TF Serving warmup requests to write into assets.extra (0: none; at most {warmup.MAX_REQUESTS}).",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not 0 <= args.warmup_requests <= warmup.MAX_REQUESTS:
        print(
            f"error: --warmup-requests must be in [0, {warmup.MAX_REQUESTS}], got {args.warmup_requests}.",
            file=sys.stderr,
        )
        return 2
    if args.model_name is not None and (not args.model_name or "/" in args.model_name):
        print(f"error: --model-name must be a plain name without '/', got {args.model_name!r}.", file=sys.stderr)
        return 2
    from trainer import input as input_lib
    from trainer import train_lib

    if not tf.io.gfile.exists(os.path.join(args.job_dir, checkpointing.DONE_FILE)):
        print(
            f"error: {args.job_dir} has no finished training ({checkpointing.DONE_FILE} is missing); "
            "train it with python -m trainer.task first.",
            file=sys.stderr,
        )
        return 2
    try:
        task, model = train_lib.load_trained(args.job_dir)
        path = export_trained(task, model, args.export_base, args.model_name, args.warmup_requests)
    except (hyperparams.ConfigError, input_lib.RecordsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
