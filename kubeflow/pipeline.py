"""The avalign pipeline (KFP v2): check → preprocess → tune → train → evaluate (gate) → export → deploy.

Compile (from the repository root; `kubeflow/` is not an installed package):

    python -m kubeflow.pipeline --output kubeflow/pipeline.yaml [--image REGISTRY/avalign:TAG]

The gate is data, not control flow: `evaluate` outputs its verdict and
`export` and `deploy` take it as an input, doing their work when it passed
and recording "skipped: below gate ..." otherwise. The same definition then
runs on a cluster and under `kfp.local` (whose runner has no dsl.If/Condition).
"""

import argparse
import sys
from typing import Callable

from kfp import compiler, dsl

from kubeflow.components import DEFAULT_IMAGE, make_components

PIPELINE_NAME = "avalign"


def make_pipeline(image: str = DEFAULT_IMAGE) -> Callable:
    """The pipeline function, its components on `image`."""
    ops = make_components(image)

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.split("\n\n")[0])
    def avalign(
        annotations: str,
        annotation_format: str = "builtin",
        videos_dir: str = "",
        config: str = "malta_demo",
        config_overrides: list = [],  # noqa: B006 (KFP reads the default; it is never mutated)
        preprocess_overrides: list = [],  # noqa: B006
        preprocess_args: list = [],  # noqa: B006
        beam_runner: str = "DirectRunner",
        tune: bool = False,
        gate_metric: str = "r1_iou_0.5",
        gate_threshold: float = 0.3,
        export_base: str = "",
        serving_model_name: str = "",
        namespace: str = "kubeflow-user",
        deploy_apply: bool = False,
        train_cpu: str = "4",
        train_memory: str = "16G",
        train_gpus: int = 0,
        accelerator_type: str = "NVIDIA_TESLA_T4",
        train_workers: int = 1,
    ):
        """Runs the whole path on a data set.

        Args:
          annotations: annotation file (or the corpus dir for 'builtin'); local, gs://, ...
          annotation_format: a reader of `preprocessing/annotations` (builtin, youcook2, charades_sta, ...).
          videos_dir: where the annotations' media paths resolve ('' = the annotations' dir, for builtin).
          config: a config name in configs/ (malta_demo, avlnet_demo, ...) or a YAML path.
          config_overrides: `key=value` strings on the config (including its tune section).
          preprocess_overrides: `key=value` strings on the Beam job's PreprocessConfig.
          preprocess_args: more Beam job flags: --split/--durations/--language and runner options
            (--project, --region, --temp_location, --flink_master, --setup_file, ...).
          beam_runner: DirectRunner, DataflowRunner or FlinkRunner.
          tune: run the config's KerasTuner search and train its best point.
          gate_metric: a test metric the task reports (r1_iou_0.5, miou, a2v_r10, ...).
          gate_threshold: the least (or, for ranks, the most) `gate_metric` that exports and deploys.
          export_base: where releases go (gs://...; '' = the export step's artifact).
          serving_model_name: the served model's name ('' = localizer / retriever by task).
          namespace: the Kubernetes namespace of the TFJob and the InferenceService.
          deploy_apply: apply the InferenceService to the cluster (else only write it).
          train_cpu, train_memory: the train step's (and each TFJob replica's) requests.
          train_gpus: GPUs of the train step (>1: MirroredStrategy), of each replica with train_workers > 1.
          accelerator_type: the GPU type the train step asks for.
          train_workers: nodes (>1: a TFJob with MultiWorkerMirroredStrategy).
        """
        checked = ops.check_parameters(
            annotations=annotations,
            annotation_format=annotation_format,
            videos_dir=videos_dir,
            config=config,
            config_overrides=config_overrides,
            preprocess_overrides=preprocess_overrides,
            preprocess_args=preprocess_args,
            beam_runner=beam_runner,
            tune=tune,
            gate_metric=gate_metric,
            train_workers=train_workers,
            train_gpus=train_gpus,
        ).set_display_name("check parameters")
        records = (
            ops.preprocess(
                annotations=annotations,
                annotation_format=annotation_format,
                videos_dir=videos_dir,
                preprocess_overrides=preprocess_overrides,
                preprocess_args=preprocess_args,
                beam_runner=beam_runner,
            )
            .after(checked)
            .set_display_name("preprocess (Beam)")
        )
        tuned = ops.tune(
            records=records.outputs["records"],
            config=config,
            config_overrides=config_overrides,
            enabled=tune,
        ).set_display_name("tune (KerasTuner)")
        trained = (
            ops.train(
                resolved_config=tuned.outputs["resolved_config"],
                records=records.outputs["records"],
                gpus=train_gpus,
                workers=train_workers,
                image=image,
                cpu=train_cpu,
                memory=train_memory,
                namespace=namespace,
            )
            .set_display_name("train")
            .set_cpu_request(train_cpu)
            .set_memory_request(train_memory)
            .set_memory_limit(train_memory)
            .set_accelerator_type(accelerator_type)
            .set_accelerator_limit(train_gpus)
        )
        evaluated = ops.evaluate(
            job=trained.outputs["job"], gate_metric=gate_metric, gate_threshold=gate_threshold
        ).set_display_name("evaluate (gate)")
        exported = ops.export(
            job=trained.outputs["job"],
            passed=evaluated.outputs["passed"],
            verdict=evaluated.outputs["verdict"],
            export_base=export_base,
            release=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model_name=serving_model_name,
        ).set_display_name("export (SavedModel)")
        ops.deploy(
            saved_model=exported.outputs["saved_model"],
            passed=evaluated.outputs["passed"],
            verdict=evaluated.outputs["verdict"],
            namespace=namespace,
            apply=deploy_apply,
        ).set_display_name("deploy (KServe)")

    return avalign


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeflow.pipeline", description="Compile the avalign pipeline.")
    parser.add_argument("--output", required=True, help="The pipeline YAML to write (kubeflow/pipeline.yaml).")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"The project image (default {DEFAULT_IMAGE}).")
    args = parser.parse_args(argv)
    compiler.Compiler().compile(make_pipeline(args.image), args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
