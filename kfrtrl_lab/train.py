"""One online trainer for every estimator (algorithms.md, sections 6–7).

Each time step: the task gives (x_t, y_t, lanes starting a sequence); those lanes are reset;
the estimator steps and fills ``.grad``; every ``update_every`` steps (and whenever a
truncated-BPTT window closes) the recurrent weight's gradient is clipped to norm ``clip`` and
Adam steps. A run lives in one folder:

    run.json          the configuration, command, git commit, machine
    metrics.jsonl     one JSON line every ``log_every`` steps (and at every evaluation)
    checkpoint.pt     written atomically every few minutes, at exit and on Ctrl-C
    summary.json      small summary with the curves, for ``results/``

``resume=True`` continues from the checkpoint and reproduces the uninterrupted run bit for bit
(on CPU). A NaN/Inf stops the run with a clear message and keeps the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .cells import RHN
from .copy_task import VOCAB as COPY_VOCAB
from .copy_task import CopyTask
from .estimator import NonFiniteError
from .methods import make_estimator
from .model import RecurrentModel

TASKS = ("copy", "ptb")
#: Settings a resumed run may change: they do not change what is computed (``threads`` may
#: change float rounding, so bit-exact resumption needs the same thread count).
EXECUTION_SETTINGS = ("steps", "threads", "checkpoint_minutes", "data_dir", "device", "eval_batch")


@dataclass
class RunConfig:
    task: str
    method: str = "kf-rtrl"
    hidden: int = 128
    batch: int = 16
    lr: float = 10**-3.5
    steps: int = 100_000
    update_every: int = 1
    clip: float | None = 1.0  # norm bound on the recurrent weight's gradient; None: no clipping
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    reset_every: int | None = 100  # ptb: reset state and influence every N characters
    eval_every: int = 10_000  # ptb: validation BPC every N steps
    eval_batch: int = 32
    log_every: int = 100
    checkpoint_minutes: float = 5.0
    data_dir: str | None = None  # ptb: folder with ptb.char.*.txt (else env var / cache / download)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("hidden", "batch", "steps", "update_every", "log_every", "eval_every", "eval_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.clip is not None and not (self.clip > 0):
            raise ValueError(f"clip must be positive or None, got {self.clip!r}")
        if self.reset_every is not None and self.reset_every < 1:
            raise ValueError(f"reset_every must be a positive int or None, got {self.reset_every!r}")


class Diverged(RuntimeError):
    """The run produced a NaN/Inf; the last good checkpoint was kept."""


def build(config: RunConfig):
    """(model, optimiser, estimator, task) for a configuration, all seeded from ``config.seed``."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    if config.task == "copy":
        task = CopyTask(config.batch, seed=config.seed, device=device)
        vocab = COPY_VOCAB
    else:
        from .ptb import PTBTask

        task = PTBTask(config.batch, reset_every=config.reset_every, data_dir=config.data_dir, device=device)
        vocab = task.vocab_size
    model = RecurrentModel(RHN(vocab, config.hidden), vocab).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    est = make_estimator(config.method, model, config.batch, seed=config.seed)
    return model, opt, est, task


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):  # python -m kfrtrl_lab ...
        argv[0] = "python -m kfrtrl_lab"
    return " ".join(argv)


def _read_metrics(path: Path, upto_step: int | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if upto_step is None or r["step"] <= upto_step]


class _StopFlag:
    """First Ctrl-C (or SIGTERM) asks the loop to stop at the next point where it can save;
    a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(config: RunConfig, out: str | os.PathLike, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict:
    """Run (or continue) a training run in folder ``out``; returns the summary.

    ``stop_after`` ends the run early after that many total steps as if interrupted (for tests
    and for splitting a long run); the checkpoint allows ``resume`` later.
    """
    out = Path(out)
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model, opt, est, task = build(config)
    start, since_update, elapsed, acc = 0, 0, 0.0, [0.0, 0]
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        state = torch.load(ckpt_path, map_location=config.device, weights_only=False)
        saved = RunConfig(**state["config"])
        changed = {k: (v, getattr(config, k)) for k, v in dataclasses.asdict(saved).items()
                   if k not in EXECUTION_SETTINGS and v != getattr(config, k)}
        if changed:
            raise ValueError(f"--resume: the configuration differs from the checkpoint's "
                             f"(setting: (saved, given)): {changed}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        est.load_state_dict(state["estimator"])
        task.load_state_dict(state["task"])
        start, since_update, elapsed, acc = state["step"], state["since_update"], state["elapsed"], state["acc"]
        # lines logged after the checkpoint belong to steps that will be run again
        rows = _read_metrics(metrics_path, upto_step=start)
        _atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), metrics_path)
    else:
        if ckpt_path.exists():
            raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) or choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")
    run_info = {
        "config": dataclasses.asdict(config), "command": _command_line(), "git_commit": _git_commit(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "device_name": torch.cuda.get_device_name() if config.device.startswith("cuda") else "cpu",
    }
    _atomic_write_text(json.dumps(run_info, indent=1), out / "run.json")

    step = start

    def save():
        _atomic_save({"config": dataclasses.asdict(config), "model": model.state_dict(), "optimizer": opt.state_dict(),
                      "estimator": est.state_dict(), "task": task.state_dict(), "step": step,
                      "since_update": since_update, "elapsed": elapsed + (time.perf_counter() - t0),
                      "acc": list(acc)}, ckpt_path)

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, initial=start, desc=f"{config.task} {config.method}", unit="step",
                       dynamic_ncols=True, mininterval=1.0)
        except ImportError:
            bar = None
    weight = model.cell.weight
    t0 = time.perf_counter()
    last_save, last_log = t0, (t0, start)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    status = "finished"
    with _StopFlag() as stop, metrics_path.open("a") as log:
        while step < config.steps:
            x, y, starts = task.next()
            if starts.any():
                est.reset(starts)
            try:
                losses = est.step(x, y)
                loss_bits = task.observe(losses)
                if not math.isfinite(loss_bits):
                    raise NonFiniteError(f"non-finite loss at step {est.steps}")
            except NonFiniteError as err:
                status = "diverged"
                msg = (f"run diverged at step {step + 1}: {err}. The last good checkpoint "
                       f"({ckpt_path if ckpt_path.exists() else 'none yet'}) was kept.")
                log.write(json.dumps({"step": step + 1, "diverged": str(err)}) + "\n")
                break
            since_update += 1
            if est.gradient_ready and since_update >= config.update_every:
                if config.clip is not None:
                    torch.nn.utils.clip_grad_norm_([weight], config.clip)
                opt.step()
                opt.zero_grad(set_to_none=False)
                since_update = 0
            step += 1
            acc[0] += loss_bits
            acc[1] += 1
            now = time.perf_counter()
            evaluate = config.task == "ptb" and (step % config.eval_every == 0 or step == config.steps)
            if step % config.log_every == 0 or step == config.steps or evaluate:
                rate = (step - last_log[1]) / max(now - last_log[0], 1e-9)
                row = {"step": step, "loss_bits": acc[0] / max(acc[1], 1), **task.metrics(),
                       "steps_per_s": round(rate, 2), "wall_s": round(elapsed + now - t0, 1)}
                acc = [0.0, 0]
                if evaluate:
                    row.update(task.evaluate(model, "valid", batch_size=config.eval_batch))
                last_log = (time.perf_counter(), step)
                log.write(json.dumps(row) + "\n")
                log.flush()
                if bar is not None:
                    bar.set_postfix({k: v for k, v in row.items() if k not in ("step", "wall_s")}, refresh=False)
            if bar is not None:
                bar.update(1)
            # A windowed BPTT can only be saved between windows, so stops wait for one.
            if est.resumable:
                if stop.requested or step >= end:
                    status = "interrupted" if stop.requested else status
                    break
                if now - last_save > 60 * config.checkpoint_minutes:
                    save()
                    last_save = now
        if status != "diverged":
            if not est.resumable:  # finished inside a window: write its gradient, keep the state
                est.flush()
            save()
    if bar is not None:
        bar.close()
    if status == "finished" and step < config.steps:
        status = "stopped"
    summary = write_summary(out, status=status, wall_s=elapsed + time.perf_counter() - t0, steps=step)
    if status == "diverged":
        raise Diverged(msg)
    return summary


def load_model(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(model, config, step) from a run's checkpoint; the sizes come from the saved weights."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    config = RunConfig(**state["config"])
    weights = state["model"]
    n = config.hidden
    m, k = weights["cell.weight"].shape[0] - n - 1, weights["readout"].shape[1]
    model = RecurrentModel(RHN(m, n), k).to(device)
    model.load_state_dict(weights)
    return model, config, state["step"]


def train_model(config: RunConfig, out: str | os.PathLike | None = None):
    """Train (no progress bar) and return (trained model, summary); ``out`` None: a temporary folder."""
    if out is not None:
        summary = train(config, out, progress=False)
        return load_model(Path(out) / "checkpoint.pt", config.device)[0], summary
    with tempfile.TemporaryDirectory() as tmp:
        return train_model(config, tmp)


def write_summary(out: Path, status: str, wall_s: float, steps: int, max_points: int = 400) -> dict:
    """summary.json: run info plus the curves, thinned to at most ``max_points`` rows
    (evaluation rows are always kept)."""
    info = json.loads((out / "run.json").read_text())
    rows = _read_metrics(out / "metrics.jsonl")
    stride = max(1, math.ceil(len(rows) / max_points))
    curve = [r for i, r in enumerate(rows) if i % stride == 0 or "valid_bpc" in r or i == len(rows) - 1]
    rates = [r["steps_per_s"] for r in rows if "steps_per_s" in r]
    summary = {**info, "status": status, "steps_done": steps, "wall_s": round(wall_s, 1),
               "median_steps_per_s": sorted(rates)[len(rates) // 2] if rates else None, "curve": curve}
    _atomic_write_text(json.dumps(summary, indent=1), out / "summary.json")
    return summary
