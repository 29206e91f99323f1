"""Checkers for lesson 3, the variance of UORO against KF-RTRL (notebooks/03_variance_uoro_vs_kf.ipynb).

Each checker draws its own inputs (random RHNs, states, sign vectors, samples) and compares the
student's function with the package: the UORO estimator's step (fed the same ν), the variance of one
KF-RTRL or UORO step measured on the package's estimators over every sign pattern
(``experiments.one_step_errors``), and the package's percentile bootstrap
(``experiments.bootstrap_interval``).
"""

from __future__ import annotations

import math

import torch

from ...estimators import make_estimator
from ...estimators import uoro as uoro_module
from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed


def _rhn(n: int, m: int = 3, seed: int = 0):
    return ex.random_model("rhn", input_size=m, hidden_size=n, init_std=0.5, seed=seed)


def _as_float(value, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ExerciseFailed(f"{what} must return one number, got {type(value).__name__}") from None
    expect_true(math.isfinite(out), f"{what} returned {out}")
    return out


# -- Exercise 3.1: one UORO step ----------------------------------------------------------------------

def package_uoro_step(n: int = 5, warmup: int = 3, seed: int = 0) -> dict:
    """One step of the PACKAGE's UORO estimator (one lane) after ``warmup`` steps of a random RHN, with
    the step's ν chosen here and fed to the estimator. Returns the step's inputs (s̃_{t-1}, θ̃_{t-1},
    H_t, x̂_t, D_t, ν) and the estimator's new factors (s̃_t, θ̃_t)."""
    model = _rhn(n, seed=seed)
    x, y = ex.random_sequence(model, warmup + 1, seed=seed + 1)
    est = make_estimator("uoro", model, 1, seed=seed + 2)
    for t in range(warmup):
        est.step_lane_gradients(x[t : t + 1], y[t : t + 1])
    g = torch.Generator().manual_seed(seed + 3)
    nu = torch.randint(0, 2, (1, n), generator=g).double() * 2 - 1
    with torch.no_grad():
        step = model.cell.step(x[warmup : warmup + 1], est.state)
        inputs = {"s_tilde": est.state_factor[0].clone(), "theta_tilde": est.param_factor[0].clone(),
                  "H": step.H_dense()[0], "x_hat": step.x_hat[0], "D": step.D_dense()[0], "nu": nu[0]}
    with ex._fixed_signs(uoro_module, nu):
        est.step_lane_gradients(x[warmup : warmup + 1], y[warmup : warmup + 1])
    return {**inputs, "s_new": est.state_factor[0].clone(), "theta_new": est.param_factor[0].clone(), "eps": est.eps}


def check_uoro_step(uoro_step) -> str:
    """``uoro_step(s_tilde, theta_tilde, H, x_hat, D, nu, eps)`` → (s̃_t (n,), θ̃_t (a, r_g n)) against
    the package's UORO estimator fed the same ν, from a reset (s̃ = 0, θ̃ = 0) and from warm states."""
    for seed, (n, warmup) in enumerate(((4, 0), (5, 3), (7, 6))):
        ref = package_uoro_step(n, warmup, seed=10 + seed)
        answer = uoro_step(ref["s_tilde"].clone(), ref["theta_tilde"].clone(), ref["H"].clone(), ref["x_hat"].clone(),
                           ref["D"].clone(), ref["nu"].clone(), ref["eps"])
        expect_true(isinstance(answer, (tuple, list)) and len(answer) == 2,
                    "uoro_step must return the pair (s̃_t, θ̃_t)")
        s_new, theta_new = answer
        expect_true(torch.is_tensor(s_new) and torch.is_tensor(theta_new), "s̃_t and θ̃_t must be tensors")
        expect_true(tuple(theta_new.shape) == tuple(ref["theta_new"].shape),
                    f"θ̃_t is shaped like W, (a, r_g n) = {tuple(ref['theta_new'].shape)}; got {tuple(theta_new.shape)} "
                    "(δθ = νF_t = x̂_tᵀ(νD_t) is an outer product)")
        # the product s̃ᵀθ̃ is what the estimate is: check it first, the split between factors next
        expect_close(torch.outer(s_new.double(), theta_new.double().flatten()),
                     torch.outer(ref["s_new"], ref["theta_new"].flatten()),
                     f"the new estimate s̃_tᵀθ̃_t (n = {n}, {warmup} warm-up steps)", rtol=1e-6, atol=1e-12)
        expect_close(s_new, ref["s_new"], "s̃_t = ρ0 H_t s̃_{t-1} + ρ1 ν (check ρ0, ρ1)", rtol=1e-6, atol=1e-12)
        expect_close(theta_new, ref["theta_new"], "θ̃_t = θ̃_{t-1}/ρ0 + δθ/ρ1", rtol=1e-6, atol=1e-12)
    return passed("Exercise 3.1", "your UORO step equals the package's for the same ν (n = 4 from a reset, 5 and 7 warm)")


# -- Exercise 3.2: the variance of one KF-RTRL step ----------------------------------------------------

def _kf_cases():
    """(name, setup) pairs: a random RHN's step from the rank-one part of its exact G_{t-1}, with u
    aligned with x̂ (so ⟨u, x̂⟩⟨M, D⟩ is far from 0) and at another scale."""
    yield "n = 5", ex.one_step_setup(5, warmup=3, seed=21)
    yield "n = 7, G_{t-1} × 30", ex.one_step_setup(7, warmup=5, seed=22, scale=30.0)
    setup = ex.one_step_setup(6, warmup=4, seed=23)
    # u turned towards x̂ (same norm): the inner-product term matters
    u = setup["u"] + 0.7 * setup["u"].norm() * setup["x_hat"] / setup["x_hat"].norm()
    setup["u"] = u * setup["u"].norm() / u.norm()
    setup["HG"] = torch.einsum("a,ic->iac", setup["u"], setup["M"])
    setup["target"] = setup["HG"] + setup["F"]
    yield "n = 6, u close to x̂", setup


def check_kf_step_variance(kf_step_variance) -> str:
    """``kf_step_variance(u, M, x_hat, D)`` → E‖Ĝ_t − Γ_t‖² of one KF-RTRL step with the optimal
    p's, against the package's KF-RTRL estimator run once for each of the four sign pairs (c1, c2)."""
    for name, setup in _kf_cases():
        measured = ex.one_step_errors(setup, "kf-rtrl")["measured"]
        answer = _as_float(kf_step_variance(setup["u"].clone(), setup["M"].clone(), setup["x_hat"].clone(),
                                            setup["D"].clone()), "kf_step_variance")
        inner = float((setup["u"] @ setup["x_hat"]) * (setup["M"] * setup["D"]).sum())
        if not math.isclose(answer, measured, rel_tol=1e-8, abs_tol=1e-12):
            raise ExerciseFailed(
                f"{name}: you predict E‖Ĝ_t − Γ_t‖² = {answer:.6g}, the package's step gives {measured:.6g} "
                f"(exact, all four sign pairs; here 2⟨u, x̂⟩⟨M, D⟩ = {2 * inner:.4g}). Expand "
                "‖α u⊗D + α⁻¹ x̂⊗M‖² and put in the optimal α = p1/p2.")
    return passed("Exercise 3.2", "E‖Ĝ_t − Γ_t‖² = 2‖u‖‖M‖‖x̂‖‖D‖ + 2⟨u, x̂⟩⟨M, D⟩ matches the package's KF-RTRL "
                                  "step exactly (three states, one with u close to x̂)")


# -- Exercise 3.3: both one-step variances for orthogonal u and x̂ ------------------------------------

def check_orthogonal_variances(orthogonal_step_variances) -> str:
    """``orthogonal_step_variances(n, norm_HG, norm_F)`` → (V_KF, V_UORO), the variance added by one
    step of each method from the same G_{t-1} when ⟨u, x̂_t⟩ = 0, against both package estimators
    run over all their sign patterns (UORO: all 2^n vectors ν)."""
    for seed, (n, scale) in enumerate(((4, 1.0), (6, 10.0), (9, 0.1))):
        setup = ex.one_step_setup(n, warmup=3, seed=31 + seed, orthogonal=True, scale=scale)
        kf, uoro = (ex.one_step_errors(setup, m)["measured"] for m in ("kf-rtrl", "uoro"))
        norm_HG, norm_F = setup["HG"].norm().item(), setup["F"].norm().item()
        answer = orthogonal_step_variances(n, norm_HG, norm_F)
        expect_true(isinstance(answer, (tuple, list)) and len(answer) == 2,
                    "orthogonal_step_variances must return the pair (V_KF, V_UORO)")
        v_kf, v_uoro = (_as_float(v, "orthogonal_step_variances") for v in answer)
        if not math.isclose(v_kf, kf, rel_tol=1e-6):
            raise ExerciseFailed(f"n = {n}: V_KF = {v_kf:.6g}, the package's KF-RTRL step gives {kf:.6g} "
                                 f"(‖H_t G_{{t-1}}‖ = {norm_HG:.4g}, ‖F_t‖ = {norm_F:.4g}, ⟨u, x̂⟩ = 0)")
        # UORO's ρ's carry an ε = 1e-7 guard: the measured value is the minimum to about 1e-7 relative
        if not math.isclose(v_uoro, uoro, rel_tol=1e-5):
            raise ExerciseFailed(f"n = {n}: V_UORO = {v_uoro:.6g}, the package's UORO step gives {uoro:.6g} "
                                 f"(exact over all 2^{n} vectors ν; ‖H_t G_{{t-1}}‖ = {norm_HG:.4g}, "
                                 f"‖F_t‖ = {norm_F:.4g}). Which terms of (νᵀν − I)F_t + β sᵀ(νF_t) + β⁻¹νᵀθ̃ survive "
                                 "the expectation, and what does each contribute?")
    return passed("Exercise 3.3", "V_KF = 2‖HG‖‖F‖ and V_UORO = (n − 1)‖F‖² + 2√n‖HG‖‖F‖ match both package "
                                  "estimators (n = 4, 6, 9; exact over every sign pattern)")


# -- Exercise 3.4: a bootstrap interval ------------------------------------------------------------------

def check_bootstrap_interval(bootstrap_interval) -> str:
    """``bootstrap_interval(values, resamples, level, seed)`` → (low, high), the percentile bootstrap
    interval of the mean by the recipe of ``experiments.bootstrap_interval``, against it."""
    g = torch.Generator().manual_seed(41)
    cases = [(torch.rand(50, generator=g, dtype=torch.float64) ** 3 * 40, 500, 0.95, 0),
             (torch.randn(200, generator=g, dtype=torch.float64).exp(), 1000, 0.9, 7),
             (torch.rand(13, generator=g, dtype=torch.float64), 300, 0.5, 3)]
    for values, resamples, level, seed in cases:
        expected = ex.bootstrap_interval(values, resamples, level, seed)
        answer = bootstrap_interval(values.clone(), resamples, level, seed)
        expect_true(isinstance(answer, (tuple, list)) and len(answer) == 2, "bootstrap_interval must return (low, high)")
        low, high = (_as_float(v, "bootstrap_interval") for v in answer)
        expect_true(low <= values.mean().item() <= high or level < 0.6,
                    f"your {level:.0%} interval ({low:.4g}, {high:.4g}) misses the sample mean {values.mean():.4g}")
        expect_close(torch.tensor([low, high]), torch.tensor(expected),
                     f"the {level:.0%} interval of {len(values)} values from {resamples} resamples (seed {seed})",
                     rtol=1e-9, atol=1e-12)
    return passed("Exercise 3.4", "your percentile bootstrap gives the package's intervals (3 samples, 3 levels)")
