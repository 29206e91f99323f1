"""The Kronecker class (algorithms.md, section 2) and the one cell step every estimator consumes.

Every cell reads one vector x̂_t = [x_t, h_{t-1}, 1] through one weight matrix

    z_t = x̂_t W,   W ∈ R^{(m+n+1) × (r·n)},   z_t = [z^1 | … | z^r]   (column k·n + j is z^k_j)
    s_t = φ(z_t, s_{t-1})       pointwise in the unit j: unit j reads z^1_j..z^r_j and its own slots

The state s_t has s slots per unit (s = 1 for tanh and RHN; 2 for the LSTM's (h, c)), n_s = s·n
entries, and slot 0 is h, the part x̂ and the readout read. A cell is only (m, n, r, s, φ); what an
estimator needs is derived from φ by one generic mechanism (:meth:`Cell.pointwise_derivatives`), and
:meth:`Cell.step` packs it into a :class:`CellStep`. W's column layout and x̂'s construction live in
this file alone: estimators use the CellStep's operators and never index W themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


class Cell(nn.Module):
    """A recurrent cell of the Kronecker class.

    Shapes (L lanes): ``x`` (L, m), ``state`` (L, s, n), ``z`` (L, r, n). The single parameter is
    ``weight`` = W of shape (m+n+1, r·n); its row blocks are [input rows | recurrent rows W_h | bias].
    """

    gate_blocks: int = 1  # r
    slots: int = 1  # s

    def __init__(self, input_size: int, hidden_size: int, init_std: float | None = None):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(self.initial_weight(init_std))

    # -- what a subclass defines -------------------------------------------------------
    @staticmethod
    def default_init_std(m: int, n: int) -> float:
        """Standard deviation of the normal initialisation of W (and of the readout)."""
        return 1.0 / math.sqrt(m + n + 1)

    def initial_weight(self, init_std: float | None = None) -> torch.Tensor:
        """A fresh W, (m+n+1, r·n): N(0, init_std²), ``None``: the cell's default std."""
        std = self.default_init_std(self.input_size, self.hidden_size) if init_std is None else init_std
        return torch.randn(self.extended_size, self.gate_blocks * self.hidden_size) * std

    def phi(self, z: torch.Tensor, state_prev: torch.Tensor) -> torch.Tensor:
        """s_t = φ(z_t, s_{t-1}); ``z`` (..., r, n), ``state_prev`` (..., s, n) -> (..., s, n).
        Must be pointwise in the unit index j."""
        raise NotImplementedError

    def derivatives(self, z: torch.Tensor, state_prev: torch.Tensor):
        """Same as :meth:`pointwise_derivatives`; cells may override with a closed form
        (checked against the generic one in the tests)."""
        return self.pointwise_derivatives(z, state_prev)

    # -- sizes and the layout of W and x̂ ---------------------------------------------
    @property
    def extended_size(self) -> int:
        """a = m + n + 1, the length of x̂."""
        return self.input_size + self.hidden_size + 1

    @property
    def state_size(self) -> int:
        """n_s = s·n."""
        return self.slots * self.hidden_size

    @property
    def recurrent_rows(self) -> slice:
        """Rows of W that read h_{t-1} (W_h)."""
        return slice(self.input_size, self.input_size + self.hidden_size)

    def zero_state(self, lanes: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """s_0 = 0, shape (L, s, n)."""
        ref = self.weight if like is None else like
        return torch.zeros(lanes, self.slots, self.hidden_size, device=ref.device, dtype=ref.dtype)

    def hidden(self, state: torch.Tensor) -> torch.Tensor:
        """h_t, the slot that x̂ and the readout read: (L, s, n) -> (L, n)."""
        return state[:, 0]

    # -- the layer contract (what a readout or a block above reads; shared with the LRU) ----
    @property
    def output_width(self) -> int:
        """Width of :meth:`layer_output`: n (the readout reads h_t)."""
        return self.hidden_size

    def layer_output(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """What the readout (or the block above) reads: h_t (L, n); ``x`` is not read."""
        return self.hidden(state)

    def recurrent_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient needs an influence estimate: [W]."""
        return [self.weight]

    def state_cotangent(self, dl_dh: torch.Tensor) -> torch.Tensor:
        """∂L/∂s_t = [∂L/∂h_t, 0] flattened to (L, n_s): only h reaches the readout."""
        if self.slots == 1:
            return dl_dh
        rest = dl_dh.new_zeros(dl_dh.shape[0], (self.slots - 1) * self.hidden_size)
        return torch.cat([dl_dh, rest], dim=1)

    def extended_input(self, x: torch.Tensor, state_prev: torch.Tensor) -> torch.Tensor:
        """x̂_t = [x_t, h_{t-1}, 1], shape (L, m+n+1)."""
        h_prev = self.hidden(state_prev)
        return torch.cat([x, h_prev, torch.ones_like(h_prev[:, :1])], dim=1)

    def preactivation(self, x_hat: torch.Tensor) -> torch.Tensor:
        """z_t = x̂_t W as (L, r, n) gate blocks."""
        return (x_hat @ self.weight).view(x_hat.shape[0], self.gate_blocks, self.hidden_size)

    def recurrent_blocks_transposed(self) -> torch.Tensor:
        """(W_h^k)ᵀ for every gate block k, (r, n_out, n_in), contiguous."""
        n, r = self.hidden_size, self.gate_blocks
        return self.weight[self.recurrent_rows].view(n, r, n).permute(1, 2, 0).contiguous()

    def recurrent_diagonals(self) -> torch.Tensor:
        """W_h^k[j, j] for every block k and unit j, (r, n): how unit j's own h feeds its own z^k_j."""
        n, r = self.hidden_size, self.gate_blocks
        return self.weight[self.recurrent_rows].view(n, r, n).diagonal(dim1=0, dim2=2)

    def per_column(self, q: torch.Tensor) -> torch.Tensor:
        """A per-unit quantity (..., n) at each of W's columns (..., r·n): column k·n + j gets q[..., j]."""
        r = self.gate_blocks
        return q.unsqueeze(-2).expand(*q.shape[:-1], r, q.shape[-1]).reshape(*q.shape[:-1], r * q.shape[-1])

    # -- the step ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state_prev: torch.Tensor) -> torch.Tensor:
        """One differentiable step s_t (used by BPTT)."""
        return self.phi(self.preactivation(self.extended_input(x, state_prev)), state_prev)

    def step(self, x: torch.Tensor, state_prev: torch.Tensor, keep: torch.Tensor | None = None) -> CellStep:
        """Everything about the step s_{t-1} -> s_t that an estimator consumes (no autograd).

        ``keep`` (L,): 1 for a lane that continues, 0 for one that starts afresh at this step; its
        s_{t-1} is taken as 0 and every H_t operator of the step is zero for it, so any influence
        propagated through H_t starts from 0 (a reset that costs O(L))."""
        if keep is not None:
            state_prev = state_prev * keep[:, None, None]
        x_hat = self.extended_input(x, state_prev)
        state, d, direct = self.derivatives(self.preactivation(x_hat), state_prev)
        return CellStep(self, x_hat, state, d, direct, keep)

    def pointwise_derivatives(self, z: torch.Tensor, state_prev: torch.Tensor):
        """(s_t, D-blocks, direct partials) from φ alone.

        Because φ is pointwise in j, its Jacobians are diagonal in the unit index, and a
        vector–Jacobian product whose cotangent is 1 on slot σ of every unit (0 elsewhere)
        returns exactly those diagonals: ∂s_t[σ, j]/∂z^k_j for every k and ∂s_t[σ, j]/∂s_{t-1}[τ, j]
        for every τ. One reverse pass per slot gives all of them.

        Returns ``state`` (L, s, n), ``d`` (L, s, r, n) with d[:, σ, k, j] = ∂s_t[σ, j]/∂z^k_j
        (the nonzeros of D_t), and ``direct`` (L, s, s, n) with direct[:, σ, τ, j] =
        ∂φ[σ, j]/∂s_{t-1}[τ, j] at fixed z (the per-unit direct path).
        """
        state, pullback = torch.func.vjp(self.phi, z, state_prev)
        d, direct = [], []
        for slot in range(self.slots):
            cotangent = torch.zeros_like(state)
            cotangent[:, slot] = 1.0
            dz, dprev = pullback(cotangent)
            d.append(dz)
            direct.append(dprev)
        return state, torch.stack(d, dim=1), torch.stack(direct, dim=1)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, r={self.gate_blocks}, "
                f"s={self.slots}")


@dataclass(eq=False)
class CellStep:
    """One step t−1 -> t of a Kronecker-class cell, as the estimators consume it.

    ``x_hat`` x̂_t (L, a); ``state`` s_t (L, s, n); ``d`` (L, s, r, n) the nonzeros of
    D_t = ∂s_t/∂z_t (per unit an s × r block); ``direct`` (L, s, s, n) ∂φ/∂s_{t-1} at fixed z.
    Matrices in the state's space are (L, n_s, ·) with row σ·n + j; matrices with W's columns are
    (L, ·, r·n). The operators below are the only things an estimator does with a step:

        F_t = x̂_t ⊗ D_t                                         (immediate Jacobian)
        H_t = blockdiag_j(direct_j) + D_t (W_h)ᵀ on the h-columns (∂s_t/∂s_{t-1}, n_s × n_s)
    """

    cell: Cell
    x_hat: torch.Tensor
    state: torch.Tensor
    d: torch.Tensor
    direct: torch.Tensor
    keep: torch.Tensor | None = None  # (L,): 0 for a lane reset before this step (its H_t is 0)
    #: ∂L_t/∂s_t (L, n_s) when the estimator's caller knows it before the influence update (the
    #: readout needs only s_t): a method may fold the gradient's contraction into its propagation
    state_cotangent: torch.Tensor | None = None

    @property
    def h(self) -> torch.Tensor:
        return self.cell.hidden(self.state)

    @property
    def keep_factor(self) -> torch.Tensor:
        """``keep`` as a (L,) tensor (ones when no lane was reset)."""
        return self.x_hat.new_ones(self.lanes) if self.keep is None else self.keep

    @property
    def lanes(self) -> int:
        return self.x_hat.shape[0]

    # -- D_t ------------------------------------------------------------------------------
    def D_norm(self) -> torch.Tensor:
        """‖D_t‖_F per lane, (L,): D's only nonzeros are the entries of ``d``."""
        return self.d.flatten(1).norm(dim=1)

    def D_dense(self, out: torch.Tensor | None = None, transposed: bool = False) -> torch.Tensor:
        """D_t as a dense (L, n_s, r·n) matrix, or D_tᵀ (L, r·n, n_s) with ``transposed``; written
        into ``out`` when given (a reused buffer: no fresh allocation to page in every step)."""
        L, s, r, n = self.d.shape
        shape = (L, r * n, s * n) if transposed else (L, s * n, r * n)
        D = self.d.new_zeros(shape) if out is None else out.zero_()
        if transposed:
            D.view(L, r, n, s, n).diagonal(dim1=2, dim2=4).copy_(self.d.permute(0, 2, 1, 3))  # (L, r, s, n)
        else:
            self.add_D(D)
        return D

    def add_D(self, A: torch.Tensor, coef: torch.Tensor | None = None) -> None:
        """A += coef·D_t in place, for A (L, n_s, r·n) and a per-lane ``coef`` (L,) (default 1):
        D_t[σ·n + j, k·n + j] = d[σ, k, j] is written straight onto the diagonals."""
        L, s, r, n = self.d.shape
        diagonals = A.view(L, s, n, r, n).diagonal(dim1=2, dim2=4)  # (L, s, r, n)
        diagonals.add_(self.d if coef is None else coef[:, None, None, None] * self.d)

    def D_transpose_times(self, g: torch.Tensor) -> torch.Tensor:
        """gᵀ D_t for g (L, n_s): (L, r·n), column k·n + j = Σ_σ g[σ·n + j] d[σ, k, j]."""
        L, s, r, n = self.d.shape
        return (g.view(L, s, 1, n) * self.d).sum(dim=1).reshape(L, r * n)

    # -- F_t = x̂_t ⊗ D_t ------------------------------------------------------------------
    def add_immediate(self, G: torch.Tensor) -> None:
        """G += F_t in place for an influence G (L, n_s, a, r·n): F_t[σ·n + j, i, k·n + l] is
        x̂_i d[σ, k, j] where l = j, and 0 elsewhere (parameter column k·n + l moves unit l only)."""
        L, s, r, n = self.d.shape
        diagonals = G.view(L, s, n, G.shape[2], r, n).diagonal(dim1=2, dim2=5)  # (L, s, a, r, n)
        diagonals.add_(self.x_hat[:, None, :, None, None] * self.d[:, :, None, :, :])

    # -- H_t = ∂s_t/∂s_{t-1} ------------------------------------------------------------------
    def H_dense(self, scale: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """H_t as a dense (L, n_s, n_s) matrix, times a per-lane ``scale`` (L,) if given, written into
        ``out`` (a (L, n_s, n_s) tensor or view) when given.

        O(s·r·n²) per lane by broadcast multiply-adds; the scale is folded into the pointwise
        factors (O(s·r·n)), not applied to H afterwards.
        """
        L, s, r, n = self.d.shape
        d, direct = self.d, self.direct
        if self.keep is not None:
            scale = self.keep if scale is None else scale * self.keep
        if scale is not None:
            d, direct = d * scale[:, None, None, None], direct * scale[:, None, None, None]
        w_t = self.cell.recurrent_blocks_transposed()  # (r, n_out, n_in)
        if out is None:
            out = d.new_empty(L, s * n, s * n) if s == 1 else d.new_zeros(L, s * n, s * n)
        elif s > 1:
            out.zero_()
        H = out.view(L, s, n, s, n)
        for slot in range(s):
            # rows of slot σ, columns of h_{t-1}: Σ_k diag(d[σ, k]) (W_h^k)ᵀ, built in place
            # (out= is not differentiable: with autograd on, build it apart and copy it in)
            target = H[:, slot, :, 0, :]
            block = d[:, slot, 0, :, None] * w_t[0] if torch.is_grad_enabled() else \
                torch.mul(d[:, slot, 0, :, None], w_t[0], out=target)
            for k in range(1, r):
                block.addcmul_(d[:, slot, k, :, None], w_t[k])
            if block is not target:
                target.copy_(block)
        H.diagonal(dim1=2, dim2=4).add_(direct)  # (L, s, s, n): the per-unit direct partials
        return out

    def H_times(self, v: torch.Tensor) -> torch.Tensor:
        """H_t v for v (L, n_s) as a forward-mode product, never forming H (O(r·n²) per lane).

        Tangent v on s_{t-1}: ż^k = v_h W_h^k, then ṡ[σ, j] = Σ_τ direct[σ, τ, j] v[τ, j] + Σ_k d[σ, k, j] ż^k_j.
        """
        L, s, r, n = self.d.shape
        v = v.view(L, s, n)
        if self.keep is not None:
            v = v * self.keep[:, None, None]
        z_dot = (self.cell.hidden(v) @ self.cell.weight[self.cell.recurrent_rows]).view(L, 1, r, n)
        return ((self.direct * v[:, None]).sum(dim=2) + (self.d * z_dot).sum(dim=2)).reshape(L, s * n)

    def H_unit_blocks(self) -> torch.Tensor:
        """Unit j's own s × s block of H_t for every j, (L, s, s, n):
        direct[σ, τ, j] + [τ = h] Σ_k d[σ, k, j] W_h^k[j, j]."""
        blocks = self.direct.clone()
        blocks[:, :, 0] += (self.d * self.cell.recurrent_diagonals()).sum(dim=2)
        return blocks if self.keep is None else blocks * self.keep[:, None, None, None]

    def H_stacked(self, At: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(H_t A_i)ᵀ for a stack of p matrices A_i stored transposed, ``At`` (L, p, r·n, n_s):
        one batched product At Hᵀ over all of them (O(p·r·n·n_s²) per lane). Storing Aᵀ keeps
        each A_i contiguous, so the stack is a (p, r·n·n_s) matrix for Gram products."""
        L, p, c, ns = At.shape
        out = torch.empty_like(At) if out is None else out
        torch.bmm(At.view(L, p * c, ns), self.H_dense().transpose(1, 2), out=out.view(L, p * c, ns))
        return out

    def D_per_column(self) -> torch.Tensor:
        """D_t's entries on each column's own unit, (L, s, r·n): column k·n + j moves only unit j,
        whose slot σ it moves by d[σ, k, j]."""
        L, s, r, n = self.d.shape
        return self.d.reshape(L, s, r * n)

    def per_column(self, q: torch.Tensor) -> torch.Tensor:
        """A per-unit quantity (..., n) at each of W's columns (..., r·n) (see :meth:`Cell.per_column`)."""
        return self.cell.per_column(q)
