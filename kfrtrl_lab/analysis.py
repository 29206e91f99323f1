"""Gradient analysis on one sequence: the exact gradient and samples of the estimators.

The loss is L = Σ_{t=1..T} cross-entropy(y_t, target_t) (nats) from h_0 = 0, and
every gradient is with respect to the cell's recurrent parameters (``cell.recurrent_parameters()``),
flattened and concatenated to (P,): the weight W of a Kronecker-class cell, P = (m+n+1)·r·n; the
LRU's ν, θ, γ_log, B_re, B_im, P = 3N + 2NH (its C, D and the readout are immediate, and exact in
every method).
"""

from __future__ import annotations

import copy
from statistics import NormalDist

import torch

from .estimators import check_inputs, is_stochastic, make_estimator
from .model import RecurrentModel


def true_gradient(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """dL/dθ (the recurrent parameters) by plain BPTT through the whole sequence, (P,). Leaves
    ``.grad`` untouched."""
    check_inputs(model, inputs, targets)
    cell = model.cell
    state = cell.zero_state(1)
    with torch.enable_grad():
        loss = 0.0
        for t in range(inputs.shape[0]):
            x = inputs[t : t + 1]
            state = cell(x, state)
            loss = loss + model.lane_losses(cell.layer_output(x, state), targets[t : t + 1]).sum()
        grads = torch.autograd.grad(loss, cell.recurrent_parameters())
    return torch.cat([g.reshape(-1) for g in grads])


def recurrent_grad(cell) -> torch.Tensor:
    """The ``.grad`` of the cell's recurrent parameters, flattened and concatenated (P,) (zeros where
    none was written)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in cell.recurrent_parameters()])


def gradient_samples(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor, method: str,
                     samples: int, seed: int = 0) -> torch.Tensor:
    """(S, P) estimates of dL/dθ (the recurrent parameters) by ``method``.

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
        return recurrent_grad(private.cell).reshape(1, -1).expand(samples, -1).clone()
    est = make_estimator(method, model, samples, reduction="sum", seed=seed)
    P = sum(p.numel() for p in model.cell.recurrent_parameters())
    total = torch.zeros(samples, P, dtype=inputs.dtype, device=inputs.device)
    for t in range(T):
        _, lane_grads = est.step_lane_gradients(inputs[t].expand(samples, -1), targets[t].expand(samples))
        total += lane_grads.reshape(samples, -1)
    return total


def relative_error(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """E‖ĝ − g‖² / ‖g‖² estimated from the rows of ``samples`` (S, P) against ``exact`` (P,)."""
    if samples.dim() != 2 or exact.shape != samples.shape[1:]:
        raise ValueError(f"samples must be (S, P) and exact (P,), got {tuple(samples.shape)} and {tuple(exact.shape)}")
    return (((samples - exact) ** 2).sum(dim=1).mean() / (exact * exact).sum()).item()


def cosine_to_exact(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """cos(ĝ_s, g) for every sample row, (S,): how well each single estimate points downhill."""
    return torch.nn.functional.cosine_similarity(samples, exact[None], dim=1)


def unbiasedness_test(samples: torch.Tensor, exact: torch.Tensor, alpha: float = 1e-3) -> dict:
    """A z-test of E ĝ = g, coordinate by coordinate, with the samples' own standard error.

    A coordinate fails when |mean − g| > z·SE + 1e-9·max|g|, z the 1 − alpha/(2P) quantile (each
    coordinate tested two-sided at level alpha/P, Bonferroni over the P coordinates: an unbiased
    estimator fails with probability < alpha).
    Coordinates with zero sample variance must match to rounding, so shared randomness — which
    makes every sample equal — cannot pass by having no spread. Returns the number of failing
    coordinates (``violations``), P, the critical z and the largest |mean − g| / SE seen."""
    if samples.dim() != 2 or exact.shape != samples.shape[1:]:
        raise ValueError(f"samples must be (S, P) and exact (P,), got {tuple(samples.shape)} and {tuple(exact.shape)}")
    S, P = samples.shape
    z_crit = NormalDist().inv_cdf(1 - alpha / (2 * P))
    standard_error = samples.std(dim=0) / S**0.5
    gap = (samples.mean(dim=0) - exact).abs()
    violations = int((gap > z_crit * standard_error + 1e-9 * exact.abs().max()).sum())
    z = gap / standard_error.clamp_min(torch.finfo(samples.dtype).tiny)
    return {"violations": violations, "coordinates": P, "samples": S, "alpha": alpha, "z_critical": z_crit,
            "max_abs_z": z[standard_error > 0].max().item() if (standard_error > 0).any() else float("inf")}
