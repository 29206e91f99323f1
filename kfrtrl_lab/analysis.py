"""Gradient analysis on one sequence: the exact gradient and samples of the estimators.

The loss is L = Σ_{t=1..T} cross-entropy(y_t, target_t) (nats) from h_0 = 0, and
every gradient is with respect to the cell's weight W, flattened to (P,),
P = (m+n+1)·r·n.
"""

from __future__ import annotations

import copy

import torch

from .estimators import check_inputs, is_stochastic, make_estimator
from .model import RecurrentModel


def true_gradient(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """dL/dW by plain BPTT through the whole sequence, (P,). Leaves ``.grad`` untouched."""
    check_inputs(model, inputs, targets)
    cell = model.cell
    state = cell.zero_state(1)
    with torch.enable_grad():
        loss = 0.0
        for t in range(inputs.shape[0]):
            state = cell(inputs[t : t + 1], state)
            loss = loss + model.lane_losses(cell.hidden(state), targets[t : t + 1]).sum()
        (grad,) = torch.autograd.grad(loss, cell.weight)
    return grad.reshape(-1)


def gradient_samples(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor, method: str,
                     samples: int, seed: int = 0) -> torch.Tensor:
    """(S, P) estimates of dL/dW by ``method``.

    A stochastic method runs the S samples as S lanes of one batched run, each lane
    with its own random signs, so the rows are independent draws. A deterministic
    method's S rows are its one (possibly truncated) gradient, repeated.
    """
    check_inputs(model, inputs, targets)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    T = inputs.shape[0]
    if not is_stochastic(method):
        private = copy.deepcopy(model)  # so the caller's .grad is never touched
        private.zero_grad(set_to_none=True)
        est = make_estimator(method, private, 1, reduction="sum", seed=seed)
        for t in range(T):
            est.step(inputs[t : t + 1], targets[t : t + 1])
        est.flush()
        grad = private.cell.weight.grad
        if grad is None:
            grad = torch.zeros_like(private.cell.weight)
        return grad.reshape(1, -1).expand(samples, -1).clone()
    est = make_estimator(method, model, samples, reduction="sum", seed=seed)
    total = torch.zeros(samples, model.cell.weight.numel(), dtype=inputs.dtype, device=inputs.device)
    for t in range(T):
        _, lane_grads = est.step_lane_gradients(inputs[t].expand(samples, -1), targets[t].expand(samples))
        total += lane_grads.reshape(samples, -1)
    return total


def relative_variance(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """E‖ĝ − g‖² / ‖g‖² estimated from the rows of ``samples`` (S, P) against ``exact`` (P,)."""
    if samples.dim() != 2 or exact.shape != samples.shape[1:]:
        raise ValueError(f"samples must be (S, P) and exact (P,), got {tuple(samples.shape)} and {tuple(exact.shape)}")
    return (((samples - exact) ** 2).sum(dim=1).mean() / (exact * exact).sum()).item()


def cosine_to_exact(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """cos(ĝ_s, g) for every sample row, (S,): how well each single estimate points downhill."""
    return torch.nn.functional.cosine_similarity(samples, exact[None], dim=1)
