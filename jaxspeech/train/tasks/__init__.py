"""Task registry: ``config.task`` names a module ``jaxspeech.train.tasks.<name>`` defining
``Task``, or is a dotted path ``"package.module:Class"`` (for tasks living elsewhere); either
way the class is a :class:`jaxspeech.train.task.Task`."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from jaxspeech.errors import ConfigError
from jaxspeech.train.task import Task, TrainedRun


def available() -> list[str]:
    """Names of the task modules shipped in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def get_task_class(name: str) -> type[Task]:
    """The ``Task`` class for ``name`` (registry name or ``"module:Class"``)."""
    module_name, _, class_name = name.partition(":")
    if not class_name:
        if name not in available():
            raise ConfigError(
                f"unknown task {name!r}; available: {', '.join(available()) or 'none'} "
                "(or give a dotted path 'module:Class')"
            )
        module_name, class_name = f"{__name__}.{name}", "Task"
    try:
        found = vars(importlib.import_module(module_name)).get(class_name)
    except ImportError as err:
        raise ConfigError(f"cannot load task {name!r}: {err}") from err
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise ConfigError(
            f"cannot load task {name!r}: {module_name} has no {class_name!r} subclassing "
            "jaxspeech.train.task.Task"
        )
    return found


def make_task(config: Any, frozen: Mapping[str, TrainedRun] | None = None) -> Task:
    """Builds the task named by ``config.task`` from the whole config and the frozen earlier
    stages it reads (``{stage name: TrainedRun}``); it follows the
    :class:`jaxspeech.train.task.Task` protocol."""
    return get_task_class(config.task)(config, dict(frozen or {}))
