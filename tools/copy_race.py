"""Notebook 8's race on the copy task: each contestant of experiments.RACE_CONTESTANTS, each seed,
one run under a budget of CPU seconds (time.process_time(): on this shared machine a run's wall
time counts other processes, its CPU time does not), one process at a time, one thread.

    python tools/copy_race.py --seeds 0 1 2 3 4 --cpu-seconds 60      # writes results/copy_race/*.json

Each JSON holds T_max against steps and against CPU seconds, the settings, the commit, the threads
and the machine.
"""

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from kfrtrl_lab.notebook.experiments import RACE_CONTESTANTS, copy_race

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contestants", nargs="+", default=list(RACE_CONTESTANTS), choices=list(RACE_CONTESTANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--cpu-seconds", type=float, default=60.0)
    p.add_argument("--out", default=str(ROOT / "results" / "copy_race"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    code = commit()  # the code this process loaded, whatever is committed while it runs
    for seed in args.seeds:  # seeds outermost: a cut-short race still has every contestant's first seeds
        for name in args.contestants:
            result = copy_race(name, seed=seed, cpu_seconds=args.cpu_seconds)
            result.update(commit=code, machine=machine())
            (out / f"{name}-s{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
            print(f"{name} seed {seed}: T_max {result['t_max']} after {result['steps']} steps, "
                  f"{result['cpu_s']:.1f} CPU s", flush=True)


if __name__ == "__main__":
    main()
