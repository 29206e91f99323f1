"""The depth-1 Recurrent Highway Network with coupled carry gate of the papers (r = 2, s = 1).

    [z_c, z_f] = x̂_t W,   c = 2σ(z_c) − 1,   f = σ(z_f),   h_t = f ⊙ h_{t-1} + (1 − f) ⊙ c

Initialisation as the official code: W ~ N(0, 0.01²).
"""

from __future__ import annotations

import torch

from .base import Cell


class RHN(Cell):
    """Depth-1 RHN with coupled carry gate (algorithms.md, section 2)."""

    gate_blocks = 2

    @staticmethod
    def default_init_std(m, n):
        return 0.01

    def phi(self, z, state_prev):
        c = 2 * torch.sigmoid(z[..., 0, :]) - 1
        f = torch.sigmoid(z[..., 1, :])
        return (f * state_prev[..., 0, :] + (1 - f) * c).unsqueeze(-2)

    def derivatives(self, z, state_prev):
        # Closed form of the generic result:  ∂h/∂z_c = (1−f)(1−c²)/2,
        # ∂h/∂z_f = f(1−f)(h_{t-1} − c),  ∂h/∂h_{t-1} = f.
        h_prev = state_prev[:, 0]
        c = 2 * torch.sigmoid(z[:, 0, :]) - 1
        f = torch.sigmoid(z[:, 1, :])
        one_minus_f = 1 - f
        h = f * h_prev + one_minus_f * c
        d = torch.stack([one_minus_f * (1 - c * c) * 0.5, f * one_minus_f * (h_prev - c)], dim=1)
        return h[:, None], d[:, None], f[:, None, None]
