"""Cost measurements, each in one place: time per step, state memory, transient memory, the bare
O(n³) product, and the log–log slope of a cost against n. The benchmark script
(``benchmarks/step_cost.py``), the notebooks and the certificate all call these.

Timing: steps run in blocks of ``block`` (16 = one whole tbptt-16 window, so its one backward pass
per window lands in every block alike); after warm-up blocks, the median block time over the
repeats, divided by the block length. Gradients are zeroed between blocks, outside the timed
region; inputs are pre-made one-hot vectors and random targets, so no data generation is timed.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from .cells import make_cell
from .estimators import make_estimator
from .estimators.base import meta_layout
from .model import RecurrentModel


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log y against log x (nan for fewer than two points)."""
    if len(xs) < 2:
        return float("nan")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def state_bytes(est, bookkeeping: bool = True) -> int:
    """Bytes of the memory an estimator keeps between steps: the cell state, the influence estimate
    and any work buffers it reuses (held directly or in a tuple or list; each storage counted once,
    so a view into a buffer adds nothing). Works on the meta device too (sizes without memory).
    ``bookkeeping=False`` leaves out the buffers of fixed size that only record the run's health
    (``Estimator.bookkeeping``, e.g. the finiteness table): what the method itself needs."""
    storages = {}
    skip = set(getattr(est, "bookkeeping", ())) if not bookkeeping else set()
    for name, value in vars(est).items():
        if name in skip:
            continue
        for t in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                # meta storages have no address: the storage object itself tells them apart
                key = storage._cdata if t.device.type == "meta" else storage.data_ptr()
                storages[key] = storage.nbytes()
    return sum(storages.values())


def run_memory(method: str, cell: str, input_size: int, output_size: int, hidden_size: int, batch_size: int,
               task_bytes: int = 0, layers: int = 1, width: int | None = None, device: str = "cpu") -> dict:
    """About how many bytes a training run holds, by part: the estimator's state between steps
    (:func:`state_bytes`) counted twice, as a step builds the next state before the old one goes;
    the model's parameters four times (weights, gradients, Adam's two moments); the task's buffers.
    The model and estimator are laid out on torch's meta device: nothing is allocated, so a size
    far beyond the machine is measured in milliseconds. Full BPTT's graph of a sequence is not
    counted (it grows with the sequence, not with the state). ``layers`` ≥ 2: a stack of residual
    width ``width`` (default ``hidden_size``), one estimator per layer; the autograd pass of one step
    is not counted (a few activations per layer, small beside an influence estimate). ``device``: the
    device the run is for, whose work buffers differ (OK-r holds a block of A's sized to a CPU's cache,
    a whole batch of them on a GPU; a CPU keeps a table of finiteness sums)."""
    with torch.device("meta"), meta_layout(device):
        try:
            if layers == 1:
                model = RecurrentModel(make_cell(cell, input_size, hidden_size), output_size)
                estimators = [make_estimator(method, model, batch_size, seed=0)]  # a seed: no draw from torch's generator
            else:
                from .stack import LayerwiseLearner, make_stack

                model = make_stack(cell, input_size, output_size, layers, width or hidden_size, hidden_size)
                estimators = LayerwiseLearner(model, method, batch_size, seed=0).estimators
            estimator = 2 * sum(state_bytes(est) for est in estimators)
        except RuntimeError as e:  # a tensor whose byte count does not fit in int64
            if "overflow" not in str(e):
                raise
            estimator = 2**64
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    parts = {"estimator_state": estimator, "model_and_adam": 4 * params, "task_buffers": task_bytes}
    return {**parts, "total": sum(parts.values())}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_blocks(run_block, device, warmup: int, repeats: int, before_block=lambda: None):
    """(median s, fastest s, cores busy, minor page faults) per block, after warm-up blocks.

    Cores busy = process CPU time / wall time over the timed blocks: at least 1 on an idle machine
    (the Python thread never waits), up to the thread count; below 1 means other processes took
    the cores. Page faults count fresh memory the kernel had to map (a step that allocates a large
    new tensor each time pays for faulting it in).
    """
    times, cpu, faults = [], 0.0, 0
    for i in range(warmup + repeats):
        before_block()  # untimed: grads are zeroed here
        sync(device)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0, t0 = time.process_time(), time.perf_counter()
        run_block()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return statistics.median(times), min(times), cpu / sum(times), faults / repeats


def transient_peak_bytes(run_block, device) -> int:
    """Highest allocation above the level at the start of one block (the autograd graph of a BPTT
    window, temporaries of a step). CPU: the profiler's allocator events; GPU: max_memory_allocated."""
    if torch.device(device).type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_block()
        sync(device)
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile, record_function

    # The profiler's note that it keeps one cycle's events is noise here: one cycle is all we read.
    warnings.filterwarnings("ignore", message=".*Profiler clears events")
    # A priming block runs under the profiler first, so the frees of its blocks during the measured
    # block are seen too (blocks allocated before profiling starts have no recorded size).
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_block()
        with record_function("measured_block"):
            run_block()
    events = prof.profiler.kineto_results.events()
    mark = next(e for e in events if e.name() == "measured_block")
    allocs = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and mark.start_ns() <= e.start_ns() <= mark.end_ns())
    level = peak = 0
    for _, nbytes in allocs:
        level += nbytes
        peak = max(peak, level)
    return peak


def step_cost(method: str, hidden_size: int, batch_size: int = 32, vocab: int = 4, cell: str = "rhn",
              device="cpu", dtype=torch.float32, block: int = 16, warmup: int = 2, repeats: int = 7,
              memory: bool = False, seed: int = 0) -> dict:
    """Time per ``est.step`` of ``method`` (forward step, influence update, ``.grad``
    accumulation) on a random model with one-hot inputs of size ``vocab`` and as many classes.

    Returns {method, n, batch, cell, ms_per_step (median block / block), ms_min, cores_busy,
    page_faults_per_step, state_MB, threads} plus transient_MB and peak_MB with ``memory=True``.
    """
    torch.set_flush_denormal(True)  # as the trainer does (see train.train)
    torch.manual_seed(seed)  # the same weights for every method at this n
    model = RecurrentModel(make_cell(cell, vocab, hidden_size), vocab).to(device=device, dtype=dtype)
    est = make_estimator(method, model, batch_size, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    xs = F.one_hot(torch.randint(0, vocab, (block, batch_size), generator=g), vocab).to(device=device, dtype=dtype)
    ys = torch.randint(0, vocab, (block, batch_size), generator=g).to(device)

    def run_block():
        for t in range(block):
            est.step(xs[t], ys[t])

    def zero_grads():
        model.zero_grad(set_to_none=False)

    run_block()  # the first call allocates .grad, so the zeroing below has buffers to zero
    est.flush()
    median, fastest, busy, faults = time_blocks(run_block, device, warmup, repeats, zero_grads)
    est.flush()
    row = {"method": method, "n": hidden_size, "batch": batch_size, "cell": cell, "ms_per_step": 1e3 * median / block,
           "ms_min": 1e3 * fastest / block, "cores_busy": busy, "page_faults_per_step": faults / block,
           "state_MB": state_bytes(est, bookkeeping=False) / 2**20,
           "bookkeeping_MB": (state_bytes(est) - state_bytes(est, bookkeeping=False)) / 2**20,
           "threads": torch.get_num_threads()}
    if memory:
        zero_grads()
        row["transient_MB"] = transient_peak_bytes(run_block, device) / 2**20
        est.flush()
        row["peak_MB"] = row["state_MB"] + row["transient_MB"]
    return row


def bare_product_cost(hidden_size: int, batch_size: int = 32, columns: int | None = None, device="cpu",
                      dtype=torch.float32, block: int = 16, warmup: int = 2, repeats: int = 7) -> dict:
    """``torch.bmm(H, A)`` with H (B, n, n) and A (B, n, c), c = 2n by default (an RHN's A): the
    one O(n³) product of a KF-RTRL step, the floor its step is measured against."""
    n = hidden_size
    g = torch.Generator().manual_seed(2)
    H = torch.randn(batch_size, n, n, generator=g).to(device=device, dtype=dtype)
    A = torch.randn(batch_size, n, columns or 2 * n, generator=g).to(device=device, dtype=dtype)

    def run_block():
        for _ in range(block):
            torch.bmm(H, A)

    median, fastest, busy, _ = time_blocks(run_block, device, warmup, repeats)
    return {"method": "bare H·A", "n": n, "batch": batch_size, "ms_per_step": 1e3 * median / block,
            "ms_min": 1e3 * fastest / block, "cores_busy": busy, "threads": torch.get_num_threads()}
