"""Checkers for lesson 7 (OK-r, KF-AVG-K, SnAp-1). Each draws its own inputs and compares the
student's function with the package: the split and the mixing of ``estimators/ok.py`` (called on
the drawn singular values), the exact error of one OK step enumerated over its sign patterns
(``experiments.ok_step_target``), and the package's SnAp-1 estimator stepping a random RHN."""

from __future__ import annotations

import random

import torch

from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed


def _ok(r: int):
    """A one-lane OK-r estimator on a tiny model: its split and mixing are the package's."""
    model = ex.random_model("rhn", 2, 3, 2, seed=0)
    return ex.make_estimator(f"ok-{r}", model, 1, seed=0)


def _draw_sigma(rng: random.Random, r: int) -> torch.Tensor:
    """r+1 singular values, descending: spread out, nearly equal, with ties or with zeros."""
    kind = rng.choice(["geometric", "flat", "tie", "zeros", "one-big"])
    if kind == "geometric":
        ratio = rng.uniform(0.05, 0.9)
        s = [ratio**i for i in range(r + 1)]
    elif kind == "flat":
        s = [1 + 0.05 * rng.random() for _ in range(r + 1)]
    elif kind == "tie":
        s = [rng.choice([1.0, 0.5, 0.25]) for _ in range(r + 1)]
    elif kind == "zeros":
        s = [rng.uniform(0.1, 2) for _ in range(r + 1)]
        for i in rng.sample(range(r + 1), rng.randint(1, r)):
            s[i] = 0.0
    else:
        s = [rng.uniform(5, 50)] + [rng.uniform(0, 1) for _ in range(r)]
    s = sorted(s, reverse=True)
    if s[0] == 0:
        s[0] = 1.0
    return torch.tensor(s, dtype=torch.float64) * rng.uniform(0.01, 100)


def _package_q(sigma: torch.Tensor, r: int) -> int:
    kept, _, _ = _ok(r)._split(sigma[None])
    return int(kept.sum())


def check_ok_split(ok_split) -> str:
    """``ok_split(sigma, r)`` -> q: how many leading directions OK-r keeps exactly, for the r+1
    singular values σ_1 ≥ … ≥ σ_{r+1} of Γ_t (a 1-D float64 tensor), against the package's split."""
    rng = random.Random(7001)
    for _ in range(60):
        r = rng.randint(1, 8)
        sigma = _draw_sigma(rng, r)
        want, got = _package_q(sigma, r), ok_split(sigma.clone(), r)
        expect_true(isinstance(got, int) or (torch.is_tensor(got) and got.numel() == 1),
                    f"ok_split must return an int, got {type(got).__name__}")
        expect_true(int(got) == want, f"σ = {[round(v, 4) for v in sigma.tolist()]}, r = {r}: OK keeps q = {want} "
                    f"directions exactly, you said {int(got)} (q is the smallest q ≥ 0 with "
                    f"(r − q)·σ_(q+1) ≤ Σ_(i>q) σ_i)")
    return passed("Exercise 7.1", "the split q agrees with the package's on 60 random spectra (ties and zeros included)")


def check_mixing_weights(mixing_weights) -> str:
    """``mixing_weights(sigma, q, r)`` -> (delta, w), over the mixed set 𝓜 = {q+1, …, r+1} only
    (length r + 1 − q): δ_i = k σ_i / Σ_𝓜 with k = r − q, and w_i = √(1 − δ_i). Compared with the
    package's mixing: with every sign +1, its coefficient matrices give (Σ_𝓜/k)·ΠᵀΠ on 𝓜, which must
    equal (Σ_𝓜/k)(I − wwᵀ), whose diagonal is (Σ_𝓜/k)·δ."""
    from ...estimators import ok as ok_module

    rng = random.Random(7002)
    checked = 0
    while checked < 30:
        r = rng.randint(1, 7)
        sigma = _draw_sigma(rng, r)
        est = _ok(r)
        kept, S, k_slots = est._split(sigma[None])
        q, k, total = int(kept.sum()), int(k_slots), float(S)
        if total == 0:
            continue
        draw, ok_module.rademacher = ok_module.rademacher, lambda shape, *a: torch.ones(shape, dtype=torch.float64)
        try:
            coef_u, coef_a = est._mix(sigma[None], kept, S, k_slots)
        finally:
            ok_module.rademacher = draw
        gram = (coef_u[0].T @ coef_a[0])[q:, q:] * k / total  # ΠᵀΠ on 𝓜
        out = mixing_weights(sigma.clone(), q, r)
        expect_true(isinstance(out, (tuple, list)) and len(out) == 2, "mixing_weights must return (delta, w)")
        delta, w = (torch.as_tensor(v, dtype=torch.float64) for v in out)
        where = f"σ = {[round(v, 4) for v in sigma.tolist()]}, q = {q}, r = {r}"
        expect_close(delta, gram.diagonal(), f"δ over 𝓜 ({where})", rtol=1e-7, atol=1e-9)
        expect_close(torch.eye(r + 1 - q, dtype=torch.float64) - torch.outer(w, w), gram,
                     f"I − wwᵀ against the package's ΠᵀΠ ({where})", rtol=1e-7, atol=1e-9)
        checked += 1
    return passed("Exercise 7.2", "δ and w reproduce the package's mixing (ΠᵀΠ = I − wwᵀ) on 30 spectra")


def check_v_min(v_min) -> str:
    """``v_min(sigma, r)``: the expected squared error E‖Γ̂_t − Γ_t‖² of one symmetric OK-r step
    from the singular values of Γ_t, against the error measured by running every sign pattern of
    that step through the package (exact up to rounding: the tolerance is 1e-8 relative)."""
    cases = 0
    for r in (1, 2, 3, 4):
        for seed in (11, 12, 13):
            sigma, measured = ex.ok_step_target(r, seed=seed, hidden_size=4 if r < 4 else 5)
            got = v_min(sigma.clone(), r)
            expect_true(got is not None, "v_min returned None")
            got = float(got)
            if abs(got - measured) > 1e-8 * max(measured, 1e-12) + 1e-12:
                raise ExerciseFailed(f"r = {r}, σ = {[round(v, 4) for v in sigma.tolist()]}: the measured error of the "
                                     f"step is {measured:.6g}, you predicted {got:.6g} (V_min = Σ_𝓜²/k − Σ_(i∈𝓜) σ_i², "
                                     f"with the split q of Exercise 7.1 and k = r − q)")
            cases += 1
    return passed("Exercise 7.3", f"V_min predicts the measured error of {cases} OK steps (r = 1..4) to 1e-8")


def check_snap1_update(snap1_update) -> str:
    """``snap1_update(J_prev, h_jj, x_hat, d_j)`` -> J_t for one unit j of a one-slot cell:
    J_prev (a, r_g) the unit's influence on its own state (one column per gate block), h_jj the
    scalar H_t[j, j], x_hat x̂_t (a,), d_j (r_g,) the unit's entries of D_t. Compared with the
    package's SnAp-1 estimator stepping a random tanh RNN and RHN."""
    rng = random.Random(7004)
    for cell in ("tanh", "rhn"):
        n, m = rng.randint(3, 8), rng.randint(2, 5)
        model = ex.random_model(cell, m, n, 3, init_std=0.5, seed=rng.randint(0, 999))
        est = ex.make_estimator("snap-1", model, 1, seed=0)
        x, y = ex.random_sequence(model, 5, seed=rng.randint(0, 999))
        for t in range(5):
            J_prev, state = est.J.clone(), est.state.clone()
            with torch.no_grad():
                step = model.cell.step(x[t : t + 1], state)
                h_diag = step.H_unit_blocks()[0, 0, 0]  # (n,): H_t[j, j]
            est.step_lane_gradients(x[t : t + 1], y[t : t + 1])
            r_g = model.cell.gate_blocks
            for j in range(n):
                cols = [g * n + j for g in range(r_g)]
                got = snap1_update(J_prev[0, 0][:, cols].clone(), float(h_diag[j]), step.x_hat[0].clone(),
                                   step.d[0, 0, :, j].clone())
                expect_close(got, est.J[0, 0][:, cols], f"J_t of unit {j} at step {t + 1} ({cell}, n = {n})",
                             rtol=1e-9, atol=1e-12)
    return passed("Exercise 7.4", "SnAp-1's update of one unit agrees with the package on a tanh RNN and an RHN")
