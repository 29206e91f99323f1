"""Checkers for lesson 2, the Kronecker factorisation (notebooks/02_kronecker_factorisation.ipynb).

Each checker draws its own inputs (a random RHN, random states, a random sequence) and compares the
student's function with the package: the RHN cell's D_t, the KF-RTRL estimator's rescalings p1, p2,
exact RTRL's influence G_T and the z-test ``kl.unbiasedness_test``.
"""

from __future__ import annotations

import torch

from ...analysis import unbiasedness_test
from ...estimators import make_estimator
from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed


def _rhn(n: int, m: int = 3, seed: int = 0):
    return ex.random_model("rhn", input_size=m, hidden_size=n, init_std=0.5, seed=seed)


# -- Exercise 2.1: D_t of the RHN ----------------------------------------------------------------

def check_rhn_D(rhn_D) -> str:
    """``rhn_D(h_prev, z)`` for L lanes, h_prev (L, n), z (L, 2, n) = [z_c, z_f] → D_t (L, n, 2n) =
    [diag(∂h_t/∂z_c) | diag(∂h_t/∂z_f)], against the package's RHN cell (``CellStep.D_dense``)."""
    for seed, (n, lanes) in enumerate(((3, 1), (5, 4), (7, 2))):
        model = _rhn(n, seed=100 + seed)
        cell = model.cell
        g = torch.Generator().manual_seed(200 + seed)
        x = torch.randn(lanes, cell.input_size, generator=g, dtype=torch.float64)
        h_prev = torch.randn(lanes, n, generator=g, dtype=torch.float64).tanh()
        with torch.no_grad():
            step = cell.step(x, h_prev[:, None, :])
            z = cell.preactivation(step.x_hat)
        answer = rhn_D(h_prev.clone(), z.clone())
        expected = step.D_dense()
        expect_true(torch.is_tensor(answer), "rhn_D must return a tensor D_t of shape (L, n, 2n)")
        off = answer.double().masked_fill(expected != 0, 0)
        if off.shape == expected.shape and off.abs().max() > 0:
            raise ExerciseFailed("D_t has nonzeros off its two diagonals: unit j's h_t reads only z_c[j] and "
                                 "z_f[j], so D_t[i, c] = 0 unless column c belongs to unit i")
        if answer.shape == expected.shape:
            for g_, name in ((0, "∂h/∂z_c (first block)"), (1, "∂h/∂z_f (second block)")):
                block = slice(g_ * n, (g_ + 1) * n)
                expect_close(answer[:, :, block], expected[:, :, block], f"D_t's block {name}")
        expect_close(answer, expected, "D_t")
    return passed("Exercise 2.1", "D_t = [diag((1−f)(1−c²)/2) | diag(f(1−f)(h_{t-1} − c))] equals the package's RHN "
                                  "cell for n = 3, 5, 7")


# -- Exercise 2.2: p* ---------------------------------------------------------------------------------

def package_rescalings(n: int = 5, lanes: int = 6, steps: int = 4, seed: int = 0) -> dict:
    """The norms of one KF-RTRL step of the PACKAGE's estimator and the p1, p2 it chose, read back from
    its new factor: u_t = c1 p1 u_{t-1} + c2 p2 x̂_t, so the least-squares coefficients of u_t on
    (u_{t-1}, x̂_t) are ±p1 and ±p2. Returns (L,) tensors norm_M, norm_u, norm_D, norm_xhat, p1, p2."""
    model = _rhn(n, seed=seed)
    x, y = ex.random_sequence(model, steps, seed=seed + 1)
    est = make_estimator("kf-rtrl", model, lanes, reduction="sum", seed=seed + 2)
    with torch.no_grad():
        for t in range(steps - 1):
            est.step(x[t].expand(lanes, -1), y[t].expand(lanes))
        u_prev, A_prev = (f.clone() for f in est.kron_factors)
        step = model.cell.step(x[-1].expand(lanes, -1), est.state)
        M = torch.bmm(step.H_dense(), A_prev)
        est.step(x[-1].expand(lanes, -1), y[-1].expand(lanes))
        u_new = est.kron_factors[0]
    basis = torch.stack([u_prev, step.x_hat], dim=2)  # (L, a, 2)
    coef = torch.linalg.lstsq(basis, u_new[:, :, None]).solution[:, :, 0].abs()
    return {"norm_M": M.flatten(1).norm(dim=1), "norm_u": u_prev.norm(dim=1), "norm_D": step.D_norm(),
            "norm_xhat": step.x_hat.norm(dim=1), "p1": coef[:, 0], "p2": coef[:, 1]}


def check_p_star(p_star) -> str:
    """``p_star(norm_M, norm_u, norm_D, norm_xhat)`` → (p1, p2), elementwise over (L,) tensors,
    against the p1, p2 the package's KF-RTRL estimator uses (read back from its factors)."""
    for seed in (0, 1):
        ref = package_rescalings(seed=seed)
        answer = p_star(ref["norm_M"], ref["norm_u"], ref["norm_D"], ref["norm_xhat"])
        expect_true(isinstance(answer, (tuple, list)) and len(answer) == 2, "p_star must return the pair (p1, p2)")
        p1, p2 = (torch.as_tensor(v, dtype=torch.float64) for v in answer)
        ratio = (p1 / p2) / (ref["p1"] / ref["p2"])
        if torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-6) and not torch.allclose(p1, ref["p1"], rtol=1e-6):
            raise ExerciseFailed("your p1/p2 is right (so the variance is minimal) but p1 and p2 themselves are not "
                                 "the package's: give each term's two factors equal norms, ‖p1 u_{t-1}‖ = ‖M_t‖/p1 "
                                 "and ‖p2 x̂_t‖ = ‖D_t‖/p2")
        expect_close(p1, ref["p1"], "p1 (the rescaling of u_{t-1} ⊗ M_t)", rtol=1e-6)
        expect_close(p2, ref["p2"], "p2 (the rescaling of x̂_t ⊗ D_t)", rtol=1e-6)
    return passed("Exercise 2.2", "p1 = sqrt(‖M_t‖/‖u_{t-1}‖), p2 = sqrt(‖D_t‖/‖x̂_t‖): the package's KF-RTRL "
                                  "chose the same on 12 lanes")


# -- Exercise 2.3: unbiasedness by induction, exactly -------------------------------------------------

def check_enumerated_mean(enumerated_mean) -> str:
    """``enumerated_mean(terms)`` (terms from ``ex.kf_terms``: per step x̂_t, D_t, H_t of one lane) →
    E[u_T ⊗ A_T] over all 4^T equally likely sign sequences, (n, a, r_g n), against exact RTRL's G_T
    (the package's ``rtrl`` estimator)."""
    for seed, (n, T) in enumerate(((3, 3), (4, 4))):
        model = _rhn(n, m=2, seed=300 + seed)
        x, y = ex.random_sequence(model, T, seed=400 + seed)
        terms = ex.kf_terms(model, x)
        rtrl = make_estimator("rtrl", model, 1, reduction="sum")
        with torch.no_grad():
            for t in range(T):
                rtrl.step(x[t : t + 1], y[t : t + 1])
        exact = rtrl.influence[0]
        answer = enumerated_mean([dict(term) for term in terms])
        expect_true(torch.is_tensor(answer), "enumerated_mean must return a tensor (n, a, r_g n)")
        expect_close(answer, exact, f"E[u_T ⊗ A_T] over the 4^{T} sign sequences against G_T (n = {n}, T = {T})",
                     rtol=1e-9, atol=1e-12)
    return passed("Exercise 2.3", "the average over every sign sequence (4³ and 4⁴ of them) is exactly RTRL's G_T: "
                                  "no sampling error, no bias")


# -- Exercise 2.4: shared signs ------------------------------------------------------------------------

def _shared_runs(kf_step_shared, n: int = 4, T: int = 6, samples: int = 3000, seed: int = 0) -> dict:
    model = _rhn(n, seed=seed)
    x, y = ex.random_sequence(model, T, seed=seed + 1)
    exact = ex.true_gradient(model, x, y)

    def shared(u_prev, M, x_hat, D, c1, c2):
        return kf_step_shared(u_prev, M, x_hat, D, c1)

    runs = {"independent signs, fresh every step": ex.kf_gradient_samples_with_step(model, x, y, ex.kf_step, samples,
                                                                                    seed=seed + 2),
            "c1 = c2, fresh every step": ex.kf_gradient_samples_with_step(model, x, y, shared, samples, seed=seed + 2),
            "c1 = c2, drawn once per lane": ex.kf_gradient_samples_with_step(model, x, y, shared, samples,
                                                                             seed=seed + 2, fresh_signs=False)}
    return {"exact": exact, "runs": runs}


def check_shared_signs(kf_step_shared, z_test_verdict) -> str:
    """``kf_step_shared(u_prev, M, x_hat, D, c)`` → (u_t, A_t), the KF step with c1 = c2 = c, against the
    package's ``ex.kf_step(u_prev, M, x_hat, D, c, c)``; ``z_test_verdict(samples, exact)`` → True when the
    samples (S, P) pass the z-test of E ĝ = g, against ``kl.unbiasedness_test`` on three runs of the shared
    step over a sequence."""
    g = torch.Generator().manual_seed(5)
    L, a, n = 5, 8, 4
    u_prev = torch.randn(L, a, generator=g, dtype=torch.float64)
    u_prev[0] = 0  # a lane right after a reset: its first term is dropped
    M = torch.randn(L, n, 2 * n, generator=g, dtype=torch.float64)
    x_hat = torch.cat([torch.randn(L, a - 1, generator=g, dtype=torch.float64), torch.ones(L, 1, dtype=torch.float64)], 1)
    D = torch.zeros(L, n, 2 * n, dtype=torch.float64)
    D.view(L, n, 2, n).diagonal(dim1=1, dim2=3).copy_(torch.rand(L, 2, n, generator=g, dtype=torch.float64))
    c = torch.randint(0, 2, (L,), generator=g).double() * 2 - 1
    answer = kf_step_shared(u_prev.clone(), M.clone(), x_hat.clone(), D.clone(), c.clone())
    expect_true(isinstance(answer, (tuple, list)) and len(answer) == 2, "kf_step_shared must return (u_t, A_t)")
    u_ref, A_ref = ex.kf_step(u_prev, M, x_hat, D, c, c)
    expect_close(answer[0], u_ref, "u_t = c (p1 u_{t-1} + p2 x̂_t) (lane 0: u_{t-1} = 0, first term dropped)")
    expect_close(answer[1], A_ref, "A_t = c (M_t/p1 + D_t/p2)")

    data = _shared_runs(kf_step_shared)
    lines = []
    for name, G in data["runs"].items():
        test = unbiasedness_test(G, data["exact"])
        verdict = z_test_verdict(G.clone(), data["exact"].clone())
        expected = test["violations"] == 0
        expect_true(isinstance(verdict, bool) or verdict in (0, 1), "z_test_verdict must return True or False")
        if bool(verdict) != expected:
            raise ExerciseFailed(f"z_test_verdict says {'unbiased' if verdict else 'biased'} for the run "
                                 f"'{name}', but the z-test finds {test['violations']} of {test['coordinates']} "
                                 f"coordinates with |mean − g| > {test['z_critical']:.2f}·SE "
                                 f"(kl.unbiasedness_test)")
        lines.append(f"{name}: {'passes' if expected else 'FAILS'} the z-test")
    return passed("Exercise 2.4", "your shared-sign step is the KF step with c1 = c2, and your verdicts match "
                                  "kl.unbiasedness_test — " + "; ".join(lines))
