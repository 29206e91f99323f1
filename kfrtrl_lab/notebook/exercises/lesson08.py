"""Checkers for lesson 8 (when RTRL is cheap: diagonal recurrences, the LRU's traces). Each draws its
own inputs and compares the student's function with the package: the traces and the λ-gradient of
``estimators/lru_rtrl.py`` stepping a random LRU (``kl.LRURTRL``), and the diagonal cut of
``experiments.diagonal_recurrence`` with SnAp-1 then equal to exact RTRL."""

from __future__ import annotations

import random

import torch

from ...analysis import gradient_samples, relative_error, true_gradient
from .. import experiments as ex
from . import expect_close, expect_true, passed


def _lru_run(rng: random.Random):
    """A random float64 LRU model, its exact-RTRL estimator over 3 lanes and 6 random steps of inputs."""
    N, H = rng.randint(2, 6), rng.randint(2, 4)
    ring = rng.choice(list(ex.LAMBDA_RINGS.values()))
    model = ex.lru_model(H, N, 3, *ring, seed=rng.randint(0, 999))
    est = ex.make_estimator("rtrl", model, 3, seed=0)
    g = torch.Generator().manual_seed(rng.randint(0, 999))
    xs = torch.randn(6, 3, H, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 3, (6, 3), generator=g)
    return model, est, xs, ys


def check_lru_traces(lru_traces) -> str:
    """``lru_traces(e_lam, e_gam, E_B, lam, gamma, h_prev, bx, x)`` -> (e^λ_t, e^γ_t, E^B_t) for every
    lane: e_lam, e_gam (L, N_u) and E_B (L, N_u, H_w) complex, the traces at t−1; lam (N_u,) complex
    λ; gamma (N_u,) real γ; h_prev (L, N_u) h_{t-1}; bx (L, N_u) B_in x_t; x (L, H_w) real x_t.
    Compared with the package's LRURTRL stepping random LRUs (three lanes, six steps each)."""
    rng = random.Random(8001)
    for case in range(4):
        model, est, xs, ys = _lru_run(rng)
        c = model.cell
        for t in range(xs.shape[0]):
            before = [v.clone() for v in (est.trace_lambda, est.trace_gamma, est.trace_B, est.state)]
            with torch.no_grad():
                lam, gamma, bx = c.eigenvalues(), c.input_scale(), c.projected_input(xs[t])
            est.step(xs[t], ys[t])
            got = lru_traces(*[v.clone() for v in before[:3]], lam.clone(), gamma.clone(), before[3],
                             bx.clone(), xs[t].clone())
            expect_true(isinstance(got, (tuple, list)) and len(got) == 3, "lru_traces must return (e_lam, e_gam, E_B)")
            where = f"step {t + 1} of a random LRU (N_u = {c.hidden_size}, H_w = {c.input_size}, case {case + 1})"
            for mine, theirs, name in zip(got, (est.trace_lambda, est.trace_gamma, est.trace_B), ("e^λ", "e^γ", "E^B")):
                mine = torch.as_tensor(mine)
                expect_true(mine.is_complex(), f"{name} must stay complex (λ is complex)")
                expect_close(torch.view_as_real(mine.resolve_conj()), torch.view_as_real(theirs),
                             f"{name} at {where}", rtol=1e-10, atol=1e-12)
    return passed("Exercise 8.2", "the three traces agree with the package's exact RTRL of the LRU on 4 random "
                                  "LRUs, 3 lanes, 6 steps")


def check_lambda_gradient(lambda_gradient) -> str:
    """``lambda_gradient(delta, e_lam, lam, nu, theta)`` -> (dL_t/dν_λ, dL_t/dθ_λ), each (L, N_u) real, per
    lane: delta (L, N_u) complex ∂L_t/∂h_t in torch's convention (∂L/∂Re h + i ∂L/∂Im h), e_lam (L, N_u)
    the trace e^λ_t, lam (N_u,) λ, nu and theta (N_u,) the parameters ν_λ, θ_λ. Compared with the
    package's per-lane recurrent gradient on random LRUs and random δ."""
    rng = random.Random(8002)
    for case in range(4):
        model, est, xs, ys = _lru_run(rng)
        c = model.cell
        N = c.hidden_size
        g = torch.Generator().manual_seed(rng.randint(0, 999))
        for t in range(xs.shape[0]):
            est.step(xs[t], ys[t])
            delta = torch.randn(3, N, generator=g, dtype=torch.complex128)
            with torch.no_grad():
                want = est.recurrent_gradient(delta, per_lane=True)
                got = lambda_gradient(delta.clone(), est.trace_lambda.clone(), c.eigenvalues().clone(),
                                      c.nu.detach().clone(), c.theta.detach().clone())
            expect_true(isinstance(got, (tuple, list)) and len(got) == 2, "lambda_gradient must return (d_nu, d_theta)")
            where = f"step {t + 1}, random δ (N_u = {N}, case {case + 1})"
            expect_close(got[0], want[:, :N], f"dL/dν_λ at {where}", rtol=1e-10, atol=1e-12)
            expect_close(got[1], want[:, N:2 * N], f"dL/dθ_λ at {where}", rtol=1e-10, atol=1e-12)
    return passed("Exercise 8.3", "dL/dν_λ and dL/dθ_λ agree with the package on 4 random LRUs, 6 steps, random δ")


def check_keep_diagonal(keep_diagonal) -> str:
    """``keep_diagonal(rows, n)`` -> the recurrent rows of W, (n, r_g·n), with every block W_h^g cut to
    its diagonal (column g·n + j of row i kept only when i = j). Compared with the package's
    ``experiments.diagonal_recurrence`` on random tanh RNNs, RHNs and LSTMs; on the model built from
    the answer, SnAp-1 must then equal BPTT."""
    rng = random.Random(8003)
    for cell in ("tanh", "rhn", "lstm"):
        n, m = rng.randint(3, 7), rng.randint(2, 4)
        model = ex.random_model(cell, m, n, 3, init_std=0.5, seed=rng.randint(0, 999))
        c = model.cell
        rows = c.weight[c.recurrent_rows].detach().clone()
        got = torch.as_tensor(keep_diagonal(rows.clone(), n))
        want = ex.diagonal_recurrence(model).cell.weight[c.recurrent_rows].detach()
        expect_close(got, want, f"the recurrent rows of a {cell} cell (n = {n}, {c.gate_blocks} blocks)",
                     rtol=0, atol=0)
        with torch.no_grad():
            c.weight[c.recurrent_rows] = got.to(c.weight.dtype)
        x, y = ex.random_sequence(model, 8, seed=rng.randint(0, 999))
        error = relative_error(gradient_samples(model, x, y, "snap-1", 1), true_gradient(model, x, y))
        expect_true(error < 1e-20, f"with your diagonal {cell} cell SnAp-1's relative error is {error:.2e}, not 0")
    return passed("Exercise 8.1", "the diagonal cut agrees with the package on tanh, RHN and LSTM cells, and SnAp-1 "
                                  "is then exact")
