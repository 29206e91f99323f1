"""Stacks of recurrent layers, learned layer-wise online (algorithms.md, section 5b).

The model (:class:`StackedModel`), as the official LRU code builds it, for L blocks of width d:

    a^0_t = x_t W_enc + b_enc                                     (encoder: one-hot x_t -> width d)
    block l = 1..L:
        u^l_t = norm_l(a^{l-1}_t)                                 (LayerNorm, or the identity)
        s^l_t = cell_l(u^l_t, s^l_{t-1})                          (any cell of the layer contract)
        y^l_t = cell_l.layer_output(u^l_t, s^l_t)                 (h_t for a Kronecker cell)
        a^l_t = a^{l-1}_t + mix_l(y^l_t)                          (GLU or MLP, then the residual)
    logits_t = a^L_t W_out + b_out,   L_t = Σ_b w_b cross-entropy(logits_t,b, target_t,b)

Layer-wise online learning (:class:`LayerwiseLearner`): every layer keeps its own influence estimate
G^l_t ≈ ds^l_t/dθ^l (any estimator per layer: ``rtrl``, ``kf-rtrl``, ``uoro``, …), and errors travel
between layers only *spatially*, at the current step. Per step t:

  1. one autograd pass of the whole stack from each layer's detached s^l_{t-1} gives L_t, the
     gradients of the immediate parameters (encoder, norms, mixers, readout, and any non-recurrent
     parameter of a cell) and δ^l_t = ∂L_t/∂s^l_t for every layer, s^l_{t-1} held fixed;
  2. each layer's estimator takes x^l_t = u^l_t and δ^l_t (``step_with_cotangent``) and adds
     dL_t/dθ^l ≈ δ^l_t G^l_t to its recurrent parameters' ``.grad``.

The recurrent parameters are left out of the autograd pass's gradient: their immediate term
δ^l_t F^l_t is already inside δ^l_t G^l_t (G_t = H_t G_{t-1} + F_t).

**What it drops (the layer-wise bias).** BPTT's gradient of a parameter θ sums every path from θ
to every L_t. Layer-wise learning keeps, for a parameter of block l, only the paths that go

    θ -> (layer l's own recurrence, inside G^l) -> s^l_t -> up through blocks l..L at step t -> L_t.

It drops every path that leaves θ's block at an earlier step τ < t and reaches step t through the
recurrence of another layer: θ^l -> s^l_τ -> a^l_τ -> s^{l+1}_τ -> … s^{l+1}_t -> L_t (through layer
l+1's recurrence; likewise through any layer above). A parameter that acts below a recurrent layer
loses all of its paths through that layer's recurrence: the lower layers' recurrent parameters, the
lower blocks' mixers and norms, and the encoder and block 1's norm — those even for L = 1, since
they act before layer 1's recurrence. So for L = 1 layer-wise learning with exact RTRL is BPTT for
every parameter from layer 1 up (:func:`layerwise_bias` measures each group); for L ≥ 2 every layer
but the top one is biased. The top layer's recurrent parameters stay exact: no recurrence lies
above them.
:func:`stack_true_gradient` is full BPTT through the whole stack, the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .analysis import relative_error
from .cells import make_cell
from .estimators import make_estimator, parse_method
from .estimators.base import check_inputs, scale_lanes
from .model import Layer
from .random import stream_key

#: position-wise nonlinearities of a block
MIXERS = ("glu", "mlp")


class GLU(nn.Module):
    """mix(y) = (y W_a + b_a) ⊙ σ(y W_g + b_g): (B, n) -> (B, d), a gated linear unit."""

    def __init__(self, in_width: int, out_width: int):
        super().__init__()
        self.value = nn.Linear(in_width, out_width)
        self.gate = nn.Linear(in_width, out_width)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.value(y) * torch.sigmoid(self.gate(y))


class MLP(nn.Module):
    """mix(y) = GELU(y W_1 + b_1) W_2 + b_2: (B, n) -> (B, d), hidden width d."""

    def __init__(self, in_width: int, out_width: int):
        super().__init__()
        self.inner = nn.Linear(in_width, out_width)
        self.outer = nn.Linear(out_width, out_width)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.outer(F.gelu(self.inner(y)))


class StackedModel(nn.Module):
    """Encoder, L blocks [norm -> cell -> mixer -> residual], readout (see the module docstring).

    ``cells``: L modules of the layer contract, each reading width ``width`` (a Kronecker cell with
    ``input_size=width``); ``mixer``: ``"glu"`` or ``"mlp"``; ``norm``: a LayerNorm before each cell
    (pre-norm) or none. Build one of named cells with :func:`make_stack`.
    """

    def __init__(self, cells: Sequence[nn.Module], input_size: int, output_size: int, width: int,
                 mixer: str = "glu", norm: bool = False):
        super().__init__()
        cells = list(cells)
        if not cells:
            raise ValueError("a stack needs at least one cell (layers >= 1)")
        for name, v, low in (("input_size", input_size, 1), ("output_size", output_size, 2), ("width", width, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        layers = [Layer(cell) for cell in cells]  # checks each cell's contract
        for l, cell in enumerate(cells):
            read = getattr(cell, "input_size", width)
            if read != width:
                raise ValueError(f"cell {l} reads width {read}, but the stack's width is {width}")
        self.input_size, self.output_size, self.width = input_size, output_size, width
        self.mixer_name, self.normed = mixer, norm
        self.encoder = nn.Linear(input_size, width)
        self.cells = nn.ModuleList(layer.cell for layer in layers)
        mix = GLU if mixer == "glu" else MLP
        self.mixers = nn.ModuleList(mix(cell.output_width, width) for cell in cells)
        self.norms = nn.ModuleList(nn.LayerNorm(width) if norm else nn.Identity() for _ in cells)
        self.readout = nn.Linear(width, output_size)

    @property
    def layers(self) -> int:
        return len(self.cells)

    def zero_states(self, lanes: int) -> list[torch.Tensor]:
        """s^l_0 = 0 for every layer."""
        return [cell.zero_state(lanes) for cell in self.cells]

    def recurrent_parameters(self) -> list[nn.Parameter]:
        """Every cell's recurrent parameters (the ones with an influence estimate), layer by layer."""
        return [p for cell in self.cells for p in cell.recurrent_parameters()]

    def immediate_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: its gradient at step t is the one-step backprop from fixed s_{t-1}."""
        recurrent = {id(p) for p in self.recurrent_parameters()}
        return [p for p in self.parameters() if id(p) not in recurrent]

    def step(self, x: torch.Tensor, states_prev: Sequence[torch.Tensor]):
        """One differentiable step of the whole stack: (logits_t (B, k), [s^l_t], [u^l_t]) from
        x_t (B, m) and [s^l_{t-1}]; u^l_t is the input layer l's cell reads."""
        a = self.encoder(x)
        states, inputs = [], []
        for cell, mix, norm, s_prev in zip(self.cells, self.mixers, self.norms, states_prev):
            u = norm(a)
            s = cell(u, s_prev)
            a = a + mix(cell.layer_output(u, s))
            states.append(s)
            inputs.append(u)
        return self.readout(a), states, inputs

    def initial_state(self, lanes: int) -> list[torch.Tensor]:
        """[s^l_0 = 0] (as RecurrentModel.initial_state: evaluation and sampling run either model)."""
        return self.zero_states(lanes)

    def predict(self, x: torch.Tensor, states: Sequence[torch.Tensor]):
        """One step: (logits_t (B, k), [s^l_t]) from x_t (B, m) and [s^l_{t-1}]."""
        logits, states, _ = self.step(x, states)
        return logits, states

    def gradient_clipped_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient the trainer clips (jointly): every layer's recurrent ones,
        as the single-layer model's W."""
        return self.recurrent_parameters()

    def lane_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-lane cross-entropy in nats, (B,)."""
        return F.cross_entropy(logits, targets, reduction="none")

    def extra_repr(self) -> str:
        return f"layers={self.layers}, width={self.width}, mixer={self.mixer_name!r}, norm={self.normed}"


def make_stack(cell: str, input_size: int, output_size: int, layers: int, width: int, hidden: int,
               mixer: str = "glu", norm: bool = False, cell_options: dict | None = None) -> StackedModel:
    """A :class:`StackedModel` of ``layers`` cells named ``cell`` (``rhn``, ``tanh``, ``lstm``, ``lru``),
    each with ``hidden`` units reading width ``width`` (``cell_options``: keyword arguments of every
    cell, e.g. the LRU's ``r_min``, ``r_max``, ``max_phase``)."""
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")
    cells = [make_cell(cell, width, hidden, **(cell_options or {})) for _ in range(layers)]
    return StackedModel(cells, input_size, output_size, width, mixer=mixer, norm=norm)


def layer_seed(seed: int | None, layer: int) -> int | None:
    """Layer ``layer``'s estimator seed: ``seed`` itself for layer 0 (so a one-layer stack draws the
    signs a single model's estimator of that seed draws), an independent stream for the others."""
    return seed if seed is None or layer == 0 else stream_key(seed, 1000 + layer)


class LayerwiseLearner:
    """Layer-wise online learning of a :class:`StackedModel` over B lanes (see the module docstring).

    ``methods``: one estimator name for every layer, or a list of L names (any of ``kl.METHODS``
    with an influence estimate: not ``bptt``/``tbptt-<k>``). Used like an estimator: :meth:`reset`
    (lanes), :meth:`step` (x (B, m), targets (B,)) returns the per-lane losses and *adds* this
    step's gradient to the ``.grad`` of every parameter; :meth:`fast_step` is the trainer's
    unchecked step. ``reduction``: L_t = Σ_b w_b ℓ_t,b with w_b = 1/B (``"mean"``) or 1 (``"sum"``).
    """

    flushes_at_sequence_end = False
    capturable = False  # each step runs an autograd pass: not captured in a CUDA graph
    resumable = True
    stochastic = False

    def __init__(self, model: StackedModel, methods, batch_size: int, *, reduction: str = "mean",
                 seed: int | None = None):
        if not isinstance(model, StackedModel):
            raise ValueError(f"model must be a kfrtrl_lab.StackedModel, got {type(model).__name__}")
        L = model.layers
        methods = [methods] * L if isinstance(methods, str) else list(methods)
        if len(methods) != L:
            raise ValueError(f"methods must be one name or a list of {L} (one per layer), got {len(methods)}")
        for method in methods:
            if getattr(parse_method(method)[0], "flushes_at_sequence_end", False) or method.startswith("tbptt"):
                raise ValueError(f"method {method!r} backpropagates through time and keeps no influence estimate; "
                                 f"a layer-wise learner needs an online method per layer (rtrl, kf-rtrl, uoro, ...)")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model, self.methods, self.batch_size, self.reduction = model, methods, batch_size, reduction
        self.estimators = [make_estimator(method, Layer(cell), batch_size, reduction=reduction,
                                          seed=layer_seed(seed, l))
                           for l, (method, cell) in enumerate(zip(methods, model.cells))]
        self.name = methods[0] if len(set(methods)) == 1 else "layerwise(" + ",".join(methods) + ")"
        self.stochastic = any(est.stochastic for est in self.estimators)
        first = self.estimators[0]
        self.device, self.dtype = first.device, first.dtype
        self._lane_weights = first._lane_weights
        self._immediate = [p for p in model.immediate_parameters() if p.requires_grad]
        self.steps = 0
        self.gradient_ready = False
        # the first step (1-based, this learner's count) at which the loss was non-finite, on the device
        self._bad_loss_step = torch.zeros((), dtype=torch.long, device=self.device)

    @property
    def states(self) -> list[torch.Tensor]:
        """s^l_t of every layer, each (B, ...)."""
        return [est.state for est in self.estimators]

    def reset(self, lanes=None) -> None:
        """Reset the state and influence of all lanes (``None``) or of some, in every layer."""
        for est in self.estimators:
            est.reset(lanes)

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Advance every lane one step; add dL_t/dθ (layer-wise) to every parameter's ``.grad``.
        Returns the per-lane losses (B,) in nats, detached."""
        self._check_inputs(x, targets)
        losses = self._step(x, targets, None, check=True)
        self.check_finite()
        return losses

    def fast_step(self, x: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """:meth:`step` with lanes ``keep`` = 0 (B,) starting afresh, nothing checked or read back."""
        return self._step(x, targets, keep, check=False)

    def step_lane_gradients(self, x: torch.Tensor, targets: torch.Tensor):
        """Advance one step and return (losses (B,), [per-lane estimate of dℓ_t,b/dθ^l (B, ...) for
        each layer's recurrent parameter]) without touching any ``.grad`` — for gradient analysis."""
        self._check_inputs(x, targets)
        losses, lane_grads = self._step(x, targets, None, check=True, per_lane=True)
        self.check_finite()
        return losses, lane_grads

    def _step(self, x, targets, keep, check, per_lane=False):
        self.gradient_ready = False
        self.steps += 1
        states_prev = [est.state if keep is None else scale_lanes(est.state, keep)
                       for est in self.estimators]
        with torch.enable_grad():
            # (1) the one-step pass from fixed s^l_{t-1}: the recurrent parameters are not asked for
            states_prev = [s.detach() for s in states_prev]
            logits, states, inputs = self.model.step(x, states_prev)
            losses = self.model.lane_losses(logits, targets)
            loss = (losses * self._lane_weights).sum()
            grads = torch.autograd.grad(loss, self._immediate + states, allow_unused=True)
        immediate, deltas = grads[:len(self._immediate)], grads[len(self._immediate):]
        if not check:
            bad = ~loss.detach().isfinite() & (self._bad_loss_step == 0)
            self._bad_loss_step.copy_(torch.where(bad, torch.full_like(self._bad_loss_step, self.steps),
                                                  self._bad_loss_step))
        elif not loss.isfinite():
            raise_nonfinite(self.name, self.steps)
        # (2) every layer's own estimate: δ^l_t G^l_t into its recurrent parameters' .grad
        deltas = [torch.zeros_like(s) if delta is None else delta for delta, s in zip(deltas, states)]
        if per_lane:
            return losses.detach(), [est.cotangent_lane_gradients(u.detach(), delta, keep, check=check)
                                     for est, u, delta in zip(self.estimators, inputs, deltas)]
        for est, u, delta in zip(self.estimators, inputs, deltas):
            est.step_with_cotangent(u.detach(), delta, keep, check=check)
        for p, g in zip(self._immediate, immediate):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
        self.gradient_ready = True
        return losses.detach()

    def check_finite(self) -> None:
        """Raise :class:`~kfrtrl_lab.NonFiniteError` for the first non-finite state, gradient or loss
        recorded by the fast path."""
        for est in self.estimators:
            est.check_finite()
        step = int(self._bad_loss_step)
        if step:
            raise_nonfinite(self.name, step)

    def flush(self) -> None:
        """Nothing is held back: every step writes its gradient."""

    def state_dict(self) -> dict:
        return {"method": self.name, "batch_size": self.batch_size, "steps": self.steps,
                "layers": [est.state_dict() for est in self.estimators]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.name or len(state.get("layers", ())) != len(self.estimators):
            raise ValueError(f"checkpoint holds {state.get('method')} over {len(state.get('layers', ()))} layers, "
                             f"this learner is {self.name} over {len(self.estimators)}")
        self.steps = state["steps"]
        for est, s in zip(self.estimators, state["layers"]):
            est.load_state_dict(s)

    def _check_inputs(self, x, targets) -> None:
        check_inputs(self.model, x, targets, lanes=self.batch_size)

    def __repr__(self) -> str:
        return f"LayerwiseLearner(methods={self.methods}, batch_size={self.batch_size}, layers={self.model.layers})"


def raise_nonfinite(name: str, step: int):
    from .estimators import NonFiniteError

    raise NonFiniteError(f"{name}: non-finite loss at step {step}; the run has diverged (lower the learning rate "
                         f"or clip gradients)", step=step)


# -- analysis on one sequence ------------------------------------------------------------------
def stack_true_gradient(model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """dL/dθ for every trainable parameter by full BPTT through the whole stack over the sequence,
    L = Σ_t cross-entropy(logits_t, target_t) from s^l_0 = 0: {name: gradient}. Leaves ``.grad``
    untouched. Use float64 to compare with the online gradients."""
    check_inputs(model, inputs, targets)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    with torch.enable_grad():
        states, loss = model.zero_states(1), 0.0
        for t in range(inputs.shape[0]):
            logits, states, _ = model.step(inputs[t:t + 1], states)
            loss = loss + model.lane_losses(logits, targets[t:t + 1]).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads)}


def layerwise_gradient(model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, methods="rtrl",
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """dL/dθ for every trainable parameter by layer-wise online learning (one lane, losses summed)
    over the sequence: {name: gradient}, on a private copy of the model (``.grad`` untouched)."""
    check_inputs(model, inputs, targets)
    private = copy.deepcopy(model)
    private.zero_grad(set_to_none=True)
    learner = LayerwiseLearner(private, methods, 1, reduction="sum", seed=seed)
    for t in range(inputs.shape[0]):
        learner.step(inputs[t:t + 1], targets[t:t + 1])
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for n, p in private.named_parameters() if p.requires_grad}


def layerwise_gradient_samples(model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, methods,
                               samples: int, seed: int = 0) -> torch.Tensor:
    """(S, P_rec) layer-wise estimates of dL/dθ_rec over the sequence, θ_rec = every layer's
    recurrent parameters flattened in the order of ``model.recurrent_parameters()``: S lanes of one
    batched run, each with its own random signs (independent draws for a stochastic method). The
    immediate parameters' gradients are not random (the forward pass does not depend on the
    estimator) and are left out."""
    check_inputs(model, inputs, targets)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    learner = LayerwiseLearner(model, methods, samples, reduction="sum", seed=seed)
    total = None
    for t in range(inputs.shape[0]):
        _, lane_grads = learner.step_lane_gradients(inputs[t].expand(samples, -1), targets[t].expand(samples))
        flat = torch.cat([g.reshape(samples, -1) for g in lane_grads], dim=1)
        total = flat if total is None else total + flat
    return total


def recurrent_gradient_vector(model: StackedModel, gradients: dict[str, torch.Tensor]) -> torch.Tensor:
    """θ_rec's entries of a {name: gradient} dict (:func:`layerwise_gradient`, :func:`stack_true_gradient`),
    flattened in the order of ``model.recurrent_parameters()``: the columns of
    :func:`layerwise_gradient_samples`."""
    names = {id(p): n for n, p in model.named_parameters()}
    return torch.cat([gradients[names[id(p)]].reshape(-1) for p in model.recurrent_parameters()])


def parameter_groups(model: StackedModel) -> dict[str, list[str]]:
    """Names of the trainable parameters in each group the bias is reported for:

    * ``recurrent l`` (l = 1..L): layer l's recurrent parameters;
    * ``below layer 1``: the encoder and block 1's norm, which act before layer 1's recurrence
      (biased at every L: their paths through it into later steps are dropped);
    * ``layer 1 and up``: every other parameter (exact for L = 1 with exact RTRL);
    * ``all``."""
    ids = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    groups = {f"recurrent {l + 1}": [ids[id(p)] for p in cell.recurrent_parameters() if id(p) in ids]
              for l, cell in enumerate(model.cells)}
    below = {id(p) for p in [*model.encoder.parameters(), *model.norms[0].parameters()]}
    groups["below layer 1"] = [n for i, n in ids.items() if i in below]
    groups["layer 1 and up"] = [n for i, n in ids.items() if i not in below]
    groups["all"] = list(ids.values())
    return groups


def layerwise_bias(model: StackedModel, inputs: torch.Tensor, targets: torch.Tensor, methods="rtrl",
                   seed: int = 0) -> dict[str, float]:
    """The layer-wise gradient's relative error against BPTT through the stack on one sequence,
    𝓔 = ‖ĝ − g‖²/‖g‖² (kl.relative_error; for a deterministic ĝ, the relative bias squared), for
    each group of :func:`parameter_groups`. With exact ``rtrl`` per layer: 0 (to rounding) for
    ``layer 1 and up`` when L = 1, clearly above 0 for the recurrent parameters of every layer but
    the top one when L ≥ 2 (the top layer's are exact: no recurrence lies above them)."""
    exact = stack_true_gradient(model, inputs, targets)
    online = layerwise_gradient(model, inputs, targets, methods, seed=seed)
    result = {}
    for group, names in parameter_groups(model).items():
        if not names:
            continue
        g = torch.cat([exact[n].reshape(-1) for n in names])
        g_hat = torch.cat([online[n].reshape(-1) for n in names])
        result[group] = relative_error(g_hat[None], g)
    return result
