"""The tanh RNN: s_t = h_t = tanh(x̂_t W) (r = 1, s = 1)."""

from __future__ import annotations

import torch

from .base import Cell


class TanhRNN(Cell):
    """h_t = tanh(x̂_t W) (r = 1)."""

    gate_blocks = 1
    direct_path = False  # h_{t-1} acts only through z_t

    def phi(self, z, state_prev):
        return torch.tanh(z[..., 0:1, :])

    def derivatives(self, z, state_prev):
        # ∂h/∂z = 1 − h², and h_{t-1} has no direct path (it acts only through z)
        h = torch.tanh(z[:, 0:1, :])
        return h, (1 - h * h).unsqueeze(2), torch.zeros_like(state_prev).unsqueeze(2)
