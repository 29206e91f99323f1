"""Sweeps (kfrtrl_lab/sweep.py): specs, the local process pool, and Slurm's path through submitit's
local executor — the same job class, signals and requeue as on a cluster, on this machine."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from kfrtrl_lab import sweep
from kfrtrl_lab.__main__ import main
from kfrtrl_lab.runs import load_summary
from kfrtrl_lab.train import RunConfig, train

ROOT = Path(__file__).resolve().parents[1]
submitit = pytest.importorskip("submitit", reason="the 'cluster' extra (submitit) is not installed")


def write_spec(tmp_path, body: str, name="spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


TINY = """
    [defaults]
    task = "copy"
    hidden = 8
    batch = 4
    steps = {steps}
    log_every = 10
    threads = 1

    [grid]
    method = {methods}
    seed = [0]
    """


def wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def same_checkpoints(a: Path, b: Path) -> None:
    """Bit for bit: weights, Adam's state, the estimator's and the task's state, the step."""
    sa, sb = (torch.load(p, weights_only=False) for p in (a, b))
    assert sa["step"] == sb["step"]

    def walk(x, y, where):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")

    for part in ("model", "optimizer", "estimator", "task"):
        walk(sa[part], sb[part], part)


def metric_rows(folder: Path) -> list[dict]:
    """The metrics lines without their timings (which differ between any two runs)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")} for r in rows]


# ------------------------------------------------------------------------------------------ specs


def test_shipped_specs_expand_to_the_documented_runs():
    smoke = sweep.load_spec(ROOT / "sweeps" / "smoke.toml")
    assert [r.name for r in smoke.runs] == ["copy/kf-rtrl-s0", "copy/kf-rtrl-s1", "copy/uoro-s0", "copy/uoro-s1"]
    assert all(r.config["steps"] == 300 and r.config["hidden"] == 8 for r in smoke.runs)

    copy = sweep.load_spec(ROOT / "sweeps" / "copy_reproduction.toml")
    methods = {"ok-16-official", "ok-16", "kf-avg-16", "kf-rtrl", "uoro", "tbptt-16", "rtrl"}
    assert {r.name for r in copy.runs} == {f"copy/{m}-s{s}" for m in methods for s in range(5)}
    for r in copy.runs:  # the official settings (results/README.md), the device kept for the job's host
        c = r.config
        assert (c["hidden"], c["batch"], c["clip"], c["steps"], c["cell"], c["device"]) == \
            (128, 16, 16.0, 1_000_000, "rhn", "cuda")

    ptb = sweep.load_spec(ROOT / "sweeps" / "ptb_reproduction.toml")
    assert {r.name for r in ptb.runs} == {f"ptb/{m}-s{s}" for m in ("ok-8-official", "kf-rtrl", "uoro", "tbptt-16")
                                          for s in range(5)}
    for r in ptb.runs:
        c = r.config
        assert (c["stream_layout"], c["tokens"], c["clip"], c["hidden"], c["batch"], c["steps"]) == \
            ("staggered", "official", 100.0, 256, 32, 1_000_000)


def test_every_list_in_a_grid_is_an_axis_of_the_names(tmp_path):
    spec = sweep.load_spec(write_spec(tmp_path, """
        [defaults]
        task = "copy"
        steps = 100
        [[grid]]
        method = "kf-rtrl"
        hidden = [8, 16]
        seed = [0, 1]
        [[grid]]
        method = ["uoro"]
        clip = "none"
        """))
    assert [r.name for r in spec.runs] == ["copy/kf-rtrl-n8-s0", "copy/kf-rtrl-n8-s1", "copy/kf-rtrl-n16-s0",
                                           "copy/kf-rtrl-n16-s1", "copy/uoro-s0"]
    assert spec.runs[-1].config["clip"] is None
    assert spec.out == Path("runs/sweeps/spec")


@pytest.mark.parametrize("body, message", [
    ('bogus = 1\n[grid]\ntask = "copy"', "unknown key 'bogus' in the spec"),
    ('[defaults]\nhiden = 8\n[grid]\ntask = "copy"', "unknown key 'hiden' in [defaults]"),
    ('[grid]\ntask = "copy"\nmethod = ["kf-rtrl", "kf-rtrx"]', "unknown method 'kf-rtrx'"),
    ('[grid]\ntask = "copi"', "unknown task 'copi'"),
    ('[defaults]\nseed = [0, 1]\n[grid]\ntask = "copy"', "defaults hold one value"),
    ('[grid]\ntask = "copy"\nhidden = "big"', "hidden must be an int"),
    ('[grid]\ntask = "copy"\nhidden = -3', "hidden must be a positive int"),
    ('[grid]\nmethod = "uoro"', "has no task"),
    ('[[grid]]\ntask = "copy"\n[[grid]]\ntask = "copy"\nlr = 0.01', "two runs are named 'copy/kf-rtrl-s0'"),
    ('[grid]\ntask = "copy"\n[slurm]\nqueue = "x"', "unknown key 'queue' in [slurm]"),
    ('[grid]\ntask = "copy"\nseed = [1, 1]', "lists a value of 'seed' twice"),
    ('[grid\ntask = "copy"', "not valid TOML"),
])
def test_a_bad_spec_is_one_error_line_and_exit_2(tmp_path, capsys, body, message):
    path = write_spec(tmp_path, body)
    for action in ("run", "status", "collect"):
        assert main(["sweep", action, str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_too_many_workers_for_the_cores_is_refused(tmp_path, capsys):
    path = write_spec(tmp_path, TINY.format(steps=20, methods='["uoro"]'))
    assert main(["sweep", "run", str(path), "--out", str(tmp_path / "out"), "--workers", str(os.cpu_count() + 1)]) == 2
    assert "cores" in capsys.readouterr().err


def test_time_limits_in_slurm_formats():
    assert [sweep.parse_minutes(t) for t in ("90", 90, "1:30:00", "2-00:00:00", "00:10:00", "0:0:30")] == \
        [90, 90, 90, 2880, 10, 1]
    with pytest.raises(sweep.SpecError):
        sweep.parse_minutes("soon")


# ------------------------------------------------------------------------------- the local pool


def test_local_pool_runs_skips_failures_and_resumes_after_ctrl_c(tmp_path):
    """A failed run does not stop the others; Ctrl-C stops every run resumably (exit 130); running
    the same command again finishes what is left and skips what is done."""
    path = write_spec(tmp_path, TINY.format(steps=3000, methods='["kf-rtrl", "uoro", "tbptt-4"]'))
    out = tmp_path / "out"
    (out / "copy" / "uoro-s0").mkdir(parents=True)
    (out / "copy" / "uoro-s0" / "notes.txt").write_text("not a run's file")  # this run must fail
    command = [sys.executable, "-m", "kfrtrl_lab", "sweep", "run", str(path), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spec = sweep.load_spec(path, out)
    first = spec.runs[0]
    wait_for(lambda: (st := sweep.run_status(out, first)).state == "running" and (st.step or 0) >= 50, 120,
             "the first run to log step 50")
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, log
    states = {s.name: s for s in sweep.sweep_status(spec)}
    assert states["copy/kf-rtrl-s0"].state == "pending" and "interrupted" in states["copy/kf-rtrl-s0"].note
    assert 0 < states["copy/kf-rtrl-s0"].step < 3000
    assert "run the same command again" in log

    again = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr  # one run failed
    states = {s.name: s for s in sweep.sweep_status(spec)}
    assert {n: s.state for n, s in states.items()} == {"copy/kf-rtrl-s0": "finished", "copy/uoro-s0": "failed",
                                                      "copy/tbptt-4-s0": "finished"}
    assert "notes.txt" in states["copy/uoro-s0"].note
    assert states["copy/kf-rtrl-s0"].step == 3000
    log = (out / ".sweep" / "logs" / "copy" / "kf-rtrl-s0.log").read_text()
    assert "resuming from step" in log
    rows = metric_rows(out / "copy" / "kf-rtrl-s0")
    assert [r["step"] for r in rows] == list(range(10, 3001, 10))  # one curve, no gap, no repeat

    (out / "copy" / "uoro-s0" / "notes.txt").unlink()  # the cause fixed: only that run runs now
    third = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "skip copy/kf-rtrl-s0: finished" in third.stdout and "start copy/uoro-s0" in third.stdout
    assert {s.state for s in sweep.sweep_status(spec)} == {"finished"}

    results = tmp_path / "results"
    assert main(["sweep", "collect", str(path), "--out", str(out), "--results", str(results)]) == 0
    collected = sorted(p.relative_to(results).as_posix() for p in results.rglob("*.json"))
    assert collected == ["copy/kf-rtrl-s0.json", "copy/tbptt-4-s0.json", "copy/uoro-s0.json"]
    assert load_summary(results / "copy" / "uoro-s0.json")["steps_done"] == 3000
    assert main(["compare", *map(str, results.rglob("*.json"))]) == 0


def test_a_run_folder_belongs_to_its_owner(tmp_path):
    """A live owner's lock keeps other owners out; the same owner (a requeued job) takes it back."""
    spec = sweep.load_spec(write_spec(tmp_path, TINY.format(steps=20, methods='["uoro"]')), tmp_path / "out")
    (run,) = spec.runs
    folder = run.folder(spec.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.lock").write_text(json.dumps({"owner": "slurm-41", "host": os.uname().nodename,
                                                 "pid": os.getpid(), "since": "earlier"}))
    with pytest.raises(FileExistsError, match="slurm-41"):
        sweep.run_one(spec.out, run, owner="slurm-42")
    assert sweep.run_status(spec.out, run).state == "running"
    result = sweep.run_one(spec.out, run, owner="slurm-41")
    assert result["status"] == "finished" and result["steps"] == 20
    assert not (folder / "run.lock").exists()
    assert sweep.run_one(spec.out, run, owner="slurm-43")["skipped"]  # finished: nothing to do


# ------------------------------------------------------------------- Slurm's path, run locally


def test_a_preempted_job_is_requeued_and_resumes_bit_for_bit(tmp_path):
    """submit -> status -> the preemption signal (submitit's USR2, as Slurm sends before a time-out
    or a preemption) -> the trainer checkpoints, submitit requeues, the job resumes its own folder ->
    the same checkpoint and curve as an uninterrupted run."""
    steps = 4000
    path = write_spec(tmp_path, TINY.format(steps=steps, methods='["kf-rtrl"]'))
    spec = sweep.load_spec(path, tmp_path / "out")
    (run,) = spec.runs
    executor = sweep.make_executor(spec.out / ".sweep" / "submitit", "local", time_min=30)
    (job,) = sweep.submit(spec, executor, "local")
    status = wait_for(lambda: (st := sweep.run_status(spec.out, run)).state == "running" and (st.step or 0) >= 100
                      and st, 120, "the job to log step 100")
    assert status.job == str(job.job_id)
    assert sweep.submit(spec, executor, "local") == []  # running: not submitted twice
    pid = sweep.read_record(spec.out, run.name)["pid"]
    os.kill(pid, signal.SIGUSR2)
    job.wait()
    log = job.stdout()
    assert job.result()["status"] == "finished", log
    assert "preempted; checkpoint written" in log and "resuming from step" in log, log
    assert sweep.read_record(spec.out, run.name)["pid"] != pid  # a new process continued the run
    assert sweep.run_status(spec.out, run).state == "finished"

    reference = tmp_path / "reference"
    train(RunConfig(**run.config), reference, progress=False)
    folder = run.folder(spec.out)
    same_checkpoints(folder / "checkpoint.pt", reference / "checkpoint.pt")
    assert metric_rows(folder) == metric_rows(reference)


def test_slurm_states_come_from_the_queue_when_it_answers(tmp_path):
    spec = sweep.load_spec(write_spec(tmp_path, TINY.format(steps=20, methods='["uoro"]')), tmp_path / "out")
    (run,) = spec.runs
    sweep._write_record(spec.out, run.name, executor="slurm", job_id="7_0", state="submitted")
    assert sweep.run_status(spec.out, run, {"7_0": ("PENDING", "")}).state == "pending"
    running = sweep.run_status(spec.out, run, {"7_0": ("RUNNING", "gpu12")})
    assert (running.state, running.host, running.job) == ("running", "gpu12", "7_0")
    # with a metrics line: the time left at the logged speed (20 steps, 5 done at 0.05 steps/s: 300 s)
    run.folder(spec.out).mkdir(parents=True)
    (run.folder(spec.out) / "metrics.jsonl").write_text(json.dumps({"step": 5, "loss_bits": 1.0, "steps_per_s": 0.05}))
    running = sweep.run_status(spec.out, run, {"7_0": ("RUNNING", "gpu12")})
    assert running.time_left_s == pytest.approx(300) and " 5m " in sweep.status_table([running]).splitlines()[1]
    assert sweep.run_status(spec.out, run, {"7_0": ("PENDING", "")}).time_left_s is None
    (run.folder(spec.out) / "metrics.jsonl").unlink()
    # a lock left by a job on a node that died: the queue, which no longer lists the job, decides
    folder = run.folder(spec.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.lock").write_text(json.dumps({"owner": "slurm-7_0", "host": "gpu12", "pid": 1}))
    gone = sweep.run_status(spec.out, run, {})
    assert gone.state == "failed" and "left the queue" in gone.note
    assert sweep.run_status(spec.out, run, None).state == "running"  # no squeue here: the lock is all we know
    assert [r.name for r in sweep._to_do(spec, {})[0]] == [run.name]  # a failed run is run again
