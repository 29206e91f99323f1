"""Sweeps: a grid of training runs from a TOML spec, run here in a process pool or on Slurm.

    python -m kfrtrl_lab sweep run sweeps/smoke.toml --executor local --workers 2
    python -m kfrtrl_lab sweep run sweeps/copy_reproduction.toml --executor slurm --partition gpu
    python -m kfrtrl_lab sweep status sweeps/smoke.toml
    python -m kfrtrl_lab sweep collect sweeps/smoke.toml --results results

A spec names shared ``[defaults]`` and one ``[grid]`` (or several ``[[grid]]`` tables); each key is
a :class:`~kfrtrl_lab.train.RunConfig` option, and a list in a grid is an axis: the runs are the
product of the axes. Each run gets a stable name, ``<task>/<method>[-<axis value>…]-s<seed>``, and
a run folder ``OUT/<name>`` of the same layout as ``train --out``. What the sweep itself keeps lies
beside the runs, in ``OUT/.sweep/`` (one record per run: executor, job id, host, outcome; the
workers' logs; submitit's files), so a run folder holds nothing but its run.

Running a run (:func:`run_one`, the same code under every executor): skip it when its summary says
finished at the spec's step count (or diverged: it would diverge again), resume it when its folder
holds a checkpoint, else start it new. So re-running the same command skips what is done and
continues what is not, and a requeued Slurm job continues its own run. While it runs, the run's
folder is locked by its owner (``run.lock``: owner, host, PID); a requeued job passes the same
owner id (``slurm-<job id>``) and so takes its own run back.
"""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

from .runs import CHECKPOINT, INFO, LOCK, METRICS, SUMMARY, RunFolder, RunLock, atomic_write_text, process_alive
from .train import Diverged, RunConfig, train

try:  # the 'cluster' extra: Slurm jobs (and submitit's local executor, for tests)
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # local sweeps do not need it
    Checkpointable, DelayedSubmission = object, None

STATES = ("pending", "running", "finished", "failed", "diverged")
EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_SPEC_KEYS = {"name", "description", "out", "defaults", "grid", "slurm", "local"}
_SLURM_KEYS = {"partition", "time", "cpus", "gpus", "array_parallelism", "max_requeues", "options"}
_LOCAL_KEYS = {"workers"}
_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
#: short spellings of axes in run names (others: the option's name)
_NAME_KEYS = {"hidden": "n", "batch": "B"}


class SpecError(ValueError):
    """A spec that cannot be run: one line saying what and where."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its stable name and the RunConfig options it runs with."""

    name: str
    config: dict

    def folder(self, out: Path) -> Path:
        return Path(out) / self.name


@dataclass
class Spec:
    path: Path
    name: str
    out: Path
    runs: list[PlannedRun]
    slurm: dict
    workers: int | None


# ---------------------------------------------------------------------------------------- spec


def load_spec(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Spec:
    """Read and expand a spec; every run's configuration is built (and so checked) here, before
    anything starts. SpecError (one line) for anything wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML ({err})") from None
    _check_keys(path, "the spec", data, _SPEC_KEYS)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SpecError(f"{path}: [defaults] must be a table of train options")
    grids = data.get("grid", {})
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise SpecError(f"{path}: 'grid' must be a table ([grid]) or tables ([[grid]]) of train options")
    defaults = _options(path, "[defaults]", defaults, axes_allowed=False)
    runs: dict[str, PlannedRun] = {}
    for number, grid in enumerate(grids, 1):
        where = "[grid]" if len(grids) == 1 else f"[[grid]] number {number}"
        grid = _options(path, where, grid, axes_allowed=True)
        for planned in _expand(path, where, defaults, grid):
            if planned.name in runs:
                raise SpecError(f"{path}: two runs are named {planned.name!r}; give the option that tells them "
                                f"apart as a list in the grid, so that it becomes part of the names")
            runs[planned.name] = planned
    if not runs:
        raise SpecError(f"{path}: the spec expands to no runs (an empty [grid]?)")
    slurm = data.get("slurm", {})
    _check_keys(path, "[slurm]", slurm, _SLURM_KEYS)
    local = data.get("local", {})
    _check_keys(path, "[local]", local, _LOCAL_KEYS)
    name = data.get("name", path.stem)
    out = Path(out) if out is not None else Path(data.get("out", Path("runs") / "sweeps" / name))
    return Spec(path=path, name=str(name), out=out, runs=list(runs.values()), slurm=slurm,
                workers=local.get("workers"))


def _check_keys(path: Path, where: str, table, allowed: set) -> None:
    if not isinstance(table, dict):
        raise SpecError(f"{path}: {where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})")


def _options(path: Path, where: str, table: dict, axes_allowed: bool) -> dict:
    """The table's keys as RunConfig field names, values checked against the fields' types; a list
    (an axis) only where ``axes_allowed``."""
    options = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in _CONFIG_FIELDS:
            raise SpecError(f"{path}: unknown key {key!r} in {where}; the keys are train options: "
                            f"{', '.join(_CONFIG_FIELDS)}")
        if isinstance(value, list):
            if not axes_allowed:
                raise SpecError(f"{path}: {where} gives {key!r} a list; defaults hold one value, axes go in a [grid]")
            if not value:
                raise SpecError(f"{path}: {where} gives {key!r} an empty list (no runs)")
            if len({json.dumps(v) for v in value}) != len(value):
                raise SpecError(f"{path}: {where} lists a value of {key!r} twice: {value}")
            options[name] = [_value(path, where, name, v) for v in value]
        else:
            options[name] = _value(path, where, name, value)
    return options


def _value(path: Path, where: str, name: str, value):
    """A TOML value as the field's type ('none' for an optional field's None)."""
    kind = _CONFIG_FIELDS[name].type
    if kind.endswith("| None") and isinstance(value, str) and value.lower() == "none":
        return None
    base = kind.removesuffix(" | None")
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "str": isinstance(value, str), "bool": isinstance(value, bool)}[base]
    if not ok:
        none = " or 'none'" if kind.endswith("| None") else ""
        raise SpecError(f"{path}: {where}: {name} must be {'an' if base == 'int' else 'a'} {base}{none}, "
                        f"got {value!r}")
    return float(value) if base == "float" else value


def _expand(path: Path, where: str, defaults: dict, grid: dict) -> list[PlannedRun]:
    axes = [k for k, v in grid.items() if isinstance(v, list)]
    fixed = {**defaults, **{k: v for k, v in grid.items() if not isinstance(v, list)}}
    if "task" not in fixed and "task" not in axes:
        raise SpecError(f"{path}: {where} has no task (give task = \"copy\" or a list of tasks)")
    runs = []
    for values in itertools.product(*(grid[k] for k in axes)):
        options = {**fixed, **dict(zip(axes, values))}
        # The device and the thread count are checked where the run runs: a login node that submits
        # GPU jobs has no GPU, and fewer cores than a job may ask for.
        here = {**options, "device": "cpu", "threads": None}
        try:
            config = RunConfig(**here)
        except ValueError as err:
            raise SpecError(f"{path}: {where}: run {_brief(options)}: {err}") from None
        runs.append(PlannedRun(run_name(config, axes), {**dataclasses.asdict(config), "device": options.get(
            "device", "cpu"), "threads": options.get("threads")}))
    return runs


def _brief(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items() if k in ("task", "method", "seed"))


def run_name(config: RunConfig, axes) -> str:
    """``<task>/<method>[-<axis value>…]-s<seed>``: task, method and seed always, and each other
    option that the grid gives as a list (in the spec's order); stable as long as the spec's axes are."""
    parts = [config.method]
    for key in axes:
        if key in ("task", "method", "seed"):
            continue
        value = getattr(config, key)
        label = _NAME_KEYS.get(key, key.replace("_", "-"))
        if isinstance(value, bool):
            parts.append(label if value else f"no-{label}")
        elif value is None:
            parts.append(f"{label}-none")
        elif isinstance(value, str):
            parts.append(value)
        else:
            parts.append(f"{label}{value:g}" if isinstance(value, float) else f"{label}{value}")
    name = "-".join(parts) + f"-s{config.seed}"
    return f"{config.task}/" + re.sub(r"[^A-Za-z0-9._=+-]", "_", name)


# ------------------------------------------------------------------------------- the run folders


def _record_path(out: Path, name: str) -> Path:
    return Path(out) / ".sweep" / "runs" / f"{name}.json"


def read_record(out: Path, name: str) -> dict:
    try:
        return json.loads(_record_path(out, name).read_text())
    except (OSError, ValueError):
        return {}


def _write_record(out: Path, name: str, **fields) -> None:
    path = _record_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**read_record(out, name), **fields}, indent=1), path)


def read_lock(folder: Path) -> dict | None:
    """The run folder's lock record ({owner, host, pid, since}), or None."""
    return RunLock(folder).holder()


def _read_summary(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _done(summary: dict | None, steps: int) -> str | None:
    """'finished' or 'diverged' when the summary says the run needs nothing more; else None."""
    if summary is None:
        return None
    if summary.get("status") == "finished" and summary.get("steps_done", 0) >= steps:
        return "finished"
    if summary.get("status") == "diverged":
        return "diverged"
    return None


# --------------------------------------------------------------------------------- one run


def _clear_unstarted(folder: Path) -> None:
    """A folder with a run's files but no checkpoint: a run killed before its first checkpoint (or
    a record of its start only). Nothing in it can be resumed, so its own files go and the run starts
    again; anything else in the folder is not the sweep's to delete."""
    own = {INFO, METRICS, SUMMARY, LOCK, CHECKPOINT + ".tmp"}
    others = sorted(p.name for p in folder.iterdir() if p.name not in own)
    if others:
        raise FileExistsError(f"{folder} holds files that are not a run's ({', '.join(others)}) and no "
                              f"checkpoint; move them away and run the sweep again")
    for name in own - {LOCK}:
        (folder / name).unlink(missing_ok=True)


def run_one(out: str | os.PathLike, run: PlannedRun, owner: str | None = None, executor: str = "local",
            job_id: str | None = None) -> dict:
    """Run one run of a sweep to its end: skip it if done, resume it from its checkpoint, or start it.
    Returns {name, status, steps}; status is finished, diverged, interrupted or stopped. Exceptions
    other than a divergence propagate, after being written to the run's record."""
    out = Path(out)
    folder = run.folder(out)
    config = RunConfig(**run.config)
    summary = _read_summary(folder)
    done = _done(summary, config.steps)
    if done:
        return {"name": run.name, "status": done, "steps": summary["steps_done"], "skipped": True}
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    _write_record(out, run.name, executor=executor, job_id=job_id, owner=owner, host=socket.gethostname(),
                  pid=os.getpid(), state="running", error=None, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        resume = (folder / CHECKPOINT).exists()
        if not resume and folder.is_dir():
            holder = read_lock(folder)
            if holder and holder.get("owner") != owner and process_alive(holder.get("host"), holder.get("pid")):
                raise FileExistsError(f"{folder} is in use by another run (owner {holder.get('owner')}, host "
                                      f"{holder.get('host')}, PID {holder.get('pid')})")
            _clear_unstarted(folder)
        print(f"{run.name}: {'resuming from step ' + str(_checkpoint_step(folder)) if resume else 'starting'} "
              f"(owner {owner}, host {socket.gethostname()})", flush=True)
        try:
            summary = train(config, folder, resume=resume, progress=False, owner=owner)
            status = summary["status"]
        except Diverged as err:
            status, summary = "diverged", _read_summary(folder) or {"steps_done": None}
            print(f"{run.name}: {err}", flush=True)
    except BaseException as err:
        message = "".join(traceback.format_exception_only(err)).strip().splitlines()[-1] \
            if not isinstance(err, KeyboardInterrupt) else "interrupted at once (second Ctrl-C)"
        _write_record(out, run.name, state="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                      error=message, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        raise
    _write_record(out, run.name, state=status, error=None, steps=summary["steps_done"],
                  ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    print(f"{run.name}: {status} at step {summary['steps_done']}", flush=True)
    return {"name": run.name, "status": status, "steps": summary["steps_done"], "skipped": False}


def _checkpoint_step(folder: Path) -> int | str:
    """The checkpoint's step, cheaply: the summary's when the run stopped cleanly (it is written
    right after the checkpoint), else the last metrics line's (the checkpoint is at or after it)."""
    summary = _read_summary(folder)
    if summary and summary.get("status") in ("interrupted", "stopped", "finished"):
        return summary["steps_done"]
    rows = RunFolder(folder).read_metrics()
    return rows[-1]["step"] if rows else "?"


class SweepJob(Checkpointable):
    """One run as a submitit job. Calling it runs :func:`run_one` for its run folder; after a
    preemption or time-out, submitit calls :meth:`checkpoint`, whose DelayedSubmission is this same
    job again: the requeued job resumes the run folder from its checkpoint.

    The preemption signal (submitit's USR2) is first turned into the trainer's stop request
    (SIGTERM): the trainer stops at the next point it can save exactly and writes its checkpoint, and
    only then does submitit's own handler checkpoint and requeue the job. So a requeue loses no steps,
    and the resumed run is the uninterrupted one, bit for bit on a CPU."""

    def __init__(self, out: str, run: PlannedRun):
        self.out, self.run = str(out), run

    def __call__(self) -> dict:
        job_id, executor = _submitit_job()
        preempted, over = threading.Event(), threading.Event()
        submitit_handler = signal.getsignal(_preempt_signal())
        if callable(submitit_handler):
            def on_preempt(signum, frame):
                if not preempted.is_set():
                    preempted.set()
                    # SIGTERM before the trainer's loop has installed its handler would be lost
                    # (submitit ignores it): repeat it until the run returns (the trainer takes
                    # repeats as one stop request)
                    threading.Thread(target=_send_stop_until, args=(over,), daemon=True).start()

            signal.signal(_preempt_signal(), on_preempt)
        result = None
        try:
            result = run_one(self.out, self.run, owner=f"{executor}-{job_id}", executor=executor, job_id=job_id)
            return result
        finally:
            over.set()
            if callable(submitit_handler):
                signal.signal(_preempt_signal(), submitit_handler)
                if preempted.is_set() and (result is None or result["status"] == "interrupted"):
                    print(f"{self.run.name}: preempted; checkpoint written, submitit requeues the job", flush=True)
                    submitit_handler(_preempt_signal(), None)  # calls checkpoint() below, requeues, exits

    def checkpoint(self, *args, **kwargs):
        return DelayedSubmission(SweepJob(self.out, self.run))


def _send_stop_until(over: threading.Event) -> None:
    while not over.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        over.wait(1.0)


def _preempt_signal() -> signal.Signals:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def _submitit_job() -> tuple[str, str]:
    """(job id, executor) of the submitit job this process runs: the id stays the same when the job
    is requeued (Slurm: <job id> or <array job id>_<task id>; submitit's local executor: its
    controller's PID)."""
    import submitit

    env = submitit.JobEnvironment()
    return str(env.job_id), "slurm" if os.environ.get("SLURM_JOB_ID") else "submitit-local"


# ---------------------------------------------------------------------------------------- status


@dataclass
class RunStatus:
    name: str
    state: str  # one of STATES
    step: int | None
    metric: str  # "t_max=12", "valid_bpc=1.912", "" before the first line
    steps_per_s: float | None
    host: str
    job: str
    note: str = ""  # why a run failed, or where a pending run stands
    target: int | None = None  # the steps the run is to reach

    @property
    def time_left_s(self) -> float | None:
        """A running run's steps still to go at its last logged speed, in seconds."""
        if self.state != "running" or self.step is None or not self.steps_per_s or self.target is None:
            return None
        return max(0, self.target - self.step) / self.steps_per_s


def _main_metric(task: str) -> str:
    from .results import REFERENCES

    return next((r.metric for r in REFERENCES if r.task == task), "loss_bits")


def run_status(out: str | os.PathLike, run: PlannedRun, queue: dict | None = None) -> RunStatus:
    """Where a run stands, from its folder, its lock, its record and (Slurm) the queue ``queue``
    ({job id: (squeue state, node)})."""
    folder, record = run.folder(Path(out)), read_record(Path(out), run.name)
    rows = RunFolder(folder).read_metrics() if (folder / METRICS).exists() else []
    last = rows[-1] if rows else {}
    metric = _main_metric(run.config["task"])
    valued = [r for r in rows if metric in r] or [r for r in rows if "loss_bits" in r]
    shown = next((k for k in (metric, "loss_bits") if valued and k in valued[-1]), None)
    value = f"{shown}={valued[-1][shown]:.4g}" if shown else ""
    summary = _read_summary(folder)
    job = str(record.get("job_id") or "")
    status = RunStatus(run.name, "pending", last.get("step"), value, last.get("steps_per_s"),
                       record.get("host", ""), job, target=run.config["steps"])
    done = _done(summary, run.config["steps"])
    lock = read_lock(folder) or {}
    here = lock.get("host") == socket.gethostname()
    # Slurm's queue, when it answered, says whether a Slurm job still runs; a lock left on another
    # host (a node that died) cannot say so
    by_queue = record.get("executor") == "slurm" and queue is not None
    queued = queue.get(job) if by_queue else None
    if done:
        status.state, status.step = done, summary["steps_done"]
    elif lock and (here or not by_queue) and process_alive(lock.get("host"), lock.get("pid")):
        status.state, status.host = "running", lock.get("host", "")
    elif queued:
        status.state = "running" if queued[0] in ("RUNNING", "COMPLETING") else "pending"
        status.host = queued[1] if status.state == "running" else ""
        status.note = f"queued ({queued[0].lower()})"
    elif record.get("state") == "failed":
        status.state, status.note = "failed", record.get("error") or ""
    elif by_queue and record.get("state") in ("submitted", "running"):
        status.state = "failed"
        status.note = (f"job {job} left the queue before its run ended (killed, out of memory, or out of "
                       f"requeues?); its log: {Path(out) / '.sweep' / 'submitit'}/{job}_0_log.err")
    elif record.get("state") == "running" and not process_alive(record.get("host"), record.get("pid")):
        status.state, status.note = "failed", "its process ended without a word (killed?); run the sweep again"
    elif summary and summary.get("status") in ("interrupted", "stopped"):
        status.step = summary["steps_done"]
        status.note = f"{summary['status']} at step {summary['steps_done']}; run the sweep again to resume"
    return status


def slurm_queue(records) -> dict | None:
    """{job id: (state, node)} from squeue for the Slurm jobs named in ``records`` (those that left
    the queue are absent); None when squeue does not answer (not a Slurm machine).
    All of this user's jobs, one line per array task (-r), then filtered: ``squeue -j`` fails as a
    whole when one of the ids has left the queue."""
    jobs = {str(r["job_id"]) for r in records if r.get("executor") == "slurm" and r.get("job_id")}
    if not jobs:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %N", "-u", getpass.getuser()], check=False,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    queue = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in jobs:
            queue[fields[0]] = (fields[1], fields[2] if len(fields) > 2 else "")
    return queue


def sweep_status(spec: Spec) -> list[RunStatus]:
    records = [read_record(spec.out, run.name) for run in spec.runs]
    queue = slurm_queue(records)
    return [run_status(spec.out, run, queue) for run in spec.runs]


def _duration(seconds: float | None) -> str:
    """'2h05m', '7m', '<1m'; '' for None."""
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "<1m"
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def status_table(statuses: list[RunStatus]) -> str:
    head = ("run", "state", "step", "last metric", "steps/s", "time left", "host", "job", "note")
    rows = [(s.name, s.state, "" if s.step is None else str(s.step), s.metric,
             "" if s.steps_per_s is None else f"{s.steps_per_s:g}", _duration(s.time_left_s), s.host, s.job, s.note)
            for s in statuses]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    return "\n".join(lines + ["", ", ".join(f"{n} {state}" for state, n in counts.items() if n)])


# --------------------------------------------------------------------------------------- collect


def collect(spec: Spec, results: str | os.PathLike = "results") -> list[Path]:
    """Copy each run's summary.json to ``results/<name>.json`` (``results/copy/ok-16-s0.json``):
    where ``compare`` reads them. Runs without a summary yet are skipped (and said so)."""
    written = []
    for run in spec.runs:
        source = run.folder(spec.out) / SUMMARY
        if not source.exists():
            print(f"skip {run.name}: no summary.json yet", file=sys.stderr)
            continue
        target = Path(results) / f"{run.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
        summary = json.loads(source.read_text())
        print(f"{source} -> {target} ({summary['status']}, {summary['steps_done']} steps)")
        written.append(target)
    return written


# --------------------------------------------------------------------------------- local executor


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _to_do(spec: Spec, queue: dict | None = None) -> tuple[list[PlannedRun], list[tuple[str, str]]]:
    """The runs that need running, and (name, why) for those skipped: done, or running or queued."""
    todo, skipped = [], []
    for run in spec.runs:
        st = run_status(spec.out, run, queue)
        if st.state in ("finished", "diverged"):
            skipped.append((run.name, st.state))
        elif st.state == "running" or st.note.startswith("queued"):
            skipped.append((run.name, f"{st.state} ({'job ' + st.job if st.job else 'host ' + st.host})"))
        else:
            todo.append(run)
    return todo, skipped


def _with_threads(run: PlannedRun, threads: int) -> PlannedRun:
    """The run with ``threads`` torch threads unless its spec fixes them (threads only change float
    rounding: a run resumed with other threads continues, no longer bit for bit)."""
    if run.config.get("threads") is not None:
        return run
    return PlannedRun(run.name, {**run.config, "threads": threads})


def run_local(spec: Spec, workers: int | None = None) -> int:
    """Run the spec's runs here, ``workers`` at a time, each in its own process (a crash takes only
    its run). First Ctrl-C (or SIGTERM): every running run is asked to stop, writes its checkpoint
    and exits; nothing new starts; a second Ctrl-C interrupts at once. Exit status 0 all finished,
    1 some failed, 3 some diverged, 130 interrupted."""
    cores = _cores()
    fixed = max((run.config.get("threads") or 0) for run in spec.runs)  # 0: no run fixes its threads
    workers = workers or spec.workers or max(1, cores // max(fixed, 1))
    threads = max(1, cores // workers)  # for the runs whose spec leaves threads open
    if workers < 1 or workers * (fixed or 1) > cores:
        raise SpecError(f"--workers {workers} × {fixed or 1} thread(s) a run = {workers * (fixed or 1)} > the "
                        f"{cores} cores here; lower --workers (or the spec's threads)")
    todo, skipped = _to_do(spec)
    for name, why in skipped:
        print(f"skip {name}: {why}")
    logs = spec.out / ".sweep" / "logs"
    pending = [_with_threads(run, threads) for run in todo]
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    outcome: dict[str, str] = {}
    stop = {"requests": 0}

    def on_signal(signum, frame):
        stop["requests"] += 1
        forward = signal.SIGINT if stop["requests"] > 1 and signum == signal.SIGINT else signal.SIGTERM
        for proc, _ in running.values():
            _signal_child(proc, forward)
        if stop["requests"] == 1:
            print(f"stopping: {len(running)} running run(s) write their checkpoints (Ctrl-C again: at once)",
                  file=sys.stderr, flush=True)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            while pending and len(running) < workers and not stop["requests"]:
                run = pending.pop(0)
                log_path = logs / f"{run.name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = log_path.open("a")
                # its own session: a terminal's Ctrl-C reaches only this process, which forwards one
                # stop request (the trainer takes a second SIGINT as "interrupt at once")
                proc = subprocess.Popen([sys.executable, "-m", "kfrtrl_lab.sweep", "_job", str(spec.out.absolute()), run.name,
                                         json.dumps(run.config)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                running[run.name] = (proc, log)
                print(f"start {run.name} (pid {proc.pid}, {run.config['threads']} thread(s), log {log_path})",
                      flush=True)
            if stop["requests"] and not running:
                break
            time.sleep(0.2)
            for name, (proc, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del running[name]
                outcome[name] = _JOB_STATES.get(code, "failed")
                if stop["requests"] and code in (-signal.SIGTERM, -signal.SIGINT):
                    # stopped while starting, before the trainer took over the signal: nothing was
                    # lost (no step taken since its last checkpoint), the run is simply not done
                    outcome[name] = "interrupted"
                    _write_record(spec.out, name, state="interrupted", error=None)
                if outcome[name] == "failed":
                    _mark_failed(spec.out, name, code, logs / f"{name}.log")
                print(f"{outcome[name]:<11} {name} (exit {code})", flush=True)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    not_started = [run.name for run in pending]
    if stop["requests"]:
        print(f"interrupted: {sum(s == 'interrupted' for s in outcome.values())} run(s) saved, "
              f"{len(not_started)} not started; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [n for n, s in outcome.items() if s == "failed"]
    diverged = [n for n, s in outcome.items() if s == "diverged"]
    print(f"{len(outcome)} run(s) ran, {len(skipped)} skipped; {len(failed)} failed, {len(diverged)} diverged")
    return EXIT_FAILED if failed else EXIT_DIVERGED if diverged else EXIT_OK


#: a worker's exit status -> the run's outcome
_JOB_STATES = {0: "finished", 3: "diverged", 130: "interrupted"}


def _signal_child(proc: subprocess.Popen, sig) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _mark_failed(out: Path, name: str, code: int, log: Path) -> None:
    """A worker that died without writing its failure (killed, or it failed before starting the run)."""
    record = read_record(out, name)
    if record.get("state") != "failed":
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] \
            if log.exists() else []
        _write_record(out, name, state="failed", error=(tail[0] if tail else f"exit status {code}"))


def _job_main(out: str, name: str, config: str) -> int:
    """A local worker: one run (``python -m kfrtrl_lab.sweep _job OUT NAME CONFIG_JSON``)."""
    try:
        result = run_one(out, PlannedRun(name, json.loads(config)), executor="local")
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return {"finished": EXIT_OK, "diverged": EXIT_DIVERGED}.get(result["status"], EXIT_INTERRUPTED)


# ------------------------------------------------------------------------------- Slurm (submitit)


def parse_minutes(text: str | int) -> int:
    """Slurm's time formats as minutes: 90, "90", "1:30:00", "2-00:00:00", "2-0"."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise SpecError(f"time must be minutes or [D-]HH:MM[:SS], got {text!r}")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is None and b is None:
        return a  # plain minutes
    hours, minutes, seconds = (a, b or 0, c or 0) if (b is not None) else (a, 0, 0)
    return (days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def make_executor(folder: str | os.PathLike, cluster: str = "slurm", name: str = "sweep", partition=None,
                  time_min: int = 24 * 60, cpus: int = 1, gpus: int = 0, array_parallelism: int = 64,
                  max_requeues: int = 30, options: dict | None = None):
    """A submitit executor: ``cluster`` 'slurm', or 'local' (submitit's local executor: the same jobs,
    signals and requeues, on this machine; what the tests use)."""
    if DelayedSubmission is None:
        raise SpecError("Slurm sweeps need submitit: pip install 'kfrtrl_lab[cluster]' (or 'submitit>=1.5')")
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=max_requeues)
    params = {"name": name, "timeout_min": time_min, "cpus_per_task": cpus, "tasks_per_node": 1, "nodes": 1}
    if gpus:
        params["gpus_per_node"] = gpus
    if cluster == "slurm":
        params.update(slurm_array_parallelism=array_parallelism,
                      slurm_additional_parameters={k.replace("-", "_"): v for k, v in (options or {}).items()})
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def submit(spec: Spec, executor, cluster: str = "slurm", threads: int = 1) -> list:
    """Submit one job per run that needs running (skipping the done, running and queued); records
    each job in the run's record; returns the jobs."""
    records = [read_record(spec.out, run.name) for run in spec.runs]
    todo, skipped = _to_do(spec, slurm_queue(records) if cluster == "slurm" else None)
    for name, why in skipped:
        print(f"skip {name}: {why}")
    if not todo:
        print("nothing to submit")
        return []
    runs = [_with_threads(run, threads) for run in todo]
    with executor.batch():
        # absolute: a job may start in another working directory than the one it was submitted from
        jobs = [executor.submit(SweepJob(str(spec.out.absolute()), run)) for run in runs]
    for run, job in zip(runs, jobs):
        _write_record(spec.out, run.name, executor="slurm" if cluster == "slurm" else "submitit-local",
                      job_id=str(job.job_id), state="submitted", error=None,
                      submitted=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        print(f"submitted {run.name}: job {job.job_id}")
    return jobs


if __name__ == "__main__":  # the local executor's worker
    if len(sys.argv) != 5 or sys.argv[1] != "_job":
        sys.exit("usage: python -m kfrtrl_lab.sweep _job OUT NAME CONFIG_JSON (started by 'sweep run')")
    sys.exit(_job_main(*sys.argv[2:]))
