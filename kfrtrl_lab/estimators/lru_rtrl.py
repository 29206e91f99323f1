"""Exact RTRL for a diagonal cell, the LRU (algorithms.md, section 5b), reached through ``rtrl``.

h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t) is element-wise in the unit j, so the influence of unit j's
parameters stays on unit j and G_t is held exactly by three traces per lane (⊙ broadcasts λ over rows):

    e^λ_t = λ ⊙ e^λ_{t-1} + h_{t-1}        (N)       = ∂h_t/∂λ
    e^γ_t = λ ⊙ e^γ_{t-1} + B x_t          (N)       = ∂h_t/∂γ
    E^B_t = λ ⊙ E^B_{t-1} + γ x_tᵀ         (N × H)   = ∂h_t[j]/∂B[j, a]   (h is holomorphic in λ and B)

With δ_t = ∂L_t/∂h_t in torch's convention (∂L/∂Re h + i·∂L/∂Im h, so dL = Re(conj(δ) dh)):

    dL_t/dν       = Re(conj(δ) ⊙ e^λ ⊙ λ) ⊙ (−exp ν)        (∂λ/∂ν = −exp(ν) λ)
    dL_t/dθ       = −Im(conj(δ) ⊙ e^λ ⊙ λ) ⊙ exp θ          (∂λ/∂θ = i exp(θ) λ)
    dL_t/dγ_log   = Re(conj(δ) ⊙ e^γ) ⊙ γ
    dL_t/dB_re    = Re(conj(δ) ⊙ E^B),   dL_t/dB_im = −Im(conj(δ) ⊙ E^B)   (∂h/∂B_im = i ∂h/∂B_re)

(the official JAX code's δ is the conjugate of torch's, hence its B_im = −Im(δ E^B) with no conj).
O(N·H) memory and time per lane and step: linear in N, where the dense RTRL of a Kronecker cell
is O(n⁴). C, D and the readout are immediate: their gradient is backprop through step t.
"""

from __future__ import annotations

import torch

from ..cells import is_diagonal
from .base import Estimator, _accumulate, scale_lanes


class LRURTRL(Estimator):
    """Exact RTRL of an LRU layer by its traces. Built by ``kl.make_estimator("rtrl", model, B)`` (or
    ``kl.RTRL(model, B)``) when ``model.cell`` is an LRU; ``model`` may also be a layer of a stack (any
    module with ``.cell``), stepped by :meth:`step_with_cotangent`."""

    name = "rtrl"
    exact = True
    supports_diagonal = True
    lane_state = ("trace_lambda", "trace_gamma", "trace_B")

    def __init__(self, model, batch_size, **kwargs):
        if not is_diagonal(getattr(model, "cell", None)):
            raise ValueError(f"LRURTRL needs a diagonal cell (kl.LRU), got {type(getattr(model, 'cell', model)).__name__}; "
                             f"kl.make_estimator('rtrl', ...) picks the right RTRL for any cell")
        super().__init__(model, batch_size, **kwargs)

    def _init_influence(self):
        c, B = self.cell, self.batch_size
        dtype = c.state_dtype
        self.trace_lambda = torch.zeros(B, c.hidden_size, device=self.device, dtype=dtype)  # e^λ
        self.trace_gamma = torch.zeros(B, c.hidden_size, device=self.device, dtype=dtype)  # e^γ
        self.trace_B = torch.zeros(B, c.hidden_size, c.input_size, device=self.device, dtype=dtype)  # E^B

    # -- one step ---------------------------------------------------------------------------
    def _advance(self, x: torch.Tensor, keep: torch.Tensor) -> None:
        """s_{t-1} -> s_t and the traces t-1 -> t for every lane (no autograd). A lane with keep 0
        restarts: its h_{t-1} and its traces are taken as 0 (its decay factor λ·keep is 0)."""
        c = self.cell
        lam, gamma = c.eigenvalues(), c.input_scale()
        bx = c.projected_input(x)  # B x_t, (L, N)
        h_prev = scale_lanes(self.state, keep)
        decay = lam * keep[:, None]  # (L, N)
        self.trace_lambda = decay * self.trace_lambda + h_prev
        self.trace_gamma = decay * self.trace_gamma + bx
        # E^B in place (the largest trace): E^B ← decay ⊙ E^B + γ x_tᵀ
        self.trace_B.mul_(decay[:, :, None]).add_(gamma[None, :, None] * x[:, None, :])
        self.state = lam * h_prev + gamma * bx  # the same h_t as cell.forward(x, h_prev)

    def recurrent_gradient(self, dl_ds, per_lane=False):
        """dL_t/d(ν, θ, γ_log, B_re, B_im) from δ_t = ``dl_ds`` (L, N) complex and the traces (see the
        module's docstring), flattened and concatenated in ``cell.recurrent_parameters()``'s order:
        (P,) summed over lanes, or (L, P) with ``per_lane``."""
        c = self.cell
        lam, gamma = c.eigenvalues(), c.input_scale()
        conj_delta = dl_ds.conj()
        through_lambda = conj_delta * self.trace_lambda * lam  # conj(δ) ⊙ e^λ ⊙ λ, (L, N)
        d_nu = through_lambda.real * -torch.exp(c.nu)
        d_theta = through_lambda.imag * -torch.exp(c.theta)
        d_gamma_log = (conj_delta * self.trace_gamma).real * gamma
        if per_lane:
            through_B = conj_delta[:, :, None] * self.trace_B  # (L, N, H)
            parts = [d_nu, d_theta, d_gamma_log, through_B.real.flatten(1), -through_B.imag.flatten(1)]
            return torch.cat(parts, dim=1)
        through_B = torch.einsum("ln,lnh->nh", conj_delta, self.trace_B)  # Σ_lanes conj(δ) ⊙ E^B
        parts = [d_nu.sum(0), d_theta.sum(0), d_gamma_log.sum(0), through_B.real.flatten(), -through_B.imag.flatten()]
        return torch.cat(parts)

    def _core_step(self, x, targets, keep, per_lane):
        self._begin_step()
        c = self.cell
        with torch.no_grad():
            self._advance(x, keep)
            y = c.layer_output(x, self.state)
            losses, dl_dy, d_readout = self.model.readout_step(y, targets, self._lane_weights)
            dl_ds, d_output = c.output_backward(x, self.state, dl_dy)
            d_recurrent = self.recurrent_gradient(dl_ds, per_lane=per_lane)
            self._record_finite(self.state, losses, d_recurrent)
        return losses, (d_readout, d_output), d_recurrent

    def _accumulate(self, d_immediate, d_recurrent) -> None:
        d_readout, d_output = d_immediate
        _accumulate(self.model.readout, d_readout)
        for param, grad in zip(self.cell.immediate_parameters(), d_output):
            _accumulate(param, grad)
        self._accumulate_recurrent(d_recurrent)
        self.gradient_ready = True

    def _accumulate_recurrent(self, d_recurrent: torch.Tensor) -> None:
        """Split the flat (P,) gradient into the recurrent parameters and add it to their .grad."""
        params = self.cell.recurrent_parameters()
        for param, grad in zip(params, d_recurrent.split([p.numel() for p in params])):
            _accumulate(param, grad.view_as(param))

    # -- the layer contract ------------------------------------------------------------------
    def step_with_cotangent(self, x: torch.Tensor, dl_ds: torch.Tensor, keep: torch.Tensor | None = None, *,
                            check: bool = True) -> None:
        """Advance every lane one step (s_{t-1} -> s_t, the traces) and ADD dL_t/dθ = (∂L_t/∂s_t) G_t
        to the recurrent parameters' .grad, for a layer of a stack whose error ``dl_ds`` = ∂L_t/∂h_t
        (L, N) complex (torch's convention) comes from the blocks above at step t. ``keep`` (L,): 0 for
        a lane that restarts from h = 0 at this step (combined with any :meth:`reset`). ``check=False``:
        nothing is read back (the fast path); :meth:`check_finite` raises for a NaN later."""
        d_recurrent = self.cotangent_lane_gradients(x, dl_ds, keep, per_lane=False, check=check)
        self._accumulate_recurrent(d_recurrent)
        self.gradient_ready = True

    def cotangent_lane_gradients(self, x: torch.Tensor, dl_ds: torch.Tensor, keep: torch.Tensor | None = None, *,
                                 per_lane: bool = True, check: bool = True) -> torch.Tensor:
        """:meth:`step_with_cotangent` without touching ``.grad``: the flat recurrent gradient, per lane
        (L, P) or summed (``per_lane=False``, (P,))."""
        if isinstance(dl_ds, torch.Tensor) and not dl_ds.is_complex():
            raise ValueError(f"dl_ds must be a complex tensor shaped like the state {tuple(self.state.shape)} "
                             f"(∂L/∂Re h + i·∂L/∂Im h), got {dl_ds.dtype}")
        self._check_cotangent_inputs(x, dl_ds, keep)
        keep = self._take_keep() if keep is None else keep.to(self.dtype) * self._take_keep()
        self._begin_step()
        with torch.no_grad():
            self._advance(x, keep)
            dl_ds = dl_ds.detach().to(self.state.dtype)
            d_recurrent = self.recurrent_gradient(dl_ds, per_lane=per_lane)
            # the cotangent's per-lane sums stand in the loss's column (one entry a lane, as in the base)
            self._record_finite(self.state, torch.view_as_real(dl_ds).flatten(1).sum(1), d_recurrent)
        if check:
            self.check_finite()
        return d_recurrent
