"""SnAp-1 (Menick et al., ICLR 2021; algorithms.md, section 5) for the Kronecker class.

Parameter W[a, k·n + j] moves only unit j's state immediately; SnAp-1 keeps, per lane, only its
influence on unit j's own s slots, J ∈ R^{s × (m+n+1) × r·n}, and drops the rest of H_t G_{t-1}:

    J_t[:, a, c] = H^j_t J_{t-1}[:, a, c] + x̂_t[a] D_t[slots of j, c]      (c = k·n + j)
    dL_t/dW[a, c] ≈ Σ_σ (∂L_t/∂s_t)[σ, j] J_t[σ, a, c]

H^j_t is unit j's s × s diagonal block of H_t. Deterministic and biased: it drops unit j's
parameters' influence on the OTHER units' states (the off-diagonal part of H_t G_{t-1} for them,
through which the loss depends on those parameters — the larger part of the bias), and the paths
that leave unit j and come back (algorithms.md, section 5); exact when H_t is block-diagonal per
unit (a tanh RNN whose recurrent block of W is diagonal). O(s·|θ|) memory and O(s²·|θ|) time per lane and step.
"""

from __future__ import annotations

import torch

from .base import Estimator
from .registry import register_method


@register_method
class SnAp1(Estimator):
    name = "snap-1"
    lane_state = ("J",)

    def _init_influence(self):
        c = self.cell
        self.J = self._zeros(c.slots, *c.weight.shape)  # (B, s, a, r·n)

    def _advance(self, step):
        blocks = step.per_column(step.H_unit_blocks())  # (B, s, s, r·n): H^j for each column's unit j
        D = step.D_per_column()  # (B, s, r·n)
        J, s = self.J, self.cell.slots
        if s == 1:  # in place: two passes over J, no fresh |θ|-sized tensor per step
            J.mul_(blocks[:, 0, 0, None, None, :])
        else:  # J[σ] ← Σ_τ H^j[σ, τ] J[τ]: the old slots are read before any is written
            old = J.clone()
            for slot in range(s):
                torch.mul(blocks[:, slot, 0, None, :], old[:, 0], out=J[:, slot])
                for other in range(1, s):
                    J[:, slot].addcmul_(blocks[:, slot, other, None, :], old[:, other])
        J.addcmul_(step.x_hat[:, None, :, None], D[:, :, None, :])

    def recurrent_gradient(self, dl_ds, per_lane=False):
        L, s = self.batch_size, self.cell.slots
        g = self.cell.per_column(dl_ds.view(L, s, -1))  # (B, s, r·n): ∂L/∂s of each column's unit
        if per_lane:
            return (g[:, :, None, :] * self.J).sum(dim=1)
        # Σ over lanes and slots at once (a 3-D product reduces several times faster than a 4-D one)
        a, c = self.J.shape[2:]
        return (self.J.view(L * s, a, c) * g.reshape(L * s, 1, c)).sum(dim=0)
