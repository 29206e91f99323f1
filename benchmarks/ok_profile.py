"""Where an OK-r step spends its time: the operators of ``est.step`` under torch.profiler, grouped
by operator and input shapes, against the bare H·A product of the same r pairs (the floor).

The flop count alone predicts OK-r ≈ (1 + (r+1)/n + (r+1)²/(r·n)) × r × bare H·A (reconstruction
and Gram, section 5a of algorithms.md), i.e. ≈ 1.14 at n = 256, r = 16; this script shows how far
each product is from that, e.g. the Gram and reconstruction gemms, whose small dimension r+1 runs
BLAS well below its rate for the square H·A product.

    PYTHONPATH=. python benchmarks/ok_profile.py --threads 2 --hidden 256 --batch 32 --method ok-16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from kfrtrl_lab.cells import make_cell
from kfrtrl_lab.estimators import make_estimator
from kfrtrl_lab.model import RecurrentModel


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="ok-16")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of (steps, floor) timed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    vocab = 4
    model = RecurrentModel(make_cell("rhn", vocab, args.hidden), vocab)
    est = make_estimator(args.method, model, args.batch, seed=0)
    xs = F.one_hot(torch.randint(0, vocab, (max(16, args.steps), args.batch)), vocab).float()
    ys = torch.randint(0, vocab, (max(16, args.steps), args.batch))
    for t in range(16):  # warm-up: buffers allocated and touched, pairs filled
        est.step(xs[t], ys[t])
    r = getattr(est, "pairs", 1)
    # the floor, timed in the same rounds as the step (interleaved, so a load that comes and goes on
    # a shared machine hits both alike): r bare products H·A of one pair (A (B, n, 2n), cache-resident),
    # and the step's own batched product of all r pairs on its real buffers
    g = torch.Generator().manual_seed(2)
    H = torch.randn(args.batch, args.hidden, args.hidden, generator=g)
    A = torch.randn(args.batch, args.hidden, 2 * args.hidden, generator=g)
    # OK keeps its A's factored (est.At would be a fresh copy): its M buffer has the A's shape and place
    stack = est._M if hasattr(est, "_M") else getattr(est, "At", None)
    At = stack.view(args.batch, -1, stack.shape[-1]) if stack is not None else None
    out = torch.empty_like(At) if At is not None else None

    def bare():
        for _ in range(r):
            torch.bmm(H, A)

    def stacked():
        if At is not None:
            torch.bmm(At, H.transpose(1, 2), out=out)

    def steps():
        for t in range(args.steps):
            est.step(xs[t % len(xs)], ys[t % len(ys)])

    times = {"step": [], "bare": [], "stacked": []}
    for _ in range(args.rounds):
        for name, fn, per in (("step", steps, args.steps), ("bare", bare, 1), ("stacked", stacked, 1)):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3 / per)
    wall, floor, product = (statistics.median(times[k]) for k in ("step", "bare", "stacked"))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for t in range(args.steps):
            est.step(xs[t], ys[t])
    est.flush()
    load = os.getloadavg()
    print(f"{args.method} n={args.hidden} B={args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {load[0]:.2f} {load[1]:.2f}")
    print(f"step {wall:.1f} ms (median of {args.rounds} rounds of {args.steps} steps, interleaved with the floor); "
          f"floor r × bare H·A = {r} × {floor / r:.2f} = {floor:.1f} ms; ratio {wall / floor:.2f}")
    if At is not None:
        print(f"the step's own product of its {r} pairs (H·A on its buffers, out of cache): {product:.1f} ms "
              f"= {product / floor:.2f} × the floor; the rest of the step: {wall - product:.1f} ms")
    print(f"\nself CPU time per step under the profiler, by operator and input shapes (top {args.top}; % of the step):")
    rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    for e in rows[:args.top]:
        ms = e.self_cpu_time_total / 1e3 / args.steps
        print(f"  {ms:8.2f} ms  {100 * ms / wall:5.1f}%  {e.key:<24} {str(e.input_shapes)[:90]}")


if __name__ == "__main__":
    main()
