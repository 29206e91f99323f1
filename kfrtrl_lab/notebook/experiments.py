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
