"""The one interface every gradient estimator shares.

An estimator runs B independent lanes (streams) of a :class:`RecurrentModel` online. Each
:meth:`Estimator.step` advances every lane one time step and turns that step's loss

    L_t = Σ_b w_b ℓ_t,b     (w_b = 1/B for ``reduction="mean"``, 1 for ``"sum"``)

into gradients *added* to the parameters' ``.grad`` — the readout's exactly, the cell's W by the
method — so any ``torch.optim`` optimiser can step after every time step or every k steps (call
``optimizer.zero_grad()`` after each step as usual). Truncated BPTT only has a gradient at the end
of its window; ``gradient_ready`` tells whether the last step wrote one.

A method is one file: subclass :class:`Estimator`, set ``name`` (``"ok-<r>"`` for a family with an
integer parameter), ``stochastic`` and ``lane_state``, write ``_init_influence``, ``_advance`` and
``recurrent_gradient``, and decorate the class with :func:`kfrtrl_lab.register_method`. An online
method receives each step as a :class:`~kfrtrl_lab.cells.CellStep` (x̂_t, s_t, D_t, H_t as
operators) and never calls the cell's internals.
"""

from __future__ import annotations

import torch

from ..cells import CellStep
from ..model import RecurrentModel


class NonFiniteError(FloatingPointError):
    """A NaN or Inf appeared in a lane's state, loss or gradient."""


class Estimator:
    name: str = ""
    #: True when the gradient is a random variable (different seeds, different estimates).
    stochastic: bool = False
    #: Per-lane tensors besides the cell state (the influence estimate): zeroed at a reset, saved
    #: by :meth:`state_dict`.
    lane_state: tuple[str, ...] = ()
    #: True when ``.grad`` is written only by :meth:`flush` (full BPTT): a trainer must flush at
    #: sequence ends, which needs a task whose lanes start their sequences together.
    flushes_at_sequence_end: bool = False

    def __init__(self, model: RecurrentModel, batch_size: int, *, reduction: str = "mean", seed: int | None = None):
        if not isinstance(model, RecurrentModel):
            raise ValueError(f"model must be a kfrtrl_lab.RecurrentModel, got {type(model).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model = model
        self.cell = model.cell
        self.batch_size = batch_size
        self.reduction = reduction
        weight = self.cell.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.steps = 0  # time steps taken since construction, used to name a failing step
        self.gradient_ready = False
        self.state = self.cell.zero_state(batch_size)  # s_t, (B, s, n)
        self._lane_weights = torch.full(
            (batch_size,), 1.0 / batch_size if reduction == "mean" else 1.0, device=self.device, dtype=self.dtype
        )
        self._init_influence()

    @property
    def h(self) -> torch.Tensor:
        """h_t of every lane, (B, n)."""
        return self.cell.hidden(self.state)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("state", *self.lane_state)

    def _zeros(self, *shape) -> torch.Tensor:
        return torch.zeros(self.batch_size, *shape, device=self.device, dtype=self.dtype)

    # -- what a method defines -----------------------------------------------------------
    def _init_influence(self) -> None:
        """Allocate the per-lane influence state (``lane_state``), all zero (G_0 = 0)."""

    def _reset_influence(self, lanes: torch.Tensor) -> None:
        """Zero the influence state of the lanes in the boolean mask ``lanes``."""
        for name in self.lane_state:
            getattr(self, name)[lanes] = 0.0

    def _advance(self, step: CellStep) -> None:
        """G_{t-1} -> G_t for every lane, from the cell step s_{t-1} -> s_t."""
        raise NotImplementedError

    def recurrent_gradient(self, dl_ds: torch.Tensor, per_lane: bool = False) -> torch.Tensor:
        """dL_t/dW ≈ (∂L_t/∂s_t) G_t with the current influence estimate.

        ``dl_ds`` (B, n_s). Returns W's shape (m+n+1, r·n), summed over lanes, or
        (B, m+n+1, r·n) with ``per_lane=True``.
        """
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def reset(self, lanes=None) -> None:
        """Reset the state and influence of all lanes (``None``) or of some: a boolean
        mask of shape (B,) or a sequence/tensor of lane indices."""
        mask = self._lane_mask(lanes)
        self.state = self.state.masked_fill(mask[:, None, None], 0.0)
        self._reset_influence(mask)

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Advance one time step; add this step's gradient to ``.grad``.

        ``x`` (B, m) floating, ``targets`` (B,) int64 class indices.
        Returns the per-lane losses ℓ_t,b in nats, (B,), detached.
        """
        losses, d_readout, d_weight = self._online_step(x, targets, per_lane=False)
        _accumulate(self.model.readout, d_readout)
        _accumulate(self.cell.weight, d_weight)
        self.gradient_ready = True
        return losses

    def step_lane_gradients(self, x: torch.Tensor, targets: torch.Tensor):
        """Advance one step and return (losses (B,), per-lane estimates of dℓ_t,b/dW
        (B, m+n+1, r·n)) without touching ``.grad`` — for gradient analysis."""
        losses, _, d_weight = self._online_step(x, targets, per_lane=True)
        return losses, d_weight

    def flush(self) -> None:
        """Write any gradient still pending (only BPTT holds one back)."""

    def _online_step(self, x, targets, per_lane):
        self._check_step_inputs(x, targets)
        self.gradient_ready = False
        self.steps += 1
        with torch.no_grad():
            step = self.cell.step(x, self.state)
            self._check_finite("hidden state h_t", step.state)
            self._advance(step)
            self.state = step.state
            losses, dl_dh, d_readout = self.model.readout_step(step.h, targets, self._lane_weights)
            self._check_finite("loss", losses)
            d_weight = self.recurrent_gradient(self.cell.state_cotangent(dl_dh), per_lane=per_lane)
            self._check_finite("recurrent gradient estimate (influence state)", d_weight, lanes_first=per_lane)
        return losses, d_readout, d_weight

    @property
    def resumable(self) -> bool:
        """True when :meth:`state_dict` captures everything (windowed BPTT: between windows)."""
        return True

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: lane states, influence, random stream."""
        return {"method": self.name, "batch_size": self.batch_size, "steps": self.steps,
                "generator": self.generator.get_state(),
                "tensors": {k: getattr(self, k).detach().clone() for k in self.state_names}}

    def load_state_dict(self, state: dict) -> None:
        if state["method"] != self.name or state["batch_size"] != self.batch_size:
            raise ValueError(f"checkpoint holds {state['method']} with batch {state['batch_size']}, "
                             f"this estimator is {self.name} with batch {self.batch_size}")
        self.steps = state["steps"]
        self.generator.set_state(state["generator"])
        for k, v in state["tensors"].items():
            setattr(self, k, v.to(device=self.device, dtype=self.dtype).clone())

    # -- validation ------------------------------------------------------------------------
    def _lane_mask(self, lanes) -> torch.Tensor:
        B = self.batch_size
        if lanes is None:
            return torch.ones(B, dtype=torch.bool, device=self.device)
        lanes = torch.as_tensor(lanes, device=self.device)
        if lanes.dtype == torch.bool:
            if lanes.shape != (B,):
                raise ValueError(f"a boolean lane mask must have shape ({B},), got {tuple(lanes.shape)}")
            return lanes
        if lanes.dtype.is_floating_point or lanes.dim() > 1:
            raise ValueError(f"lanes must be None, a bool mask of shape ({B},) or integer lane indices")
        lanes = lanes.reshape(-1)
        if lanes.numel() and (lanes.min() < 0 or lanes.max() >= B):
            raise ValueError(f"lane indices must lie in [0, {B}), got {lanes.tolist()}")
        mask = torch.zeros(B, dtype=torch.bool, device=self.device)
        mask[lanes] = True
        return mask

    def _check_step_inputs(self, x, targets) -> None:
        check_inputs(self.model, x, targets, lanes=self.batch_size)

    def _check_finite(self, what: str, value: torch.Tensor, lanes_first: bool = True) -> None:
        # One pass: a NaN/Inf anywhere makes the sum non-finite (a float overflow of the sum
        # alone would also trip it, and means the run is diverging anyway).
        if torch.isfinite(value.sum()):
            return
        where = ""
        if lanes_first:
            bad = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
            where = f" in lanes {bad.nonzero().flatten().tolist()[:10]}"
        raise NonFiniteError(
            f"{self.name}: non-finite {what} at step {self.steps}{where}; the run has diverged "
            f"(lower the learning rate or clip gradients). This step did not touch .grad."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.name!r}, batch_size={self.batch_size}, cell={self.cell!r})"


def check_inputs(model: RecurrentModel, x, targets, lanes: int | None = None) -> None:
    """Raise ValueError unless ``x`` is (B, m) — or (T, m) with ``lanes`` None, a sequence — in the
    model's dtype and device and ``targets`` the matching int64 class indices in [0, k)."""
    if not isinstance(model, RecurrentModel):
        raise ValueError(f"model must be a kfrtrl_lab.RecurrentModel, got {type(model).__name__}")
    m, k = model.input_size, model.output_size
    weight = model.cell.weight
    if lanes is None:  # a sequence: rows are time steps
        rows, what, size = "T", "inputs", None
    else:
        rows, what, size = "batch", "x", lanes
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != m or x.shape[0] < 1 or (
            size is not None and x.shape[0] != size):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        shape = f"({rows}={size}, input_size={m})" if size is not None else f"(T, input_size={m}) with T >= 1"
        kind = "a tensor" if size is not None else "a float tensor"
        raise ValueError(f"{what} must be {kind} of shape {shape}, got {got}")
    if x.dtype != weight.dtype:
        raise ValueError(f"{what} must have the model's dtype {weight.dtype}, got {x.dtype}")
    if x.device != weight.device:
        raise ValueError(f"{what} must be on the model's device {weight.device}, got {x.device}")
    n_rows = x.shape[0]
    if not isinstance(targets, torch.Tensor) or targets.shape != (n_rows,):
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a tensor of shape ({rows}={n_rows},), got {got}")
    if targets.dtype != torch.long:
        raise ValueError(f"targets must be int64 (torch.long) class indices, got {targets.dtype}")
    if targets.device != weight.device:
        raise ValueError(f"targets must be on the model's device {weight.device}, got {targets.device}")
    if targets.min() < 0 or targets.max() >= k:
        raise ValueError(f"targets must lie in [0, {k}) (output_size={k}), got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")


def _accumulate(param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad.add_(grad)


def rademacher(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """Independent uniform ±1 entries."""
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype).mul_(2).sub_(1)
