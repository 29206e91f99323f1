"""Training tasks by name: ``copy`` (the copy task with its curriculum) and ``ptb``
(character-level Penn Treebank). A new task is one file with a :class:`Task` subclass plus a
line in :data:`TASKS` (or :func:`register_task`)."""

from __future__ import annotations

from .base import EvaluationStopped, Task
from .copy import CopyTask
from .ptb import PTBTask

TASKS: dict[str, type[Task]] = {"copy": CopyTask, "ptb": PTBTask}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def check_task_name(name: str) -> None:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")


__all__ = ["EvaluationStopped", "Task", "CopyTask", "PTBTask", "TASKS", "register_task", "check_task_name"]
