"""The pipeline's steps as plain functions: each calls the library's own entry points.

The KFP components (`kubeflow/components.py`) are thin wrappers that pass
these functions their artifacts' paths and record what they return as
artifact metadata and metrics; everything here runs and is tested without
KFP. A bad pipeline parameter raises `ParameterError`, which names the
parameter, before any long work.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import pathlib
import time
from typing import Any, Sequence

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
KSERVE_DIR = REPO / "serving" / "deploy" / "k8s" / "kserve"
BEAM_RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner")
SKIPPED_FILE = "SKIPPED"


class ParameterError(ValueError):
    """A pipeline parameter that can't work; the message starts with its name."""

    def __init__(self, name: str, value: Any, reason: str):
        super().__init__(f"pipeline parameter {name}={value!r}: {reason}")
        self.parameter = name


def config_path(config: str) -> str:
    """A config name (`malta_demo`: configs/malta_demo.yaml) or a YAML path / URI, as a path.

    Raises:
      ParameterError: (config) a name with no such file in configs/.
    """
    if config.endswith((".yaml", ".yml")) or "/" in config:
        return config
    path = CONFIG_DIR / f"{config}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "preprocess_default")
        raise ParameterError("config", config, f"no configs/{config}.yaml; the config names are {names}.")
    return str(path)


def load_config(config: str, overrides: Sequence[str], records_dir: str = ""):
    """The experiment config of the `config` parameter with `config_overrides` (and the records set).

    Raises:
      ParameterError: naming `config` or `config_overrides`.
    """
    from avalign import hyperparams
    from trainer.config import load_experiment

    path = config_path(config)
    extra = [f"data.records_dir={records_dir}"] if records_dir else []
    try:
        load_experiment(path)
    except FileNotFoundError as e:
        raise ParameterError("config", config, str(e)) from e
    except hyperparams.ConfigError as e:
        raise ParameterError("config", config, str(e)) from e
    try:
        return load_experiment(path, [*overrides, *extra])
    except hyperparams.ConfigError as e:
        raise ParameterError("config_overrides", list(overrides), str(e)) from e


def gate_metrics(cfg) -> dict[str, str]:
    """The test metrics the config's task reports (an evaluation gate's choices): name -> 'min' or 'max'."""
    from trainer.registry import get_task

    objectives = get_task(cfg)(cfg, "").tuning_objectives()
    return {name[len("eval_") :]: d for name, d in objectives.items() if name.startswith("eval_")}


def check_parameters(
    annotations: str,
    annotation_format: str,
    videos_dir: str,
    config: str,
    config_overrides: Sequence[str],
    preprocess_overrides: Sequence[str],
    preprocess_args: Sequence[str],
    beam_runner: str,
    tune: bool,
    gate_metric: str,
    train_workers: int,
    train_gpus: int,
) -> dict:
    """Every check of the pipeline's parameters that needs no record, in seconds, before the long steps.

    Returns:
      Dict with the task, the gate metric's direction and the resolved config's digest.

    Raises:
      ParameterError: naming the first bad parameter.
    """
    from avalign import hyperparams
    from preprocessing import annotations as annotations_lib

    if annotation_format not in annotations_lib.READERS:
        raise ParameterError(
            "annotation_format",
            annotation_format,
            "unknown annotation format." + hyperparams.nearest(annotation_format, sorted(annotations_lib.READERS)),
        )
    if beam_runner not in BEAM_RUNNERS:
        raise ParameterError("beam_runner", beam_runner, f"use one of {list(BEAM_RUNNERS)}.")
    if train_workers < 1:
        raise ParameterError("train_workers", train_workers, "at least 1.")
    if train_gpus < 0:
        raise ParameterError("train_gpus", train_gpus, "0 (CPU) or more.")
    cfg = load_config(config, config_overrides)
    if tune:
        from trainer import tuning

        try:
            tuning.check_search(cfg)
        except hyperparams.ConfigError as e:
            raise ParameterError("config_overrides", list(config_overrides), f"tune=True: {e}") from e
    if train_workers > 1 and tune:
        raise ParameterError("train_workers", train_workers, "a multi-node training run can't follow a search.")
    metrics = gate_metrics(cfg)
    if gate_metric not in metrics:
        raise ParameterError(
            "gate_metric",
            gate_metric,
            f"task {cfg.task!r} does not report it." + hyperparams.nearest(gate_metric, sorted(metrics)),
        )
    check_preprocessing(annotations, annotation_format, videos_dir, preprocess_overrides, preprocess_args)
    return {"task": cfg.task, "gate_direction": metrics[gate_metric], "config_sha256": hyperparams.digest(cfg)}


def preprocess_argv(
    annotations: str,
    annotation_format: str,
    videos_dir: str,
    output_dir: str,
    preprocess_overrides: Sequence[str],
    preprocess_args: Sequence[str],
    beam_runner: str = "DirectRunner",
) -> list[str]:
    """The Beam job's command line: `videos_dir` defaults to `annotations` (a built-in corpus dir)."""
    argv = ["--annotations", annotations, "--format", annotation_format, "--videos_dir", videos_dir or annotations]
    argv += ["--output_dir", output_dir, f"--runner={beam_runner}", *preprocess_args]
    for o in preprocess_overrides:
        argv += ["--set", o]
    return argv


def check_preprocessing(
    annotations: str,
    annotation_format: str,
    videos_dir: str,
    preprocess_overrides: Sequence[str],
    preprocess_args: Sequence[str],
) -> None:
    """The Beam job's own input checks (`preprocessing.pipeline.checked_job`), naming the pipeline parameter.

    Raises:
      ParameterError: naming annotations, videos_dir, preprocess_overrides or preprocess_args.
    """
    from avalign import hyperparams
    from preprocessing import pipeline

    if not annotations:
        raise ParameterError("annotations", annotations, "give the annotation file (or corpus dir for 'builtin').")
    argv = preprocess_argv(annotations, annotation_format, videos_dir, "unused", preprocess_overrides, preprocess_args)
    try:
        pipeline.checked_job(argv)
    except SystemExit as e:
        raise ParameterError("preprocess_args", list(preprocess_args), "not flags of the Beam job (see above).") from e
    except hyperparams.ConfigError as e:
        raise ParameterError("preprocess_overrides", list(preprocess_overrides), str(e)) from e
    except FileNotFoundError as e:
        where = "videos_dir" if str(e).startswith("--videos_dir") else "annotations"
        raise ParameterError(where, videos_dir if where == "videos_dir" else annotations, str(e)) from e
    except ValueError as e:
        raise ParameterError("annotations", annotations, str(e)) from e


def preprocess(
    annotations: str,
    annotation_format: str,
    videos_dir: str,
    output_dir: str,
    preprocess_overrides: Sequence[str],
    preprocess_args: Sequence[str],
    beam_runner: str,
) -> dict:
    """The Beam job (`preprocessing.pipeline.run`) on `beam_runner`; returns its counters and the schema."""
    from avalign import features
    from preprocessing import pipeline

    argv = preprocess_argv(
        annotations, annotation_format, videos_dir, output_dir, preprocess_overrides, preprocess_args, beam_runner
    )
    counters = pipeline.run(argv)
    logging.info("Preprocessing counters:\n%s", pipeline.format_counters(counters))
    meta = features.read_metadata(output_dir)
    return {"counters": counters, "schema_version": meta.get("schema_version"), "splits": meta.get("splits", {})}


def tune_or_resolve(
    config: str, config_overrides: Sequence[str], records_dir: str, enabled: bool, search_dir: str, config_out: str
) -> dict:
    """With `enabled`, the config's search (`trainer.tuning.run_search`), writing its best config to
    `config_out`; otherwise the config with its overrides, resolved, to `config_out`.

    Raises:
      RuntimeError: no trial of the search completed.
    """
    from avalign import hyperparams
    from trainer import tuning

    cfg = load_config(config, config_overrides, records_dir)
    if not enabled:
        hyperparams.save(cfg, config_out)
        return {"tuned": False, "config_sha256": hyperparams.digest(cfg)}
    result = tuning.run_search(cfg, search_dir)
    if not result or result["best"] is None:
        raise RuntimeError(f"no trial of the search in {search_dir} completed; see {tuning.TRIALS_MD} there.")
    best = load_config(os.path.join(search_dir, tuning.BEST_CONFIG), [])
    hyperparams.save(best, config_out)
    return {
        "tuned": True,
        "table": result["table"],
        "best": result["best"],
        "config_sha256": hyperparams.digest(best),
    }


def train_overrides(records_dir: str, gpus: int, workers: int) -> list[str]:
    """What the train step sets on its config: the records, the strategy its resources call for, no export."""
    out = [f"data.records_dir={records_dir}", "export.enabled=false"]
    if workers > 1:
        out.append("runtime.strategy=multi_worker_mirrored")
    elif gpus > 1:
        out.append("runtime.strategy=mirrored")
    return out


def train(config_file: str, records_dir: str, job_dir: str, gpus: int) -> dict:
    """Trains the resolved config on one node (`train_lib.run_experiment`, no test evaluation, no export)."""
    from avalign import hyperparams
    from trainer import train_lib
    from trainer.config import load_experiment

    cfg = load_experiment(config_file, train_overrides(records_dir, gpus, 1))
    out = train_lib.run_experiment(cfg, job_dir, evaluate=False)
    monitor, mode = out["task"].monitor
    logged = out["history"].get(monitor, [])
    return {
        "task": cfg.task,
        "epochs": len(logged),
        "monitor": monitor,
        "best_monitor": (max if mode == "max" else min)(logged, default=None),
        "config_sha256": hyperparams.digest(cfg),
    }


def tfjob_manifest(
    name: str,
    image: str,
    config_uri: str,
    records_uri: str,
    job_uri: str,
    workers: int,
    gpus: int,
    cpu: str,
    memory: str,
    namespace: str,
) -> dict:
    """The Kubeflow Training Operator TFJob of a multi-node training run (one Chief, `workers - 1` Workers).

    The operator sets TF_CONFIG in each replica (cluster spec and its own task),
    which is what `runtime.strategy=multi_worker_mirrored` reads. Every replica
    runs the same `trainer.task` command on shared storage (gs://...).
    """
    args = ["-m", "trainer.task", "--config", config_uri, "--job-dir", job_uri, "--mode", "train"]
    for o in train_overrides(records_uri, gpus, workers):
        args += ["--set", o]
    resources: dict = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = gpus

    def replica(count: int) -> dict:
        container = {"name": "tensorflow", "image": image, "command": ["python"], "args": args}
        container["resources"] = resources
        return {"replicas": count, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [container]}}}

    specs = {"Chief": replica(1)}
    if workers > 1:
        specs["Worker"] = replica(workers - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "avalign-train"}},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "tfReplicaSpecs": specs},
    }


def run_tfjob(manifest: dict, api=None, poll_seconds: float = 30.0, timeout_seconds: float = 7 * 24 * 3600) -> str:
    """Submits a TFJob and waits for it to succeed; returns its name.

    Args:
      manifest: `tfjob_manifest`'s.
      api: a kubernetes `CustomObjectsApi` (default: the in-cluster one).

    Raises:
      RuntimeError: the TFJob failed or did not finish in time.
    """
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    meta = manifest["metadata"]
    kind = {"group": "kubeflow.org", "version": "v1", "namespace": meta["namespace"], "plural": "tfjobs"}
    api.create_namespaced_custom_object(body=manifest, **kind)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        status = api.get_namespaced_custom_object(name=meta["name"], **kind).get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
        if "Succeeded" in conditions:
            return meta["name"]
        if "Failed" in conditions:
            raise RuntimeError(f"TFJob {meta['name']} failed: {conditions['Failed'].get('message', '')}")
        time.sleep(poll_seconds)
    raise RuntimeError(f"TFJob {meta['name']} did not finish in {timeout_seconds:.0f} s.")


def evaluate(job_dir: str, gate_metric: str, gate_threshold: float, picture: str) -> dict:
    """The trained job on its test split (`task.evaluate`), the gate's verdict, and the report's picture.

    Returns:
      Dict with 'metrics' (the overall test numbers), 'results' (the whole
      evaluation), 'table' (for people), 'passed' and 'verdict'.
    """
    from trainer import train_lib

    task, model = train_lib.load_trained(job_dir)
    results = task.evaluate(model, task.cfg.data.test_split)
    metrics = {k[len("eval_") :]: v for k, v in task.evaluation_objectives(results).items()}
    direction = gate_metrics(task.cfg)[gate_metric]
    passed, verdict = gate(metrics, gate_metric, direction, gate_threshold)
    from apps import report

    if task.name == "localization":
        report.localization_figure({"model": job_dir}, picture)
    else:
        report.retrieval_figure(job_dir, picture)
    return {
        "metrics": metrics,
        "results": results,
        "table": task.format_results(results),
        "passed": passed,
        "verdict": verdict,
        "split": task.cfg.data.test_split,
        "task": task.name,
    }


def gate(metrics: dict, name: str, direction: str, threshold: float) -> tuple[bool, str]:
    """(passed, verdict): whether test metric `name` clears `threshold` (at least, or at most for a 'min' metric)."""
    value = metrics.get(name)
    if value is None:
        return False, f"below gate: the evaluation reported no {name}"
    ok = value >= threshold if direction == "max" else value <= threshold
    sign = ">=" if direction == "max" else "<="
    if ok:
        return True, f"passed gate: {name}={value:.4f} {sign} {threshold}"
    return False, f"below gate: {name}={value:.4f}, needs {sign} {threshold}"


def report_html(evaluation: dict, picture: str, title: str) -> str:
    """The evaluation as one self-contained HTML page: the verdict, the tables and the picture inline."""
    with open(picture, "rb") as f:
        png = base64.b64encode(f.read()).decode("ascii")
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in sorted(evaluation["metrics"].items())
    )
    what = (
        "Attention over time against the true segment, on test captions"
        if evaluation["task"] == "localization"
        else "Audio×video similarities of test clips (true pairs on the diagonal) and the ranks of the true video"
    )
    return (
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h2>{html.escape(title)}</h2><p><b>{html.escape(evaluation['verdict'])}</b></p>"
        f"<h3>Test split '{html.escape(evaluation['split'])}'</h3><table border='1'>{rows}</table>"
        f"<pre>{html.escape(evaluation['table'])}</pre>"
        f"<h3>{what}</h3><img src='data:image/png;base64,{png}'></body></html>\n"
    )


def skip(out_dir: str, verdict: str) -> dict:
    """What a step below the gate writes instead of its work: a SKIPPED file with the verdict."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, SKIPPED_FILE), "w") as f:
        f.write(f"skipped: {verdict}\n")
    return {"skipped": f"skipped: {verdict}"}


def export(
    job_dir: str, passed: bool, verdict: str, out_dir: str, export_base: str, release: str, model_name: str
) -> dict:
    """The served model (`serving.export.export_trained`) into `export_base/release/`, if the gate passed.

    Each run exports into a release base of its own (one version), which a
    KServe storageUri can name (see serving/deploy/k8s/kserve). With no
    `export_base` the release goes into `out_dir` (the step's artifact).
    """
    if not passed:
        return skip(out_dir, verdict)
    from serving import export as export_lib
    from trainer import train_lib

    base = os.path.join(export_base or out_dir, release)
    task, model = train_lib.load_trained(job_dir)
    version_dir = export_lib.export_trained(task, model, base, model_name or None)
    name = os.path.basename(os.path.dirname(version_dir))
    return {
        "task": task.name,
        "model_name": name,
        "version_dir": version_dir,
        "storage_uri": os.path.dirname(version_dir),
        "verdict": verdict,
    }


def inference_service(task: str, model_name: str, storage_uri: str, namespace: str) -> dict:
    """The KServe InferenceService of an export: the serving work's manifest for the task, renamed and pointed."""
    from serving import export as export_lib

    template = KSERVE_DIR / f"{export_lib.DEFAULT_MODEL_NAMES[task]}.yaml"
    manifest = yaml.safe_load(template.read_text())
    manifest["metadata"]["name"] = model_name
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["predictor"]["model"]["storageUri"] = storage_uri
    return manifest


def apply_inference_service(manifest: dict, api=None) -> str:
    """Creates the InferenceService, or replaces the spec of the one of that name; returns 'created' or 'updated'."""
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    from kubernetes.client.rest import ApiException

    meta = manifest["metadata"]
    kind = {"group": "serving.kserve.io", "version": "v1beta1", "namespace": meta["namespace"]}
    try:
        api.create_namespaced_custom_object(plural="inferenceservices", body=manifest, **kind)
        return "created"
    except ApiException as e:
        if e.status != 409:
            raise
    api.patch_namespaced_custom_object(plural="inferenceservices", name=meta["name"], body=manifest, **kind)
    return "updated"


def deploy(
    exported: dict, passed: bool, verdict: str, namespace: str, apply: bool, manifest_file: str, api=None
) -> dict:
    """Writes the export's InferenceService to `manifest_file`, and applies it to the cluster with `apply`."""
    if not passed:
        return skip(os.path.dirname(manifest_file), verdict)
    manifest = inference_service(exported["task"], exported["model_name"], exported["storage_uri"], namespace)
    os.makedirs(os.path.dirname(manifest_file), exist_ok=True)
    with open(manifest_file, "w") as f:
        yaml.safe_dump(manifest, f, sort_keys=False)
    applied = apply_inference_service(manifest, api) if apply else "not applied (deploy_apply=False)"
    return {"inference_service": exported["model_name"], "namespace": namespace, "applied": applied}


def json_safe(value: Any) -> Any:
    """`value` with what JSON can't hold (numpy numbers, tuples) made plain, for artifact metadata."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def location(uri: str, path: str) -> str:
    """Where a step reads or writes an artifact: its URI where our file systems open it (gs://, s3://, a
    local path), else its mounted local path (e.g. minio://, mounted by KFP)."""
    return uri if uri.startswith(("gs://", "s3://", "/")) else path
