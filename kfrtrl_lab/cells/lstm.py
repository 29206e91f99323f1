"""The LSTM as a Kronecker-class cell (algorithms.md, section 2): r = 4 gate blocks (i, f, g, o),
s = 2 slots per unit (h, c).

    i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

One W of shape (m+n+1, 4n) on x̂ = [x, h_{t-1}, 1]. It is ``torch.nn.LSTMCell`` with

    W[:m]      = W_ihᵀ      (LSTMCell.weight_ih, (4n, m), gate rows i, f, g, o)
    W[m:m+n]   = W_hhᵀ      (LSTMCell.weight_hh, (4n, n))
    W[m+n]     = b_ih + b_hh

(:func:`from_lstm_cell` / :func:`to_lstm_cell` convert). Initialisation as PyTorch's default,
every entry of W ~ U(−1/√n, 1/√n) (our single bias row has that law, where LSTMCell sums two),
plus an optional constant ``forget_bias`` on the f block of the bias row.
"""

from __future__ import annotations

import math

import torch

from .base import Cell

I, F, G, O = range(4)  # gate blocks
H_SLOT, C_SLOT = 0, 1


class LSTM(Cell):
    gate_blocks = 4
    slots = 2

    def __init__(self, input_size: int, hidden_size: int, init_std: float | None = None, forget_bias: float = 0.0):
        self.forget_bias = float(forget_bias)
        super().__init__(input_size, hidden_size, init_std)

    @staticmethod
    def default_init_std(m, n):
        return 1.0 / math.sqrt(n)  # the readout's normal init; W itself is uniform, see reset_parameters

    def initial_weight(self, init_std=None):
        """PyTorch's LSTM init U(−1/√n, 1/√n) (``init_std`` given: N(0, init_std²) instead),
        then ``forget_bias`` added to the f block of the bias row."""
        n = self.hidden_size
        if init_std is None:
            bound = 1.0 / math.sqrt(n)
            weight = torch.empty(self.extended_size, 4 * n).uniform_(-bound, bound)
        else:
            weight = super().initial_weight(init_std)
        weight[-1, F * n:(F + 1) * n] += self.forget_bias
        return weight

    def phi(self, z, state_prev):
        i, f, o = torch.sigmoid(z[..., I, :]), torch.sigmoid(z[..., F, :]), torch.sigmoid(z[..., O, :])
        g = torch.tanh(z[..., G, :])
        c = f * state_prev[..., C_SLOT, :] + i * g
        return torch.stack([o * torch.tanh(c), c], dim=-2)

    def derivatives(self, z, state_prev):
        # ∂c/∂z = [g i(1−i), c_{t-1} f(1−f), i(1−g²), 0];  ∂h/∂z_k = o(1−tanh²c) ∂c/∂z_k for i, f, g,
        # ∂h/∂z_o = tanh(c) o(1−o);  direct: ∂c/∂c_{t-1} = f, ∂h/∂c_{t-1} = o(1−tanh²c) f, none from h_{t-1}
        i, f, o = torch.sigmoid(z[:, I]), torch.sigmoid(z[:, F]), torch.sigmoid(z[:, O])
        g = torch.tanh(z[:, G])
        c_prev = state_prev[:, C_SLOT]
        c = f * c_prev + i * g
        tc = torch.tanh(c)
        h = o * tc
        dc = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), torch.zeros_like(c)], dim=1)
        dh_dc = o * (1 - tc * tc)
        dh = dc * dh_dc[:, None]
        dh[:, O] = tc * o * (1 - o)
        zero = torch.zeros_like(c)
        direct = torch.stack([torch.stack([zero, dh_dc * f], dim=1), torch.stack([zero, f], dim=1)], dim=1)
        return torch.stack([h, c], dim=1), torch.stack([dh, dc], dim=1), direct


def from_lstm_cell(cell: torch.nn.LSTMCell) -> LSTM:
    """The :class:`LSTM` that computes what ``cell`` computes (same gates, same weights)."""
    m, n = cell.input_size, cell.hidden_size
    ours = LSTM(m, n).to(dtype=cell.weight_ih.dtype, device=cell.weight_ih.device)
    with torch.no_grad():
        ours.weight[:m] = cell.weight_ih.T
        ours.weight[m:m + n] = cell.weight_hh.T
        bias = torch.zeros(4 * n, dtype=cell.weight_ih.dtype, device=cell.weight_ih.device)
        for b in (cell.bias_ih, cell.bias_hh):
            if b is not None:
                bias += b
        ours.weight[m + n] = bias
    return ours


def to_lstm_cell(ours: LSTM) -> torch.nn.LSTMCell:
    """A ``torch.nn.LSTMCell`` with our weights (the bias row goes into ``bias_ih``, ``bias_hh`` = 0)."""
    m, n = ours.input_size, ours.hidden_size
    cell = torch.nn.LSTMCell(m, n).to(dtype=ours.weight.dtype, device=ours.weight.device)
    with torch.no_grad():
        cell.weight_ih.copy_(ours.weight[:m].T)
        cell.weight_hh.copy_(ours.weight[m:m + n].T)
        cell.bias_ih.copy_(ours.weight[m + n])
        cell.bias_hh.zero_()
    return cell
