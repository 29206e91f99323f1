"""The computations behind the notebooks, as plain functions that return numbers or rows.

Every function is seeded and small enough to call from a test; the notebooks only choose
sizes and draw what these return.
"""

from __future__ import annotations

import math

import torch

from ..analysis import gradient_samples, relative_error, true_gradient
from ..estimators import make_estimator
from ..cells import RHN, CellStep, make_cell
from ..measure import loglog_slope, step_cost  # noqa: F401  (the notebooks' cost measurements)
from ..model import RecurrentModel
from ..tasks.copy import copy_sequence


def random_model(cell: str = "rhn", input_size: int = 4, hidden_size: int = 16, output_size: int = 4,
                 init_std: float | None = None, seed: int = 0, dtype=torch.float64) -> RecurrentModel:
    """A seeded random model (``init_std`` None: the cell's default, N(0, 0.01²) for the RHN)."""
    torch.manual_seed(seed)
    return RecurrentModel(make_cell(cell, input_size, hidden_size, init_std=init_std), output_size,
                          init_std=init_std).to(dtype)


def random_sequence(model: RecurrentModel, T: int, seed: int = 0):
    """Gaussian inputs (T, m) and uniform targets (T,) for ``model``."""
    g = torch.Generator().manual_seed(seed)
    dtype = model.cell.weight.dtype
    return (torch.randn(T, model.input_size, generator=g).to(dtype),
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


# -- notebook 2: the Kronecker factorisation ---------------------------------------------------

def immediate_jacobian_check(cell: str = "rhn", hidden_size: int = 5, seed: int = 0) -> dict:
    """max |∂s_t/∂W (autograd) − x̂_t ⊗ D_t| at a random point (F_t, algorithms.md section 2)."""
    model = random_model(cell, hidden_size=hidden_size, init_std=0.5, seed=seed)
    c = model.cell
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, c.input_size, generator=g, dtype=torch.float64)
    h_prev = torch.randn(1, c.hidden_size, generator=g, dtype=torch.float64).tanh()
    state_prev = torch.stack([h_prev] * c.slots, dim=1)
    with torch.no_grad():
        step = c.step(x, state_prev)
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


def ok_step_error(r: int, scaling: str = "symmetric", seed: int = 1, warmup: int = 7) -> dict:
    """One OK-r step checked against its closed form (algorithms.md section 5a).

    From a state reached after ``warmup`` steps of a small RHN, every sign pattern of the step is
    run as its own lane: their mean is E[Ĝ_t] and the mean of ‖Ĝ_t − T‖² the step's exact expected
    error, compared with V_min (symmetric) or V_code (official) computed from the singular values
    of the target T = Σ_i u_i ⊗ H_t A_i + x̂_t ⊗ D_t, formed densely."""
    import itertools

    from ..estimators import ok as ok_module

    suffix = "" if scaling == "symmetric" else "-official"
    model = random_model("rhn", 3, 4, 3, init_std=0.5, seed=seed)
    x, y = random_sequence(model, warmup + 1, seed=seed + 1)
    warm = make_estimator(f"ok-{r}{suffix}", model, 1, seed=seed + 3)
    for t in range(warmup):
        warm.step_lane_gradients(x[t : t + 1], y[t : t + 1])
    with torch.no_grad():
        step = model.cell.step(x[warmup : warmup + 1], warm.state)
        u, A = warm.kron_factors
        T = (torch.einsum("ia,ij->aj", u[0], (step.H_dense()[0] @ A[0]).flatten(1))
             + torch.outer(step.x_hat[0], step.D_dense()[0].flatten()))
    patterns = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=r + 1)), dtype=torch.float64)
    lanes = len(patterns)
    est = make_estimator(f"ok-{r}{suffix}", model, lanes, seed=0)
    est.u, est.At = warm.u.expand(lanes, -1, -1).clone(), warm.At.expand(lanes, -1, -1, -1).clone()
    est.state = warm.state.expand(lanes, -1, -1).clone()
    draw, ok_module.rademacher = ok_module.rademacher, lambda shape, *a: patterns.clone()
    try:
        est.step_lane_gradients(x[warmup].expand(lanes, -1), y[warmup].expand(lanes))
    finally:
        ok_module.rademacher = draw
    u_new, A_new = est.kron_factors
    estimates = torch.einsum("lia,lij->laj", u_new, A_new.flatten(2))
    v_min, v_code = ok_closed_forms(torch.linalg.svdvals(T), r)
    return {"r": r, "scaling": scaling, "target_norm2": (T * T).sum().item(),
            "mean_error": ((estimates.mean(0) - T).norm() / T.norm()).item(),
            "measured": ((estimates - T) ** 2).sum(dim=(1, 2)).mean().item(),
            "closed_form": v_min if scaling == "symmetric" else v_code, "v_min": v_min, "v_code": v_code}


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
    import itertools

    from ..estimators import ok as ok_module

    model = random_model("rhn", 3, 4, 3, init_std=0.5, seed=seed)
    x, y = random_sequence(model, warmup + 1, seed=seed + 1)
    warm = make_estimator(f"ok-{r}", model, 1, seed=seed + 3)
    for t in range(warmup):
        warm.step_lane_gradients(x[t : t + 1], y[t : t + 1])
    with torch.no_grad():
        step = model.cell.step(x[warmup : warmup + 1], warm.state)
        u, A = warm.kron_factors
        target = (torch.einsum("ia,ij->aj", u[0], (step.H_dense()[0] @ A[0]).flatten(1))
                  + torch.outer(step.x_hat[0], step.D_dense()[0].flatten()))
    sigma = torch.linalg.svdvals(target)
    v_min, v_code = ok_closed_forms(sigma, r)
    q = next(q for q in range(r) if (r - q) * sigma[q] <= sigma[q:].sum() * (1 + 1e-12))
    patterns = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=r + 1)), dtype=torch.float64)
    lanes, rows = len(patterns), []
    for scaling in ("symmetric", "official"):
        est = make_estimator(f"ok-{r}" + ("" if scaling == "symmetric" else "-official"), model, lanes, seed=0)
        est.u, est.At = warm.u.expand(lanes, -1, -1).clone(), warm.At.expand(lanes, -1, -1, -1).clone()
        est.state = warm.state.expand(lanes, -1, -1).clone()
        draw, ok_module.rademacher = ok_module.rademacher, lambda shape, *a: patterns.clone()
        try:
            est.step_lane_gradients(x[warmup].expand(lanes, -1), y[warmup].expand(lanes))
        finally:
            ok_module.rademacher = draw
        u_new, A_new = est.kron_factors
        estimates = torch.einsum("lia,lij->laj", u_new, A_new.flatten(2))
        rows.append({"r": r, "scaling": scaling, "q": q, "sigma": sigma.tolist(),
                     "target_norm2": (target * target).sum().item(),
                     "mean_error": ((estimates.mean(0) - target).norm() / target.norm()).item(),
                     "measured": ((estimates - target) ** 2).sum(dim=(1, 2)).mean().item(),
                     "closed_form": v_min if scaling == "symmetric" else v_code, "v_min": v_min, "v_code": v_code})
    return rows


def ok_step_target(r: int, seed: int = 1, warmup: int = 7, hidden_size: int = 4):
    """(σ of Γ_t, the exact mean squared error of the symmetric OK-r step, enumerated over its sign
    patterns) for a state warmed up ``warmup`` steps on a small RHN: what a prediction of V_min
    from the σ's must match."""
    import itertools

    from ..estimators import ok as ok_module

    model = random_model("rhn", 3, hidden_size, 3, init_std=0.5, seed=seed)
    x, y = random_sequence(model, warmup + 1, seed=seed + 1)
    warm = make_estimator(f"ok-{r}", model, 1, seed=seed + 3)
    for t in range(warmup):
        warm.step_lane_gradients(x[t : t + 1], y[t : t + 1])
    with torch.no_grad():
        step = model.cell.step(x[warmup : warmup + 1], warm.state)
        u, A = warm.kron_factors
        target = (torch.einsum("ia,ij->aj", u[0], (step.H_dense()[0] @ A[0]).flatten(1))
                  + torch.outer(step.x_hat[0], step.D_dense()[0].flatten()))
    patterns = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=r + 1)), dtype=torch.float64)
    lanes = len(patterns)
    est = make_estimator(f"ok-{r}", model, lanes, seed=0)
    est.u, est.At = warm.u.expand(lanes, -1, -1).clone(), warm.At.expand(lanes, -1, -1, -1).clone()
    est.state = warm.state.expand(lanes, -1, -1).clone()
    draw, ok_module.rademacher = ok_module.rademacher, lambda shape, *a: patterns.clone()
    try:
        est.step_lane_gradients(x[warmup].expand(lanes, -1), y[warmup].expand(lanes))
    finally:
        ok_module.rademacher = draw
    u_new, A_new = est.kron_factors
    estimates = torch.einsum("lia,lij->laj", u_new, A_new.flatten(2))
    return torch.linalg.svdvals(target), ((estimates - target) ** 2).sum(dim=(1, 2)).mean().item()


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
