"""Cost of one online-learning step for each gradient estimator, on the RHN cell.

What is measured, for every method and hidden size n (RHN cell, B = 32 lanes, float32,
input and output size m = k = 50 as for character-level PTB), on the CPU and, when
torch.cuda.is_available(), on the GPU:

* ms/step: ``est.step(x, y)`` - forward step, influence update and the ``.grad``
  accumulation the optimiser reads. Steps run in blocks of 16 (one whole window of
  tbptt-16, so its one backward pass per window lands in every block alike); after
  warm-up blocks, the median block time over several repeats, divided by 16. Grads are
  zeroed between blocks, outside the timed region. Inputs are pre-made one-hot x and
  random targets, so no data generation is timed.
* peak MB/step: the estimator's persistent state (bytes of the tensors it keeps between
  steps) plus the highest transient allocation above that during one block of 16 steps
  (for tbptt-16: the autograd graph of its window). On CPU the transient comes from
  torch.profiler's allocator events (profile_memory=True), on GPU from
  torch.cuda.max_memory_allocated() after reset_peak_memory_stats(). Model parameters and
  their .grad (the same for every method) are not counted.
* bare H·A: ``torch.bmm(H, A)`` with H (B, n, n) and A (B, n, 2n), the one O(n³) product
  of a KF-RTRL step, timed the same way on the same threads and device. KF-RTRL step /
  bare H·A says how far a step is from that floor.

RTRL (O(n⁴) time, O(n³·B) memory) runs only where affordable: n <= 64 on CPU; on GPU
when twice its influence tensor fits in a quarter of the device memory. Skips are printed.

The LRU (section (d)): exact RTRL by its traces (``rtrl`` on ``--cell lru``) and tbptt-1 for N
complex units of width H = 50, B = 32: the traces' cost is O(N·H) per lane and step, so the fitted
slope of time against N is about 1 (where the fixed per-step overhead of a small step does not
dominate), against 4 for the dense RTRL of a Kronecker cell.

Run from the repository root:

    PYTHONPATH=. python benchmarks/step_cost.py --quick            # n = 32, 64; about a minute
    PYTHONPATH=. python benchmarks/step_cost.py --threads 2 --json step_cost.json
    PYTHONPATH=. python benchmarks/step_cost.py --sizes 64 128 --device cuda
    PYTHONPATH=. python benchmarks/step_cost.py --lru-only --device cpu --threads 1   # the LRU section alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import kfrtrl_lab as kl
from kfrtrl_lab.measure import bare_product_cost, loglog_slope, step_cost
from kfrtrl_lab.runs import git_commit

B, M, K = 32, 50, 50  # lanes, input size, output size (char-level PTB-like)
BLOCK = 16  # steps per timed block: a multiple of every truncation benchmarked
METHODS = ("kf-rtrl", "uoro", "tbptt-1", "tbptt-16", "rtrl", "ok-4", "ok-16", "kf-avg-4", "snap-1")
#: (name, the method timed, what it is divided by, bound, at which n): the targets of the issues.
#: "bare×r" is r times the bare product H·A, the floor of a method that propagates r pairs.
TARGETS = (
    ("KF-RTRL step / bare H·A", "kf-rtrl", "bare", 1.2, (256,)),
    ("UORO step / tbptt-1 step", "uoro", "tbptt-1", 3.0, None),
    ("OK-4 step / (4 × bare H·A)", "ok-4", "bare×4", 1.3, (256,)),
    ("OK-16 step / (16 × bare H·A)", "ok-16", "bare×16", 1.3, (256,)),
    ("KF-AVG-4 step / (4 × bare H·A)", "kf-avg-4", "bare×4", 1.3, (256,)),
    ("SnAp-1 step / tbptt-1 step", "snap-1", "tbptt-1", 2.0, None),
)
R = kl.RHN.gate_blocks
MB = 2**20
NOISY = 1.2  # median block slower than this × the fastest: the run was disturbed
STARVED = 0.7  # on cpu, fewer cores busy than this: other processes took the cores


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="n in {32, 64}, fewer repeats (about a minute)")
    p.add_argument("--sizes", type=int, nargs="+", help="hidden sizes n (default 32 64 128 256)")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="'all' (default): cpu, and cuda when available")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    p.add_argument("--lru-sizes", type=int, nargs="+", help="LRU units N (default 64 128 256 512 1024)")
    p.add_argument("--lru-only", action="store_true", help="only section (d), the LRU")
    args = p.parse_args()
    args.lru_sizes = args.lru_sizes or ([64, 256] if args.quick else [64, 128, 256, 512, 1024])
    args.sizes = args.sizes or ([32, 64] if args.quick else [32, 64, 128, 256])
    args.warmup, args.repeats = (1, 3) if args.quick else (2, 7)
    return args


# -- environment ------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    # Other processes on the same cores make the thread pool wait; show it rather than hide it.
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def print_header(devices):
    print("step_cost: per-step cost of the gradient estimators, RHN cell")
    print(f"commit {git_commit()}; torch {torch.__version__}; threads in use: {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()})")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); load average at start: {load_average()}")
    if "cuda" in devices:
        print(f"GPU: {torch.cuda.get_device_name()}; TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}")
    print(f"B = {B}, m = k = {K}, float32; {BLOCK} steps per block; median of the timed blocks")
    print()


# -- measurement (kfrtrl_lab.measure) ----------------------------------------------------

def rtrl_skip_reason(n, device):
    """Why RTRL is not run at this n on this device, or None when it is affordable."""
    influence = B * n * (M + n + 1) * R * n * 4  # bytes of G, (B, n, m+n+1, r, n) float32
    if device == "cpu" and n > 64:
        return f"skipped on cpu above n = 64 (O(n^4) time; influence alone {influence / MB:.0f} MB)"
    if device == "cuda" and 2 * influence > torch.cuda.get_device_properties(0).total_memory / 4:
        return f"skipped: old + new influence {2 * influence / MB:.0f} MB > 1/4 of GPU memory"
    return None


def bench_method(method, n, device, args):
    r = step_cost(method, n, batch_size=B, vocab=K, device=device, block=BLOCK, warmup=args.warmup,
                  repeats=args.repeats, memory=True)
    return {"ms": r["ms_per_step"], "ms_min": r["ms_min"], "cores_busy": r["cores_busy"],
            "page_faults_per_step": r["page_faults_per_step"], "state_bytes": r["state_MB"] * MB,
            "transient_bytes": r["transient_MB"] * MB, "peak_bytes": r["peak_MB"] * MB}


def bench_bare_product(n, device, args):
    """torch.bmm(H, A): the O(n³) floor of a KF-RTRL step."""
    r = bare_product_cost(n, B, device=device, block=BLOCK, warmup=args.warmup, repeats=args.repeats)
    return {"ms": r["ms_per_step"], "ms_min": r["ms_min"], "cores_busy": r["cores_busy"]}


# -- one device ---------------------------------------------------------------------------

LRU_METHODS = ("rtrl", "tbptt-1")


def run_lru(device, args):
    """(d): ms/step and state of the LRU's exact RTRL (traces) and of tbptt-1 against N; slopes."""
    print(f"(d) LRU on {device}: N complex units, H = {M}, B = {B}, float32")
    rows = []
    for N in args.lru_sizes:
        for method in LRU_METHODS:
            r = step_cost(method, N, batch_size=B, vocab=K, cell="lru", device=device, block=BLOCK,
                          warmup=args.warmup, repeats=args.repeats)
            rows.append({"method": method, "N": N, "ms": r["ms_per_step"], "ms_min": r["ms_min"],
                         "cores_busy": r["cores_busy"], "state_bytes": r["state_MB"] * MB})
            print(f"  measured {method:>8} N={N:<5} {r['ms_per_step']:9.3f} ms/step (fastest block {r['ms_min']:.3f})"
                  f"  state {r['state_MB']:8.2f} MB  cores busy {r['cores_busy']:.2f}", flush=True)
    slopes = {}
    for method in LRU_METHODS:
        mine = [r for r in rows if r["method"] == method]
        slopes[method] = {"time": loglog_slope([r["N"] for r in mine], [r["ms"] for r in mine]),
                          "state": loglog_slope([r["N"] for r in mine], [r["state_bytes"] for r in mine])}
        print(f"  log-log slope against N, {method:>8}: time {slopes[method]['time']:.2f}, "
              f"state {slopes[method]['state']:.2f}   (N = {', '.join(map(str, args.lru_sizes))})")
    print()
    return {"results": rows, "slopes": slopes}


def run_device(device, args):
    print(f"=== device: {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else
                                     f" ({torch.get_num_threads()} threads)"))
    if args.lru_only:
        return {"device": device, "lru": run_lru(device, args)}
    results, skipped, bare = {}, {}, {}
    for n in args.sizes:
        bare[n] = bench_bare_product(n, device, args)
        for method in METHODS:
            reason = rtrl_skip_reason(n, device) if method == "rtrl" else None
            if reason:
                skipped[(method, n)] = reason
                continue
            results[(method, n)] = bench_method(method, n, device, args)
            r = results[(method, n)]
            busy = (f"  cores busy {r['cores_busy']:.2f}  page faults/step {r['page_faults_per_step']:.0f}"
                    if device == "cpu" else "")
            print(f"  measured {method:>8} n={n:<4} {r['ms']:9.3f} ms/step (fastest block {r['ms_min']:.3f})"
                  f"  peak {r['peak_bytes'] / MB:8.2f} MB{busy}", flush=True)
    print()
    report_device(device, args, results, skipped, bare)
    lru = run_lru(device, args)
    return {"device": device, "lru": lru, "bare_bmm": {str(n): v for n, v in bare.items()},
            "results": [{"method": m, "n": n, **v} for (m, n), v in results.items()],
            "skipped": [{"method": m, "n": n, "reason": v} for (m, n), v in skipped.items()],
            "checks": checks(args, results, bare)}


def table(title, args, cell):
    print(title)
    print(f"  {'method':>10}" + "".join(f"{'n=' + str(n):>12}" for n in args.sizes))
    for method in METHODS:
        print(f"  {method:>10}" + "".join(f"{cell(method, n):>12}" for n in args.sizes))
    print()


def checks(args, results, bare):
    """Every target as {n: ratio} over the n measured (None where a part was not measured)."""
    out = {}
    for name, method, base, bound, sizes in TARGETS:
        ratios = {}
        for n in args.sizes:
            if sizes is not None and n not in sizes or (method, n) not in results:
                continue
            if base.startswith("bare"):
                floor = bare[n]["ms"] * (int(base[5:]) if "×" in base else 1)
            elif (base, n) in results:
                floor = results[(base, n)]["ms"]
            else:
                continue
            ratios[str(n)] = results[(method, n)]["ms"] / floor
        out[name] = {"bound": bound, "ratios": ratios, "pass": all(v <= bound for v in ratios.values()) if ratios else None}
    return out


def report_device(device, args, results, skipped, bare):
    def flags(r):
        low = device == "cpu" and r["cores_busy"] < STARVED
        return ("*" if r["ms"] > NOISY * r["ms_min"] else "") + ("!" if low else "")

    def ms(method, n):
        r = results.get((method, n))
        return f"{r['ms']:.3f}{flags(r):<2}" if r else "skipped  "

    def peak(method, n):
        r = results.get((method, n))
        return f"{r['peak_bytes'] / MB:.2f}" if r else "skipped"

    def state(method, n):
        r = results.get((method, n))
        return f"{r['state_bytes'] / MB:.2f}" if r else "skipped"

    table(f"(a) ms/step on {device} (median block / {BLOCK})", args, ms)
    print(f"  {'bare H·A':>10}" + "".join(f"{bare[n]['ms']:>10.3f}{flags(bare[n]):<2}" for n in args.sizes))
    print(f"  marks: * median block > {NOISY}x the fastest block (timing disturbed)")
    if device == "cpu":
        busy = [r["cores_busy"] for r in [*results.values(), *bare.values()]]
        print(f"         ! cores busy (process CPU time / wall) < {STARVED}: other processes took the cores, "
              f"rerun on an idle machine")
        print(f"  cores busy in this run: {min(busy):.2f} to {max(busy):.2f} (idle machine: 1 to {torch.get_num_threads()})")
    print()
    what = ("profiler allocator events" if device == "cpu" else "cuda.max_memory_allocated")
    table(f"    peak MB/step on {device}: persistent state + highest transient in a {BLOCK}-step block "
          f"({what}; parameters and .grad not counted)", args, peak)
    table("    of which persistent state, MB", args, state)
    for (method, n), reason in skipped.items():
        print(f"  note: {method} at n={n}: {reason}")
    if skipped:
        print()

    print("(b) log-log slope of time vs n (least squares over the n measured)")
    for method in METHODS:
        ns = [n for n in args.sizes if (method, n) in results]
        slope = loglog_slope(ns, [results[(method, n)]["ms"] for n in ns])
        print(f"  {method:>10}: {slope:5.2f}   (n = {', '.join(map(str, ns))})")
    slope = loglog_slope(args.sizes, [bare[n]["ms"] for n in args.sizes])
    print(f"  {'bare H·A':>10}: {slope:5.2f}")
    print()

    print(f"(c) targets on {device} (each step against its floor, same threads and device)")
    for name, c in checks(args, results, bare).items():
        if not c["ratios"]:
            print(f"  {name}: not measured at the sizes given (target ≤ {c['bound']})")
            continue
        verdicts = ", ".join(f"n={n}: {v:.2f} {'PASS' if v <= c['bound'] else 'MISS'}" for n, v in c["ratios"].items())
        print(f"  {name} (target ≤ {c['bound']}): {verdicts}")
    print()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            devices.append("cuda")
        elif args.device == "cuda":
            raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    print_header(devices)
    out = {"commit": git_commit(), "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
           "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
           "B": B, "m": M, "k": K, "block": BLOCK, "warmup_blocks": args.warmup,
           "timed_blocks": args.repeats, "sizes": args.sizes,
           "devices": [run_device(d, args) for d in devices]}
    print(f"load average at end: {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
