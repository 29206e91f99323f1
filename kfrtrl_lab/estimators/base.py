"""The one interface every gradient estimator shares.

An estimator runs B independent lanes (streams) of a :class:`RecurrentModel` online. Each
:meth:`Estimator.step` advances every lane one time step and turns that step's loss

    L_t = Σ_b w_b ℓ_t,b     (w_b = 1/B for ``reduction="mean"``, 1 for ``"sum"``)

into gradients *added* to the parameters' ``.grad`` — the readout's exactly, the cell's W by the
method — so any ``torch.optim`` optimiser can step after every time step or every k steps (call
``optimizer.zero_grad()`` after each step as usual). Truncated BPTT only has a gradient at the end
of its window; ``gradient_ready`` tells whether the last step wrote one.

An estimator also serves one layer of a stack (:mod:`kfrtrl_lab.stack`): built on ``kl.Layer(cell)``
(a module with a ``.cell`` and no readout), :meth:`Estimator.step_with_cotangent` takes ∂L_t/∂s_t from
the stack's one-step backward pass instead of a readout and adds the layer's recurrent gradient.

A method is one file: subclass :class:`Estimator`, set ``name`` (``"ok-<r>"`` for a family with an
integer parameter), ``stochastic`` and ``lane_state``, write ``_init_influence``, ``_advance`` and
``recurrent_gradient``, and decorate the class with :func:`kfrtrl_lab.register_method`. An online
method receives each step as a :class:`~kfrtrl_lab.cells.CellStep` (x̂_t, s_t, D_t, H_t as
operators) and never calls the cell's internals.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
from torch import nn

from ..cells import LRU, Cell, CellStep, is_diagonal, is_kronecker
from ..model import RecurrentModel
from ..random import ESTIMATOR, CounterRandom

#: steps whose finiteness sums a CPU estimator keeps before it reads them (see Estimator._record_finite)
FINITE_ROWS = 256

# the device type whose memory layout an estimator built on torch's meta device takes (the memory
# estimate lays a run out there, measure.run_memory): a CPU and a GPU keep different work buffers
_META_LAYOUT = contextvars.ContextVar("meta_layout", default="cpu")


@contextlib.contextmanager
def meta_layout(device: str):
    """Estimators built on the meta device inside this block take the layout of ``device``'s type
    ("cpu", "cuda:1", …): their buffers are the ones a run on that device would hold."""
    token = _META_LAYOUT.set(torch.device(device).type)
    try:
        yield
    finally:
        _META_LAYOUT.reset(token)


def layout_device_type(device: torch.device) -> str:
    """The device type whose buffers an estimator on ``device`` keeps: its own, or on the meta
    device the one :func:`meta_layout` names (the CPU's by default)."""
    return _META_LAYOUT.get() if device.type == "meta" else device.type


class NonFiniteError(FloatingPointError):
    """A NaN or Inf appeared in a lane's state, loss or gradient (at time step ``step``, 1-based)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class Estimator:
    name: str = ""
    #: True when the gradient is a random variable (different seeds, different estimates).
    stochastic: bool = False
    #: True when the method claims the exact gradient (RTRL, full BPTT): its certificate fails if not.
    exact: bool = False
    #: Per-lane tensors besides the cell state (the influence estimate): zeroed at a reset, saved
    #: by :meth:`state_dict`.
    lane_state: tuple[str, ...] = ()
    #: True when ``.grad`` is written only by :meth:`flush` (full BPTT): a trainer must flush at
    #: sequence ends, which needs a task whose lanes start their sequences together.
    flushes_at_sequence_end: bool = False
    #: Buffers of fixed size that only record the run's health (not the method's state): the memory
    #: estimate counts them, the per-method state of the benchmarks does not (measure.state_bytes)
    bookkeeping: tuple[str, ...] = ("_finite_rows", "_bad_step", "_bad_lanes", "_step_counter")
    #: True when a step issues no host synchronisation, so a GPU can capture it in a CUDA graph
    capturable: bool = True
    #: True when the method's name also works for a diagonal cell (the LRU): the Kronecker-factored
    #: methods need x̂ ⊗ D_t and refuse it with a ValueError naming the ones that work
    supports_diagonal: bool = False

    def __init__(self, model: nn.Module, batch_size: int, *, reduction: str = "mean", seed: int | None = None):
        if not isinstance(model, nn.Module) or not isinstance(getattr(model, "cell", None), nn.Module):
            raise ValueError(f"model must be a kfrtrl_lab.RecurrentModel or a module with a .cell (kl.Layer(cell)), "
                             f"got {type(model).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model = model
        self.cell = model.cell
        # only a RecurrentModel has the readout that step() reads; a stack's layer has none
        self.has_readout = isinstance(model, RecurrentModel)
        if not (is_kronecker(self.cell) or is_diagonal(self.cell)):
            raise ValueError(f"the cell must be a Kronecker-class cell (a kfrtrl_lab.Cell: rhn, tanh, lstm) or a "
                             f"diagonal one (the LRU), got {type(self.cell).__name__}")
        if is_diagonal(self.cell) and not self.supports_diagonal:
            raise ValueError(f"method {self.name!r} needs a Kronecker-class cell (rhn, tanh, lstm): it works on "
                             f"x̂_t ⊗ D_t, which the LRU does not have; with the LRU use "
                             f"{', '.join(diagonal_methods())}")
        self.batch_size = batch_size
        self.reduction = reduction
        weight = self.cell.recurrent_parameters()[0]
        self.device, self.dtype = weight.device, weight.dtype
        self.random = CounterRandom(seed, self.device, ESTIMATOR)  # the method's random signs
        self.steps = 0  # time steps taken since construction, used to name a failing step
        self.gradient_ready = False
        self.state = self.cell.zero_state(batch_size)  # s_t, (B, s, n)
        self._lane_weights = torch.full(
            (batch_size,), 1.0 / batch_size if reduction == "mean" else 1.0, device=self.device, dtype=self.dtype
        )
        # 1 for a lane that continues, 0 for one reset since the last step: the reset is applied by
        # the next step (the cell step scales s_{t-1} and H_t by it), so a reset costs O(B), reads no
        # mask back to the host, and leaves nothing stale in the influence estimate
        self._keep = torch.ones(batch_size, device=self.device, dtype=self.dtype)
        # CPU: this one ones tensor is the keep of every step without a reset (never written in
        # place: a reset rebinds ``_keep`` to a product). A GPU makes a fresh one per step, as a
        # CUDA graph's replay copies the captured ``_keep`` back into its buffer.
        self._all_kept = self._keep if self.device.type == "cpu" else None
        # first steps (device counter values) at which the state, loss or gradient was non-finite, and
        # the lanes whose state or loss was: checked after every eager step, at chunk ends by the trainer
        self._bad_step = torch.zeros(3, dtype=torch.long, device=self.device)
        self._bad_lanes = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        self._step_counter = torch.zeros((), dtype=torch.long, device=self.device)
        # On the CPU a step only writes its sums into the next row of a table (:meth:`_record_finite`),
        # and the table is read once per check or when it is full; on a GPU each step updates the
        # record itself, on the device, so that the step stays capturable in a CUDA graph. (On torch's
        # meta device, the memory estimate's, as on the device it estimates for: layout_device_type.)
        self._finite_rows = (torch.empty(FINITE_ROWS, 2 * batch_size + 1, device=self.device, dtype=self.dtype)
                             if layout_device_type(self.device) == "cpu" else None)
        self._rows_written, self._rows_from = 0, 0  # rows since the last fold; the step counter of row 0
        self._bad_recorded = False  # set by the fold when it names a bad step
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

    def _advance(self, step: CellStep) -> None:
        """G_{t-1} -> G_t for every lane, from the cell step s_{t-1} -> s_t.

        Lanes reset before this step have ``step.keep`` = 0: their H_t (every H operator of the
        step) is zero, so a propagated influence H_t G_{t-1} vanishes by itself; any part of the
        estimate that is not propagated through H_t must be multiplied by ``step.keep_factor``."""
        raise NotImplementedError

    def recurrent_gradient(self, dl_ds: torch.Tensor, per_lane: bool = False) -> torch.Tensor:
        """dL_t/dW ≈ (∂L_t/∂s_t) G_t with the current influence estimate.

        ``dl_ds`` (B, n_s). Returns W's shape (m+n+1, r·n), summed over lanes, or
        (B, m+n+1, r·n) with ``per_lane=True``.
        """
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def reset(self, lanes=None) -> None:
        """Reset the state and influence of all lanes (``None``) or of some: a boolean mask of shape
        (B,) or a sequence/tensor of lane indices. The state is zeroed now, the influence estimate
        by the next step."""
        keep = (~self._lane_mask(lanes)).to(self.dtype)
        self._keep = self._keep * keep
        self.state = scale_lanes(self.state, keep)

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Advance one time step; add this step's gradient to ``.grad``.

        ``x`` (B, m) floating, ``targets`` (B,) int64 class indices.
        Returns the per-lane losses ℓ_t,b in nats, (B,), detached.
        """
        self._check_step_inputs(x, targets)
        losses, d_readout, d_weight = self._core_step(x, targets, self._take_keep(), per_lane=False)
        self.check_finite()  # before .grad is touched
        self._accumulate(d_readout, d_weight)
        return losses

    def step_lane_gradients(self, x: torch.Tensor, targets: torch.Tensor):
        """Advance one step and return (losses (B,), per-lane estimates of dℓ_t,b/dW
        (B, m+n+1, r·n)) without touching ``.grad`` — for gradient analysis."""
        self._check_step_inputs(x, targets)
        losses, _, d_weight = self._core_step(x, targets, self._take_keep(), per_lane=True)
        self.check_finite()
        return losses, d_weight

    def fast_step(self, x: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """:meth:`step` for the trainer's fast path: the lanes with ``keep`` = 0 (B,) start afresh,
        nothing is checked and nothing is read back to the host (no synchronisation), so a chunk of
        these steps can be captured and replayed. Non-finite values are recorded with their step;
        :meth:`check_finite` raises for them later."""
        losses, d_readout, d_weight = self._core_step(x, targets, self._combined_keep(keep), per_lane=False)
        self._accumulate(d_readout, d_weight)
        return losses

    def step_with_cotangent(self, x: torch.Tensor, dl_ds: torch.Tensor, keep: torch.Tensor | None = None, *,
                            check: bool = True) -> None:
        """One step of a layer inside a stack: :meth:`step` with ∂L_t/∂s_t given instead of a readout.

        ``x`` (B, m) the layer's input x^l_t; ``dl_ds`` = ∂L_t/∂s_t, the shape of :attr:`state` (from
        the stack's backward pass through the blocks above at step t); ``keep`` (B,) optional, 0 for
        a lane that restarts from s = 0 at this step (as a :meth:`reset` before it). Advances every
        lane s_{t-1} -> s_t (the same s_t as ``cell.forward(x, state)``), updates the influence
        estimate G_{t-1} -> G_t, and ADDS dL_t/dθ ≈ (∂L_t/∂s_t) G_t to the recurrent parameters'
        ``.grad``. ``check=False``: nothing is read back to the host (the fast path); non-finite
        values are recorded and :meth:`check_finite` raises for them later."""
        d_weight = self.cotangent_lane_gradients(x, dl_ds, keep, per_lane=False, check=check)
        _accumulate(self.cell.weight, d_weight)
        self.gradient_ready = True

    def cotangent_lane_gradients(self, x: torch.Tensor, dl_ds: torch.Tensor, keep: torch.Tensor | None = None, *,
                                 per_lane: bool = True, check: bool = True) -> torch.Tensor:
        """:meth:`step_with_cotangent` without touching ``.grad``: returns the estimate of dL_t/dW,
        per lane (B, m+n+1, r·n) or summed over lanes (``per_lane=False``) — for gradient analysis."""
        self._check_cotangent_inputs(x, dl_ds, keep)
        keep = self._take_keep() if keep is None else keep * self._take_keep()
        self._begin_step()
        with torch.no_grad():
            step = self.cell.step(x, self.state, keep)
            dl_ds = dl_ds.detach().reshape(self.batch_size, -1)  # (B, n_s): slot-major, as the CellStep's rows
            d_weight = self._propagate(step, dl_ds, per_lane=per_lane)
            self._record_finite(step.state, dl_ds.sum(dim=1), d_weight)
        if check:
            self.check_finite()  # before .grad is touched
        return d_weight

    def _check_cotangent_inputs(self, x, dl_ds, keep) -> None:
        B = self.batch_size
        m = self.cell.input_size
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape != (B, m):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (batch={B}, input width={m}), got {got}")
        if x.dtype != self.dtype or x.device != self.device:
            raise ValueError(f"x must have the layer's dtype {self.dtype} and device {self.device}, got {x.dtype} "
                             f"on {x.device}")
        if not isinstance(dl_ds, torch.Tensor) or dl_ds.shape != self.state.shape:
            got = tuple(dl_ds.shape) if isinstance(dl_ds, torch.Tensor) else type(dl_ds).__name__
            raise ValueError(f"dl_ds (∂L_t/∂s_t) must have the state's shape {tuple(self.state.shape)}, got {got}")
        if dl_ds.dtype != self.state.dtype or dl_ds.device != self.device:
            raise ValueError(f"dl_ds (∂L_t/∂s_t) must have the state's dtype {self.state.dtype} and device {self.device}, "
                             f"got {dl_ds.dtype} on {dl_ds.device}")
        if keep is not None and (not isinstance(keep, torch.Tensor) or keep.shape != (B,)):
            got = tuple(keep.shape) if isinstance(keep, torch.Tensor) else type(keep).__name__
            raise ValueError(f"keep must be None or a tensor of shape ({B},) (0: the lane restarts), got {got}")

    def flush(self) -> None:
        """Write any gradient still pending (only BPTT holds one back)."""

    def _take_keep(self) -> torch.Tensor:
        keep = self._keep
        self._keep = torch.ones_like(keep) if self._all_kept is None else self._all_kept
        return keep

    def _combined_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """``keep`` times the resets asked for by :meth:`reset` since the last step (none: ``keep``
        itself, the product with ones skipped)."""
        pending = self._take_keep()
        return keep if pending is self._all_kept else keep * pending

    def _accumulate(self, d_readout, d_weight) -> None:
        _accumulate(self.model.readout, d_readout)
        _accumulate(self.cell.weight, d_weight)
        self.gradient_ready = True

    def _begin_step(self) -> None:
        self.gradient_ready = False
        self.steps += 1
        self._step_counter.add_(1)

    def _core_step(self, x, targets, keep, per_lane):
        self._begin_step()
        with torch.no_grad():
            step = self.cell.step(x, self.state, keep)
            # the readout needs only s_t: its gradient is known before the influence update
            losses, dl_dh, d_readout = self.model.readout_step(step.h, targets, self._lane_weights)
            d_weight = self._propagate(step, self.cell.state_cotangent(dl_dh), per_lane)
            self._record_finite(step.state, losses, d_weight)
        return losses, d_readout, d_weight

    def _propagate(self, step: CellStep, dl_ds: torch.Tensor, per_lane: bool) -> torch.Tensor:
        """G_{t-1} -> G_t from the cell step, s_t kept, and dL_t/dW ≈ (∂L_t/∂s_t) G_t returned —
        the part of a step shared by :meth:`step` (∂L_t/∂s_t from the readout) and
        :meth:`step_with_cotangent` (∂L_t/∂s_t from the blocks above)."""
        step.state_cotangent = dl_ds
        self._advance(step)
        self.state = step.state
        return self.recurrent_gradient(dl_ds, per_lane=per_lane)

    def _record_finite(self, state, losses, d_weight) -> None:
        """Remember the first step at which each of (state, loss, gradient) was non-finite, and
        the lanes whose state or loss was then. A NaN/Inf anywhere makes a sum non-finite, so one
        sum per lane (state) or per quantity (gradient) and step is all this costs.

        CPU: the step's sums [Σ s_t per lane (B), ℓ_t (B), Σ dL_t/dW] go into the next row of
        ``_finite_rows``; :meth:`_fold_finite_rows` reads the rows at a check (or when the table is
        full) and names the first bad step from its row. GPU: the record is updated at once."""
        state = torch.view_as_real(state) if state.is_complex() else state  # a complex state (the LRU's)
        if self._finite_rows is None:
            self._record_finite_now(state, losses, d_weight)
            return
        if self._rows_written == FINITE_ROWS:
            self._fold_finite_rows()
        if self._rows_written == 0:
            self._rows_from = int(self._step_counter)  # this step's counter (CPU memory: no synchronisation)
        row = self._finite_rows[self._rows_written]
        torch.cat([state.flatten(1).sum(1), losses, d_weight.sum().view(1)], out=row)
        self._rows_written += 1

    def _record_finite_now(self, state, losses, d_weight) -> None:
        """The record updated on the device for this step (no read back: capturable)."""
        finite = torch.stack([state.sum(), losses.sum(), d_weight.sum()]).isfinite()
        first = (self._bad_step == 0) & ~finite
        self._bad_step.copy_(torch.where(first, self._step_counter, self._bad_step))
        lanes_bad = ~(state.flatten(1).isfinite().all(dim=1) & losses.isfinite())
        self._bad_lanes |= lanes_bad & first[:2].any()

    def _fold_finite_rows(self) -> None:
        """Move the rows written since the last fold into the record (``_bad_step``, ``_bad_lanes``)
        exactly as :meth:`_record_finite_now` would have recorded those steps one by one. Row i
        holds step ``_rows_from`` + i (the steps since the fold are consecutive). When every
        entry is finite (the usual case) this is one reduction and one read."""
        written, self._rows_written = self._rows_written, 0
        if written == 0:
            return
        rows = self._finite_rows[:written]
        if math.isfinite(rows.sum()):  # a NaN/Inf in any row makes the sum non-finite (an overflow
            return  # of this total alone sends the rows through the test below, which then finds nothing; a row's own
            # sum can overflow too — entries near the float maximum — and is then read as non-finite, as on a GPU)
        B = self.batch_size
        state_ok, loss_ok = rows[:, :B].isfinite(), rows[:, B:2 * B].isfinite()  # (k, B)
        quantity_bad = ~torch.stack([state_ok.all(1), loss_ok.all(1), rows[:, 2 * B].isfinite()])  # (3, k)
        for quantity in range(3):
            if int(self._bad_step[quantity]) == 0 and bool(quantity_bad[quantity].any()):
                row = int(quantity_bad[quantity].nonzero()[0])
                self._bad_step[quantity] = self._rows_from + row
                self._bad_recorded = True
                if quantity < 2:  # the lanes whose state or loss is non-finite at that step
                    self._bad_lanes |= ~(state_ok[row] & loss_ok[row])

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` naming the first step (and the lanes) where a NaN or Inf
        appeared. One read back from the device (CPU: and one pass over the rows since the last check)."""
        if self._finite_rows is not None:
            self._fold_finite_rows()
            if not self._bad_recorded:  # the table's record is written by the fold alone: no read needed
                return
        bad = self._bad_step.tolist()
        if not any(bad):
            return
        what, step = min(((w, s) for w, s in zip(
            ("state s_t", "loss", "recurrent gradient estimate (influence state)"), bad) if s),
            key=lambda pair: pair[1])
        lanes = self._bad_lanes.nonzero().flatten().tolist()[:10]
        where = f" in lanes {lanes}" if lanes else ""
        offset = self.steps - int(self._step_counter)  # the host count of steps names the step
        raise NonFiniteError(
            f"{self.name}: non-finite {what} at step {step + offset}{where}; the run has diverged "
            f"(lower the learning rate or clip gradients)", step=step + offset)

    @property
    def resumable(self) -> bool:
        """True when :meth:`state_dict` captures everything (windowed BPTT: between windows)."""
        return True

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: lane states, influence, random stream."""
        return {"method": self.name, "batch_size": self.batch_size, "steps": self.steps,
                "random": self.random.state_dict(), "keep": self._keep.clone(),
                "tensors": {k: getattr(self, k).detach().clone() for k in self.state_names}}

    def load_state_dict(self, state: dict) -> None:
        if state["method"] != self.name or state["batch_size"] != self.batch_size:
            raise ValueError(f"checkpoint holds {state['method']} with batch {state['batch_size']}, "
                             f"this estimator is {self.name} with batch {self.batch_size}")
        self.steps = state["steps"]
        self.random.load_state_dict(state["random"])
        self._keep = state["keep"].to(device=self.device, dtype=self.dtype).clone()
        for k, v in state["tensors"].items():  # each keeps its own dtype (the LRU's state is complex)
            setattr(self, k, v.to(device=self.device, dtype=getattr(self, k).dtype).clone())

    # -- validation ------------------------------------------------------------------------
    def _lane_mask(self, lanes) -> torch.Tensor:
        B = self.batch_size
        if lanes is None:
            return torch.ones(B, dtype=torch.bool, device=self.device)
        lanes = torch.as_tensor(lanes, device=self.device)
        if lanes.numel() == 0 and lanes.dtype != torch.bool:  # an empty list of indices: no lane
            return torch.zeros(B, dtype=torch.bool, device=self.device)
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
        if not self.has_readout:
            raise ValueError(f"{self.name}: this estimator serves a layer with no readout "
                             f"({type(self.model).__name__}); step it with step_with_cotangent(x, dl_ds)")
        check_inputs(self.model, x, targets, lanes=self.batch_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.name!r}, batch_size={self.batch_size}, cell={self.cell!r})"


def check_inputs(model, x, targets, lanes: int | None = None) -> None:
    """Raise ValueError unless ``x`` is (B, m) — or (T, m) with ``lanes`` None, a sequence — in the
    model's dtype and device and ``targets`` the matching int64 class indices in [0, k). ``model``: a
    :class:`RecurrentModel` or a stack (:class:`kfrtrl_lab.StackedModel`)."""
    if not isinstance(model, RecurrentModel):
        from ..stack import StackedModel  # built on the estimators: imported here, off a single model's step

        if not isinstance(model, StackedModel):
            raise ValueError(f"model must be a kfrtrl_lab.RecurrentModel or StackedModel, got {type(model).__name__}")
    m, k = model.input_size, model.output_size
    weight = next(model.parameters())
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
    low, high = torch.aminmax(targets)  # one pass for both ends
    low, high = int(low), int(high)
    if low < 0 or high >= k:
        raise ValueError(f"targets must lie in [0, {k}) (output_size={k}), got values in [{low}, {high}]")


def scale_lanes(state: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``state`` (B, ...) with lane b multiplied by keep[b] (B,), for a state of any rank."""
    return state * keep.view(-1, *([1] * (state.dim() - 1)))


def diagonal_methods() -> list[str]:
    """The registered method names that work with a diagonal cell (the LRU)."""
    from .registry import METHODS

    return [name for name, cls in METHODS.items() if cls.supports_diagonal]


def _accumulate(param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad.add_(grad)


def rademacher(shape, random: CounterRandom, dtype) -> torch.Tensor:
    """Independent uniform ±1 entries (``random``: the estimator's counter-based stream)."""
    return random.signs(shape, dtype)
