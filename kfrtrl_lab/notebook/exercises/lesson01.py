"""Checkers for lesson 1 (RTRL from scratch), in the notation of docs/notation.md.

Every checker draws its own tanh RNNs h_t = tanh(x̂_t W) (r_g = 1; the RHN too where the exercise
is not tanh-specific) and compares the student's function with the package: the cell's own
Jacobians (``CellStep.H_dense``, ``CellStep.add_immediate``, and torch.autograd on the cell),
``kl.RTRL``'s influence update and gradient, ``kl.true_gradient``, and the costs measured on the
package by ``experiments.measured_counts``.
"""

from __future__ import annotations

import torch

from ...analysis import true_gradient
from ...estimators import make_estimator
from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed

#: (m, n) of the networks the checkers draw: never the lesson's own example sizes alone
SIZES = ((3, 4), (2, 6), (5, 3))


def _tanh_point(m: int, n: int, seed: int):
    """A float64 tanh RNN of the package and a random (x_t, h_{t-1}) with |h| < 1."""
    model = ex.random_model("tanh", m, n, 4, init_std=0.6, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(m, generator=g, dtype=torch.float64)
    h_prev = torch.randn(n, generator=g, dtype=torch.float64).tanh()
    return model, x, h_prev


def _package_jacobians(model, x, h_prev):
    """(H_t (n, n), F_t (n, a, n)) from the package's cell step."""
    c, n = model.cell, model.hidden_size
    with torch.no_grad():
        step = c.step(x[None], h_prev.view(1, 1, n))
        H = step.H_dense()[0]
        F = torch.zeros(1, n, *c.weight.shape, dtype=x.dtype)
        step.add_immediate(F)
    return H, F[0]


def check_tanh_jacobians(tanh_jacobians) -> str:
    """Exercise 1.1: ``tanh_jacobians(x_t, h_prev, W)`` -> (H_t, F_t) of h_t = tanh(x̂_t W), with
    H_t = ∂h_t/∂h_{t-1} (n × n) and F_t[j, i, c] = ∂h_t,j/∂W_{i,c} at fixed h_{t-1} (n × a × n)."""
    for k, (m, n) in enumerate(SIZES):
        model, x, h_prev = _tanh_point(m, n, seed=10 + k)
        W = model.cell.weight.detach().clone()
        answer = tanh_jacobians(x.clone(), h_prev.clone(), W.clone())
        expect_true(isinstance(answer, (tuple, list)) and len(answer) == 2,
                    "return the pair (H_t, F_t)")
        H, F = (torch.as_tensor(a) for a in answer)
        H_pkg, F_pkg = _package_jacobians(model, x, h_prev)
        # an independent witness: autograd on the package's cell itself
        def cell_h(W_, h_):
            return torch.func.functional_call(model.cell, {"weight": W_}, (x[None], h_.view(1, 1, n)))[0, 0]
        H_auto = torch.autograd.functional.jacobian(lambda h_: cell_h(W, h_), h_prev)
        F_auto = torch.autograd.functional.jacobian(lambda W_: cell_h(W_, h_prev), W)
        expect_close(H_pkg, H_auto, "package H_t against autograd (a bug in the package, not in your answer)")
        expect_close(F_pkg, F_auto, "package F_t against autograd (a bug in the package, not in your answer)")
        if H.shape == H_pkg.shape and torch.allclose(H.double(), H_pkg.T, atol=1e-10) and n > 1 \
                and not torch.allclose(H_pkg, H_pkg.T, atol=1e-10):
            raise ExerciseFailed("H_t is transposed: row j of H_t = ∂h_t/∂h_{t-1} belongs to unit j of h_t, "
                                 "so H_t = diag(1 − h_t²) W_hᵀ (W_h: the n rows of W that read h_{t-1})")
        expect_close(H, H_pkg, f"H_t = ∂h_t/∂h_{{t-1}} (m={m}, n={n})")
        if F.shape != F_pkg.shape:
            raise ExerciseFailed(f"F_t must have shape (n, a, n) = {tuple(F_pkg.shape)}: "
                                 f"F_t[j, i, c] = ∂h_t,j/∂W_(i,c); got {tuple(F.shape)}")
        expect_close(F, F_pkg, f"F_t = ∂h_t/∂θ at fixed h_{{t-1}} (m={m}, n={n})")
    return passed("Exercise 1.1", "H_t = diag(1 − h_t²) W_hᵀ and F_t = x̂_t ⊗ diag(1 − h_t²) match the package's "
                  "cell and autograd for three tanh RNNs")


def check_influence_step(influence_step) -> str:
    """Exercise 1.2: ``influence_step(G_prev, x_t, h_prev, W)`` -> G_t = H_t G_{t-1} + F_t, checked
    against one step of ``kl.RTRL`` started from the same G_{t-1} and h_{t-1}."""
    for k, (m, n) in enumerate(SIZES):
        model, x, h_prev = _tanh_point(m, n, seed=20 + k)
        W = model.cell.weight.detach().clone()
        a = W.shape[0]
        g = torch.Generator().manual_seed(200 + k)
        for G_prev in (torch.zeros(n, a, n, dtype=torch.float64),
                       torch.randn(n, a, n, generator=g, dtype=torch.float64)):
            est = make_estimator("rtrl", model, 1, reduction="sum")
            est.state = h_prev.view(1, 1, n).clone()
            est.influence = G_prev[None].clone()
            est.step(x[None], torch.zeros(1, dtype=torch.long))
            expected = est.influence[0]
            G = torch.as_tensor(influence_step(G_prev.clone(), x.clone(), h_prev.clone(), W.clone()))
            what = "G_1 = F_1 from G_0 = 0" if not G_prev.any() else "G_t = H_t G_{t-1} + F_t from a random G_{t-1}"
            if G.shape != expected.shape:
                raise ExerciseFailed(f"G_t must have shape (n, a, n) = {tuple(expected.shape)}; got {tuple(G.shape)}")
            expect_close(G, expected, f"{what} (m={m}, n={n})")
    return passed("Exercise 1.2", "your influence step equals kl.RTRL's, from G_0 = 0 and from a random G_{t-1}")


def check_gradient_from_influence(gradient_from_influence) -> str:
    """Exercise 1.3: ``gradient_from_influence(dL_dh, G)`` -> dL_t/dW = ∂L_t/∂h_t G_t, shape (a, r_g n).
    Checked at every step of a sequence run by ``kl.RTRL`` (tanh and RHN), and its sum over the
    steps against ``kl.true_gradient`` (BPTT by autograd)."""
    for k, cell in enumerate(("tanh", "rhn")):
        model = ex.random_model(cell, 3, 5, 4, init_std=0.5, seed=30 + k)
        x, y = ex.random_sequence(model, 9, seed=31 + k)
        est = make_estimator("rtrl", model, 1, reduction="sum")
        total = torch.zeros_like(model.cell.weight)
        for t in range(len(x)):
            _, package = est.step_lane_gradients(x[t : t + 1], y[t : t + 1])
            with torch.no_grad():
                _, dl_dh, _ = model.readout_step(est.h, y[t : t + 1], torch.ones(1, dtype=x.dtype))
            g = torch.as_tensor(gradient_from_influence(dl_dh[0].clone(), est.influence[0].clone()))
            if g.shape != package[0].shape:
                raise ExerciseFailed(f"dL_t/dW has W's shape (a, r_g n) = {tuple(package[0].shape)}; got {tuple(g.shape)}")
            expect_close(g, package[0], f"dL_t/dW at step t = {t + 1} ({cell} cell, r_g = {model.cell.gate_blocks})")
            total = total + g
        expect_close(total.flatten(), true_gradient(model, x, y), f"Σ_t dL_t/dW against BPTT ({cell} cell)",
                     rtol=1e-7, atol=1e-10)
    return passed("Exercise 1.3", "∂L_t/∂h_t G_t equals kl.RTRL's gradient at every step, and summed over the "
                  "sequence the BPTT gradient (tanh and RHN)")


def check_costs(rtrl_bptt_costs) -> str:
    """Exercise 1.4: ``rtrl_bptt_costs(n, m, r_g, T)`` -> dict with P, rtrl_memory (numbers in G_t),
    rtrl_madds_per_step (multiply-adds of H_t G_{t-1}), bptt_memory (numbers autograd keeps for the
    backward pass of a tanh RNN over T steps) and bptt_madds_per_sequence (multiply-adds of the
    forward and backward matrix products over T steps), all for one lane. Checked against the
    counts measured on the package (``experiments.measured_counts``)."""
    keys = ("P", "rtrl_memory", "rtrl_madds_per_step", "bptt_memory", "bptt_madds_per_sequence")
    for cell, m, n, T in (("tanh", 3, 5, 7), ("tanh", 6, 9, 12), ("rhn", 4, 6, 10)):
        measured = ex.measured_counts(cell, m, n, T)
        r_g = measured["r_g"]
        answer = rtrl_bptt_costs(n, m, r_g, T)
        expect_true(isinstance(answer, dict) and all(k in answer for k in keys),
                    f"return a dict with the keys {', '.join(keys)}")
        where = f"(n={n}, m={m}, r_g={r_g}, T={T})"
        for key, what in (("P", "P = |θ|, the entries of W"), ("rtrl_memory", "RTRL's memory: the numbers in G_t"),
                          ("rtrl_madds_per_step", "RTRL's multiply-adds per step in H_t G_{t-1}")):
            expect_true(float(answer[key]) == measured[key],
                        f"{what} {where}: you say {answer[key]}, the package has {measured[key]}")
        # the first step needs no δ_1 Wᵀ (h_0 does not depend on θ): an answer that counts it is fine
        P = measured["P"]
        madds = float(answer["bptt_madds_per_sequence"])
        expect_true(abs(madds - measured["bptt_madds_per_sequence"]) <= P,
                    f"BPTT's multiply-adds over the sequence {where}: you say {madds:g}, the FLOP counter measures "
                    f"{measured['bptt_madds_per_sequence']} (within P = {P} is accepted) — count the forward "
                    f"product x̂_t W and both backward products per step")
        if r_g == 1:  # what autograd keeps depends on the cell's gates; the lesson counts the tanh RNN's
            expect_true(float(answer["bptt_memory"]) == measured["bptt_memory"],
                        f"BPTT's memory for the tanh RNN {where}: you say {answer['bptt_memory']}, autograd keeps "
                        f"{measured['bptt_memory']} numbers — which vectors does the backward pass of one step need?")
    return passed("Exercise 1.4", "your counts match what the package measures: RTRL's n·P numbers and n²·P "
                  "multiply-adds per step, BPTT's numbers and multiply-adds over a sequence")
