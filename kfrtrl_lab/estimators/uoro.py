"""Unbiased Online Recurrent Optimisation (algorithms.md, section 4), for the cell's W.

Per lane a rank-one estimate G̃_t = s̃_t ⊗ θ̃_t, s̃ ∈ R^{n_s}, θ̃ shaped like W:

    s_fwd = H_t s̃_{t-1}                     (forward-mode product, CellStep.H_times)
    δθ    = νᵀ F_t = x̂_t ⊗ (νᵀ D_t)          (outer product, O(|θ|)), ν ∈ {±1}^{n_s} fresh
    ρ0 = sqrt((‖θ̃‖+ε)/(‖s_fwd‖+ε)),   ρ1 = sqrt((‖δθ‖+ε)/(‖ν‖+ε))
    s̃_t = ρ0 s_fwd + ρ1 ν,   θ̃_t = θ̃_{t-1}/ρ0 + δθ/ρ1
    dL_t/dW ≈ ((∂L_t/∂s_t) · s̃_t) θ̃_t

E[ν νᵀ] = I and E[ν] = 0 make it unbiased for any positive ρ0, ρ1.
"""

from __future__ import annotations

import math


from .base import Estimator, rademacher
from .registry import register_method


@register_method
class UORO(Estimator):
    name = "uoro"
    stochastic = True
    lane_state = ("state_factor", "param_factor")
    eps = 1e-7

    def _init_influence(self):
        c = self.cell
        self.state_factor = self._zeros(c.state_size)  # s̃
        self.param_factor = self._zeros(*c.weight.shape)  # θ̃

    def _advance(self, step):
        eps, ns = self.eps, self.cell.state_size
        s_fwd = step.H_times(self.state_factor)
        nu = rademacher((self.batch_size, ns), self.random, self.dtype)
        nu_d = step.D_transpose_times(nu)  # νᵀ D_t, (B, r·n)

        keep = step.keep_factor  # θ̃ is not propagated through H_t: a reset lane's is dropped here
        norm_theta = self.param_factor.flatten(1).norm(dim=1) * keep
        norm_dtheta = step.x_hat.norm(dim=1) * nu_d.norm(dim=1)  # ‖x̂ ⊗ νᵀD‖ = ‖x̂‖ ‖νᵀD‖
        rho0 = ((norm_theta + eps) / (s_fwd.norm(dim=1) + eps)).sqrt()
        rho1 = ((norm_dtheta + eps) / (math.sqrt(ns) + eps)).sqrt()

        self.state_factor = rho0[:, None] * s_fwd + rho1[:, None] * nu
        theta = self.param_factor.mul_((keep / rho0)[:, None, None])
        theta.baddbmm_((step.x_hat / rho1[:, None])[:, :, None], nu_d[:, None, :])

    def recurrent_gradient(self, dl_ds, per_lane=False):
        coef = (dl_ds * self.state_factor).sum(dim=1)  # (∂L/∂s) · s̃
        theta = self.param_factor
        if per_lane:
            return coef[:, None, None] * theta
        return (coef @ theta.flatten(1)).view(theta.shape[1:])
