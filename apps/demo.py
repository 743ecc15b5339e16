"""`make demo`: the whole path on the built-in corpus, end to end.

Stages (each skipped when its output is already complete, so a rerun resumes):
  1. generate the built-in multilingual how-to corpus (mp4 + ActivityNet-style JSON)
  2. preprocess it with the Beam job into TFRecords (DirectRunner)
  3. train and evaluate caption localization: MALTA (AV) vs ABLR (V) vs audio-only
  4. run the audio-visual retrieval cascade (English -> Japanese)
  5. serve: export the MALTA and fine-tuned retrieval models (a new version each run), localize
     a test video's captions from its mp4 with the predictor (spans, attention PNG), and push
     TF Serving's REST JSON (both forms) through the loaded export
  6. tune: a tiny hyperparameter search (3 short trials) over the MALTA demo config's `tune`
     section, with its trials table and best config
A report with the tables is written to <out>/report.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _stage(name: str):
    print(f"\n=== {name} ===", flush=True)
    return time.time()


def generate_corpus(out: str, videos: int, seed: int) -> dict:
    from corpus import synthetic

    corpus = os.path.join(out, "corpus")
    if os.path.exists(os.path.join(corpus, "corpus.json")):
        print(f"(reusing {corpus})")
    else:
        cfg = synthetic.SyntheticConfig(out=corpus, videos=videos, languages="en=4,mr=1,hi=1,ja=2", seed=seed)
        synthetic.generate(cfg)
    summary = synthetic.summarize(corpus)
    print(synthetic.format_summary(summary))
    return summary


def preprocess(out: str, workers: int) -> dict:
    from avalign import features
    from preprocessing import pipeline

    corpus = os.path.join(out, "corpus")
    records = os.path.join(out, "records")
    if os.path.exists(os.path.join(records, features.METADATA_FILE)):
        print(f"(reusing {records})")
        return features.read_metadata(records)
    argv = [
        "--annotations", corpus, "--format", "builtin", "--videos_dir", corpus, "--output_dir", records,
        "--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing",
    ]  # fmt: skip
    counters = pipeline.run(argv)
    print("Preprocessing counters:\n" + pipeline.format_counters(counters))
    return features.read_metadata(records)


def localization(out: str, seeds: int, epochs: int) -> str:
    from trainer import experiments

    table = experiments.compare_localization_variants(
        config="configs/malta_demo.yaml",
        records_dir=os.path.join(out, "records"),
        job_root=os.path.join(out, "localization"),
        seeds=list(range(seeds)),
        # The serving stage exports the model it serves; the other runs need no export.
        overrides=["export.enabled=false"] + ([f"train.epochs={epochs}"] if epochs else []),
    )
    print(table)
    return table


def cascade(out: str, seeds: int) -> str:
    from trainer import cascade as cascade_lib

    table = cascade_lib.run_cascade(
        config="configs/avlnet_demo.yaml",
        records_dir=os.path.join(out, "records"),
        job_root=os.path.join(out, "cascade"),
        source_language="en",
        target_language="ja",
        seeds=list(range(seeds)),
        # Tuned on the demo corpus: pretraining levels off by ~epoch 18; fine-tuning at
        # the pretraining rate (1e-3) erases what pretraining learned.
        overrides=["export.enabled=false"],  # the serving stage exports the model it serves
        pretrain_overrides=["train.epochs=20"],
        finetune_overrides=["train.learning_rate=0.0001"],
    )
    print(table)
    return table


def serving(out: str) -> list[str]:
    """Exports both models, localizes a test video's captions with the predictor, checks TF Serving's JSON.

    Returns:
      The report's lines.
    """
    import numpy as np
    import tensorflow as tf

    from avalign import features
    from serving import export, predict, rest_json
    from trainer import train_lib
    from trainer.localization import metrics

    models = os.path.join(out, "models")
    lines = ["## Serving", ""]
    exported = {}
    for name, job in (
        ("localizer", os.path.join(out, "localization", "av", "seed0")),
        ("retriever", os.path.join(out, "cascade", "seed0", "ft_target")),
    ):
        t = time.time()
        task, model = train_lib.load_trained(job)
        exported[name] = (task, export.export_trained(task, model, models, name))
        print(f"exported {name}: {exported[name][1]} [{time.time() - t:.0f} s]")
        lines.append(
            f"- `python -m serving.export --job-dir {job} --export-base {models} --model-name {name}`"
            f" -> `{exported[name][1]}`"
        )
    task, version = exported["localizer"]
    # The predictor on a test video, from its mp4, with the captions the model reads.
    splits = json.load(open(os.path.join(out, "corpus", "splits.json"), encoding="utf-8"))
    annotations = json.load(open(os.path.join(out, "corpus", "annotations.json"), encoding="utf-8"))
    video_id = sorted(splits["test"])[0]
    ann = annotations[video_id]
    captions = ann["sentences_en"] if task.cfg.data.caption_field == "text_en" else ann["sentences"]
    video = os.path.join(out, "corpus", "videos", f"{video_id}.mp4")
    t = time.time()
    result = predict.Localizer.load(version).localize(video, captions)
    text = predict.format_result(result)
    print(text)
    print(f"[predictor {time.time() - t:.0f} s]")
    picture = predict.plot(result, os.path.join(out, "serving_attention.png"), truth=tuple(ann["timestamps"][0]))
    lines += [
        "",
        f"`python -m serving.predict --model {os.path.dirname(version)} --video {video} --caption ...`"
        f" ({result.duration:.1f} s, {len(result.windows)} window(s)):",
        "",
        "| caption | true (s) | predicted (s) | IoU | score |",
        "|---|---|---|---|---|",
    ]
    for c, (t0, t1) in zip(result.captions, ann["timestamps"]):
        iou = float(metrics.temporal_iou(np.array([c.start_seconds, c.end_seconds]), np.array([t0, t1])))
        lines.append(
            f"| {c.caption} | {t0:.1f}-{t1:.1f} | {c.start_seconds:.1f}-{c.end_seconds:.1f} | {iou:.2f} | {c.score:.2f} |"
        )
    lines += ["", f"![predictor]({os.path.basename(picture)})", ""]
    # TF Serving's REST JSON, both forms, through the loaded export, against a direct call.
    files = task.info.files(task.cfg.data.test_split)
    record = next(iter(tf.data.TFRecordDataset(files[:1], compression_type="GZIP"))).numpy()
    parsed = features.parse_example(record, task.info.storage_dtype, task.streams)
    caption = parsed[task.parser.caption_key][0].numpy()
    loaded = tf.saved_model.load(version)
    direct = loaded.signatures["serving_default"](examples=tf.constant([record]), captions=tf.constant([caption]))
    for form in ("columnar", "row"):
        body = rest_json.encode_request({"examples": [record], "captions": [caption]}, form=form)
        response = json.loads(json.dumps(rest_json.predict_json(loaded, json.loads(json.dumps(body)))))
        got = rest_json.decode_response(response, form)
        worst = max(float(np.max(np.abs(got[k] - direct[k].numpy()))) for k in got if direct[k].dtype.is_floating)
        line = f"REST JSON ({form}, {len(json.dumps(body)) // 1024} KiB request): {len(got)} outputs, max |diff| {worst:.1e}"
        print(line)
        lines.append(f"- {line} against the signature called directly")
    lines.append("")
    return lines


def tuning(out: str, trials: int, epochs: int) -> str:
    """A tiny search over the MALTA demo config's `tune` section; returns its trials table."""
    from trainer import tuning as tuning_lib
    from trainer.config import load_experiment

    overrides = [
        f"data.records_dir={os.path.join(out, 'records')}",
        f"tune.max_trials={trials}",
        f"train.epochs={epochs}",
        "eval.num_plot_examples=0",
    ]
    job = os.path.join(out, "tuning")
    result = tuning_lib.run_search(load_experiment("configs/malta_demo.yaml", overrides), job)
    print(result["table"])
    if result["best"] is not None:
        print(
            f"Best config: {os.path.join(job, tuning_lib.BEST_CONFIG)} "
            f"(python -m trainer.task --config {os.path.join(job, tuning_lib.BEST_CONFIG)} --job-dir JOB)"
        )
    return result["table"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", help="Output dir (reused on reruns).")
    parser.add_argument("--videos", type=int, default=80, help="Videos in the generated corpus.")
    parser.add_argument("--seed", type=int, default=0, help="Corpus seed.")
    parser.add_argument("--workers", type=int, default=2, help="Beam DirectRunner workers.")
    parser.add_argument("--seeds", type=int, default=1, help="Training seeds per model (mean ± std over them).")
    parser.add_argument(
        "--epochs", type=int, default=None, help="Localization training epochs (default: the config's)."
    )
    parser.add_argument(
        "--stages",
        default="corpus,preprocess,localization,cascade,serving,tuning",
        help="Comma-separated stages to run.",
    )
    args = parser.parse_args(argv)
    from apps import report as report_lib

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    stages = set(args.stages.split(","))
    os.makedirs(args.out, exist_ok=True)
    report = ["# avalign demo report", ""]
    start = time.time()
    if "corpus" in stages:
        t = _stage("1. Built-in corpus")
        summary = generate_corpus(args.out, args.videos, args.seed)
        report += ["## Corpus", "```", json.dumps(summary, indent=2, ensure_ascii=False), "```", ""]
        print(f"[{time.time() - t:.0f} s]")
    if "preprocess" in stages:
        t = _stage("2. Beam preprocessing")
        meta = preprocess(args.out, args.workers)
        report += [
            "## Records",
            "```",
            json.dumps(meta["counts"], indent=2),
            f"rejected: {meta['rejected']}",
            "```",
            "",
        ]
        print(f"[{time.time() - t:.0f} s]")
    if "localization" in stages:
        t = _stage("3. Caption localization: MALTA (AV) vs ABLR (V) vs audio-only")
        table = localization(args.out, args.seeds, args.epochs)
        report += ["## Caption localization (test split, R@1 at IoU)", "```", table, "```", ""]
        jobs = {
            name: os.path.join(args.out, "localization", variant, "seed0")
            for name, variant in (("MALTA (AV)", "av"), ("ABLR (V)", "v"))
        }
        picture = report_lib.localization_figure(jobs, os.path.join(args.out, "attention.png"))
        report += ["Attention over time against the true segment (green); prediction in red.", ""]
        report += [f"![attention]({os.path.basename(picture)})", ""]
        print(f"picture: {picture}")
        print(f"[{time.time() - t:.0f} s]")
    if "cascade" in stages:
        t = _stage("4. Audio-visual retrieval cascade (en -> ja)")
        report += ["## Retrieval cascade", "```", cascade(args.out, args.seeds), "```", ""]
        ft_target = os.path.join(args.out, "cascade", "seed0", "ft_target")
        picture = report_lib.retrieval_figure(ft_target, os.path.join(args.out, "retrieval.png"))
        report += ["Pretrained, fine-tuned on Japanese; Japanese test clips.", ""]
        report += [f"![retrieval]({os.path.basename(picture)})", ""]
        print(f"picture: {picture}")
        print(f"[{time.time() - t:.0f} s]")
    if "serving" in stages:
        t = _stage("5. Serving: export, the predictor on a video, TF Serving's JSON")
        report += serving(args.out)
        print(f"[{time.time() - t:.0f} s]")
    if "tuning" in stages:
        t = _stage("6. Hyperparameter search: 3 short MALTA trials (KerasTuner)")
        table = tuning(args.out, trials=3, epochs=6)
        report += ["## Hyperparameter search (3 trials of 6 epochs; val split)", "", table, ""]
        report += [
            f"Best config: `tuning/best_config.yaml`; HParams: `tensorboard --logdir {args.out}/tuning/hparams`",
            "",
        ]
        print(f"[{time.time() - t:.0f} s]")
    report.append(f"Total: {time.time() - start:.0f} s")
    with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report) + "\n")
    print(f"\nReport: {os.path.join(args.out, 'report.md')}  (total {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
