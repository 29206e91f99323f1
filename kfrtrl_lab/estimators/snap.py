"""SnAp-1 (Menick et al., ICLR 2021; algorithms.md, section 5) for the Kronecker class.

Parameter W[a, k·n + j] moves only unit j's state immediately; SnAp-1 keeps, per lane, only its
influence on unit j's own s slots, J ∈ R^{s × (m+n+1) × r·n}, and drops the rest of H_t G_{t-1}:

    J_t[:, a, c] = H^j_t J_{t-1}[:, a, c] + x̂_t[a] D_t[slots of j, c]      (c = k·n + j)
    dL_t/dW[a, c] ≈ Σ_σ (∂L_t/∂s_t)[σ, j] J_t[σ, a, c]

H^j_t is unit j's s × s diagonal block of H_t. Deterministic and biased (it ignores how unit j's
parameters reach other units and come back); exact when H_t is block-diagonal per unit (a tanh
RNN whose recurrent block of W is diagonal). O(s·|θ|) memory and O(s²·|θ|) time per lane and step.
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
        new = [sum(blocks[:, i, o, None, :] * J[:, o] for o in range(s)) for i in range(s)]
        self.J = torch.stack(new, dim=1).addcmul_(step.x_hat[:, None, :, None], D[:, :, None, :])

    def recurrent_gradient(self, dl_ds, per_lane=False):
        L, s = self.batch_size, self.cell.slots
        g = self.cell.per_column(dl_ds.view(L, s, -1))  # (B, s, r·n): ∂L/∂s of each column's unit
        per = (g[:, :, None, :] * self.J).sum(dim=1)
        return per if per_lane else per.sum(dim=0)
