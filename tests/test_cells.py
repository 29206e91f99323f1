"""D_t, H_t and F_t of each cell against autograd and finite differences."""

import pytest
import torch
from torch.autograd.functional import jacobian

import kfrtrl_lab as kl
from conftest import CELLS, make_model


def _point(cell_name, B=3, seed=0):
    model = make_model(cell_name, m=3, n=5, seed=seed)
    cell = model.cell
    g = torch.Generator().manual_seed(seed + 10)
    x = torch.randn(B, cell.input_size, generator=g, dtype=torch.float64)
    h_prev = torch.randn(B, cell.hidden_size, generator=g, dtype=torch.float64).tanh()
    return cell, x, h_prev


def test_generic_derivatives_match_autograd_jacobian(cell_name):
    cell, x, h_prev = _point(cell_name)
    z = cell.preactivation(cell.extended_input(x, h_prev)).detach()
    h, d, a = cell.pointwise_derivatives(z, h_prev)
    for b in range(z.shape[0]):  # per lane, the full Jacobians (not only diagonals)
        J_z, J_h = jacobian(lambda zz, hh: cell.phi(zz, hh), (z[b], h_prev[b]))
        # J_z: (n, r, n) must be diag within each block
        for k in range(cell.gate_blocks):
            torch.testing.assert_close(J_z[:, k, :], torch.diag(d[b, k]), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(J_h, torch.diag(a[b]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(h, cell.phi(z, h_prev))


def test_fast_path_matches_generic_mechanism(cell_name):
    cell, x, h_prev = _point(cell_name, B=7, seed=3)
    z = cell.preactivation(cell.extended_input(x, h_prev)).detach()
    fast = cell.derivatives(z, h_prev)
    generic = kl.Cell.derivatives(cell, z, h_prev)
    assert type(cell).derivatives is not kl.Cell.derivatives  # both cells do have a fast path
    for f, g in zip(fast, generic):
        torch.testing.assert_close(f, g, rtol=1e-13, atol=1e-15)


def test_recurrent_jacobian_matches_autograd_and_finite_differences(cell_name):
    cell, x, h_prev = _point(cell_name)
    with torch.no_grad():
        z = cell.preactivation(cell.extended_input(x, h_prev))
        _, d, a = cell.derivatives(z, h_prev)
        H = cell.recurrent_jacobian(d, a)
    eps = 1e-6
    for b in range(x.shape[0]):
        step = lambda hp: cell(x[b : b + 1], hp[None])[0]  # noqa: E731
        torch.testing.assert_close(H[b], jacobian(step, h_prev[b]), rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            n = cell.hidden_size
            fd = torch.stack([(step(h_prev[b] + eps * e) - step(h_prev[b] - eps * e)) / (2 * eps)
                              for e in torch.eye(n, dtype=torch.float64)], dim=1)
        torch.testing.assert_close(H[b], fd, rtol=1e-7, atol=1e-9)


def test_recurrent_jvp_is_H_times_s(cell_name):
    cell, x, h_prev = _point(cell_name)
    s = torch.randn_like(h_prev)
    with torch.no_grad():
        z = cell.preactivation(cell.extended_input(x, h_prev))
        _, d, a = cell.derivatives(z, h_prev)
        torch.testing.assert_close(cell.recurrent_jvp(d, a, s), torch.einsum("bji,bi->bj", cell.recurrent_jacobian(d, a), s))


def test_immediate_jacobian_is_kronecker_product(cell_name):
    """F_t = ∂h_t/∂W = x̂_t ⊗ D_t with D_t = [diag(d^1) | … | diag(d^r)]."""
    cell, x, h_prev = _point(cell_name)
    n, r = cell.hidden_size, cell.gate_blocks
    with torch.no_grad():
        x_hat = cell.extended_input(x, h_prev)
        _, d, a = cell.derivatives(cell.preactivation(x_hat), h_prev)
    W0 = cell.weight.detach().clone()
    for b in range(x.shape[0]):
        def step(W):
            z = (x_hat[b : b + 1] @ W).view(1, r, n)
            return cell.phi(z, h_prev[b : b + 1])[0]
        F = jacobian(step, W0)  # (n, m+n+1, r n)
        D = torch.cat([torch.diag(d[b, k]) for k in range(r)], dim=1)  # (n, r n)
        kron = torch.einsum("i,jc->jic", x_hat[b], D)
        torch.testing.assert_close(F, kron, rtol=1e-12, atol=1e-14)


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
    assert cell.weight.shape == (4 + 6 + 1, cell.gate_blocks * 6)
    assert cell.gate_blocks == {"tanh": 1, "rhn": 2}[name]


def test_rhn_initialisation_is_official_scale():
    torch.manual_seed(0)
    model = kl.RecurrentModel(kl.RHN(input_size=50, hidden_size=128), output_size=50)
    for p in (model.cell.weight, model.readout):
        assert abs(p.std().item() - 0.01) < 0.0005
        assert abs(p.mean().item()) < 0.0005
