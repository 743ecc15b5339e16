"""The sections every task shares (data, train, runtime, eval) and the experiment config that tasks extend.

A task owns its config: `trainer/<task>/config.py` subclasses `ExperimentConfig`
with its own `data`, `model` and `eval` sections and registers it with
`registry.register_config`; this module names no task.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Literal, Mapping, Optional

from avalign import hyperparams


@dataclasses.dataclass
class DataConfig:
    """Where the records are and how examples are cut from them.

    Attributes:
      records_dir: output dir of `python -m preprocessing.pipeline` (holds schema.json).
      train_split: split trained on.
      eval_split: split validated on each epoch (early stopping, TensorBoard).
      test_split: split of the final evaluation.
      languages: keep only training videos in these speech languages (empty: all).
      eval_languages: languages of the validation and test videos (empty: the
        same as `languages`); differs for zero-shot cross-language evaluation.
      max_train_videos: keep the first N training videos by id (0: all), for
        low-resource experiments.
      shuffle_buffer: examples in the training shuffle buffer.
      cache: cache parsed examples in memory after the first epoch.
      on_bad_record: 'error' stops before training on a record that lacks a
        required feature or has inconsistent dims; 'skip' counts and skips it.
    """

    records_dir: str = ""
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "test"
    languages: list[str] = dataclasses.field(default_factory=list)
    eval_languages: list[str] = dataclasses.field(default_factory=list)
    max_train_videos: int = hyperparams.field(0, bounds="[0, inf)")
    shuffle_buffer: int = hyperparams.field(1024, bounds="[1, inf)")
    cache: bool = True
    on_bad_record: Literal["error", "skip"] = "error"

    def languages_of(self, split: str) -> list[str]:
        """The language filter of a split."""
        if split == self.train_split:
            return self.languages
        return self.eval_languages or self.languages

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class TrainConfig:
    """Optimization.

    Attributes:
      epochs: passes over the training data.
      global_batch_size: examples per step over all replicas.
      learning_rate: peak learning rate.
      optimizer: 'adam' or 'adamw'.
      weight_decay: decoupled weight decay for adamw.
      clipnorm: gradient clipping by global norm (0: off).
      warmup_epochs: linear warm-up before cosine decay (0 with decay 'constant': flat).
      lr_decay: 'constant' or 'cosine' to 0 at the last epoch.
      early_stopping_patience: epochs without validation improvement before
        stopping (0: off).
      seed: seed of weights init and shuffling.
      steps_per_epoch: cap on steps per epoch (0: a full pass).
      init_checkpoint: a .weights.h5 or .keras file to start from (fine-tuning).
    """

    epochs: int = hyperparams.field(10, bounds="[1, inf)")
    global_batch_size: int = hyperparams.field(32, bounds="[1, inf)")
    learning_rate: float = hyperparams.field(1e-3, bounds="(0, inf)")
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = hyperparams.field(0.0, bounds="[0, inf)")
    clipnorm: float = hyperparams.field(0.0, bounds="[0, inf)")
    warmup_epochs: int = hyperparams.field(0, bounds="[0, inf)")
    lr_decay: Literal["constant", "cosine"] = "constant"
    early_stopping_patience: int = hyperparams.field(0, bounds="[0, inf)")
    seed: int = 0
    steps_per_epoch: int = hyperparams.field(0, bounds="[0, inf)")
    init_checkpoint: str = ""

    def __post_init__(self):
        hyperparams.validate(self)
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}.")


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how training runs.

    Attributes:
      strategy: 'default' (one device), 'mirrored' (all local GPUs, or
        cpu_devices logical CPUs), 'multi_worker_mirrored' (TF_CONFIG).
      cpu_devices: split the host CPU into this many logical devices (0: no
        split); lets Mirrored run 2 replicas on a CPU-only machine.
      mixed_precision: Keras dtype policy.
      run_eagerly: debug switch.
    """

    strategy: Literal["default", "mirrored", "multi_worker_mirrored"] = "default"
    cpu_devices: int = hyperparams.field(0, bounds="[0, inf)")
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    run_eagerly: bool = False

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class EvalConfig:
    """The evaluation section; every key in it belongs to a task, whose eval config subclasses this one."""

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class ExportConfig:
    """What a finished training run exports for serving (by the task's registered exporters).

    Attributes:
      enabled: export when training finishes.
      export_base: the directory of served models (local or gs://); each model
        is written to `<export_base>/<model_name>/<next integer version>/`.
        '' is `<job_dir>/export`.
      model_name: the model's name under `export_base` (TF Serving's model
        name); '' is the task's own ('localizer', 'retriever').
      warmup_requests: TF Serving warmup requests written into the export's
        `assets.extra/` (0: none; TF Serving reads at most 1000).
    """

    enabled: bool = True
    export_base: str = ""
    model_name: str = ""
    warmup_requests: int = hyperparams.field(8, bounds="[0, 1000]")

    def __post_init__(self):
        hyperparams.validate(self)
        if self.model_name and (self.model_name.strip() != self.model_name or "/" in self.model_name):
            raise ValueError(
                f"export.model_name must be a plain name (no '/', no spaces at the ends), got {self.model_name!r}."
            )


@dataclasses.dataclass
class SearchParam:
    """One dimension of a hyperparameter search: a config field and the values it may take.

    Attributes:
      key: the dotted config key searched, e.g. 'train.learning_rate' or
        'model.dropout' (a number, string or boolean field of the model,
        train or eval section).
      type: 'float' or 'int' (a range from `min` to `max`), or 'choice'
        (one of `values`).
      min: lower end of a range (inclusive).
      max: upper end of a range (inclusive).
      sampling: 'linear' or 'log' (a log range must lie above 0).
      step: spacing of a range's values (0: any value of a float range, 1 for
        an int range); with log sampling, the factor between values.
      values: the values of a 'choice', of the field's type.
    """

    key: str = ""
    type: Literal["float", "int", "choice"] = "float"
    min: Optional[float] = None
    max: Optional[float] = None
    sampling: Literal["linear", "log"] = "linear"
    step: float = hyperparams.field(0.0, bounds="[0, inf)")
    values: list[Any] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class TuneConfig:
    """Hyperparameter search (`python -m trainer.tune`); `python -m trainer.task` ignores this section.

    A trial is a training run of this config with the trial's values set;
    it validates on `data.eval_split` and never sees the test split.

    Attributes:
      tuner: 'random', 'bayesian' (Gaussian-process Bayesian optimization) or
        'hyperband' (successive halving over `train.epochs` as the most
        epochs a trial gets; each trial trains from scratch).
      objective: what a trial is scored by: a validation metric of the epoch
        logs ('val_loss', 'val_span_r1_iou_0.5', 'val_r1_mean', ...; its best
        epoch counts), or 'eval_<metric>' from the task's own evaluation of the
        trial's best weights on the eval split ('eval_r1_iou_0.5' with the
        configured span decoder, 'eval_a2v_r10', ...). '' is the task's
        checkpoint monitor. `python -m trainer.tune --help` lists them.
      direction: 'max', 'min', or '' (the objective's own: losses and ranks
        are minimized, the rest maximized).
      max_trials: trials in all (hyperband: at most; its brackets decide).
      executions_per_trial: training runs per trial, with seeds train.seed,
        train.seed + 1, ...; the trial's objective is their mean.
      seed: seed of the tuner's sampling.
      max_consecutive_failed_trials: stop the search after this many failed
        trials in a row (a failed trial is recorded with its reason).
      num_initial_points: bayesian: random trials before the Gaussian
        process guides (0: KerasTuner's default, 3 per searched key).
      hyperband_factor: hyperband: reduction factor of each round.
      hyperband_iterations: hyperband: times the whole algorithm runs.
      space: the searched keys.
    """

    tuner: Literal["random", "bayesian", "hyperband"] = "random"
    objective: str = ""
    direction: Literal["", "max", "min"] = ""
    max_trials: int = hyperparams.field(10, bounds="[1, inf)")
    executions_per_trial: int = hyperparams.field(1, bounds="[1, inf)")
    seed: int = 0
    max_consecutive_failed_trials: int = hyperparams.field(3, bounds="[1, inf)")
    num_initial_points: int = hyperparams.field(0, bounds="[0, inf)")
    hyperband_factor: int = hyperparams.field(3, bounds="[2, inf)")
    hyperband_iterations: int = hyperparams.field(1, bounds="[1, inf)")
    space: list[SearchParam] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        hyperparams.validate(self)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment; each task subclasses it with its own `data`, `model` and `eval` sections.

    Attributes:
      task: the registered task name (`registry.task_names()`).
      data: input data.
      model: the task's model.
      train: optimization.
      runtime: strategy and precision.
      eval: evaluation.
      export: what training exports for serving.
      tune: hyperparameter search over this config (`python -m trainer.tune`).
    """

    task: str = ""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: Optional[Any] = None
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)


# The task of a config file that names none.
DEFAULT_TASK = "localization"


def _task_of(data: Mapping[str, Any], overrides: Iterable[str], where: str) -> str:
    """The task an experiment names: the last `--set task=...`, else the file's `task`, else the default."""
    name = data.get("task", DEFAULT_TASK)
    for text in overrides:
        path, value = hyperparams.parse_override(text)
        if path == ["task"]:
            name = value
    if not isinstance(name, str):
        raise hyperparams.ConfigError(f"{where}: task must be a task name, got {name!r}.")
    return name


def _unwrap_task_model(data: dict, task: str, where: str) -> dict:
    """Reads a config written before tasks owned their configs (`model: {<task>: {...}}`)."""
    model = data.get("model")
    if isinstance(model, Mapping) and list(model) == [task] and isinstance(model[task], Mapping):
        logging.warning("%s: model.%s.<key> is the old layout of this config; it now reads model.<key>.", where, task)
        data = dict(data, model=model[task])
    return data


def load_experiment(path: Optional[str] = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Code defaults of the experiment's task, then the YAML file, then `--set` overrides.

    The task named in the file or an override picks the config class its task
    registered, so unknown keys are errors per task.

    Args:
      path: experiment YAML (local or any tf.io.gfile path); None for defaults.
      overrides: `a.b=c` strings.

    Returns:
      The task's registered `ExperimentConfig` subclass.

    Raises:
      hyperparams.ConfigError: unknown task or key, bad value, or a file that is not a mapping.
      FileNotFoundError: `path` does not exist.
    """
    from trainer import registry

    overrides = list(overrides)
    where = path or "--set"
    data = dict(hyperparams.read_mapping(path)) if path else {}
    task = _task_of(data, overrides, where)
    cls = registry.get_config_class(task)
    data = _unwrap_task_model(dict(data, task=task), task, where)
    try:
        cfg = hyperparams.from_dict(cls, data)
    except hyperparams.ConfigError as e:
        raise hyperparams.ConfigError(f"{where}: {e}") from e
    return hyperparams.apply_overrides(cfg, [o for o in overrides if hyperparams.parse_override(o)[0] != ["task"]])
