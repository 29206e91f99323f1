"""Checkers for lesson 4 (the copy task): each draws its own inputs and compares the student's
function with the package — :mod:`kfrtrl_lab.tasks.copy` and the curriculum of its ``CopyTask``."""

from __future__ import annotations

import math

import torch

from ...tasks.copy import copy_sequence
from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed


def _tokens(value, what: str) -> list[int]:
    if torch.is_tensor(value):
        if value.dim() == 2:  # one-hot rows: read the symbol of each step
            value = value.argmax(dim=1)
        value = value.tolist()
    try:
        return [int(v) for v in value]
    except TypeError as err:
        raise ExerciseFailed(f"{what}: expected a list or 1-D tensor of symbols, got {type(value).__name__}") from err


def check_copy_sequence(fn) -> str:
    """Exercise 4.1: ``fn(bits)`` returns (input symbols, target symbols) of the copy sequence that
    shows ``bits`` = b_1 … b_T, compared with ``copy_sequence`` for T = 1 … 12."""
    g = torch.Generator().manual_seed(4)
    for T in [1, 2, 3, *torch.randint(4, 13, (4,), generator=g).tolist()]:
        seed = int(torch.randint(0, 10_000, (1,), generator=g))
        x, y = copy_sequence(T, seed=seed)
        want_in, want_out = x.argmax(dim=1).tolist(), y.tolist()
        bits = want_in[1:T + 1]
        got = fn(list(bits))
        expect_true(isinstance(got, (tuple, list)) and len(got) == 2,
                    "return a pair (input symbols, target symbols)")
        got_in, got_out = _tokens(got[0], "inputs"), _tokens(got[1], "targets")
        for name, got_seq, want in (("input x_t", got_in, want_in), ("target y_t", got_out, want_out)):
            if len(got_seq) != len(want):
                raise ExerciseFailed(f"T = {T}: the {name} row has {len(got_seq)} steps; a sequence has 2T+2 = {len(want)}")
            wrong = [t for t, (a, b) in enumerate(zip(got_seq, want)) if a != b]
            if wrong:
                t = wrong[0]
                raise ExerciseFailed(f"T = {T}, bits {bits}: the {name} row differs at t = {t} "
                                     f"(got {got_seq[t]}, the task has {want[t]}); rows expected "
                                     f"{want}")
    return passed("Exercise 4.1", "your sequences equal kfrtrl_lab.tasks.copy.copy_sequence for T = 1 … 12")


def check_recall_loss(fn) -> str:
    """Exercise 4.2: ``fn(model, inputs, targets)`` returns the mean loss in bits over the recall
    steps t = T+2 … 2T+1 only, compared with ``experiments.copy_phase_losses``."""
    for seed, T in ((0, 1), (1, 3), (2, 6), (3, 9)):
        model = ex.random_model(hidden_size=8, init_std=0.5, seed=seed)
        x, y = copy_sequence(T, seed=seed, dtype=torch.float64)
        want = ex.copy_phase_losses(model, x, y)
        got = fn(model, x, y)
        got = float(got.detach()) if torch.is_tensor(got) else float(got)
        if math.isclose(got, want["mean_all"], rel_tol=1e-6):
            raise ExerciseFailed(f"T = {T}: {got:.4f} is the mean over all 2T+2 steps; average over the T recall "
                                 f"steps t = T+2 … 2T+1 only")
        if math.isclose(got, want["mean_recall"] * math.log(2), rel_tol=1e-6):
            raise ExerciseFailed(f"T = {T}: {got:.4f} is in nats; divide the cross-entropy by ln 2 for bits")
        expect_close(got, want["mean_recall"], f"T = {T}: the recall-phase loss (bits)", rtol=1e-6, atol=1e-9)
    return passed("Exercise 4.2", "your recall-phase loss in bits equals the package's for T = 1, 3, 6, 9")


def check_curriculum(fn) -> str:
    """Exercise 4.3: ``fn(losses_bits, starts)`` returns (T_max after each step, average loss after
    each step), compared with the package's ``CopyTask`` driven by the same losses."""
    g = torch.Generator().manual_seed(43)
    cases = [[0.0] * 3000,  # a perfect learner: the fastest the curriculum can go
             (0.1 * torch.rand(3000, generator=g)).tolist(),  # a noisy learner
             ([0.0] * 2200 + [0.5] * 600 + [0.0] * 1200)]  # learns, then forgets, then learns again
    for k, losses in enumerate(cases):
        trace = ex.curriculum_trace(losses, batch_size=3, seed=k)
        starts = [any(s) for s in trace["starts"]]
        got = fn(list(losses), starts)
        expect_true(isinstance(got, (tuple, list)) and len(got) == 2, "return a pair (T_max list, average list)")
        t_max, ema = list(got[0]), list(got[1])
        expect_true(len(t_max) == len(losses) and len(ema) == len(losses),
                    f"return one T_max and one average per step ({len(losses)} steps)")
        bad = [t for t, (a, b) in enumerate(zip(t_max, trace["t_max"])) if int(a) != b]
        if bad:
            t = bad[0]
            raise ExerciseFailed(f"case {k + 1}: after step {t} your T_max is {t_max[t]}, the task's is "
                                 f"{trace['t_max'][t]} (the task's average then: {trace['ema'][t]:.4f}). Check the "
                                 f"order: the rule is applied when a sequence starts, before that step's loss "
                                 f"enters the average, and the average restarts at 0.3 after a growth")
        expect_close(torch.tensor(ema, dtype=torch.float64), torch.tensor(trace["ema"], dtype=torch.float64),
                     f"case {k + 1}: the curriculum's average loss", rtol=1e-9, atol=1e-12)
    return passed("Exercise 4.3", "your curriculum grows T_max at the same steps as kfrtrl_lab's CopyTask "
                                  "in three loss histories")
