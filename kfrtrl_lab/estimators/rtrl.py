"""Exact real-time recurrent learning (algorithms.md, section 1).

    G_t = H_t G_{t-1} + F_t,   F_t = x̂_t ⊗ D_t,   dL_t/dW = (∂L_t/∂s_t) G_t

G is kept per lane as (n_s, m+n+1, r·n): the influence of every entry of W on every state entry.
O(n_s·|θ|) memory and O(n_s²·|θ|) time per lane and step.

For a diagonal cell (the LRU) the same name builds :class:`~kfrtrl_lab.estimators.lru_rtrl.LRURTRL`,
which holds the same exact influence as per-unit traces (O(N·H) per lane and step).
"""

from __future__ import annotations

import torch

from ..cells import is_diagonal
from .base import Estimator
from .lru_rtrl import LRURTRL
from .registry import register_method


@register_method
class RTRL(Estimator):
    name = "rtrl"
    exact = True
    supports_diagonal = True  # through LRURTRL, below
    lane_state = ("influence",)

    def __new__(cls, model=None, *args, **kwargs):
        # one name for exact RTRL: a diagonal cell gets the trace form (not an RTRL subclass, so
        # Python does not run RTRL.__init__ on what this returns)
        if cls is RTRL and is_diagonal(getattr(model, "cell", None)):
            return LRURTRL(model, *args, **kwargs)
        return super().__new__(cls)

    def _init_influence(self):
        c = self.cell
        self.influence = self._zeros(c.state_size, *c.weight.shape)
        self._spare = torch.empty_like(self.influence)  # swaps with G each step (see KFRTRL)

    def _advance(self, step):
        G = self.influence
        B, ns = G.shape[0], G.shape[1]
        G_new = self._spare
        torch.bmm(step.H_dense(), G.view(B, ns, -1), out=G_new.view(B, ns, -1))
        self._spare = G
        step.add_immediate(G_new)
        self.influence = G_new

    def recurrent_gradient(self, dl_ds, per_lane=False):
        G = self.influence
        B, ns = G.shape[0], G.shape[1]
        shape = self.cell.weight.shape
        if per_lane:
            return torch.bmm(dl_ds[:, None, :], G.view(B, ns, -1)).view(B, *shape)
        return (dl_ds.reshape(1, -1) @ G.view(B * ns, -1)).view(shape)
