"""The pipeline's KFP v2 components: thin wrappers around `kubeflow/steps.py`, which calls the library.

Each is a lightweight Python component on the project's image
(`make_components(image)`): its function body runs in the image, where the
repository (with `kubeflow/` and `configs/`) is the working directory, so
`from kubeflow import steps` imports the steps; `kfp.local`'s
SubprocessRunner runs the same bodies from the repository root. The
steps' results become artifact metadata, `Metrics` (`log_metric`) and an
`HTML` report.
"""

import types
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

# The project's image (Dockerfile); `python -m kubeflow.pipeline --image` compiles with another.
DEFAULT_IMAGE = "ghcr.io/avalign/avalign:0.1.0"


def check_parameters(
    annotations: str,
    annotation_format: str,
    videos_dir: str,
    config: str,
    config_overrides: list,
    preprocess_overrides: list,
    preprocess_args: list,
    beam_runner: str,
    tune: bool,
    gate_metric: str,
    train_workers: int,
    train_gpus: int,
) -> str:
    """Checks every parameter that needs no record (seconds), so a bad one stops the run before the long steps."""
    import json

    from kubeflow import steps

    checked = steps.check_parameters(
        annotations,
        annotation_format,
        videos_dir,
        config,
        config_overrides,
        preprocess_overrides,
        preprocess_args,
        beam_runner,
        tune,
        gate_metric,
        train_workers,
        train_gpus,
    )
    return json.dumps(checked, sort_keys=True)


def preprocess(
    annotations: str,
    annotation_format: str,
    videos_dir: str,
    preprocess_overrides: list,
    preprocess_args: list,
    beam_runner: str,
    records: Output[Dataset],
):
    """The Beam job: videos + annotations -> TFRecords (DirectRunner here; Dataflow or Flink by beam_runner)."""
    from kubeflow import steps

    result = steps.preprocess(
        annotations,
        annotation_format,
        videos_dir,
        steps.location(records.uri, records.path),
        preprocess_overrides,
        preprocess_args,
        beam_runner,
    )
    records.metadata.update(steps.json_safe(dict(result, annotations=annotations, annotation_format=annotation_format)))


def tune(
    records: Input[Dataset],
    config: str,
    config_overrides: list,
    enabled: bool,
    resolved_config: Output[Artifact],
    search: Output[Artifact],
    trials: Output[Markdown],
):
    """With `enabled`, the config's KerasTuner search and its best config; else the config as given, resolved."""
    import os

    from kubeflow import steps

    os.makedirs(os.path.dirname(resolved_config.path), exist_ok=True)
    result = steps.tune_or_resolve(
        config,
        config_overrides,
        steps.location(records.uri, records.path),
        enabled,
        steps.location(search.uri, search.path),
        resolved_config.path,
    )
    table = result.pop("table", "Tuning was off (tune=False): the config trains as given.\n")
    os.makedirs(os.path.dirname(trials.path), exist_ok=True)
    with open(trials.path, "w") as f:
        f.write(table)
    resolved_config.metadata.update(steps.json_safe(dict(result, config=config, overrides=config_overrides)))


def train(
    resolved_config: Input[Artifact],
    records: Input[Dataset],
    gpus: int,
    workers: int,
    image: str,
    cpu: str,
    memory: str,
    namespace: str,
    job: Output[Model],
    tfjob: Output[Artifact],
):
    """Trains the resolved config: here on this node's devices, or as a TFJob over `workers` nodes."""
    import json
    import os

    from kubeflow import steps

    records_dir = steps.location(records.uri, records.path)
    job_dir = steps.location(job.uri, job.path)
    os.makedirs(os.path.dirname(tfjob.path), exist_ok=True)
    if workers > 1:
        manifest = steps.tfjob_manifest(
            f"avalign-train-{os.path.basename(os.path.dirname(job.uri))[-40:]}".lower().replace("_", "-"),
            image,
            steps.location(resolved_config.uri, resolved_config.path),
            records_dir,
            job_dir,
            workers,
            gpus,
            cpu,
            memory,
            namespace,
        )
        with open(tfjob.path, "w") as f:
            json.dump(manifest, f, indent=1)
        tfjob.metadata["name"] = steps.run_tfjob(manifest)
        job.metadata.update({"tfjob": tfjob.metadata["name"], "workers": workers})
    else:
        with open(tfjob.path, "w") as f:
            f.write("skipped: one node (train_workers=1) trains in this step\n")
        job.metadata.update(steps.json_safe(steps.train(resolved_config.path, records_dir, job_dir, gpus)))
    job.metadata.update({"records": records.uri, "config": resolved_config.uri})


def evaluate(
    job: Input[Model],
    gate_metric: str,
    gate_threshold: float,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> NamedTuple("Outputs", [("passed", bool), ("verdict", str)]):
    """The trained model on the test split: metrics, the report with its picture, and the gate's verdict."""
    import os
    from typing import NamedTuple

    from kubeflow import steps

    os.makedirs(os.path.dirname(report.path), exist_ok=True)
    picture = report.path + ".png"
    result = steps.evaluate(steps.location(job.uri, job.path), gate_metric, gate_threshold, picture)
    for name, value in sorted(result["metrics"].items()):
        metrics.log_metric(name, value)
    metrics.metadata.update({"gate": result["verdict"], "split": result["split"]})
    with open(report.path, "w") as f:
        f.write(steps.report_html(result, picture, f"avalign evaluation ({result['task']})"))
    os.remove(picture)
    outputs = NamedTuple("Outputs", [("passed", bool), ("verdict", str)])
    return outputs(result["passed"], result["verdict"])


def export(
    job: Input[Model],
    passed: bool,
    verdict: str,
    export_base: str,
    release: str,
    model_name: str,
    saved_model: Output[Model],
):
    """The SavedModel for TF Serving, into its own release base, if the gate passed (else 'skipped: below gate')."""
    from kubeflow import steps

    result = steps.export(
        steps.location(job.uri, job.path),
        passed,
        verdict,
        steps.location(saved_model.uri, saved_model.path),
        export_base,
        release,
        model_name,
    )
    saved_model.metadata.update(steps.json_safe(result))


def deploy(
    saved_model: Input[Model],
    passed: bool,
    verdict: str,
    namespace: str,
    apply: bool,
    manifest: Output[Artifact],
):
    """The KServe InferenceService of the export: written always, applied to the cluster with `apply`."""
    from kubeflow import steps

    result = steps.deploy(dict(saved_model.metadata), passed, verdict, namespace, apply, manifest.path)
    manifest.metadata.update(steps.json_safe(result))


def make_components(image: str = DEFAULT_IMAGE) -> types.SimpleNamespace:
    """The components on `image` (kfp is in it: no pip install at run time)."""

    def component(func):
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return types.SimpleNamespace(
        check_parameters=component(check_parameters),
        preprocess=component(preprocess),
        tune=component(tune),
        train=component(train),
        evaluate=component(evaluate),
        export=component(export),
        deploy=component(deploy),
    )
