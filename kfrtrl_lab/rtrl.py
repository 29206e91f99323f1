"""Exact real-time recurrent learning (algorithms.md, section 1).

    G_t = H_t G_{t-1} + F_t,   F_t = x̂_t ⊗ D_t,   dL_t/dW = (∂L_t/∂h_t) G_t

G is kept per lane as (n, m+n+1, r, n): the influence of every entry W[i, k·n + l]
on every unit j. O(n·|θ|) memory and O(n²·|θ|) time per lane and step.
"""

from __future__ import annotations

import torch

from .estimator import Estimator


class RTRL(Estimator):
    name = "rtrl"
    state_names = ("h", "influence")

    def _init_influence(self):
        c = self.cell
        self.influence = torch.zeros(
            self.batch_size, c.hidden_size, c.extended_size, c.gate_blocks, c.hidden_size,
            device=self.device, dtype=self.dtype,
        )
        self._spare = torch.empty_like(self.influence)  # swaps with G each step (see KFRTRL)

    def _reset_influence(self, lanes):
        self.influence[lanes] = 0.0

    def _advance(self, x):
        cell, G = self.cell, self.influence
        B, n = G.shape[0], G.shape[1]
        x_hat = cell.extended_input(x, self.h)
        h, d, a = cell.derivatives(cell.preactivation(x_hat), self.h)
        G_new = self._spare
        torch.bmm(cell.recurrent_jacobian(d, a), G.view(B, n, -1), out=G_new.view(B, n, -1))
        self._spare, G = G, G_new
        # F_t is nonzero only where the parameter's output unit l equals the unit j:
        # G[b, j, i, k, j] += x̂_i d^k_j
        G.diagonal(dim1=1, dim2=4).add_(x_hat[:, :, None, None] * d[:, None, :, :])
        self.influence, self.h = G, h

    def recurrent_gradient(self, dl_dh, per_lane=False):
        G = self.influence
        B, n = G.shape[0], G.shape[1]
        shape = self.cell.weight.shape
        if per_lane:
            return torch.bmm(dl_dh[:, None, :], G.view(B, n, -1)).view(B, *shape)
        return (dl_dh.reshape(1, -1) @ G.view(B * n, -1)).view(shape)
