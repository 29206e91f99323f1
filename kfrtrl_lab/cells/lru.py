"""The Linear Recurrent Unit (Orvieto et al., ICML 2023) as one layer (algorithms.md, section 5b).

N complex units read and write width H (code: ``hidden_size`` = N, ``input_size`` = ``output_width`` = H):

    λ = exp(−exp(ν) + i·exp(θ)) ∈ C^N,    γ = exp(γ_log) ∈ R^N
    h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t),      B = B_re + i·B_im ∈ C^{N×H}
    y_t = Re(C h_t) + D ⊙ x_t,            C = C_re + i·C_im ∈ C^{H×N},  D ∈ R^H

The recurrence is element-wise (H_t = diag(λ)), so the LRU is *not* of the Kronecker class: it has
no x̂ ⊗ D_t structure and no W. The influence of unit j's parameters stays on unit j, which makes
exact RTRL cost O(N·H) per lane and step (estimators/lru_rtrl.py). ν, θ, γ_log, B_re, B_im are the
recurrent parameters (they need an influence); C_re, C_im, D are immediate (backprop at step t).

Complex convention: for a real loss L, the gradient with respect to a complex tensor is
∂L/∂Re + i·∂L/∂Im (what torch's autograd returns); then dL = Re(conj(δ) dh) for δ = ∂L/∂h.

Initialisation as the official code (``online_lru/rec_init.py``): |λ|² uniform on [r_min², r_max²]
(so |λ| lies on the ring [r_min, r_max]), phase uniform on [0, max_phase], γ = sqrt(1 − |λ|²),
B_re, B_im ~ N(0, 1/(2H)), C_re, C_im ~ N(0, 1/N), D ~ N(0, 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """complex64 for float32 (and below), complex128 for float64."""
    return torch.complex128 if real == torch.float64 else torch.complex64


class LRU(nn.Module):
    """One LRU layer: N = ``hidden_size`` complex units, input and output width H = ``input_size``.

    State shape (L, N), complex. Options (the official code's defaults): ``r_min`` 0, ``r_max`` 1,
    ``max_phase`` 6.28 (≈ 2π); the LRU paper uses r_min = 0.9, r_max = 0.999 for long memory.
    """

    #: the recurrence is element-wise: exact RTRL keeps per-unit traces (estimators/lru_rtrl.py)
    diagonal = True

    def __init__(self, input_size: int, hidden_size: int, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 6.28):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.check_init(r_min, r_max, max_phase)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        N, H = hidden_size, input_size
        # |λ|² = u (r_max² − r_min²) + r_min², u ~ U[0, 1): nu = log(−log|λ|); a u of exactly 0 with
        # r_min = 0 would give |λ| = 0 and nu = −inf, so u is kept off 0
        # (drawn in float64: with r_max = 1, 1 − |λ|² would round to 0 in float32 and γ_log to −inf)
        dtype = torch.get_default_dtype()
        u = torch.rand(N, dtype=torch.float64).clamp_min(1e-6)
        magnitude_log = 0.5 * torch.log(u * (r_max**2 - r_min**2) + r_min**2)  # log|λ| < 0
        self.nu = nn.Parameter(torch.log(-magnitude_log).to(dtype))
        self.theta = nn.Parameter(torch.log(max_phase * torch.rand(N).clamp_min(1e-6)))
        # γ = sqrt(1 − |λ|²): the input of a unit with a long memory is scaled down so |h| stays O(|Bx|)
        self.gamma_log = nn.Parameter((0.5 * torch.log1p(-torch.exp(2 * magnitude_log))).to(dtype))
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))

    @staticmethod
    def check_init(r_min, r_max, max_phase) -> None:
        """ValueError unless the initial eigenvalues' ring and phase range are valid:
        0 <= r_min < r_max <= 1 and max_phase > 0."""
        if not (isinstance(r_min, (int, float)) and isinstance(r_max, (int, float)) and 0 <= r_min < r_max <= 1):
            raise ValueError(f"the eigenvalue ring needs 0 <= r_min < r_max <= 1, got r_min={r_min!r}, r_max={r_max!r}")
        if not (isinstance(max_phase, (int, float)) and max_phase > 0):
            raise ValueError(f"max_phase must be positive, got {max_phase!r}")

    # -- the layer contract -------------------------------------------------------------
    @property
    def output_width(self) -> int:
        """H: y_t has the input's width (the official LRU's d_model)."""
        return self.input_size

    def recurrent_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient needs an influence (traces): ν, θ, γ_log, B_re, B_im."""
        return [self.nu, self.theta, self.gamma_log, self.B_re, self.B_im]

    def immediate_parameters(self) -> list[nn.Parameter]:
        """The parameters of the output map alone (C_re, C_im, D): backprop through step t gives them."""
        return [self.C_re, self.C_im, self.D]

    @property
    def dtype(self) -> torch.dtype:
        return self.nu.dtype

    @property
    def state_dtype(self) -> torch.dtype:
        return complex_dtype(self.nu.dtype)

    def zero_state(self, lanes: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """h_0 = 0, complex, shape (L, N)."""
        ref = self.nu if like is None else like
        return torch.zeros(lanes, self.hidden_size, device=ref.device, dtype=complex_dtype(ref.dtype))

    # -- the maps -----------------------------------------------------------------------------
    def eigenvalues(self) -> torch.Tensor:
        """λ = exp(−exp(ν) + i·exp(θ)), (N,) complex."""
        return torch.exp(torch.complex(-torch.exp(self.nu), torch.exp(self.theta)))

    def input_scale(self) -> torch.Tensor:
        """γ = exp(γ_log), (N,) real."""
        return torch.exp(self.gamma_log)

    def input_matrix(self) -> torch.Tensor:
        """B = B_re + i·B_im, (N, H) complex."""
        return torch.complex(self.B_re, self.B_im)

    def projected_input(self, x: torch.Tensor) -> torch.Tensor:
        """B x_t for every lane, (L, N) complex, from real x (L, H): (x B_reᵀ) + i (x B_imᵀ)."""
        return torch.complex(x @ self.B_re.T, x @ self.B_im.T)

    def forward(self, x: torch.Tensor, state_prev: torch.Tensor) -> torch.Tensor:
        """One differentiable step h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t), (L, N) complex."""
        return self.eigenvalues() * state_prev + self.input_scale() * self.projected_input(x)

    def layer_output(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """y_t = Re(C h_t) + D ⊙ x_t = Re h_t C_reᵀ − Im h_t C_imᵀ + D ⊙ x_t, (L, H) real."""
        return state.real @ self.C_re.T - state.imag @ self.C_im.T + self.D * x

    def output_backward(self, x: torch.Tensor, state: torch.Tensor, dl_dy: torch.Tensor):
        """One-step backprop through :meth:`layer_output` for a cotangent ∂L/∂y_t (L, H).

        ∂L/∂Re h = g C_re, ∂L/∂Im h = −g C_im, so ∂L/∂h = g C_re − i·g C_im = g conj(C);
        ∂L/∂C_re = gᵀ Re h, ∂L/∂C_im = −gᵀ Im h, ∂L/∂D = Σ_lanes g ⊙ x (summed over lanes).
        Returns (∂L/∂h_t (L, N) complex, [∂L/∂C_re, ∂L/∂C_im, ∂L/∂D]) in immediate_parameters' order.
        """
        dl_ds = torch.complex(dl_dy @ self.C_re, -(dl_dy @ self.C_im))
        grads = [dl_dy.T @ state.real, -(dl_dy.T @ state.imag), (dl_dy * x).sum(dim=0)]
        return dl_ds, grads

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, r_min={self.r_min}, "
                f"r_max={self.r_max}, max_phase={self.max_phase}")
