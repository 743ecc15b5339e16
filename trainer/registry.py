"""Tasks and their configs by name: a task registers its config class and its Task class, and is found by them.

As Model Garden's `register_task_cls`: `trainer/<task>/config.py` registers the
task's `ExperimentConfig` subclass under the task's name, and `trainer/<task>/task.py`
registers its `Task` class for that config class. Adding a task means adding such a
package under `trainer/`; nothing shared is edited. Task packages are found by that
layout and imported on first lookup, so a task's dependencies load only when used.
"""

from __future__ import annotations

import importlib
import pkgutil

_CONFIGS: dict[str, type] = {}
_TASKS: dict[type, type] = {}


def register_config(name: str):
    """Class decorator registering an `ExperimentConfig` subclass as the config of task `name`."""

    def wrap(cls):
        if name in _CONFIGS and _CONFIGS[name] is not cls:
            raise ValueError(f"Task {name!r} already has config class {_CONFIGS[name].__name__}.")
        _CONFIGS[name] = cls
        return cls

    return wrap


def register_task(config_cls: type):
    """Class decorator registering a `Task` class for experiments of `config_cls`."""
    names = [n for n, c in _CONFIGS.items() if c is config_cls]
    if not names:
        raise ValueError(f"{config_cls.__name__} is not a registered task config (use register_config first).")

    def wrap(cls):
        if config_cls in _TASKS and _TASKS[config_cls] is not cls:
            raise ValueError(f"{config_cls.__name__} already has task class {_TASKS[config_cls].__name__}.")
        _TASKS[config_cls] = cls
        cls.name = names[0]
        return cls

    return wrap


def _task_packages() -> list[str]:
    """The packages under trainer/ that hold a task (a config.py and a task.py)."""
    import trainer

    found = []
    for info in pkgutil.iter_modules(trainer.__path__):
        if info.ispkg:
            subs = {m.name for m in pkgutil.iter_modules([f"{p}/{info.name}" for p in trainer.__path__])}
            if {"config", "task"} <= subs:
                found.append(info.name)
    return sorted(found)


def task_names() -> list[str]:
    """Every task name, built-in and registered."""
    return sorted(set(_task_packages()) | set(_CONFIGS))


def get_config_class(name: str) -> type:
    """The config class of task `name`.

    Raises:
      hyperparams.ConfigError: unknown name, listing the known ones.
    """
    if name not in _CONFIGS and name in _task_packages():
        importlib.import_module(f"trainer.{name}.config")
    if name not in _CONFIGS:
        from avalign import hyperparams

        raise hyperparams.ConfigError(f"Unknown task {name!r}; known tasks: {task_names()}.")
    return _CONFIGS[name]


def get_task(cfg) -> type:
    """The Task class for an experiment config (looked up by its class, as Model Garden does).

    Raises:
      ValueError: no task is registered for the config's class.
    """
    cls = type(cfg)
    if cls not in _TASKS:
        module = cls.__module__.rsplit(".", 1)[0] + ".task"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    if cls not in _TASKS:
        raise ValueError(f"No task is registered for {cls.__name__} (task {cfg.task!r}).")
    return _TASKS[cls]
