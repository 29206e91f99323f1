"""KF-AVG-k (algorithms.md, section 5): k independent KF-RTRL pairs per lane, each with its own
signs, averaged — Ĝ_t = (1/k) Σ_i u_i ⊗ A_i, every pair updated by section 3:

    B_i = H_t A_i,  p1_i = sqrt(‖B_i‖/‖u_i‖),  p2 = sqrt(‖D_t‖/‖x̂_t‖),  c1_i, c2_i ∈ {±1}
    u_i ← c1_i p1_i u_i + c2_i p2 x̂_t,   A_i ← c1_i B_i / p1_i + c2_i D_t / p2

Unbiased, variance = KF-RTRL's / k, cost k × KF-RTRL's (the k products H_t A_i are one batched
product). KF-AVG-1 is KF-RTRL with the same random signs.
"""

from __future__ import annotations

import torch

from .base import rademacher
from .kron_sum import KroneckerSum
from .registry import register_method


@register_method
class KFAverage(KroneckerSum):
    name = "kf-avg-<k>"
    stochastic = True

    def __init__(self, model, batch_size, k: int, **kwargs):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.pairs, self.weight = k, float(k)
        self.name = f"kf-avg-{k}"  # before the base checks, which name the method
        super().__init__(model, batch_size, **kwargs)

    def _init_influence(self):
        super()._init_influence()
        self._spare = torch.empty_like(self.At)  # B_i = H_t A_i, then the new A_i (swaps with At)

    def _advance(self, step):
        L, k = self.batch_size, self.pairs
        P = step.H_stacked(self.At, out=self._spare)  # B_i, transposed
        self._spare = self.At
        N = P.shape[2] * P.shape[3]
        Pf = P.view(L, k, N)
        norm_b = Pf.norm(dim=2)
        norm_u = self.u.norm(dim=2)
        norm_d = step.D_norm()[:, None]
        norm_x = step.x_hat.norm(dim=1)[:, None]  # ≥ 1 thanks to the bias entry
        live1 = (norm_b > 0) & (norm_u > 0)  # a dead first term (after a reset u = 0) is dropped
        live2 = norm_d > 0
        tiny = torch.finfo(self.dtype).tiny
        p1 = torch.where(live1, (norm_b / norm_u.clamp_min(tiny)).sqrt(), torch.ones_like(norm_b))
        p2 = torch.where(live2, (norm_d / norm_x).sqrt(), torch.ones_like(norm_d))
        signs = rademacher((L, k, 2), self.random, self.dtype)
        c1, c2 = signs[..., 0] * live1, signs[..., 1] * live2
        self.u = (c1 * p1)[:, :, None] * self.u + (c2 * p2)[:, :, None] * step.x_hat[:, None, :]
        Pf.mul_((c1 / p1)[:, :, None])
        step.add_D_stacked(P, c2 / p2)  # on D_t's nonzeros only: no dense D_t, no second pass over the A's
        self.At = P
