"""Training tasks by name: ``copy`` (the copy task with its curriculum), ``copy-pad`` (the LRU
paper's copy task: fixed-length 7-bit patterns, no curriculum) and ``ptb`` (character-level Penn
Treebank). A new task is one file with a :class:`Task` subclass plus a
line in :data:`TASKS` (or :func:`register_task`)."""

from __future__ import annotations

from .base import EvaluationStopped, Task
from .copy import CopyTask
from .copy_pad import PaddedCopyTask
from .ptb import PTBTask

TASKS: dict[str, type[Task]] = {"copy": CopyTask, "copy-pad": PaddedCopyTask, "ptb": PTBTask}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def check_task_name(name: str) -> None:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")


__all__ = ["EvaluationStopped", "Task", "CopyTask", "PaddedCopyTask", "PTBTask", "TASKS", "register_task", "check_task_name"]
