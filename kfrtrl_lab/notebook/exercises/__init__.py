"""Checkers for the lessons' exercises: one module a lesson (``lesson01`` … ``lesson08``).

An exercise in a notebook is three kinds of cell, in this order:

- a code cell tagged ``exercise``: the stub the student completes; it raises
  ``NotImplementedError`` until then;
- one or more cells tagged ``solution`` (code or markdown; code ones hidden by default in
  JupyterLab): the instructor's answer, removed from the student version (``make student``);
- a code cell tagged ``check``: one call of a checker here, e.g.
  ``lesson02.check_p_star(p_star)``, which raises :class:`ExerciseFailed` saying what is wrong,
  or prints one line saying what was verified.

A checker compares the student's function against the package (never against numbers written
into the checker), on inputs it draws itself, so a function that only reproduces the notebook's
example does not pass.
"""

from __future__ import annotations

import math

import torch


class ExerciseFailed(AssertionError):
    """The answer is wrong; the message says how, in the lesson's notation."""


def passed(exercise: str, what: str) -> str:
    """The line a check cell prints when the answer is right."""
    line = f"✓ {exercise}: {what}"
    print(line)
    return line


def expect_close(actual, expected, what: str, rtol: float = 1e-8, atol: float = 1e-10) -> None:
    """Raise ExerciseFailed unless ``actual`` matches ``expected`` (numbers or tensors) to the
    tolerances; the message names ``what`` and the largest difference."""
    a = torch.as_tensor(actual, dtype=torch.float64) if not torch.is_tensor(actual) else actual.detach().double()
    e = torch.as_tensor(expected, dtype=torch.float64) if not torch.is_tensor(expected) else expected.detach().double()
    if a.shape != e.shape:
        raise ExerciseFailed(f"{what}: expected shape {tuple(e.shape)}, got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ExerciseFailed(f"{what}: the answer contains NaN or Inf")
    if not torch.allclose(a, e, rtol=rtol, atol=atol):
        diff = (a - e).abs().max().item()
        scale = e.abs().max().item()
        raise ExerciseFailed(f"{what}: off by up to {diff:.3g} (the expected values are of size {scale:.3g})")


def expect_true(condition: bool, message: str) -> None:
    if not condition:
        raise ExerciseFailed(message)


def relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), math.ulp(1.0))
