"""The study's benchmarks, one :class:`Task` each. Add a benchmark: a module here, an entry in ``TASKS``, its
prompt texts under ``benchmarks:`` in config/conditions.yaml and its pinned files in config/sources.yaml."""

from __future__ import annotations

from .base import Task
from .bbq import BBQ
from .winogender import Winogender

TASKS: dict[str, Task] = {t.name: t for t in (BBQ(), Winogender())}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(TASKS)}") from None


__all__ = ["TASKS", "Task", "get_task"]
