"""Maps a config's task name to its Task class; a new task registers itself."""

from __future__ import annotations

import importlib

_TASKS: dict[str, type] = {}
# Modules that define the built-in tasks; imported on first lookup so that a
# task's dependencies load only when it is used.
_BUILTIN = {"localization": "trainer.localization.task", "retrieval": "trainer.retrieval.task"}


def register_task(name: str):
    """Class decorator registering a Task under `name`."""

    def wrap(cls):
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(f"Task {name!r} is already registered by {_TASKS[name].__name__}.")
        _TASKS[name] = cls
        cls.name = name
        return cls

    return wrap


def get_task(name: str) -> type:
    """Returns the Task class for `name`.

    Raises:
      ValueError: unknown name, listing the known ones.
    """
    if name not in _TASKS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}; known tasks: {sorted(set(_TASKS) | set(_BUILTIN))}.")
    return _TASKS[name]
