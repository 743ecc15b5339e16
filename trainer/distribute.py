"""tf.distribute strategy and precision from the runtime config."""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf

from trainer.config import RuntimeConfig


def configure_devices(cfg: RuntimeConfig) -> None:
    """Splits the host CPU into logical devices (before any op runs).

    Raises:
      RuntimeError: the runtime was already initialized with another layout.
    """
    if cfg.cpu_devices:
        cpus = tf.config.list_physical_devices("CPU")
        current = tf.config.get_logical_device_configuration(cpus[0])
        if current and len(current) == cfg.cpu_devices:
            return
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(cfg.cpu_devices)]
        )


def make_strategy(cfg: RuntimeConfig) -> tf.distribute.Strategy:
    """Builds the strategy named by the config.

    'mirrored' mirrors over all local GPUs, or over the logical CPU devices
    when there are no GPUs and cpu_devices > 1. 'multi_worker_mirrored' reads
    the cluster from TF_CONFIG.

    Raises:
      ValueError: multi_worker_mirrored without a TF_CONFIG cluster.
    """
    if cfg.strategy == "multi_worker_mirrored":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        if "cluster" not in tf_config:
            raise ValueError("runtime.strategy=multi_worker_mirrored needs TF_CONFIG with a 'cluster' (see README).")
        configure_devices(cfg)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        configure_devices(cfg)
        if cfg.strategy == "mirrored":
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
            cross = tf.distribute.HierarchicalCopyAllReduce() if len(gpus) > 1 else tf.distribute.ReductionToOneDevice()
            strategy = tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross)
        else:
            strategy = tf.distribute.get_strategy()
    keras.mixed_precision.set_global_policy(cfg.mixed_precision)
    logging.info(
        "Strategy %s with %d replica(s), precision %s",
        cfg.strategy,
        strategy.num_replicas_in_sync,
        cfg.mixed_precision,
    )
    return strategy


def worker_index() -> int:
    """This worker's index in TF_CONFIG (0 without a cluster)."""
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def is_chief() -> bool:
    """Whether this process writes the job's shared outputs (exports, summaries)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task", {})
    if not task:
        return True
    return task.get("type") == "chief" or (
        task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in tf_config.get("cluster", {})
    )


def build_from_spec(model: keras.Model, element_spec) -> None:
    """Builds `model`'s metrics and losses from a dataset spec, not from a data batch.

    Keras 3.15's `fit`/`evaluate` under a multi-replica strategy build the model
    from the MEAN over replicas of the first distributed batch
    (`_maybe_symbolic_build`), which fails when replicas get slices of different
    sizes (a validation set smaller than one global batch) or string inputs.
    Building needs only shapes and dtypes, which the spec has, so this builds
    once from the spec and makes that method a no-op for this model.
    """
    import types

    if model.distribute_strategy.num_replicas_in_sync <= 1:
        return
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    object.__setattr__(
        model, "_maybe_symbolic_build", types.MethodType(lambda self, iterator=None, data_batch=None: None, model)
    )


def fix_multi_worker_logs(model: keras.Model) -> None:
    """Lets Keras 3 `fit`/`evaluate` run under MultiWorkerMirroredStrategy.

    Keras 3.15 reduces each step's logs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar metric
    results ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388). Returning the logs as shape [1] makes that
    reduction valid and yields the same scalars (metric states are already
    synchronized across workers, so the mean of equal values is that value).
    """
    import types

    if not isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    for name in ("train_step", "test_step"):
        step = getattr(type(model), name)

        def wrapped(self, data, _step=step):
            return {k: tf.reshape(v, [1]) for k, v in _step(self, data).items()}

        object.__setattr__(model, name, types.MethodType(wrapped, model))


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits until every worker gets here (a no-op on one worker).

    Under MultiWorkerMirroredStrategy a worker that exits while the chief still
    saves or evaluates is seen by the chief's coordination service as a crash;
    a final all-reduce keeps every worker alive until all are done.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
