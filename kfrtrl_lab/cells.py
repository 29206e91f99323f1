"""Cells of the Kronecker class (algorithms.md, section 2).

Every cell reads one vector x̂_t = [x_t, h_{t-1}, 1] through one weight matrix

    z_t = x̂_t W,   W ∈ R^{(m+n+1) × (r·n)},   z_t = [z^1 | … | z^r]
    h_t = φ(z_t, h_{t-1})                       (pointwise in the unit index j)

so a cell is only (m, n, r, φ). Everything an estimator needs is derived from φ
by one generic mechanism (:meth:`Cell.pointwise_derivatives`), which makes a new
cell a few lines: subclass, set ``gate_blocks``, write ``phi``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Cell(nn.Module):
    """A recurrent cell of the Kronecker class.

    Shapes (B lanes): ``x`` (B, m), ``h`` (B, n), ``z`` (B, r, n).
    The single parameter is ``weight`` = W of shape (m+n+1, r·n); row blocks are
    [input rows | recurrent rows W_h | bias row].
    """

    gate_blocks: int = 1  # r

    def __init__(self, input_size: int, hidden_size: int, init_std: float | None = None):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        r, n = self.gate_blocks, hidden_size
        if init_std is None:
            init_std = self.default_init_std(input_size, hidden_size)
        self.weight = nn.Parameter(torch.randn(input_size + hidden_size + 1, r * n) * init_std)

    # -- what a subclass defines -------------------------------------------------
    @staticmethod
    def default_init_std(m: int, n: int) -> float:
        return 1.0 / math.sqrt(m + n + 1)

    def phi(self, z: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """h_t = φ(z_t, h_{t-1}); ``z`` is (..., r, n), ``h_prev`` (..., n). Must be pointwise in j."""
        raise NotImplementedError

    # -- derived -----------------------------------------------------------------
    @property
    def extended_size(self) -> int:
        """m + n + 1, the length of x̂."""
        return self.input_size + self.hidden_size + 1

    @property
    def recurrent_rows(self) -> slice:
        """Rows of W that read h_{t-1} (W_h)."""
        return slice(self.input_size, self.input_size + self.hidden_size)

    def extended_input(self, x: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """x̂_t = [x_t, h_{t-1}, 1], shape (B, m+n+1)."""
        return torch.cat([x, h_prev, torch.ones_like(h_prev[:, :1])], dim=1)

    def preactivation(self, x_hat: torch.Tensor) -> torch.Tensor:
        """z_t = x̂_t W as (B, r, n) gate blocks."""
        return (x_hat @ self.weight).view(x_hat.shape[0], self.gate_blocks, self.hidden_size)

    def forward(self, x: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """One differentiable step h_t (used by BPTT)."""
        return self.phi(self.preactivation(self.extended_input(x, h_prev)), h_prev)

    def pointwise_derivatives(self, z: torch.Tensor, h_prev: torch.Tensor):
        """(h_t, D-blocks, ∂φ/∂h_{t-1}) from φ alone.

        Because φ is pointwise, its Jacobians are diagonal (per gate block), and the
        vector–Jacobian product with an all-ones cotangent returns exactly those
        diagonals:  1ᵀ ∂h/∂z^k = diag(∂h_t/∂z^k),  1ᵀ ∂h/∂h_{t-1} = ∂φ/∂h_{t-1}.
        One reverse pass gives all r+1 diagonals at once.

        Returns ``h`` (B, n), ``d`` (B, r, n) with d[:, k] = diag(∂h_t/∂z^k) (the
        diagonal blocks of D_t), and ``a`` (B, n) = ∂φ/∂h_{t-1} (h_{t-1}'s direct path).
        """
        h, pullback = torch.func.vjp(self.phi, z, h_prev)
        d, a = pullback(torch.ones_like(h))
        return h, d, a

    def derivatives(self, z: torch.Tensor, h_prev: torch.Tensor):
        """Same as :meth:`pointwise_derivatives`; cells may override with a closed form
        (checked against the generic one in the tests)."""
        return self.pointwise_derivatives(z, h_prev)

    def recurrent_jacobian(self, d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """H_t = diag(∂φ/∂h_{t-1}) + Σ_k diag(∂h_t/∂z^k) (W_h^k)ᵀ, dense (B, n, n).

        O(r n²) per lane; used where H multiplies a matrix (KF-RTRL, RTRL).
        """
        n, r = self.hidden_size, self.gate_blocks
        # (W_h^k)ᵀ for every block k, (r, n_out, n_in), made contiguous once so that each block's
        # contribution is one broadcast multiply-add over (B, n, n) rather than many tiny products
        w_h_t = self.weight[self.recurrent_rows].view(n, r, n).permute(1, 2, 0).contiguous()
        H = d[:, 0, :, None] * w_h_t[0]
        for k in range(1, r):
            H.addcmul_(d[:, k, :, None], w_h_t[k])
        H.diagonal(dim1=1, dim2=2).add_(a)
        return H

    def recurrent_jvp(self, d: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """H_t s as a forward-mode product, never forming H (O(r n²) per lane, no finite differences).

        Tangent s on h_{t-1}: ż^k = s W_h^k, then ḣ = a ⊙ s + Σ_k d^k ⊙ ż^k.
        """
        z_dot = (s @ self.weight[self.recurrent_rows]).view_as(d)
        return a * s + (d * z_dot).sum(dim=1)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, r={self.gate_blocks}"


class TanhRNN(Cell):
    """h_t = tanh(x̂_t W) (r = 1)."""

    gate_blocks = 1

    def phi(self, z, h_prev):
        return torch.tanh(z[..., 0, :])

    def derivatives(self, z, h_prev):
        h = torch.tanh(z[:, 0, :])
        return h, (1 - h * h).unsqueeze(1), torch.zeros_like(h_prev)


class RHN(Cell):
    """Depth-1 Recurrent Highway Network with coupled carry gate (r = 2).

        [z_c, z_f] = x̂_t W,  c = 2σ(z_c) − 1,  f = σ(z_f),  h_t = f ⊙ h_{t-1} + (1 − f) ⊙ c

    Initialisation as the official code: W ~ N(0, 0.01²).
    """

    gate_blocks = 2

    @staticmethod
    def default_init_std(m, n):
        return 0.01

    def phi(self, z, h_prev):
        c = 2 * torch.sigmoid(z[..., 0, :]) - 1
        f = torch.sigmoid(z[..., 1, :])
        return f * h_prev + (1 - f) * c

    def derivatives(self, z, h_prev):
        # Closed form of the generic result:  ∂h/∂z_c = (1−f)(1−c²)/2,
        # ∂h/∂z_f = f(1−f)(h_{t-1} − c),  ∂h/∂h_{t-1} = f.
        c = 2 * torch.sigmoid(z[:, 0, :]) - 1
        f = torch.sigmoid(z[:, 1, :])
        one_minus_f = 1 - f
        h = f * h_prev + one_minus_f * c
        d = torch.stack([one_minus_f * (1 - c * c) * 0.5, f * one_minus_f * (h_prev - c)], dim=1)
        return h, d, f
