"""What a finished training run exports, found by entry point so that the trainer never imports the serving layer.

A package registers an exporter for a task in its `setup.py`:

    entry_points={"avalign.exporters": ["retrieval = serving.export:export_after_training"]}

An exporter is `export(task, model, export_root) -> list of paths written`,
called on the chief with the trained task (best weights loaded) once training
finishes. avalign's own exporters are registered by its `setup.py`; an
installation without them (e.g. a Beam worker image) trains and exports nothing.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Callable

GROUP = "avalign.exporters"


def for_task(task_name: str) -> list[Callable]:
    """The exporters registered for `task_name`, in entry-point name order.

    Raises:
      ImportError: a registered exporter cannot be imported (a broken installation
        should stop the run, not skip its exports silently).
    """
    found = sorted(
        (ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == task_name), key=lambda ep: ep.value
    )
    if not found:
        logging.info("No exporter is registered for task %r (entry point group %s).", task_name, GROUP)
    return [ep.load() for ep in found]
