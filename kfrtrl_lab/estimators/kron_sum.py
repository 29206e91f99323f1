"""The influence estimate as a sum of Kronecker pairs, Ĝ_t = (1/w) Σ_{i=1..p} u_i ⊗ A_i per lane,
shared by OK-r (w = 1) and KF-AVG-k (w = k). Storage: u (B, p, a) and A_i transposed,
``At`` (B, p, r·n, n_s), so each A_i is contiguous and the stack is one (p, r·n·n_s) matrix."""

from __future__ import annotations

import torch

from .base import Estimator


class KroneckerSum(Estimator):
    lane_state = ("u", "At")
    pairs: int = 1  # p
    weight: float = 1.0  # w: the estimate is (1/w) Σ_i u_i ⊗ A_i

    def _init_influence(self):
        c = self.cell
        self.u = self._zeros(self.pairs, c.extended_size)
        self.At = self._zeros(self.pairs, c.weight.shape[1], c.state_size)

    @property
    def kron_factors(self):
        """(u (B, p, m+n+1), A (B, p, n_s, r·n)): Ĝ_t = (1/w) Σ_i u_i ⊗ A_i per lane."""
        return self.u, self.At.transpose(2, 3)

    def recurrent_gradient(self, dl_ds, per_lane=False):
        """(1/w) Σ_i u_iᵀ ((∂L_t/∂s_t) A_i)."""
        L, p = self.u.shape[:2]
        g = self._pair_rows(dl_ds)  # (L, p, r·n): row i is (∂L_t/∂s_t) A_i
        if self.weight != 1.0:
            g = g / self.weight
        if per_lane:
            return torch.bmm(self.u.transpose(1, 2), g)
        return self.u.reshape(L * p, -1).T @ g.reshape(L * p, -1)

    def _pair_rows(self, dl_ds):
        """(∂L_t/∂s_t) A_i for every pair, (L, p, r·n)."""
        L, p, c, ns = self.At.shape
        # as a row times Aᵀ: BLAS runs this matrix-vector product twice as fast as At @ column
        return torch.bmm(dl_ds[:, None, :], self.At.view(L, p * c, ns).transpose(1, 2)).view(L, p, c)
