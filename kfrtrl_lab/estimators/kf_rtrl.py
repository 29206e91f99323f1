"""Kronecker-factored RTRL (algorithms.md, section 3).

Per lane the influence estimate is one Kronecker product G'_t = u_t ⊗ A_t with u ∈ R^{m+n+1},
A ∈ R^{n_s×rn}. One step:

    B_t = H_t A_{t-1}                                   (the one O(r n_s² n) product)
    p1 = sqrt(‖B_t‖/‖u_{t-1}‖),  p2 = sqrt(‖D_t‖/‖x̂_t‖),  c1, c2 ∈ {±1} fresh per lane
    u_t = c1 p1 u_{t-1} + c2 p2 x̂_t
    A_t = c1 B_t / p1 + c2 D_t / p2
    dL_t/dW ≈ u_tᵀ ((∂L_t/∂s_t) A_t)

E[c1 c2] = 0 makes E[u_t ⊗ A_t] = H_t (u_{t-1} ⊗ A_{t-1}) + x̂_t ⊗ D_t, so the estimate is
unbiased for any positive p1, p2; the p's minimise the step's variance. A term whose factor has
zero norm (after a reset H_t A_{t-1} = 0, the step's H being zero for that lane) is dropped (its
sign set to 0), so the first step after a reset gives u ⊗ A = c2² x̂ ⊗ D = F_t exactly.

Storage: A_t is kept as σ_t Ā_t with a per-lane scalar σ_t = c1/p1, so the rescaling of B_t costs
O(B) instead of a pass over B·n_s·rn numbers. σ_{t-1} is folded into H_t's pointwise factors
(O(B n)) before the product, so B_t = (σ_{t-1} H_t) Ā_{t-1} comes out exact and σ never
accumulates over steps.
"""

from __future__ import annotations

import torch

from .base import Estimator, rademacher
from .registry import register_method


@register_method
class KFRTRL(Estimator):
    name = "kf-rtrl"
    stochastic = True
    lane_state = ("u", "A_stored", "A_scale")

    def _init_influence(self):
        c, B = self.cell, self.batch_size
        ns, cols = c.state_size, c.weight.shape[1]
        self.u = self._zeros(c.extended_size)
        # Ā lives in rows :n_s of one of two buffers that swap roles every step (a fresh multi-MB
        # tensor per step would be page-faulted in again whenever the allocator returned its memory).
        # Row n_s receives (∂L_t/∂s_t) B_t from the same product: H_t gets one extra row, ∂L_t/∂s_t H_t,
        # so the gradient's contraction with A_t costs no pass of its own over A.
        self._buffers = (self._zeros(ns + 1, cols), self._zeros(ns + 1, cols))
        self.A_stored = self._buffers[0][:, :ns]  # Ā; a reset lane's B_t = (keep·σ H_t) Ā is zero
        self.A_scale = torch.ones(B, device=self.device, dtype=self.dtype)  # σ
        self._H = self._zeros(ns + 1, ns)  # [σ H_t; ∂L_t/∂s_t σ H_t]
        self._grad_row, self._grad_for = None, None  # (∂L_t/∂s_t) A_t, and the ∂L_t/∂s_t it is for

    @property
    def kron_factors(self):
        """(u_t (B, m+n+1), A_t (B, n_s, r·n)): G'_t = u_t ⊗ A_t per lane (A_t materialised)."""
        return self.u, self.A_scale[:, None, None] * self.A_stored

    def _advance(self, step):
        u, sigma, ns = self.u, self.A_scale, self.cell.state_size
        dl = step.state_cotangent
        H = step.H_dense(sigma, out=self._H[:, :ns])  # σ_{t-1} H_t
        if dl is None:
            self._H[:, ns].zero_()
        else:
            torch.bmm(dl[:, None, :], H, out=self._H[:, ns:])
        target = self._buffers[1] if self.A_stored.data_ptr() == self._buffers[0].data_ptr() else self._buffers[0]
        out = torch.bmm(self._H, self.A_stored, out=target)
        propagated, dl_propagated = out[:, :ns], out[:, ns]  # B_t = H_t A_{t-1}, and (∂L_t/∂s_t) B_t

        norm_b = propagated.flatten(1).norm(dim=1)
        norm_u = u.norm(dim=1)
        norm_d = step.D_norm()
        norm_x = step.x_hat.norm(dim=1)  # ≥ 1 thanks to the bias entry
        live1 = (norm_b > 0) & (norm_u > 0)
        live2 = norm_d > 0
        tiny = torch.finfo(self.dtype).tiny
        p1 = torch.where(live1, (norm_b / norm_u.clamp_min(tiny)).sqrt(), 1.0)
        p2 = torch.where(live2, (norm_d / norm_x).sqrt(), 1.0)
        signs = rademacher((self.batch_size, 2), self.random, self.dtype)
        c1 = signs[:, 0] * live1
        c2 = signs[:, 1] * live2

        self.u = (c1 * p1)[:, None] * u + (c2 * p2)[:, None] * step.x_hat
        # A_t = c1 B_t / p1 + c2 D_t / p2 = σ_t (B_t + γ D_t) with σ_t = c1/p1, γ = c1 c2 p1 / p2
        # (1/c1 = c1 for a sign).
        # A dead first term (live1 false) means B_t = 0 or u = 0: then σ_t = 1 and γ = c2/p2.
        self.A_scale = torch.where(live1, c1 / p1, 1.0)
        gamma = torch.where(live1, c1 * c2 * p1 / p2, c2 / p2)
        step.add_D(propagated, gamma)
        self.A_stored = propagated
        if dl is not None:  # (∂L_t/∂s_t) A_t = σ_t ((∂L_t/∂s_t) B_t + γ (∂L_t/∂s_t) D_t)
            self._grad_row = self.A_scale[:, None] * (dl_propagated + gamma[:, None] * step.D_transpose_times(dl))
            self._grad_for = dl

    def recurrent_gradient(self, dl_ds, per_lane=False):
        if dl_ds is self._grad_for:
            dl_dA = self._grad_row
        else:
            dl_dA = torch.bmm(dl_ds[:, None, :], self.A_stored).squeeze(1) * self.A_scale[:, None]  # (B, r·n)
        if per_lane:
            return self.u[:, :, None] * dl_dA[:, None, :]
        return self.u.T @ dl_dA
