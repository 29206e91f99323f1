"""Checkers for lesson 5 (char-PTB): each draws its own inputs and compares the student's function
with the package — :func:`kfrtrl_lab.tasks.ptb.evaluate_bpc`, the staggered ``PTBStream`` and the
trainer's update schedule (:func:`experiments.updates_made`)."""

from __future__ import annotations

import math

import torch

from ...tasks.ptb import evaluate_bpc
from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed


def check_bits_per_character(fn) -> str:
    """Exercise 5.1: ``fn(model, ids)`` returns the bits per character of ``model`` on one stream
    ``ids``, the state carried from h_0 = 0 to the end, compared with ``evaluate_bpc(…, batch_size=1)``."""
    g = torch.Generator().manual_seed(5)
    for seed, (vocab, length) in enumerate(((5, 40), (11, 90), (7, 150))):
        model = ex.random_model(input_size=vocab, output_size=vocab, hidden_size=8, init_std=0.5, seed=seed)
        ids = torch.randint(0, vocab, (length,), generator=g)
        want = evaluate_bpc(model, ids, batch_size=1)
        got = fn(model, ids)
        got = float(got.detach()) if torch.is_tensor(got) else float(got)
        if math.isclose(got, want * math.log(2), rel_tol=1e-6):
            raise ExerciseFailed(f"{got:.4f} is the mean cross-entropy in nats; BPC divides it by ln 2")
        expect_close(got, want, f"BPC of a random RHN on {length} symbols of a {vocab}-symbol text "
                                "(state carried, every successor predicted once)", rtol=1e-6, atol=1e-9)
    return passed("Exercise 5.1", "your BPC equals kfrtrl_lab.tasks.ptb.evaluate_bpc on three texts")


def check_staggered_resets(fn) -> str:
    """Exercise 5.2: ``fn(length, batch_size, reset_every, steps)`` returns the (steps, B) reset mask
    of the official staggered layout, compared with ``PTBStream(layout="staggered")``."""
    for length, B, R, steps in ((1000, 4, 100, 260), (997, 3, 50, 400), (640, 8, 30, 90), (5000, 32, 100, 300)):
        want = ex.staggered_reset_mask(length, B, R, steps)
        got = torch.as_tensor(fn(length, B, R, steps)).bool()
        if got.shape != want.shape:
            raise ExerciseFailed(f"expected a mask of shape (steps, B) = {tuple(want.shape)}, got {tuple(got.shape)}")
        if not torch.equal(got, want):
            t, b = (got != want).nonzero()[0].tolist()
            raise ExerciseFailed(f"N = {length} characters, B = {B}, R = {R}: lane {b} at step {t} should "
                                 f"{'' if want[t, b] else 'not '}reset (its position in the text is "
                                 f"({b}·⌊N/B⌋ + {t}) mod N = {(b * (length // B) + t) % length}; every lane also "
                                 f"resets at the first step)")
    return passed("Exercise 5.2", "your reset masks equal the staggered PTBStream's in four layouts")


def check_updates_made(fn) -> str:
    """Exercise 5.3: ``fn(method, steps, update_every)`` returns how many Adam steps the trainer makes,
    compared with ``experiments.updates_made`` (itself checked against the trainer in the tests)."""
    g = torch.Generator().manual_seed(53)
    cases = [("kf-rtrl", 200_000, 1), ("tbptt-16", 200_000, 1), ("uoro", 1000, 7), ("tbptt-4", 100, 6),
             ("tbptt-8", 1000, 8), ("tbptt-16", 1000, 20)]
    for _ in range(20):
        tau = int(torch.randint(1, 33, (1,), generator=g))
        method = ["kf-rtrl", "uoro", "rtrl", f"tbptt-{tau}"][int(torch.randint(0, 4, (1,), generator=g))]
        cases.append((method, int(torch.randint(1, 100_000, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))))
    for method, steps, u in cases:
        want = ex.updates_made(method, steps, u)
        got = fn(method, steps, u)
        expect_true(int(got) == want, f"{method}, N = {steps} steps, an update every u = {u} steps: the trainer "
                                      f"makes {want} Adam steps, you say {got}")
    return passed("Exercise 5.3", f"your update counts equal the trainer's schedule in {len(cases)} cases")
