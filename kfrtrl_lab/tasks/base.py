"""What the online trainer asks of a task (one file a task, plus a line in ``TASKS``)."""

from __future__ import annotations

import math

import torch

#: a logged loss this many times an untrained model's (a uniform guess: log2 of the classes) is a
#: diverged run's, even when every number is finite
DIVERGENCE_FACTOR = 10


class EvaluationStopped(Exception):
    """An evaluation was cut short by a stop request (Ctrl-C): it has no result."""


class Task:
    """B lanes of a stream of (input, target) steps.

    Per step: ``x, y, starts = task.next()`` gives inputs (B, m), targets (B,) and the lanes that
    start a new sequence at this step (the trainer resets their state and influence first);
    after the step ``task.observe(losses_nats)`` returns the step's loss in bits and feeds any
    curriculum.
    """

    name: str = ""
    #: the sizes the task suggests when the run does not give them (e.g. {"hidden": 128, "batch": 16})
    defaults: dict = {}
    #: True when :meth:`evaluate` scores the model on held-out data (the trainer calls it every
    #: ``eval_every`` steps)
    evaluates: bool = False
    input_size: int
    output_size: int
    #: the RunConfig fields only this task reads (a run of another task refuses them)
    options: tuple[str, ...] = ()

    @property
    def divergence_bits(self) -> float:
        """A logged loss above this (DIVERGENCE_FACTOR times an untrained model's: a uniform guess,
        log2 of the classes) on several lines in a row means the run has diverged."""
        return DIVERGENCE_FACTOR * math.log2(self.output_size)

    @classmethod
    def config_sizes(cls, config) -> tuple[int, int]:
        """(input size, classes) of the task a run of ``config`` builds (before it is built)."""
        return cls.input_size, cls.output_size

    @classmethod
    def buffer_bytes(cls, config) -> int:
        """About how many bytes the task holds for a run of ``config`` (data, lanes' positions)."""
        return 0

    @classmethod
    def check_config(cls, config, aligned: bool = False) -> None:
        """Raise ValueError for a configuration the task cannot run, before any data load.
        ``aligned``: the method needs every lane to start its sequences at the same steps."""

    @classmethod
    def from_config(cls, config, device, aligned: bool = False) -> "Task":
        raise NotImplementedError

    @property
    def aligned_starts(self) -> bool:
        """True when all lanes always start their sequences at the same steps."""
        return False

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def observe(self, losses_nats: torch.Tensor) -> float:
        raise NotImplementedError

    def sequences_end(self) -> bool:
        """True when the step just taken ended every lane's sequence (only asked, with a read-back,
        of tasks whose lanes start together, by full BPTT)."""
        return False

    def metrics(self) -> dict:
        """Task-specific numbers for the metrics line (e.g. the curriculum's T_max)."""
        return {}

    def evaluate(self, model, split: str = "valid", batch_size: int = 32, stop=None) -> dict:
        """Scores on held-out data; ``stop``: a callable polled as the pass goes, which raises
        :class:`EvaluationStopped` when it returns True (a long pass must not delay a Ctrl-C)."""
        return {}

    def finish(self, model) -> dict:
        """Extra fields for the run summary at the end of a run."""
        return {}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError
