"""A cell with a linear softmax readout of what the cell outputs at step t (:class:`RecurrentModel`),
and a cell alone as one layer of a stack (:class:`Layer`).

    y_t = softmax([o_t, 1] W_out),   L_t = cross-entropy(y_t, target_t)   (nats)

o_t = ``cell.layer_output(x_t, s_t)``: h_t for a Kronecker-class cell (width n); for the LRU its
layer output Re(C h_t) + D ⊙ x_t (width H = the input's), as when the LRU is the last layer of a
network, so C and D are learnt too. The readout (and the LRU's C, D) is not recurrent, so every
estimator takes its gradient exactly by backprop through this one step; only the cell's recurrent
parameters (``cell.recurrent_parameters()``: W, or the LRU's ν, θ, γ_log, B) need an influence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cells import LRU, Cell


class RecurrentModel(nn.Module):
    def __init__(self, cell: Cell | LRU, output_size: int, init_std: float | None = None):
        super().__init__()
        if not isinstance(cell, (Cell, LRU)):
            raise ValueError(f"cell must be a kfrtrl_lab Cell (TanhRNN, RHN, LSTM, ...) or LRU, got "
                             f"{type(cell).__name__}")
        if not isinstance(output_size, int) or isinstance(output_size, bool) or output_size < 2:
            raise ValueError(f"output_size must be an int >= 2, got {output_size!r}")
        self.cell = cell
        self.output_size = output_size
        if init_std is None:  # the LRU's output is O(1) per coordinate: the readout's fan-in sets the scale
            init_std = (cell.default_init_std(cell.input_size, cell.hidden_size) if isinstance(cell, Cell)
                        else 1.0 / (cell.output_width + 1) ** 0.5)
        self.readout = nn.Parameter(torch.randn(cell.output_width + 1, output_size) * init_std)

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    # -- running the model over a sequence (shared with StackedModel: evaluation, sampling) --
    def initial_state(self, lanes: int) -> torch.Tensor:
        """s_0 = 0 for ``lanes`` lanes."""
        return self.cell.zero_state(lanes)

    def predict(self, x: torch.Tensor, state: torch.Tensor):
        """One step: (logits_t (B, k), s_t) from x_t (B, m) and s_{t-1}."""
        state = self.cell(x, state)
        return self.logits(self.cell.layer_output(x, state)), state

    def gradient_clipped_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient the trainer clips: the cell's recurrent ones (W; the LRU's ν, θ,
        γ_log, B)."""
        return list(self.cell.recurrent_parameters())

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[o_t, 1] W_out, shape (B, k), for what the cell outputs (``h`` = ``cell.layer_output``)."""
        n = self.cell.output_width
        return h @ self.readout[:n] + self.readout[n]

    def lane_losses(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-lane cross-entropy in nats, (B,)."""
        return F.cross_entropy(self.logits(h), targets, reduction="none")

    def readout_step(self, h: torch.Tensor, targets: torch.Tensor, lane_weights: torch.Tensor):
        """Exact one-step backprop of L = Σ_b w_b ℓ_b through the readout.

        With δ_b = w_b (softmax(logits_b) − onehot(target_b)):
            ∂L/∂h_t = δ W_outᵀ (recurrent rows),   ∂L/∂W_out = [h_t, 1]ᵀ δ.
        Returns (ℓ (B,) in nats, ∂L/∂h_t (B, n), ∂L/∂W_out). The recurrent part of
        the gradient is the estimator's job.
        """
        n = self.cell.output_width
        log_probs = torch.log_softmax(self.logits(h), dim=1)
        losses = -log_probs.gather(1, targets[:, None]).squeeze(1)
        delta = log_probs.exp()
        # δ[b, target_b] −= 1 as a scatter of −1 (one kernel; an index_put would take three and an arange)
        delta.scatter_add_(1, targets[:, None], delta.new_full((1, 1), -1.0).expand(len(targets), 1))
        delta *= lane_weights[:, None]
        dl_dh = delta @ self.readout[:n].T
        d_readout = torch.cat([h.T @ delta, delta.sum(0, keepdim=True)], dim=0)
        return losses, dl_dh, d_readout


class Layer(nn.Module):
    """A cell alone, with no readout: one layer of a stack (:mod:`kfrtrl_lab.stack`). An estimator built
    on it (``kl.make_estimator(method, kl.Layer(cell), B)``) is stepped with
    :meth:`~kfrtrl_lab.Estimator.step_with_cotangent`: ∂L_t/∂s_t comes from the blocks above."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        missing = [name for name in ("zero_state", "forward", "layer_output", "recurrent_parameters", "output_width")
                   if not hasattr(cell, name)]
        if not isinstance(cell, nn.Module) or missing:
            raise ValueError(f"cell must be an nn.Module with the layer contract (zero_state, forward, layer_output, "
                             f"recurrent_parameters, output_width); {type(cell).__name__} lacks {missing}")
        self.cell = cell
