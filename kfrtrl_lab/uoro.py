"""Unbiased Online Recurrent Optimisation (algorithms.md, section 4), for the cell's W.

Per lane a rank-one estimate G̃_t = s̃_t ⊗ θ̃_t, s̃ ∈ R^n, θ̃ shaped like W:

    s_fwd = H_t s̃_{t-1}                     (forward-mode product, Cell.recurrent_jvp)
    δθ    = νᵀ F_t = x̂_tᵀ (ν ⊙ D-blocks)     (outer product, O(|θ|)), ν ∈ {±1}^n fresh
    ρ0 = sqrt((‖θ̃‖+ε)/(‖s_fwd‖+ε)),   ρ1 = sqrt((‖δθ‖+ε)/(‖ν‖+ε))
    s̃_t = ρ0 s_fwd + ρ1 ν,   θ̃_t = θ̃_{t-1}/ρ0 + δθ/ρ1
    dL_t/dW ≈ ((∂L_t/∂h_t) · s̃_t) θ̃_t

E[ν νᵀ] = I and E[ν] = 0 make it unbiased for any positive ρ0, ρ1.
"""

from __future__ import annotations

import math

import torch

from .estimator import Estimator, rademacher


class UORO(Estimator):
    name = "uoro"
    stochastic = True
    state_names = ("h", "state_factor", "param_factor")
    eps = 1e-7

    def _init_influence(self):
        c, B = self.cell, self.batch_size
        self.state_factor = torch.zeros(B, c.hidden_size, device=self.device, dtype=self.dtype)  # s̃
        self.param_factor = torch.zeros(B, *c.weight.shape, device=self.device, dtype=self.dtype)  # θ̃

    def _reset_influence(self, lanes):
        self.state_factor[lanes] = 0.0
        self.param_factor[lanes] = 0.0

    def _advance(self, x):
        cell, eps = self.cell, self.eps
        B, n = self.batch_size, cell.hidden_size
        x_hat = cell.extended_input(x, self.h)
        h, d, a = cell.derivatives(cell.preactivation(x_hat), self.h)
        s_fwd = cell.recurrent_jvp(d, a, self.state_factor)
        nu = rademacher((B, n), self.generator, self.dtype, self.device)
        nu_d = (nu[:, None, :] * d).flatten(1)  # νᵀ D_t, (B, r·n)

        norm_theta = self.param_factor.flatten(1).norm(dim=1)
        norm_dtheta = x_hat.norm(dim=1) * nu_d.norm(dim=1)  # ‖x̂ ⊗ νᵀD‖ = ‖x̂‖ ‖νᵀD‖
        rho0 = ((norm_theta + eps) / (s_fwd.norm(dim=1) + eps)).sqrt()
        rho1 = ((norm_dtheta + eps) / (math.sqrt(n) + eps)).sqrt()

        self.state_factor = rho0[:, None] * s_fwd + rho1[:, None] * nu
        theta = self.param_factor.mul_((1 / rho0)[:, None, None])
        theta.baddbmm_((x_hat / rho1[:, None])[:, :, None], nu_d[:, None, :])
        self.h = h

    def recurrent_gradient(self, dl_dh, per_lane=False):
        coef = (dl_dh * self.state_factor).sum(dim=1)  # (∂L/∂h) · s̃
        theta = self.param_factor
        if per_lane:
            return coef[:, None, None] * theta
        return (coef @ theta.flatten(1)).view(theta.shape[1:])
