"""Steps per second of the online trainer, and how far its step is from the estimator's own.

For each run given as task:method:hidden:batch, the trainer's step (task data, estimator step,
clipping, Adam) runs through kfrtrl_lab.stepper.Stepper — fast path by default, --eager for the
checked path — for --seconds after a warm-up; steps/s is the number of steps over the time. The
estimator's own step (kfrtrl_lab.measure.step_cost, same sizes, one-hot inputs, no task, no
optimiser) gives the ratio trainer step / estimator step.

    PYTHONPATH=. python benchmarks/trainer_pace.py --threads 2 --seconds 20 --compare --breakdown copy:kf-rtrl:128:16
    PYTHONPATH=. python benchmarks/trainer_pace.py --device cuda --seconds 60 --json pace.json \\
        copy:kf-rtrl:128:16 copy:rtrl:128:16 copy:ok-16-official:128:16 ptb:kf-rtrl:256:32
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from kfrtrl_lab.measure import step_cost, sync
from kfrtrl_lab.runs import git_commit
from kfrtrl_lab.stepper import Stepper
from kfrtrl_lab.train import Progress, RunConfig, build


def pace(task: str, method: str, hidden: int, batch: int, device: str, seconds: float, eager: bool,
         data_dir: str | None, seed: int = 0, breakdown: bool = False) -> dict:
    config = RunConfig(task=task, method=method, hidden=hidden, batch=batch, device=device, seed=seed, clip=16.0,
                       data_dir=data_dir, eager=eager)
    torch.set_flush_denormal(True)
    model, opt, est, task_ = build(config)
    progress = Progress(loss_sum=torch.zeros((), dtype=torch.float64, device=est.device))
    stepper = Stepper(config, model, opt, est, task_, progress, eager=eager)
    chunk = 64
    stepper.run(2 * chunk)  # warm-up (and, on a GPU, the graph's capture)
    sync(device)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        stepper.run(chunk)
        steps += chunk
    sync(device)
    elapsed = time.perf_counter() - start
    row = {"task": task, "method": method, "hidden": hidden, "batch": batch, "device": device, "mode": stepper.mode,
           "steps": steps, "seconds": round(elapsed, 2), "steps_per_s": round(steps / elapsed, 1),
           "ms_per_step": 1e3 * elapsed / steps, "loss_bits": float(progress.loss_sum) / max(progress.loss_count, 1)}
    if breakdown:  # the trainer's own parts, each timed alone (eager calls; after the paced run)
        weight = model.cell.weight
        parts = {"task_data": task_.next,
                 "clip": lambda: torch.nn.utils.clip_grad_norm_([weight], config.clip),
                 "adam": lambda: (opt.step(), opt.zero_grad(set_to_none=False))}
        row["breakdown_ms"] = {name: _time_call(call, device) for name, call in parts.items()}
    return row


def _time_call(call, device, calls: int = 300) -> float:
    """Median over 5 blocks of ``calls`` calls, ms per call."""
    blocks = []
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            call()
        sync(device)
        blocks.append(1e3 * (time.perf_counter() - start) / calls)
    return sorted(blocks[1:])[2]  # the first block warms up


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="task:method:hidden:batch, e.g. copy:kf-rtrl:128:16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--eager", action="store_true", help="time the eager (checked) path instead")
    p.add_argument("--compare", action="store_true", help="also time the estimator's own step (ratio)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the trainer's parts alone: the task's data, clipping, Adam step + zero_grad")
    p.add_argument("--data-dir", default=None, help="ptb data folder")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = {"commit": git_commit(), "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor(),
           "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "rows": []}
    print(f"commit {out['commit']}, torch {torch.__version__}, device {out['device_name']}, {out['threads']} threads")
    for spec in args.runs:
        task, method, hidden, batch = spec.split(":")
        row = pace(task, method, int(hidden), int(batch), args.device, args.seconds, args.eager, args.data_dir,
                   breakdown=args.breakdown)
        if args.compare:
            vocab = 4 if task == "copy" else 50
            own = step_cost(method, int(hidden), batch_size=int(batch), vocab=vocab, device=args.device)
            row["estimator_ms_per_step"] = own["ms_per_step"]
            row["trainer_over_estimator"] = row["ms_per_step"] / own["ms_per_step"]
        out["rows"].append(row)
        ratio = f", trainer/estimator {row['trainer_over_estimator']:.2f}" if args.compare else ""
        parts = "".join(f", {k} {v:.3f}" for k, v in row.get("breakdown_ms", {}).items())
        print(f"{spec:>28} ({row['mode']}): {row['steps_per_s']:9.1f} steps/s, {row['ms_per_step']:.3f} ms/step{ratio}"
              + (f"; alone (ms): {parts[2:]}" if parts else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
