"""Runs the whole pipeline here with `kfp.local` (SubprocessRunner: no Docker, no cluster, no network).

    make pipeline-local            # = python -m kubeflow.local_run --out pipeline_out

Generates a small built-in corpus into OUT/corpus (kept for reruns), runs
the compiled pipeline definition on it with pipeline root OUT/runs, and
prints each step's status, outputs and metrics. OUT/latest points at the
run's directory, which holds one directory per step with its outputs:

    check-parameters/  preprocess/records/  tune/resolved_config, search/, trials
    train/job/ (the job dir: checkpoints, model.keras, history.csv, logs/)
    evaluate/metrics, report (HTML with the picture)
    export/saved_model/<release>/<model>/<version>/   deploy/manifest (InferenceService YAML)
"""

import argparse
import json
import os
import sys
import time
import warnings

STEPS = ("check-parameters", "preprocess", "tune", "train", "evaluate", "export", "deploy")
# The corpus `make pipeline-local` runs on: small enough for a few minutes on 2 cores.
CORPUS = {"videos": 24, "languages": "en=3,ja=1", "min_duration": 16.0, "max_duration": 30.0}
# Settings that make the demo config train in about a minute on 2 CPU cores.
LOCAL_OVERRIDES = ["train.epochs=8", "eval.num_plot_examples=0"]


def make_corpus(out: str, seed: int = 5) -> str:
    """The built-in corpus the local run reads (generated once)."""
    from corpus import synthetic

    corpus = os.path.join(out, "corpus")
    if not os.path.exists(os.path.join(corpus, "corpus.json")):
        synthetic.generate(synthetic.SyntheticConfig(out=corpus, seed=seed, workers=2, **CORPUS), progress=False)
    return corpus


def run(arguments: dict, pipeline_root: str) -> tuple[str, str]:
    """Runs the pipeline with `arguments` under `pipeline_root`; returns (run dir, error or '')."""
    from kfp import local

    from kubeflow.pipeline import PIPELINE_NAME, make_pipeline

    # The SubprocessRunner warns on any image name without 'python' in it; ours is the project's image.
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    os.makedirs(pipeline_root, exist_ok=True)
    before = set(os.listdir(pipeline_root))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root, raise_on_error=True)
    error = ""
    try:
        make_pipeline()(**arguments)
    except RuntimeError as e:
        error = str(e)
    new = sorted(d for d in set(os.listdir(pipeline_root)) - before if d.startswith(PIPELINE_NAME))
    if not new:
        raise RuntimeError(f"the pipeline wrote no run under {pipeline_root}: {error}")
    return os.path.join(pipeline_root, new[-1]), error


def step_results(run_dir: str) -> dict:
    """Each step's status and its outputs (parameters, artifacts with their metadata) from the run's directory."""
    results = {}
    for step in STEPS:
        path = os.path.join(run_dir, step, "executor_output.json")
        if not os.path.exists(path):
            results[step] = {"status": "FAILED" if os.path.isdir(os.path.join(run_dir, step)) else "NOT RUN"}
            continue
        with open(path) as f:
            out = json.load(f)
        artifacts = {}
        for name, spec in out.get("artifacts", {}).items():
            art = spec["artifacts"][0]
            artifacts[name] = {"path": os.path.join(run_dir, step, name), "metadata": art.get("metadata", {})}
        results[step] = {"status": "SUCCESS", "parameters": out.get("parameterValues", {}), "artifacts": artifacts}
    return results


def format_results(results: dict) -> str:
    lines = []
    for step, r in results.items():
        lines.append(f"{step:17s} {r['status']}")
        for name, value in r.get("parameters", {}).items():
            lines.append(f"    {name}: {value}")
        for name, art in r.get("artifacts", {}).items():
            meta = art["metadata"]
            if name == "metrics":
                shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(meta.items()) if isinstance(v, (int, float)))
                lines.append(f"    metrics: {shown}")
                lines.append(f"    gate: {meta.get('gate', '')}")
                continue
            lines.append(f"    {name}: {art['path']}")
            for key in ("counters", "skipped", "version_dir", "applied", "tuned", "best_monitor", "epochs"):
                if key in meta:
                    lines.append(f"      {key}: {meta[key]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeflow.local_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="pipeline_out", help="Corpus, runs and the `latest` link go here.")
    parser.add_argument("--config", default="malta_demo", help="Config name in configs/ or a YAML path.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="A config override.")
    parser.add_argument("--tune", action="store_true", help="Run the config's search before training.")
    parser.add_argument("--gate-metric", default="r1_iou_0.3")
    parser.add_argument("--gate-threshold", type=float, default=0.1)
    parser.add_argument("--annotations", help="Run on these annotations instead of the built-in corpus.")
    parser.add_argument("--format", default="builtin", help="Their annotation format.")
    parser.add_argument("--videos-dir", default="", help="Where their media paths resolve.")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    annotations = args.annotations or make_corpus(out)
    arguments = {
        "annotations": annotations,
        "annotation_format": args.format,
        "videos_dir": args.videos_dir,
        "config": args.config,
        "config_overrides": [*LOCAL_OVERRIDES, *args.set],
        "preprocess_args": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        "tune": args.tune,
        "gate_metric": args.gate_metric,
        "gate_threshold": args.gate_threshold,
        "serving_model_name": "",
    }
    start = time.time()
    run_dir, error = run(arguments, os.path.join(out, "runs"))
    latest = os.path.join(out, "latest")
    if os.path.islink(latest):
        os.remove(latest)
    os.symlink(run_dir, latest)
    results = step_results(run_dir)
    print(f"\n=== Pipeline run {os.path.basename(run_dir)} ({time.time() - start:.0f} s): {out}/latest ===")
    print(format_results(results))
    if error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
