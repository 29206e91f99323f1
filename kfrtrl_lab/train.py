"""One online trainer for every estimator, cell and task (algorithms.md, sections 6–7).

Each time step: the task gives (x_t, y_t, lanes starting a sequence); those lanes are reset; the
estimator steps and fills ``.grad``; every ``update_every`` steps (and whenever a truncated-BPTT
window closes, or — full BPTT — the sequences end) the recurrent weight's gradient is clipped to
norm ``clip`` and Adam steps. The run lives in a folder (:mod:`kfrtrl_lab.runs`); ``resume=True``
continues from its checkpoint and reproduces the uninterrupted run bit for bit (on CPU). A NaN/Inf,
or a loss that stays above the task's bound (:attr:`Task.divergence_bits`), stops the run as
diverged with a clear message and keeps the last checkpoint. The process owns its run folder while
it runs (:class:`~kfrtrl_lab.runs.RunLock`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cells import CELLS, LRU, check_cell_name, is_diagonal, make_cell
from .estimators import NonFiniteError, load_plugin, make_estimator, parse_method
from .estimators.base import diagonal_methods
from .model import RecurrentModel
from .stack import LayerwiseLearner, StackedModel, make_stack
from .runs import RunFolder, RunInfo, RunLock
from .stepper import GRAPH_STEPS, Stepper
from .tasks import TASKS, check_task_name
from .tasks.base import DIVERGENCE_FACTOR, EvaluationStopped


def _opt(help: str, **kw):
    return field(metadata={"help": help}, **kw)


@dataclass
class RunConfig:
    """A run's settings; the command line is built from these fields (defaults and help in one place)."""

    task: str = _opt("the task: copy, copy-pad, ptb")
    method: str = _opt("gradient estimator (python -m kfrtrl_lab methods lists them)", default="kf-rtrl")
    cell: str = _opt("recurrent cell: rhn, tanh, lstm, lru (the LRU: methods rtrl, bptt, tbptt-<k>)", default="rhn")
    hidden: int | None = _opt("hidden units n (default: the task's, 128 copy, 256 ptb)", default=None)
    batch: int | None = _opt("lanes B (default: the task's, 16 copy, 32 ptb)", default=None)
    lr: float = _opt("Adam learning rate", default=10**-3.5)
    steps: int = _opt("total time steps (also the target of --resume)", default=100_000)
    update_every: int = _opt("an Adam step every N time steps", default=1)
    clip: float | None = _opt("clip the recurrent weight's gradient (the LRU's: ν, θ, γ_log, B together) to this norm "
                              "('none': no clipping)", default=1.0)
    seed: int = _opt("fixes the whole run: weights, data, random signs", default=0)
    device: str = _opt("cpu, cuda, cuda:1, ...", default="cpu")
    threads: int | None = _opt("torch CPU threads (default: torch's choice)", default=None)
    reset_every: int | None = _opt("ptb: reset state and influence every N characters ('none')", default=100)
    eval_every: int = _opt("tasks with held-out data (ptb): validation every N steps", default=10_000)
    eval_batch: int = _opt("streams for the validation pass", default=32)
    log_every: int = _opt("a metrics line every N steps", default=100)
    checkpoint_minutes: float = _opt("write the checkpoint every N minutes (also at the end and on Ctrl-C)",
                                     default=5.0)
    data_dir: str | None = _opt("ptb: folder with ptb.char.{train,valid,test}.txt", default=None)
    eager: bool = _opt("check every step at once instead of running chunks of steps without reading back "
                       "(the fast path, and CUDA graphs on a GPU); same results, slower", default=False)
    stream_layout: str = _opt("ptb: 'contiguous' (B blocks of the text, resets together) or 'staggered' (the "
                              "official code's: lanes at evenly spaced offsets, each reset when its position in "
                              "the text is a multiple of --reset-every)", default="contiguous")
    tokens: str = _opt("ptb: 'plain' (one <eos> per line) or 'official' (the OK code's '_ <eos> _', 2 more "
                       "symbols a line; about 0.03 lower BPC for the same model)", default="plain")
    pattern_length: int = _opt("copy-pad: symbols in a pattern (P)", default=20)
    pattern_bits: int = _opt("copy-pad: bits of a symbol (2^bits classes)", default=7)
    pad_length: int = _opt("copy-pad: blank steps between the pattern and the stop token (the official code's "
                           "effective 7, not the 5 it passes)", default=7)
    plugin: str | None = _opt("a .py file that registers the method with kl.register_method (as for certify)",
                              default=None)
    layers: int = _opt("recurrent layers L: 1 is the single-layer model; L >= 2 a stack (encoder, L blocks of "
                       "cell -> GLU -> residual, readout) learned layer-wise online, --method in every layer",
                       default=1)
    width: int | None = _opt("a stack's residual width d (--layers >= 2; default: --hidden)", default=None)
    lru_r_min: float = _opt("lru: |λ| of the eigenvalues starts uniform on the ring [r_min, r_max] (the LRU paper's "
                            "long memory: 0.9 to 0.999)", default=0.0)
    lru_r_max: float = _opt("lru: the ring's outer radius (see --lru-r-min)", default=1.0)
    lru_max_phase: float = _opt("lru: the eigenvalues' phases start uniform on [0, max_phase] (a small range, "
                                "e.g. 0.314 ≈ π/10, starts every unit rotating slowly)", default=6.28)

    def __post_init__(self):
        # names first: a typo must not cost a data download
        check_task_name(self.task)
        check_cell_name(self.cell)
        if self.plugin is not None:  # before the method's name is looked up: the plugin registers it
            self.plugin = str(Path(self.plugin).expanduser().resolve())
            load_plugin(self.plugin)
        method_cls = parse_method(self.method)[0]
        if getattr(CELLS[self.cell], "diagonal", False) and not method_cls.supports_diagonal:
            raise ValueError(f"--method {self.method} needs a Kronecker-class cell (rhn, tanh, lstm); with --cell "
                             f"{self.cell} use {', '.join(diagonal_methods())}")
        task_cls = TASKS[self.task]
        _check_task_options(self, task_cls)
        for name in ("hidden", "batch"):
            if getattr(self, name) is None:
                setattr(self, name, task_cls.defaults[name])
        for name in ("hidden", "batch", "steps", "update_every", "log_every", "eval_every", "eval_batch", "layers"):
            _positive_int(name, getattr(self, name))
        if self.layers == 1 and self.width is not None:
            raise ValueError(f"--width is the residual width of a stack (--layers >= 2); the single-layer model "
                             f"has none (got --width {self.width} with --layers 1)")
        if self.layers > 1 and (method_cls.flushes_at_sequence_end or self.method.startswith("tbptt")):
            raise ValueError(f"--layers {self.layers} learns the stack layer-wise online, which needs an influence "
                             f"estimate in every layer; --method {self.method} backpropagates through time")
        if is_diagonal(CELLS[self.cell]):
            LRU.check_init(**cell_options(self))
        else:
            for f in dataclasses.fields(RunConfig):
                if f.name in LRU_OPTIONS and getattr(self, f.name) != f.default:
                    raise ValueError(f"--{f.name.replace('_', '-')} sets the LRU's initial eigenvalues; --cell "
                                     f"{self.cell} does not read it (got {getattr(self, f.name)!r})")
        for name in ("threads", "reset_every", "width"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            # torch's generators take a 64-bit seed; beyond it the error would come from deep inside torch
            raise ValueError(f"seed must be an int in [0, 2**63), got {self.seed!r}")
        cores = os.cpu_count() or 1
        if self.threads is not None and self.threads > cores:
            # far more threads than cores only slows a run down, and huge counts crash OpenMP
            raise ValueError(f"threads must be at most {cores} (the CPU cores here), got {self.threads}")
        if self.update_every > self.steps and not method_cls.flushes_at_sequence_end:
            raise ValueError(f"update_every ({self.update_every}) is larger than steps ({self.steps}): the run "
                             f"would end before its first Adam step")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.clip is not None and not (self.clip > 0):
            raise ValueError(f"clip must be positive or None, got {self.clip!r}")
        if not (self.checkpoint_minutes > 0):
            raise ValueError(f"checkpoint_minutes must be positive, got {self.checkpoint_minutes!r}")
        check_device(self.device)
        task_cls.check_config(self, aligned=method_cls.flushes_at_sequence_end)


#: RunConfig fields that go to the LRU cell (as its r_min, r_max, max_phase)
LRU_OPTIONS = ("lru_r_min", "lru_r_max", "lru_max_phase")


def cell_options(config: "RunConfig") -> dict:
    """The keyword arguments ``config`` gives its cell: the LRU's initial eigenvalues, nothing for the others."""
    if not is_diagonal(CELLS[config.cell]):
        return {}
    return {name.removeprefix("lru_"): getattr(config, name) for name in LRU_OPTIONS}


#: Settings a resumed run may change: they do not change what is computed (``threads`` may
#: change float rounding, so bit-exact resumption needs the same thread count; ``plugin`` is where
#: the method's file is now).
EXECUTION_SETTINGS = ("steps", "threads", "checkpoint_minutes", "data_dir", "device", "eval_batch", "eager", "plugin")


def _positive_int(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def _check_task_options(config: "RunConfig", task_cls) -> None:
    """Refuse a setting that only another task reads (it would be recorded in the run, and mean nothing).
    Where files are and how a pass is batched (``data_dir``, ``eval_batch``: execution settings) are
    let through: scripts pass one --data-dir to runs of every task, and they change no result."""
    own = set(task_cls.options)
    for other, cls in TASKS.items():
        for name in set(cls.options) - own - set(EXECUTION_SETTINGS):
            f = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
            if getattr(config, name) != f.default:
                raise ValueError(f"--{name.replace('_', '-')} is an option of the {other} task; the {config.task} "
                                 f"task does not use it (got {getattr(config, name)!r})")


def check_device(device: str) -> None:
    """ValueError unless torch can use ``device`` here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be cpu, cuda or cuda:<index>, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu, "
                             f"or install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) here")
    elif dev.type != "cpu":
        raise ValueError(f"device must be cpu, cuda or cuda:<index>, got {device!r}")


class Diverged(RuntimeError):
    """The run produced a NaN/Inf or its loss stayed above the task's bound; the last checkpoint was kept."""


@dataclass
class Failure:
    """Why and where a run diverged."""

    step: int
    message: str


#: a run has diverged when its logged loss is above the task's bound on this many consecutive
#: metrics lines (one line may be a spike the run recovers from; several are not)
DIVERGED_ROWS = 3
#: the longest a chunk of steps runs before the loop looks at Ctrl-C again (chunks are sized from the
#: measured time per step, so a stop is answered within about this long at any model size)
CHUNK_SECONDS = 1.0


def estimate_memory(config: RunConfig) -> dict:
    """Bytes one run of ``config`` holds (see :func:`kfrtrl_lab.measure.run_memory`), laid out on
    torch's meta device: nothing is allocated."""
    from .measure import run_memory

    task_cls = TASKS[config.task]
    return run_memory(config.method, config.cell, *task_cls.config_sizes(config), config.hidden,
                      config.batch, task_bytes=task_cls.buffer_bytes(config), layers=config.layers,
                      width=config.width, device=config.device)


def available_memory(device: str) -> int | None:
    """Bytes free for a run on ``device`` (a GPU's free memory; on the CPU, Linux's MemAvailable);
    None when it cannot be told."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: RunConfig, runs: int = 1) -> None:
    """ValueError naming the options to lower when ``runs`` runs of ``config`` (seeds in one process)
    would need more memory than the device has free: refused before anything is allocated."""
    need = estimate_memory(config)
    free = available_memory(config.device)
    if free is None or runs * need["total"] <= free:
        return
    def gb(b: float) -> str:
        return f"{b / 2**30:.3g} GB"

    parts = ", ".join(f"{k.replace('_', ' ')} {gb(runs * v)}" for k, v in need.items() if k != "total")
    seeds = f" for {runs} seeds" if runs > 1 else ""
    params = parse_method(config.method)[1]
    param = f", the {'/'.join(params)} of --method {config.method}" if params else ""
    fewer = ", or use fewer --seeds" if runs > 1 else ""
    raise ValueError(f"the run needs about {gb(runs * need['total'])}{seeds} ({parts}) but {config.device} has "
                     f"{gb(free)} free: lower --hidden ({config.hidden}) or --batch ({config.batch}){param}{fewer}")


def build(config: RunConfig):
    """(model, optimiser, estimator, task) for a configuration, all seeded from ``config.seed``."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    method_cls = parse_method(config.method)[0]
    task = TASKS[config.task].from_config(config, device, aligned=method_cls.flushes_at_sequence_end)
    model = build_model(config, task.input_size, task.output_size).to(device)
    # GPU: capturable (Adam's step count stays on the device, so a CUDA graph can replay the step);
    # CPU: fused (one kernel for all of Adam's arithmetic: the step of a small model is op-bound)
    gpu = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), capturable=gpu, fused=not gpu)
    if config.layers == 1:
        est = make_estimator(config.method, model, config.batch, seed=config.seed)
    else:
        est = LayerwiseLearner(model, config.method, config.batch, seed=config.seed)
    return model, opt, est, task


def build_model(config: RunConfig, input_size: int, output_size: int) -> RecurrentModel | StackedModel:
    """The single-layer model (``layers`` 1), or a stack of ``layers`` cells of ``hidden`` units at
    residual width ``width`` (default ``hidden``)."""
    if config.layers == 1:
        return RecurrentModel(make_cell(config.cell, input_size, config.hidden, **cell_options(config)), output_size)
    width = config.hidden if config.width is None else config.width
    return make_stack(config.cell, input_size, output_size, config.layers, width, config.hidden,
                      cell_options=cell_options(config))


@dataclass
class Progress:
    """Where a run is: saved in its checkpoint."""

    step: int = 0
    since_update: int = 0
    elapsed: float = 0.0  # wall seconds of the earlier sessions of this run
    loss_sum: torch.Tensor | None = None  # bits since the last metrics line, summed on the device
    loss_count: int = 0
    logged: int = 0  # the step of the last metrics line
    high_loss_rows: int = 0  # consecutive metrics lines with the loss above the task's bound


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
          stop_after: int | None = None, owner: str | None = None) -> dict:
    """Run (or continue) a training run in folder ``out``; returns the summary (a dict).

    ``stop_after`` ends the run early after that many total steps as if interrupted (for tests
    and for splitting a long run); the checkpoint allows ``resume`` later. ``owner``: the run's
    owner id for its folder's lock (:class:`~kfrtrl_lab.runs.RunLock`; default: this process).
    """
    _check_stop_after(stop_after)
    check_memory(config)
    (summary,) = _drive(_open_runs([(config, RunFolder(out), owner)], resume, stop_after), progress)
    return summary


def _check_stop_after(stop_after) -> None:
    if stop_after is not None:
        _positive_int("stop_after", stop_after)


def _open_runs(runs, resume: bool, stop_after) -> list["Run"]:
    """A Run for each (config, folder, owner), each folder locked; on a failure the locks taken are given back."""
    opened = []
    try:
        for config, folder, owner in runs:
            opened.append(Run(config, folder, resume, stop_after, owner))
    except BaseException:
        for run in opened:
            run.lock.release()
        raise
    return opened


def train_seeds(config: RunConfig, seeds, out: str | os.PathLike, resume: bool = False, progress: bool = True,
                stop_after: int | None = None, owner: str | None = None) -> list[dict]:
    """Several seeds of one configuration in one process, each a run of its own in ``out/seed-<s>``
    (its own folder, checkpoint and summary), advanced chunk by chunk in turn: on a GPU each replays
    its own CUDA graph, so the seeds share the process instead of queueing for the device."""
    _check_stop_after(stop_after)
    RunFolder(out)  # refuses an empty --out
    folders = [RunFolder(Path(out) / f"seed-{seed}") for seed in seeds]
    if not resume:  # refuse before any seed's folder is created
        for folder in folders:
            folder.check_new()
    check_memory(config, runs=len(seeds))
    runs = [(dataclasses.replace(config, seed=seed), folder, None if owner is None else f"{owner}/seed-{seed}")
            for seed, folder in zip(seeds, folders)]
    return _drive(_open_runs(runs, resume, stop_after), progress)


class Run:
    """One run in its folder: the model, optimiser, estimator, task and stepper of a configuration,
    the run's progress, and the decisions of its loop (chunk lengths, log lines, checkpoints, stop).
    The run holds its folder's lock from here until :meth:`close`."""

    def __init__(self, config: RunConfig, folder: RunFolder, resume: bool, stop_after: int | None,
                 owner: str | None = None):
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        # Influences that decay over long sequences reach float32's subnormal range, where a CPU
        # computes up to 100x slower; values below 1e-38 change nothing here, so they are flushed to zero.
        torch.set_flush_denormal(True)
        self.config, self.folder = config, folder
        lock = RunLock(folder.path, owner)
        # the folder is taken before anything is built or read: a second process into the same
        # --out stops here, and a new run refuses a folder with files before it writes one
        self.lock = folder.open(lock) if resume else folder.create(lock)
        try:
            self.model, self.opt, self.est, self.task = build(config)  # e.g. PTB's data load may fail here
            self.p = (_restore(self.folder, config, self.model, self.opt, self.est, self.task) if resume
                      else _start(self.folder, config, self.est.device))
        except BaseException:
            if resume:
                self.lock.release()
            else:
                self.folder.give_up(self.lock)
            raise
        self.stepper = Stepper(config, self.model, self.opt, self.est, self.task, self.p, eager=config.eager)
        self.end = config.steps if stop_after is None else min(config.steps, stop_after)
        # Each run keeps its own clock (time inside its own chunks), so that steps/s and wall time
        # stay the run's own when several seeds share the process.
        self.busy = 0.0
        self.last_save = time.perf_counter()
        self.last_log = (self.busy, self.p.step)
        self.status, self.failure, self.last_row = "finished", None, {}
        self.chunk = 1  # steps in the next chunk at most: grows to CHUNK_SECONDS' worth once a step is timed
        self.log = self.folder.metrics.open("a")

    def step(self, stop) -> bool:
        """Run one chunk — to the next line of the log, evaluation or stop, and at most CHUNK_SECONDS
        long; past a stop, step by step until the run can be saved exactly (a BPTT window closed,
        Adam's step taken) — then log, checkpoint or stop. ``stop.requested`` is read as the run goes
        (an evaluation looks at it too). Returns True when the run is over."""
        p, config, task = self.p, self.config, self.task
        if p.logged < p.step and self._row_due():
            # a row owed for this step: its evaluation was cut short by a stop (and the run resumed)
            if not self._log(stop):
                return self._interrupted()
            if self.failure is not None:
                return True
        if p.step >= config.steps or (self.stepper.savable and (stop.requested or p.step >= self.end)):
            # over before this chunk (a finished run resumed, a stop at or before the saved step)
            self.status = "interrupted" if stop.requested and p.step < self.end else self.status
            return True
        wanted = stop.requested or p.step >= self.end
        steps = 1 if wanted else min(self.chunk, _next_boundary(p.step, config, task, self.end) - p.step)
        started = time.perf_counter()
        try:
            self.stepper.run(steps)
        except NonFiniteError as err:
            self.status, self.failure = "diverged", Failure(err.step, str(err).rstrip("."))
            self.log.write(_json({"step": err.step, "diverged": str(err)}))
            return True
        finally:
            took = time.perf_counter() - started
            self.busy += took
        if steps == self.chunk:  # a full chunk timed: size the next one (at most doubling, the first may be slow)
            fit = int(CHUNK_SECONDS * steps / max(took, 1e-9))
            self.chunk = max(1, min(2 * self.chunk, fit))
            if self.stepper.graphs and self.chunk > GRAPH_STEPS:  # whole graphs, none split
                self.chunk -= self.chunk % GRAPH_STEPS
        if self._row_due():
            if not self._log(stop):
                return self._interrupted()
            if self.failure is not None:
                return True
        if self.stepper.savable:  # stops and checkpoints wait for a point that resumes exactly
            if stop.requested or p.step >= self.end:
                self.status = "interrupted" if stop.requested else self.status
                return True
            if time.perf_counter() - self.last_save > 60 * config.checkpoint_minutes:
                self.save()
                self.last_save = time.perf_counter()
        return p.step >= config.steps

    def _row_due(self) -> bool:
        p, config = self.p, self.config
        return p.step > 0 and (p.step % config.log_every == 0 or p.step == config.steps or self._evaluate_due())

    def _evaluate_due(self) -> bool:
        p, config = self.p, self.config
        return self.task.evaluates and (p.step % config.eval_every == 0 or p.step == config.steps)

    def _interrupted(self) -> bool:
        self.status = "interrupted"
        return True

    def _log(self, stop) -> bool:
        """The metrics row of this step (with the evaluation when one is due), and the check of the
        loss against the task's bound. False when a stop cut the evaluation short: nothing is
        logged then, and the row stays owed (``p.logged``) to the run that resumes here."""
        p, config, task = self.p, self.config, self.task
        scores = {}
        if self._evaluate_due():
            # a stop may cut the evaluation short only where the run can be saved exactly
            check = (lambda: stop.requested) if self.stepper.savable else None
            try:
                scores = {**task.evaluate(self.model, "valid", batch_size=config.eval_batch, stop=check),
                          "evaluated": True}
            except EvaluationStopped:
                return False
        row = {**_metrics_row(p, task, self.last_log, self.busy, self.wall_s), **scores}
        self.last_log, self.last_row, p.logged = (self.busy, p.step), row, p.step
        self.log.write(_json(row))
        self.log.flush()
        bound = task.divergence_bits
        p.high_loss_rows = p.high_loss_rows + 1 if row["loss_bits"] > bound else 0
        if p.high_loss_rows >= DIVERGED_ROWS:
            message = (f"the loss stayed above {bound:.3g} bits ({task.name}: {DIVERGENCE_FACTOR} times an untrained "
                       f"model's) for "
                       f"{DIVERGED_ROWS} metrics lines (last: {row['loss_bits']:.3g} bits)")
            self.status, self.failure = "diverged", Failure(p.step, message)
            self.log.write(_json({"step": p.step, "diverged": message}))
        return True

    @property
    def wall_s(self) -> float:
        """Seconds spent in this run's own chunks, over all its sessions."""
        return self.p.elapsed + self.busy

    def save(self) -> None:
        self.folder.save_checkpoint({"config": dataclasses.asdict(self.config), "model": self.model.state_dict(),
                                     "optimizer": self.opt.state_dict(), "estimator": self.est.state_dict(),
                                     "task": self.task.state_dict(), **dataclasses.asdict(self.p),
                                     "elapsed": self.wall_s})

    def close(self) -> dict:
        """The last checkpoint (not for a diverged run: the last one before stays), the summary, and
        the folder's lock given back."""
        try:
            self.log.close()
            if self.status != "diverged":
                if not self.est.resumable:  # finished inside a window: write its gradient, keep the state
                    self.est.flush()
                self.save()
            if self.status == "finished" and self.p.step < self.config.steps:
                self.status = "stopped"
            extras = self.task.finish(self.model) if self.status == "finished" else {}
            # a diverged run did its steps up to the divergence, not to the end of the chunk it was found in
            steps = self.failure.step if self.failure is not None else self.p.step
            return self.folder.write_summary(self.status, wall_s=self.wall_s, steps=steps, extras=extras)
        finally:
            self.lock.release()


def _drive(runs: list[Run], progress: bool) -> list[dict]:
    """Advance the runs chunk by chunk in turn until each is over; their summaries. A diverged run
    raises Diverged (after every run has written its summary)."""
    first = runs[0]
    summaries = {}
    # Each run is closed (checkpoint, summary) as soon as it is over, with the stop handler still
    # installed: a second SIGTERM while saving cannot kill the process between two runs' saves.
    try:
        with _StopFlag() as stop, _bar(first.config, first.p.step, progress, first.stepper.mode) as bar:
            active = list(runs)
            while active:
                for run in list(active):
                    before = run.p.step
                    over = run.step(stop)
                    if run is first:
                        bar.update(run.p.step - before)
                        bar.set_postfix({k: v for k, v in run.last_row.items()
                                         if k not in ("step", "wall_s", "evaluated")}, refresh=False)
                    if over:
                        active.remove(run)
                        summaries[id(run)] = run.close()
    finally:  # an error or a second Ctrl-C: the folders are given back all the same
        for run in runs:
            run.lock.release()
    failed = [run for run in runs if run.failure is not None]
    if failed:
        lines = []
        for run in failed:
            where = run.folder.checkpoint if run.folder.checkpoint.exists() else "none yet"
            seed = f"seed {run.config.seed}: " if len(runs) > 1 else ""
            lines.append(f"{seed}run diverged at step {run.failure.step}: {run.failure.message}. The last "
                         f"checkpoint ({where}) was kept.")
        lines.append("--resume keeps a run's settings: to train with a lower --lr or a --clip, start a new run "
                     "with another --out.")
        raise Diverged(" ".join(lines))
    return [summaries[id(run)] for run in runs]


def _next_boundary(step: int, config: RunConfig, task, end: int) -> int:
    """The next step at which the loop must look up: a metrics line, an evaluation, the end."""
    every = [config.log_every] + ([config.eval_every] if task.evaluates else [])
    return min([end, config.steps] + [(step // k + 1) * k for k in every])


def _start(run: RunFolder, config: RunConfig, device) -> Progress:
    run.start(RunInfo.now(dataclasses.asdict(config)))
    return Progress(loss_sum=torch.zeros((), dtype=torch.float64, device=device))


def _restore(run: RunFolder, config, model, opt, est, task) -> Progress:
    state = run.load_checkpoint(map_location=config.device)
    # the settings of this session (threads, device, plugin's place, ...) are the given ones
    saved = RunConfig(**{**state["config"], **{k: getattr(config, k) for k in EXECUTION_SETTINGS}})
    changed = {k: (v, getattr(config, k)) for k, v in dataclasses.asdict(saved).items()
               if k not in EXECUTION_SETTINGS and v != getattr(config, k)}
    if changed:
        raise ValueError(f"--resume: the configuration differs from the checkpoint's (setting: (saved, given)): "
                         f"{changed}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    est.load_state_dict(state["estimator"])
    task.load_state_dict(state["task"])
    # checkpoints written before a field existed: their last row was at their step, no loss streak
    older = {"logged": state["step"], "high_loss_rows": 0}
    p = Progress(**{f.name: state.get(f.name, older.get(f.name)) for f in dataclasses.fields(Progress)})
    p.loss_sum = p.loss_sum.to(est.device)
    if config.steps < p.step:
        raise ValueError(f"--resume: --steps {config.steps} is below the step the checkpoint is at ({p.step}); "
                         f"a run only goes on (give --steps {p.step} or more)")
    run.check_metrics(p.logged, saved.log_every)
    run.truncate_metrics(p.step)  # lines logged after the checkpoint belong to steps that run again
    run.write_info(RunInfo.now(dataclasses.asdict(config)))
    return p


def _metrics_row(p: Progress, task, last_log, busy: float, wall_s: float) -> dict:
    rate = (p.step - last_log[1]) / max(busy - last_log[0], 1e-9)
    row = {"step": p.step, "loss_bits": float(p.loss_sum) / max(p.loss_count, 1), **task.metrics(),
           "steps_per_s": round(rate, 2), "wall_s": round(wall_s, 1)}
    p.loss_sum.zero_()
    p.loss_count = 0
    return row


def _json(row: dict) -> str:
    return json.dumps(row) + "\n"


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _bar(config: RunConfig, initial: int, progress: bool, mode: str):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=initial, desc=f"{config.task} {config.method} ({mode})", unit="step",
                dynamic_ncols=True, mininterval=1.0)


def load_model(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(model, config, step) from a run's checkpoint (or its run folder); the sizes come from the saved weights."""
    from .runs import read_checkpoint

    check_device(device)
    state = read_checkpoint(checkpoint, map_location=device)
    config = RunConfig(**{**state["config"], "device": device})
    weights = state["model"]
    if config.layers == 1:
        # the input size: W has m + n + 1 rows; the LRU's B_re is (N, m)
        m = weights["cell.B_re"].shape[1] if "cell.B_re" in weights else weights["cell.weight"].shape[0] - config.hidden - 1
        k = weights["readout"].shape[1]
    else:
        k, m = weights["readout.weight"].shape[0], weights["encoder.weight"].shape[1]
    model = build_model(config, m, k).to(device)
    model.load_state_dict(weights)
    return model, config, state["step"]


def train_model(config: RunConfig, out: str | os.PathLike | None = None):
    """Train (no progress bar) and return (trained model, summary); ``out`` None: a temporary folder."""
    if out is not None:
        summary = train(config, out, progress=False)
        return load_model(Path(out) / "checkpoint.pt", config.device)[0], summary
    with tempfile.TemporaryDirectory() as tmp:
        return train_model(config, tmp)
