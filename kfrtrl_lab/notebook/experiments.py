"""The computations behind the notebooks, as plain functions that return numbers or rows.

Every function is seeded and small enough to call from a test; the notebooks only choose
sizes and draw what these return.
"""

from __future__ import annotations

import math

import torch

from ..analysis import gradient_samples, relative_error, true_gradient, unbiasedness_test
from ..estimators import make_estimator
from ..cells import CELLS, RHN, CellStep, is_diagonal, make_cell
from ..measure import loglog_slope, step_cost  # noqa: F401  (the notebooks' cost measurements)
from ..model import RecurrentModel
from ..tasks.copy import copy_sequence


def random_model(cell: str = "rhn", input_size: int = 4, hidden_size: int = 16, output_size: int = 4,
                 init_std: float | None = None, seed: int = 0, dtype=torch.float64, **cell_options) -> RecurrentModel:
    """A seeded random model (``init_std`` None: the cell's default, N(0, 0.01²) for the RHN). A
    diagonal cell (``lru``) has no ``init_std``: its initial eigenvalues come from ``cell_options``
    (the LRU's ``r_min``, ``r_max``, ``max_phase``; default: its official ring)."""
    torch.manual_seed(seed)
    if is_diagonal(CELLS.get(cell)):
        if init_std is not None:
            raise ValueError(f"init_std sets the weights of a Kronecker-class cell; the {cell} cell's eigenvalues are "
                             f"set by r_min, r_max and max_phase (got init_std={init_std!r})")
        return RecurrentModel(make_cell(cell, input_size, hidden_size, **cell_options), output_size).to(dtype)
    return RecurrentModel(make_cell(cell, input_size, hidden_size, init_std=init_std, **cell_options), output_size,
                          init_std=init_std).to(dtype)


def random_sequence(model: RecurrentModel, T: int, seed: int = 0):
    """Gaussian inputs (T, m) and uniform targets (T,) for ``model`` (the LRU's m is its width H_w)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, model.input_size, generator=g).to(model.readout.dtype),
            torch.randint(0, model.output_size, (T,), generator=g))


# -- notebook 1: RTRL -------------------------------------------------------------------------

def rtrl_vs_bptt(cell: str = "rhn", hidden_size: int = 8, T: int = 20, seed: int = 0,
                 init_std: float = 0.5) -> dict:
    """Max |RTRL − BPTT| over the entries of dL/dW on one sequence (float64)."""
    model = random_model(cell, hidden_size=hidden_size, init_std=init_std, seed=seed)
    x, y = random_sequence(model, T, seed=seed + 1)
    exact = true_gradient(model, x, y)
    rtrl = gradient_samples(model, x, y, "rtrl", 1)[0]
    return {"cell": cell, "n": hidden_size, "T": T, "P": exact.numel(),
            "max_abs_error": (rtrl - exact).abs().max().item(),
            "relative_error": ((rtrl - exact).norm() / exact.norm()).item()}


def tiny_tanh_problem(input_size: int = 3, hidden_size: int = 5, T: int = 12, seed: int = 0,
                      init_std: float = 0.5):
    """A seeded tanh RNN h_t = tanh(x̂_t W) (r_g = 1) with its readout, float64, and one random
    sequence: returns (model, W, W_out, inputs (T, m), targets (T,)), W and W_out detached."""
    model = random_model("tanh", input_size, hidden_size, 4, init_std=init_std, seed=seed)
    x, y = random_sequence(model, T, seed=seed + 1)
    return model, model.cell.weight.detach(), model.readout.detach(), x, y


def from_scratch_check(rtrl_fn, bptt_fn=None, input_size: int = 3, hidden_size: int = 5, T: int = 12,
                       seed: int = 0) -> dict:
    """Compare a from-scratch gradient ``rtrl_fn(W, W_out, inputs, targets)`` -> dL/dW (a, n) of a tanh
    RNN with the package: ``kl.true_gradient`` (torch.autograd over the unrolled sequence) and
    ``kl.RTRL`` (the package's G_t = H_t G_{t-1} + F_t); with ``bptt_fn`` (same signature) also
    with it. Relative differences ‖ĝ − g‖/‖g‖, float64, on :func:`tiny_tanh_problem`."""
    model, W, W_out, x, y = tiny_tanh_problem(input_size, hidden_size, T, seed)
    autograd = true_gradient(model, x, y).view_as(W)
    package_rtrl = gradient_samples(model, x, y, "rtrl", 1)[0].view_as(W)
    mine = rtrl_fn(W, W_out, x, y)

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    out = {"n": hidden_size, "m": input_size, "T": T, "P": W.numel(), "shape_ok": tuple(mine.shape) == tuple(W.shape)}
    if out["shape_ok"]:
        out.update(scratch_vs_autograd=rel(mine, autograd), scratch_vs_package_rtrl=rel(mine, package_rtrl))
    out["package_rtrl_vs_autograd"] = rel(package_rtrl, autograd)
    if bptt_fn is not None:
        out["bptt_fn_vs_autograd"] = rel(bptt_fn(W, W_out, x, y), autograd)
    return out


def measured_counts(cell: str = "tanh", input_size: int = 4, hidden_size: int = 8, T: int = 10,
                    seed: int = 0) -> dict:
    """RTRL's and BPTT's costs for one lane, measured on the package (not computed from formulas):

    - ``P``: entries of the cell's W;
    - ``rtrl_memory``: numbers in ``kl.RTRL``'s influence G_t per lane;
    - ``rtrl_madds_per_step``: multiply-adds of the product H_t G_{t-1} in one ``kl.RTRL`` step
      (torch's FLOP counter on its batched matrix product; a multiply-add counts 2 FLOPs there);
    - ``bptt_memory``: numbers autograd saves for the backward pass over the unrolled cell for T
      steps (saved tensors, the parameter W itself not counted);
    - ``bptt_madds_per_sequence``: multiply-adds of the matrix products of that forward and
      backward pass (x̂_t W forward; x̂_tᵀ δ_t and δ_t Wᵀ backward; the first step needs no
      δ_1 Wᵀ since h_0 does not depend on W).

    The loss over the cell is Σ_t Σ_j h_t,j, so no readout product is counted."""
    from torch.utils.flop_counter import FlopCounterMode

    model = random_model(cell, input_size, hidden_size, 4, init_std=0.5, seed=seed)
    c = model.cell
    x, y = random_sequence(model, T, seed=seed + 1)
    est = make_estimator("rtrl", model, 1, reduction="sum")
    est.step(x[:1], y[:1])  # G_1 = F_1; the next step propagates it
    with FlopCounterMode(display=False) as counter:
        est.step(x[1:2], y[1:2])
    bmm = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "bmm" in str(k))
    saved = {}
    weight_storage = c.weight.untyped_storage().data_ptr()

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr != weight_storage:
            saved[ptr] = t.untyped_storage().nbytes() // t.element_size()
        return t

    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            state, loss = c.zero_state(1), 0.0
            for t in range(T):
                state = c(x[t : t + 1], state)
                loss = loss + c.hidden(state).sum()
        torch.autograd.grad(loss, c.weight)
    mm = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "mm" in str(k))
    return {"cell": cell, "m": input_size, "n": hidden_size, "r_g": c.gate_blocks, "T": T,
            "P": c.weight.numel(), "rtrl_memory": est.influence[0].numel(), "rtrl_madds_per_step": bmm // 2,
            "bptt_memory": sum(saved.values()), "bptt_madds_per_sequence": mm // 2}


def online_rtrl_drift(learning_rates, cell: str = "tanh", hidden_size: int = 8, T: int = 30, seed: int = 0,
                      init_std: float = 0.5) -> list[dict]:
    """RTRL while the parameters move: after every step, θ ← θ − η dL_t/dθ (plain SGD on W, the
    readout fixed). At step T, RTRL reads g_T^online = ∂L_T/∂h_T G_T off an influence built from
    Jacobians taken at T different parameter settings θ^(0) … θ^(T−1). Compared, for each η, with
    the BPTT gradient dL_T/dθ of the same loss L_T at a single fixed setting: the parameters the
    step used, θ^(T−1) (``vs_current``), and the initial ones, θ^(0) (``vs_initial``), each by
    autograd over the whole sequence run with those parameters. Relative differences ‖·‖/‖g‖; at
    η = 0 all three are the same gradient."""
    rows = []
    for lr in learning_rates:
        model = random_model(cell, 4, hidden_size, 4, init_std=init_std, seed=seed)
        x, y = random_sequence(model, T, seed=seed + 1)
        W = model.cell.weight
        initial = W.detach().clone()
        est = make_estimator("rtrl", model, 1, reduction="sum")
        for t in range(T):
            _, grad = est.step_lane_gradients(x[t : t + 1], y[t : t + 1])
            if t < T - 1:
                with torch.no_grad():
                    W -= lr * grad[0]
        online = grad[0]
        change = ((W.detach() - initial).norm() / initial.norm()).item()

        def bptt_last(params):
            with torch.no_grad():
                W.copy_(params)
            return _last_step_gradient(model, x, y)

        current = bptt_last(W.detach().clone())
        first = bptt_last(initial)
        rows.append({"lr": lr, "T": T, "n": hidden_size, "cell": cell,
                     "vs_current": ((online - current).norm() / current.norm()).item(),
                     "vs_initial": ((online - first).norm() / first.norm()).item(),
                     "parameter_change": change})
    return rows


def _last_step_gradient(model: RecurrentModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dL_T/dW (only the last step's loss) by autograd over the whole sequence, fixed parameters."""
    c = model.cell
    with torch.enable_grad():
        state = c.zero_state(1)
        for t in range(x.shape[0]):
            state = c(x[t : t + 1], state)
        loss = model.lane_losses(c.hidden(state), y[-1:]).sum()
        (grad,) = torch.autograd.grad(loss, c.weight)
    return grad


# -- notebook 2: the Kronecker factorisation ---------------------------------------------------

def _random_point(cell, seed: int):
    """(x_t, s_{t-1}, the CellStep) at a random point of ``cell`` (float64, one lane, every slot = a
    tanh-squashed h_{t-1}): where notebook 2 compares the package's Jacobians with autograd's."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, cell.input_size, generator=g, dtype=torch.float64)
    h_prev = torch.randn(1, cell.hidden_size, generator=g, dtype=torch.float64).tanh()
    state_prev = torch.stack([h_prev] * cell.slots, dim=1)
    with torch.no_grad():
        step = cell.step(x, state_prev)
    return x, state_prev, step


def immediate_jacobian_check(cell: str = "rhn", hidden_size: int = 5, seed: int = 0) -> dict:
    """max |∂s_t/∂W (autograd) − x̂_t ⊗ D_t| at a random point (F_t, algorithms.md section 2)."""
    model = random_model(cell, hidden_size=hidden_size, init_std=0.5, seed=seed)
    c = model.cell
    x, state_prev, step = _random_point(c, seed)
    F = torch.autograd.functional.jacobian(
        lambda W: torch.func.functional_call(c, {"weight": W}, (x, state_prev))[0].flatten(), c.weight.detach())
    kron = torch.einsum("i,jc->jic", step.x_hat[0], step.D_dense()[0])
    return {"cell": cell, "F_shape": tuple(F.shape), "max_abs_error": (F - kron).abs().max().item(),
            "max_abs_F": F.abs().max().item()}


def kron_step_variance(u, B, x_hat, D, p) -> float:
    """E‖u'⊗A' − (u⊗B + x̂⊗D)‖² for u' = c1 p u + c2 x̂, A' = c1 B/p + c2 D, c1, c2 = ±1,
    computed exactly by enumerating the four sign pairs."""
    target = torch.outer(u, B.flatten()) + torch.outer(x_hat, D.flatten())
    total = 0.0
    for c1 in (-1.0, 1.0):
        for c2 in (-1.0, 1.0):
            est = torch.outer(c1 * p * u + c2 * x_hat, (c1 * B / p + c2 * D).flatten())
            total += ((est - target) ** 2).sum().item() / 4
    return total


def kron_step_terms(seed: int = 0, n: int = 6, m: int = 3):
    """Random (u, B, x̂, D) for one KF step: D with the RHN's two diagonal blocks, x̂ ending in 1."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(m + n + 1, generator=g, dtype=torch.float64)
    B = torch.randn(n, 2 * n, generator=g, dtype=torch.float64) * 0.3
    x_hat = torch.cat([torch.randn(m + n, generator=g, dtype=torch.float64), torch.ones(1, dtype=torch.float64)])
    d = (torch.rand(2, n, generator=g, dtype=torch.float64) * 0.25).view(1, 1, 2, n)
    D = CellStep(RHN(m, n), x_hat[None], None, d, None).D_dense()[0]
    return u, B, x_hat, D


def variance_vs_p(seed: int = 0, n: int = 6, m: int = 3, points: int = 61, low: float = 1e-2,
                  high: float = 1e2, scale_u: float = 1.0, scale_B: float = 1.0, scale_D: float = 1.0) -> dict:
    """The variance of one KF step against p on a log grid from ``low`` to ``high`` (fixed, so it
    does not contain p* by construction), for the terms of :func:`kron_step_terms`, with u, B and D
    scaled by the given factors. p* = sqrt(‖B‖/‖u‖)·sqrt(‖x̂‖/‖D‖) = p1/p2 of section 3."""
    u, B, x_hat, D = kron_step_terms(seed, n, m)
    u, B, D = u * scale_u, B * scale_B, D * scale_D
    p_star = math.sqrt(B.norm() / u.norm()) * math.sqrt(x_hat.norm() / D.norm())
    ratio = (high / low) ** (1 / (points - 1))
    ps = [low * ratio**i for i in range(points)]
    var = [kron_step_variance(u, B, x_hat, D, p) for p in ps]
    best = min(range(points), key=var.__getitem__)
    return {"p": ps, "variance": var, "p_star": p_star, "p_grid_min": ps[best],
            "variance_at_p_star": kron_step_variance(u, B, x_hat, D, p_star),
            "grid_ratio": ratio}


def kron_convention_check(cell: str = "rhn", hidden_size: int = 4, input_size: int = 3, seed: int = 0) -> dict:
    """One step of a random cell: x̂_t, D_t (dense, n_s × r_g n), H_t (dense, n_s × n_s) from the
    package, and the same Jacobians from autograd: F_t = ∂s_t/∂θ at fixed s_{t-1} as an n_s × P
    matrix (θ = vec W, row-major: P index a'·r_g n + c) and H_t = ∂s_t/∂s_{t-1} through z_t and φ.
    The notebook compares F with torch.kron(x̂_t, D_t), the row-vector Kronecker product of
    docs/notation.md: (x̂ ⊗ D)[i, a'·r_g n + c] = x̂_{a'} D[i, c]."""
    model = random_model(cell, input_size=input_size, hidden_size=hidden_size, init_std=0.5, seed=seed)
    c = model.cell
    x, state_prev, step = _random_point(c, seed)
    W = c.weight.detach()
    F = torch.autograd.functional.jacobian(
        lambda w: torch.func.functional_call(c, {"weight": w}, (x, state_prev)).flatten(), W)
    H = torch.autograd.functional.jacobian(lambda s: c(x, s.view_as(state_prev)).flatten(), state_prev.flatten())
    return {"cell": cell, "x_hat": step.x_hat[0], "D": step.D_dense()[0], "H": step.H_dense()[0],
            "F_autograd": F.reshape(c.state_size, -1), "H_autograd": H, "h_prev": state_prev[0, 0],
            "z": c.preactivation(step.x_hat)[0].detach(), "W": W, "input_size": c.input_size}


def kron_closure_check(hidden_size: int = 4, input_size: int = 3, seed: int = 0) -> dict:
    """H_t (u ⊗ A) against u ⊗ (H_t A) for the RHN's H_t and a random pair (u, A), u ∈ R^a,
    A ∈ R^{n × r_g n}: the product of H_t with a Kronecker product stays one Kronecker product."""
    step = kron_convention_check("rhn", hidden_size, input_size, seed)
    g = torch.Generator().manual_seed(seed + 2)
    u = torch.randn(step["x_hat"].numel(), generator=g, dtype=torch.float64)
    A = torch.randn(*step["D"].shape, generator=g, dtype=torch.float64)
    return {"u": u, "A": A, "H": step["H"]}


def kron_memory_rows(hidden_sizes, input_size: int = 4, gate_blocks: int = 2) -> list[dict]:
    """Numbers stored per lane: the exact influence G_t (n × P, P = a·r_g n) against one
    Kronecker pair u ⊗ A (a + n·r_g n); a = m + n + 1."""
    rows = []
    for n in hidden_sizes:
        a = input_size + n + 1
        rows.append({"n": n, "a": a, "P": a * gate_blocks * n, "G": n * a * gate_blocks * n,
                     "kron": a + n * gate_blocks * n})
    return rows


def kron_step_variance_closed_form(u, M, x_hat, D, p) -> float:
    """Var of one KF step with p = p1/p2 (only the ratio matters):
    ‖p u ⊗ D + x̂ ⊗ M / p‖² = p²‖u‖²‖D‖² + ‖x̂‖²‖M‖²/p² + 2⟨u, x̂⟩⟨M, D⟩."""
    return (p**2 * (u @ u) * (D * D).sum() + (x_hat @ x_hat) * (M * M).sum() / p**2
            + 2 * (u @ x_hat) * (M * D).sum()).item()


def kron_step_draws(u, M, x_hat, D, p1, p2, c1, c2):
    """The two-into-one step for S sign pairs c1, c2 (S,) each: u_t = c1 p1 u + c2 p2 x̂,
    A_t = c1 M/p1 + c2 D/p2; returns the S estimates u_t ⊗ A_t as (S, a·r_g n·n) rows
    (each the row-major flattening of torch.kron(u_t, A_t))."""
    u_t = c1[:, None] * p1 * u + c2[:, None] * p2 * x_hat
    A_t = c1[:, None, None] * M / p1 + c2[:, None, None] * D / p2
    return torch.einsum("sa,sic->siac", u_t, A_t).reshape(len(c1), -1)


def kron_step_mean(u, M, x_hat, D, p1, p2) -> torch.Tensor:
    """E[u_t ⊗ A_t] over the four equally likely sign pairs, exactly (no sampling), flattened
    like :func:`kron_step_draws`."""
    c = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=u.dtype)
    return kron_step_draws(u, M, x_hat, D, p1, p2, c[:, 0], c[:, 1]).mean(dim=0)


def kron_step_target(u, M, x_hat, D) -> torch.Tensor:
    """u ⊗ M + x̂ ⊗ D = H_t (u ⊗ A_{t-1}) + F_t, flattened like :func:`kron_step_draws`."""
    return (torch.einsum("a,ic->iac", u, M) + torch.einsum("a,ic->iac", x_hat, D)).flatten()


def variance_bowl(seed: int = 0, n: int = 6, m: int = 3, points: int = 61, sampled=(0.1, 0.3, 1.0, 3.0, 10.0),
                  draws: int = 400) -> dict:
    """:func:`variance_vs_p` plus the variance MEASURED from sign draws at p = f·p* for each f in
    ``sampled``: ``draws`` pairs (c1, c2) from a seeded generator, the estimates u_t ⊗ A_t built
    from them, and their sample variance Σ_s ‖ĝ_s − mean‖² / (S − 1) (the target is not used). The
    closed form is that of :func:`kron_step_variance_closed_form`. Each draw's error is ±X (only its
    sign is random), so the sample variance is ‖X‖² (1 − ε̄²) S/(S − 1), ε̄ the mean of the S products
    c1 c2: it is off the closed form by a relative amount of order 1/S (``relative_gap``)."""
    curve = variance_vs_p(seed=seed, n=n, m=m, points=points)
    u, M, x_hat, D = kron_step_terms(seed, n, m)
    curve["closed_form"] = [kron_step_variance_closed_form(u, M, x_hat, D, p) for p in curve["p"]]
    g = torch.Generator().manual_seed(seed + 7)
    measured = []
    for f in sampled:
        p = f * curve["p_star"]
        c = torch.randint(0, 2, (draws, 2), generator=g).double() * 2 - 1
        est = kron_step_draws(u, M, x_hat, D, p, 1.0, c[:, 0], c[:, 1])
        variance = ((est - est.mean(dim=0)) ** 2).sum().item() / (draws - 1)
        closed = kron_step_variance_closed_form(u, M, x_hat, D, p)
        measured.append({"p": p, "variance": variance, "closed_form": closed, "draws": draws,
                         "relative_gap": abs(variance / closed - 1)})
    curve["measured"] = measured
    return curve


def kf_rescalings(u_prev, M, x_hat, D):
    """KF-RTRL's p1 = sqrt(‖M_t‖/‖u_{t-1}‖), p2 = sqrt(‖D_t‖/‖x̂_t‖) for L lanes ((L, a), (L, n_s, r_g n),
    (L, a), (L, n_s, r_g n)), and ``live`` (L,): 1.0 where both ‖M_t‖ and ‖u_{t-1}‖ are nonzero, else
    0.0 (after a reset the first term u_{t-1} ⊗ M_t is zero and must be dropped, with p1 = 1, as the
    package's estimator does)."""
    norm_M, norm_u = M.flatten(1).norm(dim=1), u_prev.norm(dim=1)
    live = ((norm_M > 0) & (norm_u > 0)).to(u_prev.dtype)
    p1 = torch.where(live > 0, (norm_M / norm_u.clamp_min(torch.finfo(u_prev.dtype).tiny)).sqrt(),
                     torch.ones_like(norm_M))
    p2 = (D.flatten(1).norm(dim=1) / x_hat.norm(dim=1)).sqrt()
    return p1, p2, live


def kf_step(u_prev, M, x_hat, D, c1, c2):
    """KF-RTRL's two-into-one step for L lanes (algorithms.md section 3; c1, c2 (L,) signs):
    u_t = c1 p1 u_{t-1} + c2 p2 x̂_t,  A_t = c1 M_t / p1 + c2 D_t / p2, the first term dropped in lanes
    where it is zero (see :func:`kf_rescalings`). Returns (u_t, A_t)."""
    p1, p2, live = kf_rescalings(u_prev, M, x_hat, D)
    c1 = c1 * live
    u = (c1 * p1)[:, None] * u_prev + (c2 * p2)[:, None] * x_hat
    A = (c1 / p1)[:, None, None] * M + (c2 / p2)[:, None, None] * D
    return u, A


def kf_terms(model: RecurrentModel, inputs: torch.Tensor) -> list[dict]:
    """The exact forward pass of one lane over ``inputs`` (T, m): per step x̂_t, D_t (dense), H_t
    (dense) and h_t. They do not depend on any estimator (the parameters are fixed)."""
    cell = model.cell
    state = cell.zero_state(1)
    terms = []
    with torch.no_grad():
        for t in range(inputs.shape[0]):
            step = cell.step(inputs[t : t + 1], state)
            terms.append({"x_hat": step.x_hat[0], "D": step.D_dense()[0], "H": step.H_dense()[0],
                          "h": step.h[0]})
            state = step.state
    return terms


def exact_influence(terms: list[dict]) -> torch.Tensor:
    """G_T by RTRL's recursion G_t = H_t G_{t-1} + x̂_t ⊗ D_t over :func:`kf_terms`, as
    (n_s, a, r_g n): G[i, a', c] = dh_{T,i}/dW_{a',c}."""
    G = torch.zeros(terms[0]["D"].shape[0], terms[0]["x_hat"].numel(), terms[0]["D"].shape[1],
                    dtype=terms[0]["D"].dtype)
    for term in terms:
        G = torch.einsum("ij,jac->iac", term["H"], G) + torch.einsum("a,ic->iac", term["x_hat"], term["D"])
    return G


def kf_gradient_samples_with_step(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor, step_fn,
                                  samples: int, seed: int = 0, fresh_signs: bool = True) -> torch.Tensor:
    """(S, P) estimates of dL/dW from a from-scratch KF loop over S lanes whose two-into-one step
    is ``step_fn(u_prev, M, x_hat, D, c1, c2) -> (u_t, A_t)`` (batched over lanes, c1 and c2 (S,)
    independent signs drawn here from a seeded generator: fresh at every step, or with
    ``fresh_signs=False`` drawn once per lane and reused at every step). Per step: the exact
    forward pass gives x̂_t, D_t, H_t; M_t = H_t A_{t-1}; the step; dL_t/dW ≈ u_tᵀ ((∂L_t/∂h_t) A_t),
    summed over t. With :func:`kf_step` this is KF-RTRL (other random signs than the package's
    estimator)."""
    cell, S = model.cell, samples
    g = torch.Generator().manual_seed(seed)
    dtype = cell.weight.dtype
    state = cell.zero_state(S)
    u = torch.zeros(S, cell.extended_size, dtype=dtype)
    A = torch.zeros(S, cell.state_size, cell.weight.shape[1], dtype=dtype)
    total = torch.zeros(S, cell.weight.numel(), dtype=dtype)
    with torch.no_grad():
        for t in range(inputs.shape[0]):
            step = cell.step(inputs[t].expand(S, -1), state)
            M = torch.bmm(step.H_dense(), A)
            if fresh_signs or t == 0:
                c = torch.randint(0, 2, (S, 2), generator=g).to(dtype) * 2 - 1
            u, A = step_fn(u, M, step.x_hat, step.D_dense(), c[:, 0], c[:, 1])
            _, dl_dh, _ = model.readout_step(step.h, targets[t].expand(S), torch.ones(S, dtype=dtype))
            dl_ds = cell.state_cotangent(dl_dh)
            total += (u[:, :, None] * torch.bmm(dl_ds[:, None, :], A)).reshape(S, -1)
            state = step.state
    return total


def sequence_unbiasedness(hidden_size: int = 8, T: int = 20, samples: int = 2000, seed: int = 0,
                          method: str = "kf-rtrl", init_std: float = 0.5, alpha: float = 1e-3) -> dict:
    """KF-RTRL over a WHOLE sequence: S gradient estimates ĝ (kl.gradient_samples) of a random RHN
    (W ~ N(0, init_std²), Gaussian inputs, T steps) against the exact g (BPTT), and the z-test of
    E ĝ = g (kl.unbiasedness_test: per coordinate, tolerance z·SE from the samples' own spread).
    Also the per-coordinate z-scores and the relative error of the mean of the first S' samples,
    ‖mean_{S'} − g‖²/‖g‖², against 𝓔/S' (what an unbiased estimator's mean gives)."""
    model = random_model("rhn", hidden_size=hidden_size, init_std=init_std, seed=seed)
    x, y = random_sequence(model, T, seed=seed + 1)
    exact = true_gradient(model, x, y)
    G = gradient_samples(model, x, y, method, samples, seed=seed + 2)
    return unbiasedness_summary(G, exact, method, hidden_size, T, alpha)


def frozen_signs_unbiasedness(hidden_size: int = 8, T: int = 20, samples: int = 2000, seed: int = 0,
                              init_std: float = 0.5, alpha: float = 1e-3) -> dict:
    """:func:`sequence_unbiasedness` on the same model and sequence for the from-scratch KF loop
    (:func:`kf_gradient_samples_with_step` with :func:`kf_step`) whose signs are drawn ONCE per
    lane and reused at every step: the signs of step t are then not independent of the past."""
    model = random_model("rhn", hidden_size=hidden_size, init_std=init_std, seed=seed)
    x, y = random_sequence(model, T, seed=seed + 1)
    exact = true_gradient(model, x, y)
    G = kf_gradient_samples_with_step(model, x, y, kf_step, samples, seed=seed + 2, fresh_signs=False)
    return unbiasedness_summary(G, exact, "KF, signs drawn once per lane", hidden_size, T, alpha)


def unbiasedness_summary(G: torch.Tensor, exact: torch.Tensor, method: str, hidden_size: int, T: int,
                         alpha: float = 1e-3) -> dict:
    """The z-test of E ĝ = g for samples G (S, P) (kl.unbiasedness_test), the per-coordinate z-scores
    (mean − g)/SE, the relative error 𝓔 of one sample, and ‖mean of the first S' − g‖²/‖g‖² at a few
    S' beside 𝓔/S' (its expectation for an unbiased estimator; a bias b adds ‖b‖²/‖g‖²)."""
    from ..analysis import unbiasedness_test

    samples = G.shape[0]
    test = unbiasedness_test(G, exact, alpha)
    se = G.std(dim=0) / samples**0.5
    z = (G.mean(dim=0) - exact) / se
    err = relative_error(G, exact)
    norm2 = (exact * exact).sum()
    counts = sorted({int(round(samples ** (k / 8))) for k in range(3, 9)} | {samples})
    running = G.cumsum(dim=0)
    convergence = [{"S": s, "mean_error": (((running[s - 1] / s - exact) ** 2).sum() / norm2).item(),
                    "unbiased_expectation": err / s} for s in counts]
    return {"n": hidden_size, "T": T, "samples": samples, "P": exact.numel(), "method": method, "test": test,
            "z": z, "relative_error": err, "convergence": convergence}


# -- notebook 3: variance -----------------------------------------------------------------------

def variance_sweep(hidden_sizes, lengths, methods=("kf-rtrl", "uoro"), samples: int = 100, seed: int = 0,
                   init_std: float | None = None, model: RecurrentModel | None = None, task: str = "random",
                   cell: str = "rhn") -> list[dict]:
    """Relative error E‖ĝ − g‖²/‖g‖² of each method for every (n, T).

    ``model`` given: use it (a trained RHN) and ignore ``hidden_sizes`` beyond its own n.
    ``task`` "random": Gaussian inputs, 4 classes; "copy": a copy sequence of length T (its
    input has 2T+2 steps; the model must have 4 inputs and outputs)."""
    rows = []
    sizes = [model.hidden_size] if model is not None else list(hidden_sizes)
    for n in sizes:
        net = model if model is not None else random_model(cell, 4, n, 4, init_std=init_std, seed=seed + n)
        for T in lengths:
            if task == "copy":
                x, y = copy_sequence(T, seed=seed + T, dtype=net.cell.weight.dtype)
            else:
                x, y = random_sequence(net, T, seed=seed + T)
            exact = true_gradient(net, x, y)
            for method in methods:
                G = gradient_samples(net, x, y, method, samples, seed=seed)
                rows.append({"method": method, "n": n, "T": T, "samples": samples, **error_split(G, exact)})
    return rows


def error_split(G: torch.Tensor, exact: torch.Tensor) -> dict:
    """How the samples G (S, P) miss the exact gradient: relative_error E‖ĝ − g‖²/‖g‖² (the
    whole mean squared error) = bias2 ‖E ĝ − g‖²/‖g‖² + spread E‖ĝ − E ĝ‖²/‖g‖², and the mean
    cosine of single estimates to g."""
    norm2 = (exact * exact).sum()
    mean = G.mean(dim=0)
    identical = bool((G == G[:1]).all())  # a deterministic method: exactly no spread, not rounding-level
    return {"relative_error": relative_error(G, exact),
            "bias2": ((mean - exact) ** 2).sum().item() / norm2.item(),
            "spread": 0.0 if identical else ((G - mean) ** 2).sum(dim=1).mean().item() / norm2.item(),
            "cosine": torch.nn.functional.cosine_similarity(G, exact[None], dim=1).mean().item()}


# -- notebook 7: beyond KF-RTRL ----------------------------------------------------------------------

def onehot_problem(hidden_size: int = 16, T: int = 20, seed: int = 0, vocab: int = 4):
    """algorithms.md's variance table setting: an RHN with W ~ N(0, 1/a) (a = m+n+1), float64, one
    one-hot sequence over ``vocab`` tokens; returns (model, inputs, targets, exact gradient)."""
    a = vocab + hidden_size + 1
    model = random_model("rhn", vocab, hidden_size, vocab, init_std=a**-0.5, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.nn.functional.one_hot(torch.randint(0, vocab, (T,), generator=g), vocab).double()
    y = torch.randint(0, vocab, (T,), generator=g)
    return model, x, y, true_gradient(model, x, y)


def rank_sweep(hidden_sizes, ranks, lengths, families=("ok", "kf-avg"), samples: int = 100, seed: int = 0) -> list[dict]:
    """Error split (:func:`error_split`) of OK-r / KF-AVG-r / ... (``family``-r for each r) on
    :func:`onehot_problem` for every (n, T); rows carry ``family`` and ``r``."""
    rows = []
    for n in hidden_sizes:
        for T in lengths:
            model, x, y, exact = onehot_problem(n, T, seed=seed + n)
            for family in families:
                for r in ranks:
                    method = _family_method(family, r)
                    G = gradient_samples(model, x, y, method, samples, seed=seed)
                    rows.append({"method": method, "family": family, "r": r, "n": n, "T": T, "samples": samples,
                                 **error_split(G, exact)})
    return rows


def _family_method(family: str, r: int) -> str:
    """ok -> ok-r, ok-official -> ok-r-official, kf-avg -> kf-avg-r; others are fixed names."""
    if family == "ok-official":
        return f"ok-{r}-official"
    return f"{family}-{r}" if family in ("ok", "kf-avg") else family


def _ok_method(r: int, scaling: str) -> str:
    return f"ok-{r}" if scaling == "symmetric" else f"ok-{r}-official"


def _ok_step_enumerated(r: int, scalings=("symmetric",), warm_scaling: str = "symmetric", seed: int = 1,
                        warmup: int = 7, hidden_size: int = 4):
    """The setting every one-step OK check shares: a small RHN warmed up ``warmup`` steps by OK-r
    (``warm_scaling``), its target Γ_t = Σ_i u_i ⊗ H_t A_i + x̂_t ⊗ D_t formed densely, and, for each
    of ``scalings``, the new pairs of every sign pattern of the step run as its own lane from that one
    state. Returns (Γ_t, {scaling: the estimates Σ_i u'_i ⊗ A'_i, one per sign pattern})."""
    import itertools

    from ..estimators import ok as ok_module

    model = random_model("rhn", 3, hidden_size, 3, init_std=0.5, seed=seed)
    x, y = random_sequence(model, warmup + 1, seed=seed + 1)
    warm = make_estimator(_ok_method(r, warm_scaling), model, 1, seed=seed + 3)
    for t in range(warmup):
        warm.step_lane_gradients(x[t : t + 1], y[t : t + 1])
    with torch.no_grad():
        step = model.cell.step(x[warmup : warmup + 1], warm.state)
        u, A = warm.kron_factors
        target = (torch.einsum("ia,ij->aj", u[0], (step.H_dense()[0] @ A[0]).flatten(1))
                  + torch.outer(step.x_hat[0], step.D_dense()[0].flatten()))
    patterns = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=r + 1)), dtype=torch.float64)
    lanes, estimates = len(patterns), {}
    for scaling in scalings:
        est = make_estimator(_ok_method(r, scaling), model, lanes, seed=0)
        est.u, est.At = warm.u.expand(lanes, -1, -1).clone(), warm.At.expand(lanes, -1, -1, -1).clone()
        est.state = warm.state.expand(lanes, -1, -1).clone()
        # every lane gets its own sign pattern instead of a draw
        draw, ok_module.rademacher = ok_module.rademacher, lambda shape, *a: patterns.clone()
        try:
            est.step_lane_gradients(x[warmup].expand(lanes, -1), y[warmup].expand(lanes))
        finally:
            ok_module.rademacher = draw
        u_new, A_new = est.kron_factors
        estimates[scaling] = torch.einsum("lia,lij->laj", u_new, A_new.flatten(2))
    return target, estimates


def _ok_step_row(r: int, scaling: str, target: torch.Tensor, estimates: torch.Tensor, sigma: torch.Tensor) -> dict:
    v_min, v_code = ok_closed_forms(sigma, r)
    return {"r": r, "scaling": scaling, "target_norm2": (target * target).sum().item(),
            "mean_error": ((estimates.mean(0) - target).norm() / target.norm()).item(),
            "measured": ((estimates - target) ** 2).sum(dim=(1, 2)).mean().item(),
            "closed_form": v_min if scaling == "symmetric" else v_code, "v_min": v_min, "v_code": v_code}


def ok_step_error(r: int, scaling: str = "symmetric", seed: int = 1, warmup: int = 7) -> dict:
    """One OK-r step checked against its closed form (algorithms.md section 5a).

    From a state reached after ``warmup`` steps of a small RHN (warmed up by the same scaling),
    every sign pattern of the step is run as its own lane: their mean is E[Ĝ_t] and the mean of
    ‖Ĝ_t − Γ_t‖² the step's exact expected error, compared with V_min (symmetric) or V_code
    (official) computed from the singular values of the target Γ_t, formed densely."""
    target, estimates = _ok_step_enumerated(r, (scaling,), warm_scaling=scaling, seed=seed, warmup=warmup)
    return _ok_step_row(r, scaling, target, estimates[scaling], torch.linalg.svdvals(target))


def ok_closed_forms(s: torch.Tensor, r: int) -> tuple[float, float]:
    """V_min and V_code of one OK-r step (algorithms.md section 5a) for the target's singular values s
    (descending): the split q*, the mixed set M, S = Σ_M s, k = r − q*, w_j² = 1 − k s_j / S,

        V_min = S²/k − Σ_M s_j²,    V_code = (S/k)² Σ_{j≠l ∈ M} w_j² w_l² s_l / s_j."""
    q = next(q for q in range(r) if (r - q) * s[q] <= s[q:].sum() * (1 + 1e-12))
    mixed, k = s[q : r + 1], r - q
    S = mixed.sum()
    w2 = (1 - k * mixed / S).clamp_min(0)
    v_code = sum((S / k) ** 2 * w2[j] * w2[l] * mixed[l] / mixed[j]
                 for j in range(len(mixed)) for l in range(len(mixed)) if j != l and mixed[j] > 0)
    return (S**2 / k - (mixed**2).sum()).item(), float(v_code)


def train_copy_model(hidden_size: int = 16, steps: int = 2000, method: str = "rtrl", batch: int = 8,
                     lr: float = 3e-3, seed: int = 0) -> tuple[RecurrentModel, dict]:
    """An RHN trained online on the copy task by the trainer, in float64 for variance analysis;
    returns it with the curriculum's last state."""
    from ..train import RunConfig, train_model

    config = RunConfig(task="copy", method=method, hidden=hidden_size, batch=batch, steps=steps, lr=lr, seed=seed,
                       log_every=steps)
    model, summary = train_model(config)
    last = summary["curve"][-1]
    return model.double(), {"t_max": last["t_max"], "ema_bits": last["ema_bits"]}


# -- notebooks 4 and 5: the tasks' own data, the curriculum, the update schedule -------------------

def copy_timeline(T: int, seed: int = 0) -> dict:
    """One copy sequence exactly as :func:`kfrtrl_lab.tasks.copy.copy_sequence` builds it (algorithms.md,
    section 6), split into its phases for a picture: positions 0 (marker), 1..T (the bits read),
    T+1 (the first blank, where the marker is the target) and T+2..2T+1 (the bits recalled, each
    T+1 steps after it was read). ``informative`` marks the steps whose target cannot be predicted
    from the format alone: the recalled bits, 1 bit of information each."""
    from ..tasks.copy import BLANK, MARKER

    inputs, targets = copy_sequence(T, seed=seed)
    tokens = inputs.argmax(dim=1).tolist()
    targets = targets.tolist()
    length = 2 * T + 2
    phase = ["marker"] + ["read"] * T + ["delimiter"] + ["recall"] * T
    return {"T": T, "seed": seed, "length": length, "inputs": tokens, "targets": targets, "phase": phase,
            "informative": [p == "recall" for p in phase], "bits": tokens[1:T + 1],
            "marker": MARKER, "blank": BLANK, "lag": T + 1}


def copy_format_loss(T: int) -> float:
    """Mean loss per step, in bits, of a model that knows the copy format but guesses every bit:
    T unpredictable bits (1 bit each) over the 2T+2 steps of a sequence, T / (2T+2)."""
    return T / (2 * T + 2)


def copy_phase_losses(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """Per-step cross-entropy of ``model`` on one copy sequence, in bits (ℓ_t / ln 2), and its mean
    over all 2T+2 steps (what the trainer and the curriculum average) and over the T recall steps
    only (positions T+2..2T+1)."""
    cell = model.cell
    dtype = cell.weight.dtype
    with torch.no_grad():
        state = cell.zero_state(1)
        bits = []
        for x, y in zip(inputs.to(dtype), targets):
            state = cell(x[None], state)
            bits.append(model.lane_losses(cell.hidden(state), y[None])[0] / math.log(2))
    bits = torch.stack(bits)
    T = (len(targets) - 2) // 2
    return {"bits": bits, "mean_all": bits.mean().item(), "mean_recall": bits[T + 2:].mean().item()}


def curriculum_trace(losses_bits, batch_size: int = 1, seed: int = 0) -> dict:
    """Drive the package's :class:`~kfrtrl_lab.tasks.copy.CopyTask` with a given loss per step
    (bits, the same for every lane) and record, after each step, T_max, the curriculum's average
    loss and which lanes started a sequence at that step (algorithms.md, section 6)."""
    from ..tasks.copy import CopyTask

    task = CopyTask(batch_size, seed=seed, dtype=torch.float64)
    t_max, ema, starts = [], [], []
    for loss in losses_bits:
        _, _, start = task.next()
        task.observe(torch.full((batch_size,), float(loss) * math.log(2), dtype=torch.float64))
        t_max.append(int(task.t_max))
        ema.append(float(task.ema))
        starts.append(start.tolist())
    return {"t_max": t_max, "ema": ema, "starts": starts}


def updates_made(method: str, steps: int, update_every: int = 1) -> int:
    """Adam steps the trainer takes in ``steps`` time steps (kfrtrl_lab/stepper.py): an online
    method's gradient is ready after every step, so it updates every ``update_every`` steps,
    ⌊N/u⌋; ``tbptt-τ``'s gradient is ready only when a window of τ steps closes, so it updates at
    the first window end at least ``update_every`` steps after the last update: every
    τ·⌈u/τ⌉ steps. (Full BPTT updates once per sequence and is not counted here.)"""
    from ..estimators import parse_method

    if method == "bptt":
        raise ValueError("full BPTT updates once per sequence: its count depends on the task's lengths")
    cls, kwargs = parse_method(method)
    if method.startswith("tbptt-"):
        (tau,) = kwargs.values()
        period = tau * math.ceil(update_every / tau)
    else:
        period = update_every
    return steps // period


def update_counts(summaries: list[dict]) -> list[dict]:
    """Per run summary: steps done, Adam steps made (:func:`updates_made`), median steps/s and the
    steps per update, for comparing estimators per step, per update and per second."""
    rows = []
    for s in summaries:
        c = s["config"]
        updates = updates_made(c["method"], s["steps_done"], c.get("update_every", 1))
        rows.append({"method": c["method"], "seed": c["seed"], "steps": s["steps_done"], "updates": updates,
                     "steps_per_update": s["steps_done"] / max(updates, 1),
                     "steps_per_s": s.get("median_steps_per_s"), "wall_s": s.get("wall_s")})
    return rows


def pace_ratio(summaries: list[dict], fast: str, slow: str) -> float:
    """Median steps/s of ``fast`` over that of ``slow`` (each the median over its runs' own medians):
    how many more time steps the first makes in the same wall-clock time."""
    import statistics

    def pace(method):
        rates = [s["median_steps_per_s"] for s in summaries if s["config"]["method"] == method]
        if not rates:
            raise ValueError(f"no run of {method!r} among the summaries")
        return statistics.median(rates)

    return pace(fast) / pace(slow)


def staggered_reset_mask(length: int, batch_size: int, reset_every: int, steps: int) -> torch.Tensor:
    """The (steps, B) reset mask of the official layout on a text of ``length`` tokens, read from the
    package's own :class:`~kfrtrl_lab.tasks.ptb.PTBStream` (layout "staggered")."""
    from ..tasks.ptb import PTBStream

    stream = PTBStream(torch.zeros(length, dtype=torch.long), batch_size, 1, reset_every, layout="staggered")
    return torch.stack([next(stream)[2] for _ in range(steps)])


def gradient_horizon(reset_mask: torch.Tensor, tau: int | None = None) -> torch.Tensor:
    """For each step t and lane: how many steps (t itself included) the gradient of ℓ_t reaches back.
    A reset zeroes the state and the influence, so nothing before it counts: an online method
    (RTRL, KF-RTRL, UORO; ``tau`` None) reaches back to the lane's last reset; TBPTT-τ also stops at
    the start of its current window of τ steps (windows are counted from step 0, as the trainer does)."""
    steps, lanes = reset_mask.shape
    horizon = torch.zeros(steps, lanes, dtype=torch.long)
    since = torch.zeros(lanes, dtype=torch.long)
    for t in range(steps):
        since = torch.where(reset_mask[t], torch.ones_like(since), since + 1)
        horizon[t] = since if tau is None else torch.minimum(since, torch.full_like(since, t % tau + 1))
    return horizon


def unigram_bpc(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int) -> float:
    """Bits per character of the best context-free guess: the training text's character frequencies
    (add-one smoothed) scored on ``eval_ids``. A model under it has learned to use context."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log2()
    return -logp[eval_ids].mean().item()


# -- notebook 6: a cost model ----------------------------------------------------------------------

def step_cost_model(method: str, hidden_size: int, batch_size: int, input_size: int = 50, gate_blocks: int = 2) -> dict:
    """The dominant terms of one step's work and state, counted from the equations (an RHN-like
    cell: r gate blocks, one slot per unit): floating-point operations (a multiply-add counts 2)
    and the numbers each method keeps between steps, for B lanes. a = m + n + 1, c = r·n.

        rtrl        H G: 2 n² a c        state n a c          (O(n⁴) time, O(n³) memory per lane)
        kf-rtrl     H A: 2 n² c          state a + n c        (O(n³), O(n²))
        ok-r        r H A_i, Gram, rebuild: 2 r n² c + 4 (r+1)² n c     state r (a + n c)
        kf-avg-k    k H A_i: 2 k n² c    state k (a + n c)
        uoro        H s̃, θ̃ updates: 2 n c + 6 a c     state n + a c
        snap-1      4 a c                state a c
        tbptt-k     forward and backward of the cell: 6 a c    state (the window's graph) ≈ k (a + 3 c)
    """
    n, B = hidden_size, batch_size
    a, c = input_size + n + 1, gate_blocks * n
    k = int(method.rsplit("-", 1)[1]) if method.rsplit("-", 1)[-1].isdigit() else 1
    cell = 2 * a * c  # z = x̂ W, shared by every method
    per_lane = {
        "rtrl": (2 * n * n * a * c, n * a * c),
        "kf-rtrl": (2 * n * n * c, a + n * c),
        "uoro": (2 * n * c + 6 * a * c, n + a * c),
        "snap-1": (4 * a * c, a * c),
        "bptt": (6 * a * c, 0),
    }
    if method.startswith("ok-"):
        k = int(method.split("-")[1])
        flops, state = 2 * k * n * n * c + 4 * (k + 1) ** 2 * n * c, k * (a + n * c)
    elif method.startswith("kf-avg-"):
        flops, state = 2 * k * n * n * c, k * (a + n * c)
    elif method.startswith("tbptt-"):
        flops, state = 6 * a * c, k * (a + 3 * c)
    else:
        flops, state = per_lane[method]
    return {"method": method, "n": n, "batch": B, "flops": B * (flops + cell), "state_MB": 4 * B * state / 2**20}


# -- notebook 3: one step of each estimator from a common G_{t-1} ----------------------------------

def kf_step_variance_closed_form(u, M, x_hat, D) -> float:
    """E‖Ĝ_t − Γ_t‖² of one KF-RTRL step with the variance-minimising p's (algorithms.md section 3)
    for the target Γ_t = u ⊗ M + x̂ ⊗ D (u = u_{t-1}, M = H_t A_{t-1}, x̂ = x̂_t, D = D_t):

        Ĝ_t − Γ_t = c1 c2 (α u ⊗ D + α⁻¹ x̂ ⊗ M),   α = p1/p2,
        E‖Ĝ_t − Γ_t‖² = α²‖u‖²‖D‖² + α⁻²‖x̂‖²‖M‖² + 2⟨u, x̂⟩⟨M, D⟩,
        minimum at α² = ‖x̂‖‖M‖/(‖u‖‖D‖):   2‖u‖‖M‖‖x̂‖‖D‖ + 2⟨u, x̂⟩⟨M, D⟩.

    The error's norm is the same for all four sign pairs: this is also every single draw's error."""
    return float(2 * u.norm() * M.norm() * x_hat.norm() * D.norm() + 2 * (u @ x_hat) * (M * D).sum())


def uoro_step_variance_closed_form(n: int, norm_s: float, norm_theta: float, norm_F: float, inner: float,
                                   beta2: float | None = None) -> float:
    """E‖Ĝ_t − Γ_t‖² of one UORO step (algorithms.md section 4) from Ĝ_{t-1} = s̃ᵀθ̃, for a cell whose
    D_t is made of diagonal blocks (tanh, RHN), so that ‖νᵀF_t‖ = ‖F_t‖ for every ν ∈ {±1}^n.
    With s = H_t s̃_{t-1} (``norm_s``), θ̃ = θ̃_{t-1}, β = ρ0/ρ1 and ``inner`` = ⟨H_t Ĝ_{t-1}, F_t⟩:

        Ĝ_t − Γ_t = (νᵀν − I) F_t + β sᵀ(νF_t) + β⁻¹ νᵀθ̃          (ν a row, νᵀν its outer product)
        E‖Ĝ_t − Γ_t‖² = (n − 1)‖F_t‖² + β²‖s‖²‖F_t‖² + β⁻² n‖θ̃‖² + 2⟨H_t Ĝ_{t-1}, F_t⟩

    (E[νᵀν] = I kills every cross term but the last). ``beta2`` None: UORO's own β² =
    √n‖θ̃‖/(‖s‖‖F_t‖), the minimiser, which gives

        (n − 1)‖F_t‖² + 2√n ‖H_t Ĝ_{t-1}‖‖F_t‖ + 2⟨H_t Ĝ_{t-1}, F_t⟩,   ‖H_t Ĝ_{t-1}‖ = ‖s‖‖θ̃‖."""
    if beta2 is None:
        return float((n - 1) * norm_F**2 + 2 * math.sqrt(n) * norm_s * norm_theta * norm_F + 2 * inner)
    return float((n - 1) * norm_F**2 + beta2 * norm_s**2 * norm_F**2 + n * norm_theta**2 / beta2 + 2 * inner)


def one_step_setup(hidden_size: int = 8, warmup: int = 4, seed: int = 0, model: RecurrentModel | None = None,
                   orthogonal: bool = False, init_std: float = 0.3, scale: float = 1.0) -> dict:
    """A common starting point for one step t of KF-RTRL and of UORO.

    An RHN (``model``, or a random one with W ~ N(0, init_std²)) runs ``warmup`` steps of a random
    sequence with exact RTRL; its exact G_{t-1} is then replaced by the nearest influence of the form
    s ⊗ u ⊗ a (s ∈ R^n, u ∈ R^a, a ∈ R^{r_g n}; leading singular vectors, first of G_{t-1} as an n × P
    matrix, then of its right factor as an a × r_g n matrix), times ``scale``: an influence BOTH methods
    hold exactly — KF-RTRL as u ⊗ A with A = sᵀa, UORO as s̃ = s, θ̃ = uᵀa. ``orthogonal``: u is
    replaced by its part orthogonal to x̂_t, rescaled to its norm, so ⟨u, x̂_t⟩ = 0.
    Returns the step's inputs and the dense H_t, D_t, F_t, H_t G_{t-1} and Γ_t = H_t G_{t-1} + F_t."""
    net = model if model is not None else random_model("rhn", 4, hidden_size, 4, init_std=init_std, seed=seed)
    x, y = random_sequence(net, warmup + 1, seed=seed + 1)
    rtrl = make_estimator("rtrl", net, 1, seed=seed)
    for t in range(warmup):
        rtrl.step_lane_gradients(x[t : t + 1], y[t : t + 1])
    n, a, c = net.hidden_size, net.cell.extended_size, net.cell.weight.shape[1]
    with torch.no_grad():
        U, S, Vh = torch.linalg.svd(rtrl.influence[0].reshape(n, a * c), full_matrices=False)
        s_vec = U[:, 0] * S[0].sqrt() * math.sqrt(scale)
        Ur, Sr, Vhr = torch.linalg.svd((Vh[0] * S[0].sqrt() * math.sqrt(scale)).reshape(a, c), full_matrices=False)
        u, a_vec = Ur[:, 0] * Sr[0].sqrt(), Vhr[0] * Sr[0].sqrt()
        step = net.cell.step(x[warmup : warmup + 1], rtrl.state)
        x_hat, H, D = step.x_hat[0], step.H_dense()[0], step.D_dense()[0]
        if orthogonal:
            norm = u.norm()
            u = u - (u @ x_hat) / (x_hat @ x_hat) * x_hat
            u = u * norm / u.norm()
        A = torch.outer(s_vec, a_vec)
        M = H @ A
        HG = torch.einsum("a,ic->iac", u, M)  # H_t (u ⊗ A) = u ⊗ (H_t A), as (n, a, r_g n)
        F = torch.einsum("a,ic->iac", x_hat, D)
    return {"model": net, "x_t": x[warmup : warmup + 1], "y_t": y[warmup : warmup + 1],
            "state_prev": rtrl.state.clone(), "n": n, "s": s_vec, "u": u, "a": a_vec, "A": A, "M": M,
            "x_hat": x_hat, "H": H, "D": D, "HG": HG, "F": F, "target": HG + F}


class _fixed_signs:
    """Within the block, ``module.rademacher`` returns ``patterns`` (one row per lane) instead of
    drawing: each lane of one batched step takes one chosen sign pattern."""

    def __init__(self, module, patterns):
        self.module, self.patterns = module, patterns

    def __enter__(self):
        self.draw = self.module.rademacher
        self.module.rademacher = lambda shape, *args: self.patterns.clone()

    def __exit__(self, *exc):
        self.module.rademacher = self.draw


def _sign_patterns(k: int, lanes: int, seed: int, enumerate_up_to: int = 4096) -> tuple[torch.Tensor, bool]:
    """All 2^k sign vectors (exact expectation) when there are at most ``enumerate_up_to``, else
    ``lanes`` independent uniform ones; returns (patterns (L, k) float64, exact)."""
    import itertools

    if 2**k <= enumerate_up_to:
        return torch.tensor(list(itertools.product((-1.0, 1.0), repeat=k)), dtype=torch.float64), True
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (lanes, k), generator=g).double() * 2 - 1, False


def one_step_errors(setup: dict, method: str, lanes: int = 2000, seed: int = 0) -> dict:
    """Run the PACKAGE's ``method`` ("kf-rtrl" or "uoro") for one step from ``setup``
    (:func:`one_step_setup`) once per sign pattern — all of them when there are at most 4096 (KF-RTRL:
    4 pairs (c1, c2); UORO: 2^n vectors ν), else ``lanes`` random ones — and compare each new Ĝ_t
    with Γ_t = H_t G_{t-1} + F_t.

    Returns the squared errors ‖Ĝ_t − Γ_t‖² per pattern, their mean ``measured`` (exact when
    ``exact``), its standard error, the closed form (:func:`kf_step_variance_closed_form`,
    :func:`uoro_step_variance_closed_form` with the package's ε-guarded ρ's) and the relative size
    of the mean's miss ‖mean Ĝ_t − Γ_t‖/‖Γ_t‖ (0 to rounding for an unbiased step, exact patterns)."""
    from ..estimators import kf_rtrl as kf_module
    from ..estimators import uoro as uoro_module

    net, n = setup["model"], setup["n"]
    target = setup["target"]
    if method == "kf-rtrl":
        patterns, exact = _sign_patterns(2, lanes, seed)
        module = kf_module
    elif method == "uoro":
        patterns, exact = _sign_patterns(n, lanes, seed)
        module = uoro_module
    else:
        raise ValueError(f"one_step_errors: method must be 'kf-rtrl' or 'uoro', got {method!r}")
    L = len(patterns)
    est = make_estimator(method, net, L, seed=seed)
    est.state = setup["state_prev"].expand(L, -1, -1).clone()
    if method == "kf-rtrl":
        est.u = setup["u"].expand(L, -1).clone()
        est.A_stored = setup["A"].expand(L, -1, -1).clone()
        est.A_scale = torch.ones(L, dtype=est.dtype)
    else:
        est.state_factor = setup["s"].expand(L, -1).clone()
        est.param_factor = torch.outer(setup["u"], setup["a"]).expand(L, -1, -1).clone()
    with _fixed_signs(module, patterns):
        est.step_lane_gradients(setup["x_t"].expand(L, -1), setup["y_t"].expand(L))
    norm2 = (target * target).sum()
    with torch.no_grad():
        if method == "kf-rtrl":
            u_new, A_new = est.kron_factors
            estimates = torch.einsum("la,lic->liac", u_new, A_new)
            errors = ((estimates - target) ** 2).sum(dim=(1, 2, 3))
            mean = estimates.mean(0)
            closed = kf_step_variance_closed_form(setup["u"], setup["M"], setup["x_hat"], setup["D"])
        else:
            s_new, theta_new = est.state_factor, est.param_factor.flatten(1)  # Ĝ_t = s̃_tᵀ θ̃_t per lane
            flat = target.reshape(n, -1)
            # ‖s̃ᵀθ̃ − Γ‖² = ‖s̃‖²‖θ̃‖² − 2 s̃ Γ θ̃ᵀ + ‖Γ‖², without forming L estimates of n × P
            errors = ((s_new * s_new).sum(1) * (theta_new * theta_new).sum(1)
                      - 2 * ((s_new @ flat) * theta_new).sum(1) + norm2)
            mean = (s_new.T @ theta_new / L).reshape(target.shape)
            eps = est.eps
            F, s_fwd = setup["F"], setup["s"] @ setup["H"].T
            norm_theta, norm_F = setup["u"].norm() * setup["a"].norm(), F.norm()
            beta2 = ((norm_theta + eps) / (s_fwd.norm() + eps)) / ((norm_F + eps) / (math.sqrt(n) + eps))
            closed = uoro_step_variance_closed_form(n, float(s_fwd.norm()), float(norm_theta), float(norm_F),
                                                    float((setup["HG"] * F).sum()), beta2=float(beta2))
    measured = errors.mean().item()
    return {"method": method, "n": n, "patterns": L, "exact": exact, "measured": measured,
            "standard_error": 0.0 if exact else errors.std().item() / math.sqrt(L),
            "closed_form": closed, "target_norm2": norm2.item(), "relative": measured / norm2.item(),
            "mean_miss": ((mean - target).norm() / target.norm()).item(), "errors": errors}


def one_step_sweep(hidden_sizes, warmup: int = 4, seed: int = 0, lanes: int = 2000, orthogonal: bool = False,
                   init_std: float = 0.3) -> list[dict]:
    """:func:`one_step_errors` of KF-RTRL and UORO from the same G_{t-1} for every n; each row also
    carries UORO's minimum-variance closed form and the ratio UORO/KF of the measured values."""
    rows = []
    for n in hidden_sizes:
        setup = one_step_setup(n, warmup=warmup, seed=seed, orthogonal=orthogonal, init_std=init_std)
        kf, uo = (one_step_errors(setup, m, lanes=lanes, seed=seed) for m in ("kf-rtrl", "uoro"))
        norm_F, norm_HG = setup["F"].norm().item(), setup["HG"].norm().item()
        inner = (setup["HG"] * setup["F"]).sum().item()
        for r in (kf, uo):
            rows.append({k: v for k, v in r.items() if k != "errors"}
                        | {"norm_F": norm_F, "norm_HG": norm_HG, "inner": inner,
                           "ratio": uo["measured"] / kf["measured"]})
    return rows


# -- notebook 3: bootstrap intervals ---------------------------------------------------------------

def per_sample_errors(G: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """‖ĝ_s − g‖²/‖g‖² for every sample row of G (S, P): their mean is the relative error 𝓔."""
    return ((G - exact) ** 2).sum(dim=1) / (exact * exact).sum()


def bootstrap_interval(values, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (S,): draw ``resamples`` index sets
    of size S with replacement, ``torch.randint(0, S, (resamples, S), generator=manual_seed(seed))``,
    take each resample's mean and return the (1−level)/2 and (1+level)/2 quantiles of those means
    (``torch.quantile``, linear interpolation)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    g = torch.Generator().manual_seed(seed)
    means = v[torch.randint(0, len(v), (resamples, len(v)), generator=g)].mean(dim=1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return lo, hi


def bootstrap_ratio_interval(numerator, denominator, resamples: int = 2000, level: float = 0.95,
                             seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for mean(numerator)/mean(denominator), two independent samples
    (e.g. UORO's and KF-RTRL's per-sample errors), each resampled on its own."""
    a = torch.as_tensor(numerator, dtype=torch.float64).flatten()
    b = torch.as_tensor(denominator, dtype=torch.float64).flatten()
    g = torch.Generator().manual_seed(seed)
    ratios = (a[torch.randint(0, len(a), (resamples, len(a)), generator=g)].mean(1)
              / b[torch.randint(0, len(b), (resamples, len(b)), generator=g)].mean(1))
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(ratios, q).tolist()
    return lo, hi


def variance_sweep_bootstrap(hidden_sizes, lengths, methods=("kf-rtrl", "uoro"), samples: int = 200, seed: int = 0,
                             init_std: float | None = None, model: RecurrentModel | None = None,
                             task: str = "random", resamples: int = 2000, level: float = 0.95) -> list[dict]:
    """:func:`variance_sweep` with a percentile bootstrap interval (:func:`bootstrap_interval`) on each
    relative error (``ci_low``, ``ci_high``) and the per-sample errors kept (``per_sample``, for ratios)."""
    rows = []
    sizes = [model.hidden_size] if model is not None else list(hidden_sizes)
    for n in sizes:
        net = model if model is not None else random_model("rhn", 4, n, 4, init_std=init_std, seed=seed + n)
        for T in lengths:
            if task == "copy":
                x, y = copy_sequence(T, seed=seed + T, dtype=net.cell.weight.dtype)
            else:
                x, y = random_sequence(net, T, seed=seed + T)
            exact = true_gradient(net, x, y)
            for method in methods:
                errors = per_sample_errors(gradient_samples(net, x, y, method, samples, seed=seed), exact)
                lo, hi = bootstrap_interval(errors, resamples, level, seed=seed)
                rows.append({"method": method, "n": n, "T": T, "samples": samples,
                             "relative_error": errors.mean().item(), "ci_low": lo, "ci_high": hi,
                             "level": level, "per_sample": errors.tolist()})
    return rows


def ratio_rows(rows: list[dict], x: str = "n", numerator: str = "uoro", denominator: str = "kf-rtrl",
               resamples: int = 2000, level: float = 0.95, seed: int = 0) -> list[dict]:
    """numerator/denominator of the relative errors at each value of ``x`` in ``rows``
    (:func:`variance_sweep_bootstrap`), with a bootstrap interval (:func:`bootstrap_ratio_interval`)."""
    other = "T" if x == "n" else "n"
    by = {(r["method"], r[x], r[other]): r for r in rows}
    out = []
    for (method, xv, ov), num in by.items():
        den = by.get((denominator, xv, ov))
        if method != numerator or den is None:
            continue
        lo, hi = bootstrap_ratio_interval(num["per_sample"], den["per_sample"], resamples, level, seed)
        out.append({x: xv, other: ov, "ratio": num["relative_error"] / den["relative_error"],
                    "ci_low": lo, "ci_high": hi, "level": level, "numerator": numerator,
                    "denominator": denominator})
    return sorted(out, key=lambda r: (r[other], r[x]))


# -- notebook 3: does the network remember? ----------------------------------------------------------

def state_jacobian_norms(model: RecurrentModel, inputs: torch.Tensor) -> list[float]:
    """‖H_t‖₂ (the largest singular value of ∂h_t/∂h_{t-1}) at every step of ``inputs`` from h_0 = 0:
    below 1 at every step, the state forgets; the product over steps bounds how far back it can remember."""
    cell, state, norms = model.cell, model.cell.zero_state(1), []
    with torch.no_grad():
        for t in range(inputs.shape[0]):
            step = cell.step(inputs[t : t + 1].to(cell.weight.dtype), state)
            norms.append(torch.linalg.matrix_norm(step.H_dense()[0], ord=2).item())
            state = step.state
    return norms


def load_trained_model(path) -> tuple[RecurrentModel, dict]:
    """A model saved as {"config": RunConfig fields, "model": state dict, ...} (results/trained/*.pt),
    in float64 for gradient analysis, with the record stored beside its weights (t_max, ema_bits,
    step, command). A relative ``path`` that does not exist from the working directory is taken
    relative to the repository root (so a notebook finds results/ wherever it is executed)."""
    from pathlib import Path

    from ..train import RunConfig, build_model

    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parents[2] / path
    saved = torch.load(path, map_location="cpu", weights_only=False)
    config = RunConfig(**{**saved["config"], "device": "cpu"})
    weights = saved["model"]
    m, k = weights["cell.weight"].shape[0] - config.hidden - 1, weights["readout"].shape[1]
    model = build_model(config, m, k)
    model.load_state_dict(weights)
    return model.double(), {key: v for key, v in saved.items() if key != "model"}


def copy_recall_bits(model: RecurrentModel, T: int, sequences: int = 32, seed: int = 0) -> float:
    """Mean cross-entropy (bits) on the T recalled bits of copy sequences of length T (the last T
    steps; chance is 1 bit): below 1 only if the model carries the bits over T + 1 steps."""
    total = 0.0
    with torch.no_grad():
        for i in range(sequences):
            x, y = copy_sequence(T, seed=seed + 1000 * T + i, dtype=model.cell.weight.dtype)
            state = model.cell.zero_state(1)
            for t in range(x.shape[0]):
                state = model.cell(x[t : t + 1], state)
                if t >= x.shape[0] - T:
                    total += model.lane_losses(model.cell.hidden(state), y[t : t + 1]).sum().item()
    return total / (sequences * T) / math.log(2)


def influence_error_over_time(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor,
                              methods=("kf-rtrl", "uoro"), samples: int = 200, seed: int = 0,
                              resamples: int = 1000, level: float = 0.95) -> list[dict]:
    """The influence's own error at every step t of one sequence: 𝓔_G(t) = E‖Ĝ_t − G_t‖²/‖G_t‖²,
    Ĝ_t from ``samples`` lanes of each method (independent signs), G_t from exact RTRL, with a
    percentile bootstrap interval (:func:`bootstrap_interval`) and ‖H_t‖₂ of that step. This is the
    quantity a "noise stable over time" statement is about (the gradient's relative error also
    depends on how large ‖g‖ happens to be)."""
    T = inputs.shape[0]
    exact = make_estimator("rtrl", model, 1, seed=seed)
    ests = {m: make_estimator(m, model, samples, reduction="sum", seed=seed) for m in methods}
    norms = state_jacobian_norms(model, inputs)
    rows = []
    for t in range(T):
        exact.step_lane_gradients(inputs[t : t + 1], targets[t : t + 1])
        G = exact.influence[0]  # (n_s, a, r_g n)
        norm2 = (G * G).sum()
        for method, est in ests.items():
            est.step_lane_gradients(inputs[t].expand(samples, -1), targets[t].expand(samples))
            with torch.no_grad():
                if method == "uoro":
                    s_t, theta = est.state_factor, est.param_factor.flatten(1)
                    flat = G.reshape(G.shape[0], -1)
                    err = ((s_t * s_t).sum(1) * (theta * theta).sum(1) - 2 * ((s_t @ flat) * theta).sum(1) + norm2)
                elif hasattr(est, "kron_factors"):
                    u, A = est.kron_factors
                    err = ((torch.einsum("la,lic->liac", u, A) - G) ** 2).sum(dim=(1, 2, 3))
                else:
                    raise ValueError(f"influence_error_over_time: no influence estimate to read for {method!r}")
            errors = (err / norm2).clamp_min(0)
            lo, hi = bootstrap_interval(errors, resamples, level, seed=seed)
            rows.append({"method": method, "t": t + 1, "relative_influence_error": errors.mean().item(),
                         "ci_low": lo, "ci_high": hi, "level": level, "H_norm": norms[t], "samples": samples,
                         "per_sample": errors.tolist()})
    return rows


def growth_ratio(rows: list[dict], method: str, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Does 𝓔_G(t) (:func:`influence_error_over_time`) level off or keep growing? The ratio of its
    mean over the last third of the steps to its mean over the middle third: about 1 when the error
    has levelled off, 5/3 when it grows linearly in t (the thirds' centres are at 5T/6 and T/2), more
    when it grows faster. With a percentile bootstrap interval over the lanes (each lane's whole
    trajectory is one independent sample, so the lanes are resampled, not the steps)."""
    pts = sorted((r["t"], r["per_sample"]) for r in rows if r["method"] == method)
    E = torch.tensor([p[1] for p in pts], dtype=torch.float64)  # (T, S)
    T = E.shape[0]
    middle, last = slice(T // 3, (2 * T) // 3), slice((2 * T) // 3, T)
    ratio = (E[last].mean() / E[middle].mean()).item()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, E.shape[1], (resamples, E.shape[1]), generator=g)
    boot = E[last][:, idx].mean(dim=(0, 2)) / E[middle][:, idx].mean(dim=(0, 2))
    lo, hi = torch.quantile(boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return {"method": method, "ratio": ratio, "ci_low": lo, "ci_high": hi, "level": level,
            "middle_steps": (middle.start + 1, middle.stop), "last_steps": (last.start + 1, last.stop)}


def sequence_ztests(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor,
                          methods=("kf-rtrl", "uoro", "snap-1"), samples: int = 2000, seed: int = 0,
                          alpha: float = 1e-3) -> list[dict]:
    """The z-test of :func:`kfrtrl_lab.analysis.unbiasedness_test` on the gradient of the WHOLE
    sequence, L = Σ_t ℓ_t, for each method (``samples`` independent lanes), so the bias of every
    step and its propagation through the later H's are tested together. A deterministic biased
    method (SnAp-1) shows that the test can fail."""
    exact = true_gradient(model, inputs, targets)
    rows = []
    for method in methods:
        G = gradient_samples(model, inputs, targets, method, samples, seed=seed)
        test = unbiasedness_test(G, exact, alpha=alpha)
        rows.append({"method": method, "T": inputs.shape[0], **test,
                     "relative_bias": ((G.mean(0) - exact).norm() / exact.norm()).item()})
    return rows


def lane_state_numbers(method: str, hidden_size: int, input_size: int = 4, cell: str = "rhn") -> int:
    """How many numbers ``method`` keeps per lane between steps for its influence estimate (the tensors
    named in its ``lane_state``, counted on a real estimator; the cell state s_t itself excluded)."""
    est = make_estimator(method, random_model(cell, input_size, hidden_size, 4), 1, seed=0)
    return sum(getattr(est, name).numel() for name in est.lane_state)


def save_trained_model(run_dir, path, command: str | None = None) -> dict:
    """Keep only what :func:`load_trained_model` needs from a finished run folder of
    ``python -m kfrtrl_lab train``: the model's state dict, the run's configuration and the last point
    of its curve (t_max, ema_bits), plus the command that made it (``command``, else the one the
    run's summary records) — a few kB instead of a checkpoint with optimiser state. Writes ``path``
    and a JSON sidecar beside it (same name, ``.json``, everything but the weights); returns the record."""
    import json
    from pathlib import Path

    run_dir, path = Path(run_dir), Path(path)
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    last = summary["curve"][-1]
    record = {"config": checkpoint["config"], "step": checkpoint["step"], "t_max": last["t_max"],
              "ema_bits": last["ema_bits"], "command": command or summary["command"],
              "git_commit": summary["git_commit"], "wall_s": summary["wall_s"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**record, "model": {k: v.clone() for k, v in checkpoint["model"].items()}}, path)
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def counted_macs(method: str, hidden_size: int, input_size: int = 4, cell: str = "rhn", lanes: int = 2,
                 seed: int = 0) -> dict:
    """Multiply-adds per lane of the matrix products (torch's FlopCounterMode: mm, bmm, addmm, …)
    in one ``est.step`` of ``method`` on a random model, counted while the package runs the step.

    Elementwise work (UORO's and SnAp-1's updates, the norms) is not a matrix product and is not
    counted. Returns {method, n, m, cell, gate_blocks, P, bmm, mm, total} in multiply-adds per lane
    (FlopCounterMode counts a multiply-add as 2 flops; halved here), with ``bmm`` the batched
    products (the influence update: H_t G_{t-1}, H_t A_{t-1}, …) and ``mm`` the rest (the cell's
    z_t = x̂_t W, the readout, the gradient's sum over lanes)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(seed)
    model = RecurrentModel(make_cell(cell, input_size, hidden_size), input_size)
    est = make_estimator(method, model, lanes, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    xs = F.one_hot(torch.randint(0, input_size, (3, lanes), generator=g), input_size).float()
    ys = torch.randint(0, input_size, (3, lanes), generator=g)
    for t in range(2):  # past the first step, whose influence is zero
        est.step(xs[t], ys[t])
    with FlopCounterMode(display=False) as counter:
        est.step(xs[2], ys[2])
    counts = {str(op).split(".")[-1]: v for op, v in counter.get_flop_counts()["Global"].items()}
    per_lane = lambda flops: flops / 2 / lanes  # noqa: E731
    bmm = per_lane(sum(v for op, v in counts.items() if "bmm" in op))
    total = per_lane(counter.get_total_flops())
    c = model.cell
    return {"method": method, "n": hidden_size, "m": input_size, "cell": cell, "gate_blocks": c.gate_blocks,
            "P": c.weight.numel(), "bmm": bmm, "mm": total - bmm, "total": total}


def lane_numbers(method: str, hidden_size: int, input_size: int = 4, cell: str = "rhn") -> float:
    """How many numbers one lane of ``method`` keeps as its influence estimate: the sizes of the
    estimator's ``lane_state`` tensors (RTRL's G_t, KF-RTRL's u_t and A_t, …), per lane. Work
    buffers an implementation keeps besides (KF-RTRL's second A buffer) are not counted here;
    :func:`kfrtrl_lab.measure.state_bytes` counts them."""
    torch.manual_seed(0)
    model = RecurrentModel(make_cell(cell, input_size, hidden_size), input_size)
    est = make_estimator(method, model, 1, seed=0)
    return float(sum(getattr(est, name).numel() for name in est.lane_state))


def crossover_n(ns, times_a, times_b) -> float | None:
    """The n at which method a's time first rises above method b's, by straight-line interpolation
    of log(time) against log(n) between the two neighbouring measured sizes; None if a stays below
    b (or starts above it) over the sizes measured."""
    pts = sorted(zip(ns, times_a, times_b))
    gaps = [(n, math.log(ta) - math.log(tb)) for n, ta, tb in pts]
    if gaps[0][1] > 0:
        return None
    for (n0, d0), (n1, d1) in zip(gaps, gaps[1:]):
        if d0 <= 0 < d1:
            f = -d0 / (d1 - d0)
            return math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))
    return None


def throughput_rows(bench: list[dict], batch_size: int = 32, input_size: int = 50) -> list[dict]:
    """For each (method, n) of a committed benchmark (rows of ``results.benchmark_rows``): the work
    the cost model counts (:func:`step_cost_model`), the rate it implies (GFLOP/s = counted flops /
    measured time) and the state the step must stream through (MB; GB/s = state / time: one pass)."""
    rows = []
    for r in bench:
        method, n, ms = r["method"], r["n"], r["ms_per_step"]
        if method == "bare H·A":
            flops, state = 2 * batch_size * 2 * n**3, 4 * batch_size * 2 * n * n / 2**20  # H A; A is n × 2n
        else:
            model = step_cost_model(method, n, batch_size, input_size)
            flops, state = model["flops"], model["state_MB"]
        rows.append({"method": method, "n": n, "ms_per_step": ms, "flops": flops, "state_MB": state,
                     "GFLOP_per_s": flops / (ms * 1e-3) / 1e9, "GB_per_s": state * 2**20 / (ms * 1e-3) / 1e9})
    return rows


# -- notebook 7: one OK step on one target, bias with confidence intervals, SnAp-1's dropped terms ----

def ok_step_both(r: int, seed: int = 1, warmup: int = 7) -> list[dict]:
    """Both OK-r reductions (symmetric and official scaling) applied to the SAME target Γ_t.

    The state is warmed up once (``warmup`` steps of symmetric OK-r on a small RHN); Γ_t =
    Σ_i u_i ⊗ H_t A_i + x̂_t ⊗ D_t is formed densely, and every sign pattern of the step is run as
    its own lane by each scaling from that one state. Rows as :func:`ok_step_error`, plus the
    singular values σ_i of Γ_t and the split q."""
    target, estimates = _ok_step_enumerated(r, ("symmetric", "official"), seed=seed, warmup=warmup)
    sigma = torch.linalg.svdvals(target)
    q = next(q for q in range(r) if (r - q) * sigma[q] <= sigma[q:].sum() * (1 + 1e-12))
    return [dict(_ok_step_row(r, scaling, target, estimates[scaling], sigma), q=q, sigma=sigma.tolist())
            for scaling in ("symmetric", "official")]


def ok_step_target(r: int, seed: int = 1, warmup: int = 7, hidden_size: int = 4):
    """(σ of Γ_t, the exact mean squared error of the symmetric OK-r step, enumerated over its sign
    patterns) for a state warmed up ``warmup`` steps on a small RHN: what a prediction of V_min
    from the σ's must match."""
    target, estimates = _ok_step_enumerated(r, seed=seed, warmup=warmup, hidden_size=hidden_size)
    return torch.linalg.svdvals(target), ((estimates["symmetric"] - target) ** 2).sum(dim=(1, 2)).mean().item()


def error_split_ci(G: torch.Tensor, exact: torch.Tensor, z: float = 1.96) -> dict:
    """:func:`error_split` with the sampling error taken out of bias² and confidence intervals.

    With S samples, mean ḡ and sample covariance Σ̂ (denominator S − 1),
    E‖ḡ − g‖² = ‖b‖² + tr Σ / S, so ‖ḡ − g‖² − tr Σ̂ / S is an unbiased estimate of the squared bias
    ‖b‖² (it can come out negative when the bias is below the sampling noise). Its standard error,
    from ḡ − g ≈ b + N(0, Σ/S): Var ≈ 4 b̂ᵀΣ̂b̂/S + 2 tr(Σ̂²)/S² (b̂ = ḡ − g: an overestimate). The
    variance tr Σ̂ has standard error std(‖g_i − ḡ‖²)/√S. All relative to ‖g‖²; ``*_lo``/``*_hi``
    are the estimate ∓ z standard errors."""
    S = G.shape[0]
    norm2 = (exact * exact).sum().item()
    base = error_split(G, exact)
    if base["spread"] == 0.0:  # deterministic: the bias is known exactly, there is no variance
        b2 = base["bias2"]
        return {**base, "bias2_naive": b2, "bias2": b2, "bias2_lo": b2, "bias2_hi": b2, "bias2_se": 0.0,
                "spread": 0.0, "spread_lo": 0.0, "spread_hi": 0.0, "spread_se": 0.0, "samples": S}
    mean = G.mean(dim=0)
    X = G - mean
    b = mean - exact
    d = (X * X).sum(dim=1)  # ‖g_i − ḡ‖²
    trace = d.sum().item() / (S - 1)
    gram = X @ X.T
    tr_sigma2 = (gram * gram).sum().item() / (S - 1) ** 2
    b_sigma_b = ((X @ b) ** 2).sum().item() / (S - 1)
    b2_naive = (b * b).sum().item()
    b2 = b2_naive - trace / S
    b2_se = math.sqrt(max(4 * b_sigma_b / S + 2 * tr_sigma2 / S**2, 0.0))
    spread_se = d.std().item() / math.sqrt(S)
    rel = lambda v: v / norm2  # noqa: E731
    return {**base, "samples": S, "bias2_naive": rel(b2_naive), "bias2": rel(b2), "bias2_se": rel(b2_se),
            "bias2_lo": rel(b2 - z * b2_se), "bias2_hi": rel(b2 + z * b2_se),
            "spread": rel(trace), "spread_se": rel(spread_se),
            "spread_lo": rel(trace - z * spread_se), "spread_hi": rel(trace + z * spread_se)}


def snap_error_terms(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """Where SnAp-1's gradient error comes from (algorithms.md section 5), on one sequence.

    Exact RTRL, G_t = H_t G_{t-1} + F_t, runs beside SnAp-1's J_t. For the parameters of unit j
    (columns c = g·n + j of W) split the exact influence into its row on unit j's own slots,
    G_t^own, and the rest, G_t^other (their influence on the OTHER units' states). Then

        g − ĝ_SnAp = Σ_t (∂L_t/∂s_t) G_t^other   ("through other units": the term SnAp-1 drops outright)
                   + Σ_t (∂L_t/∂s_t)_own (G_t^own − J_t)   ("come back": paths that leave unit j and return)

    Returns the squared norms of the two parts and of their sum (SnAp-1's squared bias) relative to
    ‖g‖², the ratio of the first part's size to the second's, and the largest difference between
    this J_t's gradient and the package's SnAp-1 estimator (a check that J_t is the package's)."""
    cell = model.cell
    dtype = cell.weight.dtype
    s, a, c = cell.slots, *cell.weight.shape
    n = cell.hidden_size
    unit = torch.arange(c) % n  # column g·n + j moves unit j
    state = cell.zero_state(1).to(dtype)
    G = torch.zeros(1, s * n, a, c, dtype=dtype)
    J = torch.zeros(s, a, c, dtype=dtype)
    own_rows = (torch.arange(s)[:, None] * n + unit[None, :])  # (s, c): the row of column c's unit, per slot
    total = torch.zeros(a, c, dtype=dtype)
    other = torch.zeros(a, c, dtype=dtype)
    back = torch.zeros(a, c, dtype=dtype)
    snap = torch.zeros(a, c, dtype=dtype)
    ones = torch.ones(1, dtype=dtype)
    with torch.no_grad():
        for t in range(inputs.shape[0]):
            step = cell.step(inputs[t : t + 1], state)
            _, dl_dh, _ = model.readout_step(step.h, targets[t : t + 1], ones)
            dl = cell.state_cotangent(dl_dh)[0]  # (n_s,)
            G = torch.bmm(step.H_dense(), G.view(1, s * n, -1)).view(1, s * n, a, c)
            step.add_immediate(G)
            blocks = step.per_column(step.H_unit_blocks())[0]  # (s, s, c)
            J = torch.einsum("stc,tac->sac", blocks, J) + step.x_hat[0][None, :, None] * step.D_per_column()[0][:, None, :]
            G_own = G[0][own_rows, :, torch.arange(c)[None, :]].permute(0, 2, 1)  # (s, a, c)
            dl_own = dl[own_rows]  # (s, c)
            g_t = torch.einsum("i,iac->ac", dl, G[0])
            own_part = torch.einsum("sc,sac->ac", dl_own, G_own)
            total += g_t
            other += g_t - own_part
            back += torch.einsum("sc,sac->ac", dl_own, G_own - J)
            snap += torch.einsum("sc,sac->ac", dl_own, J)
            state = step.state
    package = gradient_samples(model, inputs, targets, "snap-1", 1)[0].view(a, c)
    norm2 = (total * total).sum().item()
    rel = lambda v: (v * v).sum().item() / norm2  # noqa: E731
    return {"through_other_units": rel(other), "come_back": rel(back), "bias2": rel(other + back),
            "bias2_direct": rel(total - snap), "other_over_back": math.sqrt(rel(other) / max(rel(back), 1e-300)),
            "package_max_diff": (snap - package).abs().max().item(), "gradient_norm": math.sqrt(norm2)}


# -- notebook 8: when RTRL is cheap -----------------------------------------------------------

#: the copy race's contestants (notebook 8, tools/copy_race.py): a name -> the run's settings. The
#: LRU stack's sizes (N_u = 64 states a layer, residual width d = 64) were chosen so that its step
#: costs about what the RHN's KF-RTRL step costs on one CPU thread (both ~300 steps/s on the
#: course's 2-core VM, measured with the trainer itself).
RACE_CONTESTANTS = {
    "rhn-kf-rtrl": {"cell": "rhn", "method": "kf-rtrl", "hidden": 128, "layers": 1},
    "lru2-rtrl": {"cell": "lru", "method": "rtrl", "hidden": 64, "width": 64, "layers": 2},
    "rhn-tbptt-16": {"cell": "rhn", "method": "tbptt-16", "hidden": 128, "layers": 1},
}


class _NoStop:
    requested = False


def copy_race(contestant: str | dict, seed: int = 0, cpu_seconds: float = 60.0, batch: int = 16,
              lr: float = 10**-3.5, clip: float | None = 1.0, log_every: int = 100, threads: int = 1) -> dict:
    """One run of the copy task (algorithms.md, section 6) under a CPU-time budget, with the
    trainer itself (:class:`kfrtrl_lab.train.Run`, so every contestant gets the same loop, Adam and
    clipping); returns the curriculum's T_max against steps and against CPU seconds.

    The clock is ``time.process_time()`` of this process (CPU seconds, summed over its threads):
    on a shared machine a run's wall time counts the other processes' use of the cores, its CPU
    time does not. The run stops at the first chunk boundary (every ``log_every`` steps) past the
    budget. ``contestant``: a key of :data:`RACE_CONTESTANTS` or a dict of RunConfig fields (cell,
    method, hidden, width, layers).
    """
    import tempfile
    import time

    from ..runs import RunFolder
    from ..train import Run, RunConfig

    if isinstance(contestant, str):
        if contestant not in RACE_CONTESTANTS:
            raise ValueError(f"contestant must be one of {sorted(RACE_CONTESTANTS)} or a dict of run settings, "
                             f"got {contestant!r}")
        name, settings = contestant, RACE_CONTESTANTS[contestant]
    elif isinstance(contestant, dict):
        settings = dict(contestant)
        name = settings.pop("name", f"{settings.get('cell', 'rhn')}{settings.get('layers', 1)}-"
                                    f"{settings.get('method', 'kf-rtrl')}")
    else:
        raise ValueError(f"contestant must be a name or a dict of run settings, got {contestant!r}")
    if not (isinstance(cpu_seconds, (int, float)) and cpu_seconds > 0):
        raise ValueError(f"cpu_seconds must be positive, got {cpu_seconds!r}")
    config = RunConfig(task="copy", seed=seed, batch=batch, lr=lr, clip=clip, log_every=log_every, threads=threads,
                       steps=10**9, checkpoint_minutes=10**6, **settings)
    previous_threads = torch.get_num_threads()
    curve = {"step": [0], "cpu_s": [0.0], "t_max": [1]}
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(config, RunFolder(f"{tmp}/run"), resume=False, stop_after=None)
        try:
            start = time.process_time()
            status = "budget spent"
            while True:
                if run.step(_NoStop):  # over before the budget: diverged (or 10^9 steps)
                    status = run.status
                    break
                used = time.process_time() - start
                if run.p.step % log_every == 0:  # a metrics row: T_max read back only here
                    curve["step"].append(run.p.step)
                    curve["cpu_s"].append(round(used, 3))
                    curve["t_max"].append(int(run.task.metrics()["t_max"]))
                if used >= cpu_seconds:
                    break
            loss = run.last_row.get("loss_bits")
        finally:
            run.lock.release()
            torch.set_num_threads(previous_threads)
    params = sum(p.numel() for p in run.model.parameters())
    return {"contestant": name, "settings": settings, "seed": seed, "batch": batch, "lr": lr, "clip": clip,
            "cpu_seconds_budget": cpu_seconds, "threads": threads, "status": status, "parameters": params,
            "steps": curve["step"][-1], "cpu_s": curve["cpu_s"][-1], "t_max": curve["t_max"][-1],
            "steps_per_cpu_s": curve["step"][-1] / max(curve["cpu_s"][-1], 1e-9), "last_loss_bits": loss,
            "curve": curve}


def diagonal_recurrence(model: RecurrentModel) -> RecurrentModel:
    """A copy of a Kronecker-class model whose recurrent blocks W_h^g keep only their diagonals, so
    that H_t = ∂h_t/∂h_{t-1} is diagonal (algorithms.md, section 5: SnAp-1 is then exact)."""
    import copy

    cell = getattr(model, "cell", None)
    if cell is None or not hasattr(cell, "recurrent_rows"):
        raise ValueError(f"diagonal_recurrence needs a Kronecker-class model (RHN, tanh, LSTM), got "
                         f"{type(cell if cell is not None else model).__name__}")
    diagonal = copy.deepcopy(model)
    c = diagonal.cell
    n, blocks = c.hidden_size, c.weight.shape[1] // c.hidden_size
    with torch.no_grad():
        rows = c.weight[c.recurrent_rows]  # (n, r_g·n): row i is h_{t-1}[i]'s weights to every block
        keep = torch.eye(n, dtype=torch.bool).repeat(1, blocks)  # column g·n + j of row i kept iff i = j
        c.weight[c.recurrent_rows] = torch.where(keep, rows, torch.zeros_like(rows))
    return diagonal


def snap_exactness(hidden_size: int = 16, T: int = 20, seed: int = 0) -> list[dict]:
    """SnAp-1's relative error 𝓔 = ‖ĝ − g‖²/‖g‖² against BPTT on one one-hot sequence, for a random
    RHN (dense recurrent blocks) and for the same RHN with each block cut to its diagonal
    (:func:`diagonal_recurrence`): rows {recurrence, relative_error, rtrl_error}."""
    dense, x, y, _ = onehot_problem(hidden_size, T, seed=seed)
    rows = []
    for name, model in (("dense", dense), ("diagonal", diagonal_recurrence(dense))):
        exact = true_gradient(model, x, y)
        rows.append({"recurrence": name, "n": hidden_size, "T": T,
                     "relative_error": relative_error(gradient_samples(model, x, y, "snap-1", 1), exact),
                     "rtrl_error": relative_error(gradient_samples(model, x, y, "rtrl", 1), exact)})
    return rows


def lru_model(input_size: int = 3, hidden_size: int = 4, output_size: int = 3, r_min: float = 0.0,
              r_max: float = 1.0, seed: int = 0, dtype=torch.float64) -> RecurrentModel:
    """A seeded single-layer LRU model (N_u = ``hidden_size`` units, H_w = ``input_size``; |λ| on the
    ring [r_min, r_max]) with its readout, in ``dtype``."""
    return random_model("lru", input_size, hidden_size, output_size, seed=seed, dtype=dtype, r_min=r_min, r_max=r_max)


def lru_rtrl_vs_bptt(hidden_size: int = 8, input_size: int = 4, T: int = 30, r_min: float = 0.9,
                     r_max: float = 0.999, seed: int = 0) -> dict:
    """Exact RTRL of one LRU layer by its traces (``rtrl``: e^λ, e^γ, E^B) against BPTT on one random
    sequence, float64: the largest difference over ν_λ, θ_λ, log γ, B_in and the relative error."""
    model = lru_model(input_size, hidden_size, input_size, r_min, r_max, seed=seed)
    x, y = random_sequence(model, T, seed=seed + 1)
    exact = true_gradient(model, x, y)
    traced = gradient_samples(model, x, y, "rtrl", 1)[0]
    return {"N_u": hidden_size, "H_w": input_size, "T": T, "P": exact.numel(),
            "max_abs_error": (traced - exact).abs().max().item(),
            "relative_error": ((traced - exact).norm() / exact.norm()).item(),
            "trace_numbers": hidden_size * (2 + input_size)}


#: the rings of |λ| the lesson offers: the official code's default, a medium memory, the LRU paper's long one
LAMBDA_RINGS = {"0–1": (0.0, 1.0), "0.5–0.9": (0.5, 0.9), "0.9–0.999": (0.9, 0.999)}


def stack_problem(layers: int, cell: str = "lru", width: int = 8, hidden: int = 8, T: int = 30,
                  ring: str = "0.9–0.999", vocab: int = 4, seed: int = 0):
    """A seeded float64 stack of ``layers`` blocks (``cell`` lru: |λ| on ``ring`` of
    :data:`LAMBDA_RINGS`; or rhn, tanh, lstm) and one one-hot sequence over ``vocab`` tokens:
    (model, inputs (T, vocab), targets (T,))."""
    from ..cells import LRU
    from ..stack import StackedModel, make_stack

    if ring not in LAMBDA_RINGS:
        raise ValueError(f"ring must be one of {list(LAMBDA_RINGS)}, got {ring!r}")
    torch.manual_seed(seed)
    if cell == "lru":
        r_min, r_max = LAMBDA_RINGS[ring]
        model = StackedModel([LRU(width, hidden, r_min=r_min, r_max=r_max) for _ in range(layers)], vocab, vocab, width)
    else:
        model = make_stack(cell, vocab, vocab, layers, width, hidden)
    model = model.double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.nn.functional.one_hot(torch.randint(0, vocab, (T,), generator=g), vocab).double()
    return model, x, torch.randint(0, vocab, (T,), generator=g)


def layerwise_bias_by_depth(depths=(1, 2, 4), cell: str = "lru", method: str = "rtrl", width: int = 8,
                            hidden: int = 8, T: int = 30, ring: str = "0.9–0.999", seed: int = 0) -> list[dict]:
    """kl.layerwise_bias (the layer-wise gradient's relative error 𝓔 against BPTT through the whole
    stack, algorithms.md 5b) for stacks of each depth L in ``depths``: one row per (L, group), groups
    as :func:`kfrtrl_lab.stack.parameter_groups` ("recurrent l", "below layer 1", "layer 1 and up",
    "all"). A stochastic ``method`` gives one draw (bias and noise together)."""
    from ..stack import layerwise_bias

    rows = []
    for L in depths:
        model, x, y = stack_problem(L, cell, width, hidden, T, ring, seed=seed)
        for group, value in layerwise_bias(model, x, y, method, seed=seed).items():
            rows.append({"L": L, "group": group, "relative_error": value, "cell": cell, "method": method,
                         "ring": ring if cell == "lru" else None})
    return rows


def load_race(folder) -> list[dict]:
    """The committed race results (tools/copy_race.py): every ``<contestant>-s<seed>.json`` in ``folder``."""
    import json
    from pathlib import Path

    paths = sorted(Path(folder).glob("*-s*.json"))
    return [json.loads(p.read_text()) for p in paths]


def race_bands(results: list[dict], x: str = "cpu_s", points: int = 60, at=None) -> dict[str, list[dict]]:
    """contestant -> rows {x, median, low, high, seeds} of T_max over its seeds on a common grid of
    ``x`` ("cpu_s" or "step") up to the shortest seed's end (or at the values ``at``, those past that
    end left out), each seed's T_max read as a step function (the last value at or before the point)."""
    import bisect
    import statistics

    if x not in ("cpu_s", "step"):
        raise ValueError(f"x must be 'cpu_s' or 'step', got {x!r}")
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["contestant"], []).append(r)
    bands = {}
    for name, runs in by_name.items():
        end = min(r["curve"][x][-1] for r in runs)
        grid = [end * i / (points - 1) for i in range(points)] if at is None else [a for a in at if a <= end]
        rows = []
        for g in grid:
            values = [r["curve"]["t_max"][max(bisect.bisect_right(r["curve"][x], g) - 1, 0)] for r in runs]
            rows.append({x: g, "median": statistics.median(values), "low": min(values), "high": max(values),
                         "seeds": len(values)})
        bands[name] = rows
    return bands


def race_table(results: list[dict]) -> list[dict]:
    """Per contestant over its seeds: final T_max (mean, min, max), steps, CPU seconds and steps per
    CPU second (means), T_max per 1000 steps and per CPU minute, and the seeds."""
    import statistics

    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["contestant"], []).append(r)
    rows = []
    for name, runs in by_name.items():
        t = [r["t_max"] for r in runs]
        rows.append({"contestant": name, "seeds": sorted(r["seed"] for r in runs), "t_max_mean": statistics.mean(t),
                     "t_max_sd": statistics.stdev(t) if len(t) > 1 else 0.0,
                     "t_max_min": min(t), "t_max_max": max(t),
                     "steps_mean": statistics.mean(r["steps"] for r in runs),
                     "cpu_s_mean": statistics.mean(r["cpu_s"] for r in runs),
                     "steps_per_cpu_s": statistics.mean(r["steps_per_cpu_s"] for r in runs),
                     "t_max_per_cpu_min": statistics.mean(60 * r["t_max"] / r["cpu_s"] for r in runs),
                     "t_max_per_1000_steps": statistics.mean(1000 * r["t_max"] / max(r["steps"], 1) for r in runs),
                     "parameters": runs[0]["parameters"], "settings": runs[0]["settings"]})
    return rows
