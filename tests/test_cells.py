"""The cell step of each cell — D_t, H_t (dense, forward-mode, per-unit blocks), F_t — against
autograd and finite differences; the LSTM against torch.nn.LSTMCell."""

import pytest
import torch
from torch.autograd.functional import jacobian

import kfrtrl_lab as kl
from conftest import CELLS, make_model
from kfrtrl_lab.cells.lstm import from_lstm_cell, to_lstm_cell


def _point(cell_name, B=3, seed=0):
    model = make_model(cell_name, m=3, n=5, seed=seed)
    cell = model.cell
    g = torch.Generator().manual_seed(seed + 10)
    x = torch.randn(B, cell.input_size, generator=g, dtype=torch.float64)
    state_prev = torch.randn(B, cell.slots, cell.hidden_size, generator=g, dtype=torch.float64).tanh()
    return cell, x, state_prev


def test_generic_derivatives_match_autograd_jacobian(cell_name):
    cell, x, state_prev = _point(cell_name)
    z = cell.preactivation(cell.extended_input(x, state_prev)).detach()
    state, d, direct = cell.pointwise_derivatives(z, state_prev)
    s, n = cell.slots, cell.hidden_size
    assert d.shape == (3, s, cell.gate_blocks, n) and direct.shape == (3, s, s, n)
    for b in range(z.shape[0]):  # per lane, the full Jacobians (not only diagonals)
        J_z, J_s = jacobian(lambda zz, ss: cell.phi(zz, ss), (z[b], state_prev[b]))  # (s, n, r, n), (s, n, s, n)
        for slot in range(s):
            for k in range(cell.gate_blocks):
                torch.testing.assert_close(J_z[slot, :, k, :], torch.diag(d[b, slot, k]), rtol=1e-12, atol=1e-14)
            for other in range(s):
                torch.testing.assert_close(J_s[slot, :, other, :], torch.diag(direct[b, slot, other]),
                                           rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state, cell.phi(z, state_prev))


def test_fast_path_matches_generic_mechanism(cell_name):
    cell, x, state_prev = _point(cell_name, B=7, seed=3)
    z = cell.preactivation(cell.extended_input(x, state_prev)).detach()
    fast = cell.derivatives(z, state_prev)
    generic = cell.pointwise_derivatives(z, state_prev)
    assert type(cell).derivatives is not kl.Cell.derivatives  # every built-in cell has a closed form
    for f, g in zip(fast, generic):
        torch.testing.assert_close(f, g, rtol=1e-13, atol=1e-15)


def _steps(cell, x, state_prev):
    with torch.no_grad():
        return cell.step(x, state_prev)


def test_H_matches_autograd_and_finite_differences(cell_name):
    cell, x, state_prev = _point(cell_name)
    H = _steps(cell, x, state_prev).H_dense()
    ns = cell.state_size
    assert H.shape == (3, ns, ns)
    eps = 1e-6
    for b in range(x.shape[0]):
        step = lambda sp: cell(x[b : b + 1], sp.view(1, cell.slots, -1))[0].flatten()  # noqa: E731
        flat = state_prev[b].flatten()
        torch.testing.assert_close(H[b], jacobian(step, flat), rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            fd = torch.stack([(step(flat + eps * e) - step(flat - eps * e)) / (2 * eps)
                              for e in torch.eye(ns, dtype=torch.float64)], dim=1)
        torch.testing.assert_close(H[b], fd, rtol=1e-7, atol=1e-9)


def test_H_scaled_folds_the_scale_into_the_factors(cell_name):
    cell, x, state_prev = _point(cell_name)
    step = _steps(cell, x, state_prev)
    scale = torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(step.H_dense(scale), scale[:, None, None] * step.H_dense())


def test_H_times_is_H_times_v(cell_name):
    cell, x, state_prev = _point(cell_name)
    step = _steps(cell, x, state_prev)
    v = torch.randn(3, cell.state_size, dtype=torch.float64)
    torch.testing.assert_close(step.H_times(v), torch.einsum("bji,bi->bj", step.H_dense(), v))


def test_H_unit_blocks_are_the_diagonal_blocks_of_H(cell_name):
    cell, x, state_prev = _point(cell_name)
    step = _steps(cell, x, state_prev)
    s, n = cell.slots, cell.hidden_size
    H = step.H_dense().view(3, s, n, s, n)
    blocks = step.H_unit_blocks()  # (B, s, s, n)
    for j in range(n):
        torch.testing.assert_close(blocks[:, :, :, j], H[:, :, j, :, j])


def test_immediate_jacobian_is_kronecker_product(cell_name):
    """F_t = ∂s_t/∂W = x̂_t ⊗ D_t, and the CellStep's D operators agree with the dense D."""
    cell, x, state_prev = _point(cell_name)
    step = _steps(cell, x, state_prev)
    D = step.D_dense()
    assert D.shape == (3, cell.state_size, cell.weight.shape[1])
    for b in range(x.shape[0]):
        F = jacobian(lambda W: torch.func.functional_call(cell, {"weight": W}, (x[b : b + 1], state_prev[b : b + 1]))
                     [0].flatten(), cell.weight.detach())  # (n_s, m+n+1, r n)
        torch.testing.assert_close(F, torch.einsum("i,jc->jic", step.x_hat[b], D[b]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(step.D_norm(), D.flatten(1).norm(dim=1))
    g = torch.randn(3, cell.state_size, dtype=torch.float64)
    torch.testing.assert_close(step.D_transpose_times(g), torch.einsum("bj,bjc->bc", g, D))
    A = torch.randn_like(D)
    coef = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    expected = A + coef[:, None, None] * D
    step.add_D(A, coef)
    torch.testing.assert_close(A, expected)
    G = torch.zeros(3, cell.state_size, *cell.weight.shape, dtype=torch.float64)
    step.add_immediate(G)
    torch.testing.assert_close(G, torch.einsum("bi,bjc->bjic", step.x_hat, D))


def test_sparse_D_operators_on_stacks_match_the_dense_D(cell_name):
    """D_inner_stacked and add_D_stacked (OK-r's and KF-AVG's D_t terms, taken on D_t's nonzeros)
    equal the dense ⟨A_i, D_t⟩ and A_i + coef_i D_t for a stack of transposed A's."""
    cell, x, state_prev = _point(cell_name)
    step = _steps(cell, x, state_prev)
    D = step.D_dense()  # (B, n_s, r n)
    At = torch.randn(3, 4, cell.weight.shape[1], cell.state_size, dtype=torch.float64)
    torch.testing.assert_close(step.D_inner_stacked(At), torch.einsum("bpcj,bjc->bp", At, D))
    coef = torch.randn(3, 4, dtype=torch.float64)
    expected = At + coef[:, :, None, None] * D.transpose(1, 2)[:, None]
    step.add_D_stacked(At, coef)
    torch.testing.assert_close(At, expected)


def test_readout_reads_the_h_slot_only(cell_name):
    cell, x, state_prev = _point(cell_name)
    dl_dh = torch.randn(3, cell.hidden_size, dtype=torch.float64)
    full = cell.state_cotangent(dl_dh).view(3, cell.slots, -1)
    torch.testing.assert_close(full[:, 0], dl_dh)
    assert (full[:, 1:] == 0).all()


def test_readout_step_matches_autograd():
    model = make_model("rhn", n=5, k=7)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (4,), generator=g)
    w = torch.rand(4, generator=g, dtype=torch.float64)
    losses, dl_dh, d_readout = model.readout_step(h, y, w)
    hh = h.clone().requires_grad_(True)
    ref = model.lane_losses(hh, y)
    gh, gw = torch.autograd.grad((ref * w).sum(), (hh, model.readout))
    torch.testing.assert_close(losses, ref.detach())
    torch.testing.assert_close(dl_dh, gh)
    torch.testing.assert_close(d_readout, gw)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_weight_layout(name):
    cell = CELLS[name](input_size=4, hidden_size=6)
    r, s = {"tanh": (1, 1), "rhn": (2, 1), "lstm": (4, 2)}[name]
    assert (cell.gate_blocks, cell.slots) == (r, s)
    assert cell.weight.shape == (4 + 6 + 1, r * 6) and cell.state_size == s * 6


def test_rhn_initialisation_is_official_scale():
    torch.manual_seed(0)
    model = kl.RecurrentModel(kl.RHN(input_size=50, hidden_size=128), output_size=50)
    for p in (model.cell.weight, model.readout):
        assert abs(p.std().item() - 0.01) < 0.0005
        assert abs(p.mean().item()) < 0.0005


# -- the LSTM is torch.nn.LSTMCell ----------------------------------------------------------------

def test_lstm_forward_equals_torch_lstm_cell():
    torch.manual_seed(0)
    reference = torch.nn.LSTMCell(3, 5).double()
    ours = from_lstm_cell(reference)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    h = c = torch.zeros(4, 5, dtype=torch.float64)
    state = ours.zero_state(4)
    for t in range(6):
        h, c = reference(x[t], (h, c))
        state = ours(x[t], state)
        torch.testing.assert_close(state[:, 0], h, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(state[:, 1], c, rtol=1e-13, atol=1e-14)
    back = to_lstm_cell(ours)
    torch.testing.assert_close(back(x[0], (h, c))[0], ours(x[0], state)[:, 0])


def test_lstm_initialisation_is_pytorch_default_with_optional_forget_bias():
    torch.manual_seed(0)
    n = 64
    cell = kl.LSTM(10, n)
    bound = 1 / n**0.5
    assert cell.weight.abs().max() <= bound and cell.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    biased = kl.LSTM(10, n, forget_bias=1.0)
    f_bias = biased.weight[-1, n : 2 * n]
    assert (f_bias > 1 - bound).all() and (f_bias < 1 + bound).all()
    assert biased.weight[-1, :n].abs().max() <= bound
