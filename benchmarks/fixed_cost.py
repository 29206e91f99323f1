"""The fixed cost of a small step: the kit's step beside the bare products of the same step.

For each method (kf-rtrl, uoro, snap-1, rtrl) and hidden size n (tanh cell, B = 16 lanes, one-hot
inputs and classes of size m = k = 4, float32, one thread), four variants run interleaved in
rounds (a block of 32 steps of each per round; the median over the rounds, per step):

* ``step``: ``est.step(x, y)`` — what a user calls: input checks, the step, the finiteness check.
* ``trainer``: the trainer's fast path — ``est.fast_step(x, y, keep)`` for the 32 steps of a block
  and one ``est.check_finite()`` at its end (as kfrtrl_lab.stepper runs a chunk).
* ``bare step``: the same step's arithmetic written straight in torch (no checks, no finiteness
  record, signs drawn beforehand): the cell (x̂_t, z_t = x̂_t W, h_t = tanh z_t, d = 1 − h²), the
  readout's loss and exact backprop, H_t = diag(d) W_hᵀ, and the bare products below.
* ``bare products``: the method's own products alone on the same shapes, from pre-made H_t, D_t,
  x̂_t, ∂L/∂s_t (algorithms.md, sections 1, 3, 4, 5):
  KF-RTRL: B_t = H_t A_{t-1} (bmm), the four norms, u_t and A_t = c1 B_t/p1 + c2 D_t/p2, the
  gradient u_tᵀ((∂L/∂s_t) A_t); UORO: H_t s̃, νᵀD_t, the norms, s̃_t, θ̃_t (baddbmm), the gradient;
  SnAp-1: J_t = diag(H_t) J_{t-1} + x̂_t ⊗ D_t, the gradient; RTRL: G_t = H_t G_{t-1} + F_t (bmm),
  the gradient (∂L/∂s_t) G_t.

fixed = trainer (or step) − bare step is the kit's bookkeeping per step (what the issue calls the fixed
cost: the sign hashing, the finiteness record, the input checks, small allocations, Python);
step − bare products adds the cell and readout. The ``--breakdown`` table times the kit's
bookkeeping parts alone (one call each, medians over rounds).

Clock: by default this process's CPU time per block (time.process_time): the machine is shared, and
wall time also counts the moments another process held the core; ``--clock wall`` times perf_counter.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fixed_cost.py            # about 2 minutes
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fixed_cost.py --sizes 8 --methods kf-rtrl --breakdown
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from kfrtrl_lab.cells import make_cell
from kfrtrl_lab.estimators import make_estimator
from kfrtrl_lab.model import RecurrentModel
from kfrtrl_lab.runs import git_commit

B, V = 16, 4  # lanes; input and output size (one-hot, the copy task's)
BLOCK = 32  # steps per timed block
METHODS = ("kf-rtrl", "uoro", "snap-1", "rtrl")


def load_average() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def bare_products(method: str, n: int, g: torch.Generator):
    """A callable running the method's products for one step on fixed random operands of the step's
    shapes (the state it updates is carried over, as in a run); signs are drawn beforehand."""
    a = V + n + 1
    H = torch.randn(B, n, n, generator=g) / n**0.5
    d = torch.rand(B, n, generator=g)
    x_hat = torch.randn(B, a, generator=g)
    dl = torch.randn(B, n, generator=g)
    signs = torch.randint(0, 2, (B, 2), generator=g).float() * 2 - 1
    nu = torch.randint(0, 2, (B, n), generator=g).float() * 2 - 1
    if method == "kf-rtrl":
        state = {"u": torch.randn(B, a, generator=g), "A": torch.randn(B, n, n, generator=g)}

        def run():
            u, A = state["u"], state["A"]
            Bt = torch.bmm(H, A)
            p1 = (Bt.flatten(1).norm(dim=1) / u.norm(dim=1)).sqrt()
            p2 = (d.norm(dim=1) / x_hat.norm(dim=1)).sqrt()
            c1, c2 = signs[:, 0], signs[:, 1]
            state["u"] = (c1 * p1)[:, None] * u + (c2 * p2)[:, None] * x_hat
            A = Bt.mul_((c1 / p1)[:, None, None])
            A.diagonal(dim1=1, dim2=2).add_((c2 / p2)[:, None] * d)
            state["A"] = A
            return state["u"].T @ torch.bmm(dl[:, None, :], A).squeeze(1)
    elif method == "uoro":
        state = {"s": torch.randn(B, n, generator=g), "theta": torch.randn(B, a, n, generator=g)}

        def run():
            s_fwd = torch.bmm(H, state["s"][:, :, None]).squeeze(2)
            nu_d = nu * d
            rho0 = ((state["theta"].flatten(1).norm(dim=1) + 1e-7) / (s_fwd.norm(dim=1) + 1e-7)).sqrt()
            rho1 = ((x_hat.norm(dim=1) * nu_d.norm(dim=1) + 1e-7) / (n**0.5 + 1e-7)).sqrt()
            state["s"] = rho0[:, None] * s_fwd + rho1[:, None] * nu
            theta = state["theta"].mul_((1 / rho0)[:, None, None])
            theta.baddbmm_((x_hat / rho1[:, None])[:, :, None], nu_d[:, None, :])
            return ((dl * state["s"]).sum(dim=1) @ theta.flatten(1)).view(a, n)
    elif method == "snap-1":
        state = {"J": torch.randn(B, a, n, generator=g)}
        H_diag = H.diagonal(dim1=1, dim2=2)

        def run():
            J = state["J"].mul_(H_diag[:, None, :])
            J.addcmul_(x_hat[:, :, None], d[:, None, :])
            return (J * dl[:, None, :]).sum(dim=0)
    elif method == "rtrl":
        state = {"G": torch.randn(B, n, a, n, generator=g), "spare": torch.empty(B, n, a, n)}

        def run():
            G, G_new = state["G"], state["spare"]
            torch.bmm(H, G.view(B, n, -1), out=G_new.view(B, n, -1))
            G_new.diagonal(dim1=1, dim2=3).add_(x_hat[:, :, None] * d[:, None, :])  # F_t = x̂ ⊗ D_t
            state["G"], state["spare"] = G_new, G
            return (dl.reshape(1, -1) @ G_new.view(B * n, -1)).view(a, n)
    else:
        raise ValueError(f"no bare products for {method!r}")
    return run, (H, d, x_hat, dl)


def bare_step(model: RecurrentModel, products, operands, xs, ys):
    """A callable running step t of the straight-line step: cell, readout, H_t, the products."""
    H, d_buf, x_hat_buf, dl_buf = operands
    W, R = model.cell.weight.detach(), model.readout.detach()
    n = model.cell.hidden_size
    W_h_t = W[V:V + n].T.contiguous()
    h = torch.zeros(B, n)
    rows = torch.arange(B)

    def run(t):
        nonlocal h
        x_hat = torch.cat([xs[t], h, torch.ones(B, 1)], dim=1)
        h = torch.tanh(x_hat @ W)
        d = 1 - h * h
        log_probs = torch.log_softmax(h @ R[:n] + R[n], dim=1)
        losses = -log_probs[rows, ys[t]]
        delta = log_probs.exp()
        delta[rows, ys[t]] -= 1
        delta /= B
        dl = delta @ R[:n].T
        d_readout = torch.cat([h.T @ delta, delta.sum(0, keepdim=True)], dim=0)
        torch.mul(d[:, :, None], W_h_t, out=H)
        d_buf.copy_(d), x_hat_buf.copy_(x_hat), dl_buf.copy_(dl)  # the products read their operands here
        return losses, d_readout, products()

    return run


def measure(method: str, n: int, rounds: int, breakdown: bool, clock) -> dict:
    torch.manual_seed(0)
    model = RecurrentModel(make_cell("tanh", V, n), V)
    est = make_estimator(method, model, B, seed=0)
    g = torch.Generator().manual_seed(1)
    xs = F.one_hot(torch.randint(0, V, (BLOCK, B), generator=g), V).float()
    ys = torch.randint(0, V, (BLOCK, B), generator=g)
    keep = torch.ones(B)
    products, operands = bare_products(method, n, g)
    straight = bare_step(model, products, operands, xs, ys)

    def run_step():
        for t in range(BLOCK):
            est.step(xs[t], ys[t])

    def run_trainer():
        for t in range(BLOCK):
            est.fast_step(xs[t], ys[t], keep)
        est.check_finite()

    def run_bare_step():
        for t in range(BLOCK):
            straight(t)

    def run_products():
        for _ in range(BLOCK):
            products()

    variants = {"step": run_step, "trainer": run_trainer, "bare step": run_bare_step, "bare products": run_products}
    if breakdown:
        dl = torch.randn(B, n)
        losses = torch.rand(B)
        weight_grad = torch.randn_like(model.cell.weight)
        parts = {
            "signs (B, 2)": lambda: est.random.signs((B, 2), torch.float32),
            "signs hashed per step": lambda: est.random._bits_to_signs(est.random._bits((B, 2)), torch.float32),
            "input checks": lambda: est._check_step_inputs(xs[0], ys[0]),
            "finite record": lambda: est._record_finite(est.state, losses, weight_grad),
            "check_finite": est.check_finite,
            "cell.step": lambda: est.cell.step(xs[0], est.state, keep),
            "readout_step": lambda: est.model.readout_step(est.h, ys[0], est._lane_weights),
        }
        del dl
        for name, call in parts.items():
            variants[name] = lambda call=call: [call() for _ in range(BLOCK)]
    times = {name: [] for name in variants}
    for r in range(rounds + 2):
        for name, run in variants.items():
            model.zero_grad(set_to_none=False)  # untimed: .grad stays bounded
            start = clock()
            run()
            if r >= 2:  # two warm-up rounds
                times[name].append(clock() - start)
    return {name: 1e3 * statistics.median(ts) / BLOCK for name, ts in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--breakdown", action="store_true", help="also time the bookkeeping parts alone")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="cpu (default): this process's CPU time, which a process on the other core does "
                        "not inflate while it waits; wall: time.perf_counter")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the trainer does
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print("fixed_cost: the kit's step beside the bare products (tanh, B = 16, m = k = 4, float32)")
    print(f"commit {git_commit()}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"load average at start {load_average()}")
    print(f"{BLOCK} steps per block, variants interleaved in rounds, median of {args.rounds} rounds; ms per step "
          f"({args.clock} time)")
    print()
    head = f"{'method':>8} {'n':>3} {'step':>7} {'trainer':>7} {'bare st':>7} {'bare pr':>7} " \
           f"{'fixed tr':>8} {'fixed st':>8} {'st-pr':>7}"
    print(head)
    for method in args.methods:
        for n in args.sizes:
            row = measure(method, n, args.rounds, args.breakdown, clock)
            print(f"{method:>8} {n:>3} {row['step']:7.3f} {row['trainer']:7.3f} {row['bare step']:7.3f} "
                  f"{row['bare products']:7.3f} {row['trainer'] - row['bare step']:8.3f} "
                  f"{row['step'] - row['bare step']:8.3f} {row['step'] - row['bare products']:7.3f}", flush=True)
            extra = {k: v for k, v in row.items() if k not in ("step", "trainer", "bare step", "bare products")}
            if extra:
                print("             parts alone: " + ", ".join(f"{k} {v:.4f}" for k, v in extra.items()), flush=True)
    print()
    print("fixed tr = trainer − bare step; fixed st = step − bare step; st-pr = step − bare products")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
