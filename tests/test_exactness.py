"""Exact methods agree with backprop in float64; KF-RTRL is exact on the first step."""

import pytest
import torch

import kfrtrl_lab as kl
from conftest import make_model, make_sequence, rel_err
from kfrtrl_lab.random import CounterRandom


def run_lanes(method, model, x, y, resets=(), reduction="sum", seed=0):
    """Run an estimator over (T, B, ·) data, resetting lanes {t: lanes} before step t.
    Returns (W.grad, readout.grad, per-step losses)."""
    model.zero_grad(set_to_none=True)
    est = kl.make_estimator(method, model, x.shape[1], reduction=reduction, seed=seed)
    resets = dict(resets)
    losses = []
    for t in range(x.shape[0]):
        if t in resets:
            est.reset(resets[t])
        losses.append(est.step(x[t], y[t]))
    est.flush()
    return model.cell.weight.grad.clone(), model.readout.grad.clone(), torch.stack(losses)


@pytest.mark.parametrize("T", [1, 2, 7, 19])
def test_rtrl_equals_bptt(cell_name, T):
    model = make_model(cell_name, m=3, n=6, k=4)
    x, y = make_sequence(model, T, batch=3)
    g_rtrl, r_rtrl, l_rtrl = run_lanes("rtrl", model, x, y)
    g_bptt, r_bptt, l_bptt = run_lanes("bptt", model, x, y)
    assert rel_err(g_rtrl, g_bptt) <= 1e-10
    assert rel_err(r_rtrl, r_bptt) <= 1e-10
    torch.testing.assert_close(l_rtrl, l_bptt, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_rtrl_equals_bptt_with_lanes_reset_mid_sequence(cell_name, reduction):
    model = make_model(cell_name, m=2, n=5, k=3, seed=4)
    x, y = make_sequence(model, 23, batch=4, seed=5)
    resets = {6: [0, 2], 11: torch.tensor([False, True, False, False]), 17: None}
    g_rtrl, r_rtrl, _ = run_lanes("rtrl", model, x, y, resets, reduction)
    g_bptt, r_bptt, _ = run_lanes("bptt", model, x, y, resets, reduction)
    assert rel_err(g_rtrl, g_bptt) <= 1e-10
    assert rel_err(r_rtrl, r_bptt) <= 1e-10
    # the resets matter: without them the gradient is a different one
    g_plain, _, _ = run_lanes("bptt", model, x, y, reduction=reduction)
    assert rel_err(g_plain, g_bptt) > 1e-3


def test_true_gradient_is_bptt_of_the_summed_loss(cell_name):
    model = make_model(cell_name, seed=2)
    x, y = make_sequence(model, 13)
    g = kl.true_gradient(model, x, y)
    g_rtrl, _, _ = run_lanes("rtrl", model, x[:, None], y[:, None])
    assert g.shape == (model.cell.weight.numel(),)
    assert rel_err(g_rtrl.flatten(), g) <= 1e-10
    assert model.cell.weight.grad is not None  # run_lanes wrote it; true_gradient must not have touched it
    before = model.cell.weight.grad.clone()
    kl.true_gradient(model, x, y)
    assert torch.equal(model.cell.weight.grad, before)


def test_tbptt_windows_detach_the_state(cell_name):
    """tbptt-k = Σ over windows of full BPTT within the window, starting from the carried state."""
    model = make_model(cell_name, seed=6)
    T, k = 10, 4
    x, y = make_sequence(model, T, batch=2, seed=7)
    g_tbptt, _, _ = run_lanes(f"tbptt-{k}", model, x, y)
    cell = model.cell
    expected = torch.zeros_like(cell.weight)
    state = cell.zero_state(2)
    for start in range(0, T, k):
        state = state.detach()
        loss = 0
        for t in range(start, min(start + k, T)):
            state = cell(x[t], state)
            loss = loss + model.lane_losses(cell.hidden(state), y[t]).sum()
        expected += torch.autograd.grad(loss, cell.weight)[0]
    assert rel_err(g_tbptt, expected) <= 1e-12
    assert rel_err(g_tbptt, run_lanes("bptt", model, x, y)[0]) > 1e-3  # truncation is visible
    assert rel_err(run_lanes(f"tbptt-{T}", model, x, y)[0], run_lanes("bptt", model, x, y)[0]) <= 1e-12


def test_tbptt_reports_when_gradient_is_ready():
    model = make_model("rhn")
    x, y = make_sequence(model, 7, batch=2)
    est = kl.make_estimator("tbptt-3", model, 2)
    ready = []
    for t in range(7):
        est.step(x[t], y[t])
        ready.append(est.gradient_ready)
    assert ready == [False, False, True, False, False, True, False]
    est.flush()
    assert est.gradient_ready


def lane_gradients_at(method, model, x, y, resets, at, seed=0):
    est = kl.make_estimator(method, model, x.shape[1], reduction="sum", seed=seed)
    for t in range(at + 1):
        if t in resets:
            est.reset(resets[t])
        _, grads = est.step_lane_gradients(x[t], y[t])
    return grads


@pytest.mark.parametrize("reset_at", [0, 5])
def test_kf_rtrl_first_step_after_reset_is_exact(cell_name, reset_at):
    model = make_model(cell_name, m=3, n=6, k=4, seed=8)
    x, y = make_sequence(model, reset_at + 1, batch=5, seed=9)
    resets = {reset_at: [1, 3]}
    kf = lane_gradients_at("kf-rtrl", model, x, y, resets, at=reset_at, seed=3)
    exact = lane_gradients_at("rtrl", model, x, y, resets, at=reset_at)
    lanes = [0, 1, 2, 3, 4] if reset_at == 0 else [1, 3]
    for b in lanes:
        assert rel_err(kf[b], exact[b]) <= 1e-12
    if reset_at:
        # lanes that were not reset carry a stochastic estimate, which is not exact
        assert min(rel_err(kf[b], exact[b]) for b in (0, 2, 4)) > 1e-6


def test_estimators_fill_grad_like_an_optimiser_expects():
    """.grad is accumulated (+=) step after step, so update_every=k just means zero_grad every k."""
    model = make_model("rhn", seed=11)
    x, y = make_sequence(model, 6, batch=2, seed=12)
    g_all, r_all, _ = run_lanes("rtrl", model, x, y)
    model.zero_grad(set_to_none=True)
    est = kl.make_estimator("rtrl", model, 2, reduction="sum")
    parts = []
    for t in range(6):
        est.step(x[t], y[t])
        if t % 2 == 1:
            parts.append(model.cell.weight.grad.clone())
            model.zero_grad(set_to_none=True)
    assert rel_err(sum(parts), g_all) <= 1e-12


def test_kf_rtrl_follows_the_equations_step_by_step(cell_name):
    """Against a dense transcription of algorithms.md section 3, fed the same signs: the
    estimator's storage (A = σ Ā, D as diagonals, H never applied to dense Kronecker products)
    changes nothing but rounding."""
    model = make_model(cell_name, m=3, n=5, k=4, seed=13)
    cell, B, T = model.cell, 3, 12
    x, y = make_sequence(model, T, batch=B, seed=14)
    est = kl.make_estimator("kf-rtrl", model, B, reduction="sum", seed=21)
    signs = CounterRandom(21, "cpu")  # the estimator's own stream of signs, replayed
    s, n, I = cell.slots, cell.hidden_size, cell.extended_size
    u = torch.zeros(B, I, dtype=torch.float64)
    A = torch.zeros(B, s * n, cell.gate_blocks * n, dtype=torch.float64)
    state = torch.zeros(B, s * n, dtype=torch.float64)  # flattened (slot, unit)
    for t in range(T):
        if t == 6:
            est.reset([1])
            u[1], A[1], state[1] = 0, 0, 0
        _, lane_grads = est.step_lane_gradients(x[t], y[t])
        c = signs.signs((B, 2), torch.float64)
        for b in range(B):  # plain per-lane loop: this is the reference, not the implementation
            x_hat = torch.cat([x[t, b], state[b, :n], torch.ones(1, dtype=torch.float64)])
            step = lambda sp: cell(x[t, b][None], sp.view(1, s, n)).flatten()  # noqa: E731
            H = torch.autograd.functional.jacobian(step, state[b])
            # D_t is the bias row of F_t = ∂s_t/∂W (x̂'s last entry is 1)
            D = torch.autograd.functional.jacobian(
                lambda W: torch.func.functional_call(cell, {"weight": W}, (x[t, b][None], state[b].view(1, s, n)))
                .flatten(), cell.weight.detach())[:, -1, :]
            Bt = H @ A[b]
            if u[b].norm() > 0:
                p1 = (Bt.norm() / u[b].norm()).sqrt()
                u_new = c[b, 0] * p1 * u[b]
                A_new = c[b, 0] * Bt / p1
            else:
                u_new, A_new = torch.zeros_like(u[b]), torch.zeros_like(A[b])
            p2 = (D.norm() / x_hat.norm()).sqrt()
            u[b], A[b] = u_new + c[b, 1] * p2 * x_hat, A_new + c[b, 1] * D / p2
            state[b] = step(state[b]).detach()
        _, dl_dh, _ = model.readout_step(state[:, :n], y[t], torch.ones(B, dtype=torch.float64))
        expected = u[:, :, None] * torch.einsum("bj,bjc->bc", dl_dh, A[:, :n])[:, None, :]
        torch.testing.assert_close(lane_grads, expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(est.kron_factors[0], u, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(est.kron_factors[1], A, rtol=1e-9, atol=1e-12)
