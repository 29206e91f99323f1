"""Backpropagation through time: full (``bptt``) and truncated (``tbptt-<k>``).

The reference the online methods are measured against. The loss of every step is kept in the
autograd graph; at the end of a window of k steps (or at :meth:`flush`, for full BPTT at the end
of the sequence) one backward pass writes

    dL/dθ = Σ_t dL_t/dθ   (paths through the state only within the window)

into ``.grad`` and the state is detached, so the next window starts a new graph.
"""

from __future__ import annotations

import torch

from .base import Estimator, scale_lanes
from .registry import register_method


@register_method
class BPTT(Estimator):
    """Full BPTT: the gradient is written only by :meth:`flush` (at the end of the sequence)."""

    name = "bptt"
    exact = True
    supports_diagonal = True  # autograd through any cell's forward, the LRU's complex one included
    flushes_at_sequence_end = True
    capturable = False  # the fast path runs BPTT windows uncaptured (their autograd graph is rebuilt each time)

    def __init__(self, model, batch_size, *, truncation: int | None = None, **kwargs):
        if truncation is not None and (not isinstance(truncation, int) or isinstance(truncation, bool)
                                       or truncation < 1):
            raise ValueError(f"truncation must be a positive int or None, got {truncation!r}")
        self.truncation = truncation
        super().__init__(model, batch_size, **kwargs)
        self._pending_loss = None
        self._window = 0

    def step(self, x, targets):
        self._check_step_inputs(x, targets)
        return self._window_step(x, targets, self._take_keep(), check=True)

    def fast_step(self, x, targets, keep):
        return self._window_step(x, targets, keep * self._take_keep(), check=False)

    def _window_step(self, x, targets, keep, check):
        self._begin_step()
        with torch.enable_grad():
            state = self.cell(x, scale_lanes(self.state, keep))
            losses = self.model.lane_losses(self.cell.layer_output(x, state), targets)
            step_loss = (losses * self._lane_weights).sum()
        self._record_finite(state.detach(), losses.detach(), step_loss.detach()[None])
        if check:
            self.check_finite()  # before the window's backward pass can touch .grad
        self._pending_loss = step_loss if self._pending_loss is None else self._pending_loss + step_loss
        self.state = state
        self._window += 1
        if self.truncation is not None and self._window == self.truncation:
            self.flush()
        return losses.detach()

    def flush(self):
        if self._pending_loss is not None:
            self._pending_loss.backward()
            self.gradient_ready = True
        self._pending_loss = None
        self._window = 0
        self.state = self.state.detach()

    @property
    def resumable(self):
        return self._pending_loss is None

    def state_dict(self):
        if not self.resumable:
            raise RuntimeError(f"{self.name}: cannot save in the middle of a window; call flush() first "
                               f"or save when gradient_ready is True")
        return super().state_dict()

    def step_with_cotangent(self, x, dl_ds, keep=None, *, check=True):
        raise ValueError(f"{self.name} backpropagates over the sequence and keeps no influence estimate, so it "
                         f"cannot serve one layer of a layer-wise online stack; a stack's BPTT gradient is "
                         f"kl.stack_true_gradient")

    def step_lane_gradients(self, x, targets):
        raise NotImplementedError(
            f"{self.name} computes one gradient for all lanes by backprop; use kl.gradient_samples, "
            f"which runs deterministic methods on one lane"
        )


@register_method
class TruncatedBPTT(BPTT):
    """BPTT in windows of k steps: a backward pass and a detach at the end of every window."""

    name = "tbptt-<k>"
    exact = False  # a truncation: biased by design
    flushes_at_sequence_end = False

    def __init__(self, model, batch_size, k: int, **kwargs):
        super().__init__(model, batch_size, truncation=k, **kwargs)
        self.name = f"tbptt-{k}"
