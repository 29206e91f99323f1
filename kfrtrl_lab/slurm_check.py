"""`make slurm-check`: a sweep on a real Slurm, started on this machine for the check and stopped after.

    python -m kfrtrl_lab.slurm_check [--record results/slurm_check.txt] [--keep] [--optional]

Starts munged and a one-node Slurm (slurmctld + slurmd on localhost, Debian's slurm-wlm and munge,
installed with apt when missing and this is root) from files in a temporary folder — its own munge
key and socket, free ports, no accounting — so it touches no Slurm or munge this machine may already
run. Then: ``sweep run sweeps/smoke.toml --executor slurm``; one job is requeued with ``scontrol
requeue`` once its run has logged its first line (its log must then show it stopped mid-run, saved,
and resumed from that step); every run must finish with the spec's step count, the
requeued one resumed from its checkpoint with its curve whole. The daemons it started are stopped
at the end, whatever happened. Exit status 0 passed, 1 failed, 2 Slurm or munge unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "sweeps" / "smoke.toml"
DAEMONS = ("munged", "slurmctld", "slurmd")


class CheckFailed(AssertionError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(512, int(total_kb / 1024 * 0.9))  # slurmd refuses a node whose RealMemory exceeds what it finds


def ensure_installed() -> None:
    """Debian's slurm-wlm and munge, installed with apt when missing (as root); else say how."""
    if all(shutil.which(d) for d in DAEMONS) and shutil.which("sbatch"):
        return
    if os.geteuid() != 0:
        raise RuntimeError("the Slurm check needs Debian's slurm-wlm and munge: as root, apt-get install -y "
                           "slurm-wlm munge")
    print("installing slurm-wlm and munge with apt", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # a fresh image has no package lists yet (as the Makefile's chromium target does)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


class LocalSlurm:
    """munged, slurmctld and slurmd in the foreground of processes this object started (so that it
    stops exactly those), configured from files under ``root``."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = Path(root), cpus
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge / "munge.socket"
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={socket_path}", f"--key-file={key}",
                               f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                               f"--seed-file={munge / 'munged.seed'}"])
        _wait(lambda: socket_path.exists(), 20, "munged's socket")
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir()
        self.conf.write_text(self._config(socket_path))
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
        _wait(lambda: self.slurm("sinfo", "-h", "-o", "%T", check=False).strip() == "idle", 60,
              "the node to be idle in sinfo (see the logs under " + str(self.root / "log") + ")")

    def _config(self, munge_socket: Path) -> str:
        user = os.environ.get("USER") or "root"
        r = self.root
        return "\n".join([
            "ClusterName=kfrtrlcheck",
            "SlurmctldHost=localhost",
            f"SlurmUser={user}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in a container
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",  # memory is not a consumable: jobs asking none still share the node
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            "JobRequeue=1",
            "KillWait=20",  # a job told to stop has this long to write its checkpoint
            "MailProg=/bin/true",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.root / f"{name}.out").open("w")
        self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        time.sleep(0.5)
        if self.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited at once ({self.procs[name].returncode}): "
                               f"{(self.root / f'{name}.out').read_text().strip()[-500:]}")

    def slurm(self, *command: str, check: bool = True) -> str:
        out = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if check and out.returncode != 0:
            raise CheckFailed(f"{' '.join(command)} failed: {out.stderr.strip()}")
        return out.stdout

    def stop(self) -> None:
        """Cancel what is left of the jobs, then stop the daemons this object started, newest first."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.slurm("scancel", "--user", os.environ.get("USER") or "root", check=False)
            time.sleep(1)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait(condition, timeout: float, what: str, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def _queue(cluster: LocalSlurm) -> dict[str, str]:
    lines = cluster.slurm("squeue", "-h", "-r", "-o", "%i %T", check=False).split("\n")
    return dict(line.split()[:2] for line in lines if len(line.split()) >= 2)


def check(cluster: LocalSlurm, work: Path, say) -> None:
    from . import sweep

    out = work / "runs"
    env = {**cluster.env, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "kfrtrl_lab", "sweep", "run", str(SPEC), "--executor", "slurm", "--out", str(out),
               "--partition", "debug", "--time", "10", "--cpus", "1"]
    say("$ " + " ".join(["python -m kfrtrl_lab"] + command[3:]))
    submitted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    say(submitted.stdout.rstrip())
    if submitted.returncode != 0:
        raise CheckFailed(f"sweep run exited {submitted.returncode}: {submitted.stderr.strip()}")
    spec = sweep.load_spec(SPEC, out)
    jobs = {run.name: sweep.read_record(out, run.name)["job_id"] for run in spec.runs}
    if len(jobs) != len(spec.runs) or not all(jobs.values()):
        raise CheckFailed(f"not every run was submitted: {jobs}")

    def run_again(expect: str) -> None:
        """The same command again submits nothing: every run is queued, running or finished."""
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        say("$ (the same command again)\n" + again.stdout.rstrip())
        if again.returncode != 0 or "nothing to submit" not in again.stdout or again.stdout.count(expect) != len(jobs):
            raise CheckFailed(f"re-running the sweep should skip every run as {expect!r}: {again.stdout}{again.stderr}")

    run_again("skip ")

    # Requeue one job mid-run: as soon as its run has logged its first line. (Suspending the job
    # first would pin it mid-run, but a job requeued while suspended is killed before it can save.)
    # Whether the requeue came mid-run is checked afterwards, from the job's log.
    requeued = None
    for run in spec.runs:
        folder, job = run.folder(out), jobs[run.name]
        try:
            _wait(lambda log=folder / "metrics.jsonl": log.exists() and log.stat().st_size > 0,
                  120, f"{run.name} to log its first line", every=0.02)
        except CheckFailed:
            continue
        cluster.slurm("scontrol", "requeue", job)
        if (folder / "summary.json").exists():  # it had ended: the requeued job will only skip it
            say(f"{run.name} (job {job}) ended before the requeue; trying the next run")
            continue
        requeued = (run, job)
        say(f"$ scontrol requeue {job}   # {run.name}, logged up to step {sweep.run_status(out, run).step} "
            f"of {run.config['steps']}")
        break
    if requeued is None:
        raise CheckFailed("no job could be caught mid-run to requeue")
    run, job = requeued
    # Slurm holds a requeued job back for about two minutes (its BeginTime); as the administrator
    # of this cluster, the check lets it start at once.
    _wait(lambda: _queue(cluster).get(job) == "PENDING", 60, f"job {job} to be pending again")
    cluster.slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
    say(f"$ scontrol update JobId={job} StartTime=now   # instead of Slurm's delay before a requeued job restarts")

    _wait(lambda: not set(jobs.values()) & set(_queue(cluster)), 300, "every job to leave the queue", every=1.0)
    status = sweep.sweep_status(spec)
    say("$ python -m kfrtrl_lab sweep status sweeps/smoke.toml --out RUNS")
    say(sweep.status_table(status))
    run_again(": finished")
    wrong = [f"{s.name}: {s.state} at step {s.step}" for s in status
             if s.state != "finished" or s.step != spec.runs[0].config["steps"]]
    if wrong:
        raise CheckFailed(f"runs not finished at step {spec.runs[0].config['steps']}: {wrong}")

    logs = "".join(p.read_text(errors="replace") for p in (out / ".sweep" / "submitit").glob(f"{job}_*log.out"))
    lines = [line for line in logs.splitlines() if line.startswith(run.name + ":")]
    say(f"job {job}'s log (both attempts):")
    say("\n".join("  " + line for line in lines))
    stopped = [int(line.rsplit(" ", 1)[1]) for line in lines if "interrupted at step" in line]
    if not stopped or not 0 < stopped[0] < run.config["steps"]:
        raise CheckFailed(f"{run.name} was not stopped mid-run by the requeue: {lines}")
    if not any(f"resuming from step {stopped[0]}" in line for line in lines):
        raise CheckFailed(f"{run.name} did not resume from its checkpoint after the requeue: {lines}")
    rows = [json.loads(line)["step"] for line in (run.folder(out) / "metrics.jsonl").read_text().splitlines()]
    every = run.config["log_every"]
    if rows != list(range(every, run.config["steps"] + 1, every)):
        raise CheckFailed(f"{run.name}'s curve has gaps or repeats after the requeue: steps {rows}")
    say(f"{run.name}: curve whole ({len(rows)} lines, step {every} to {rows[-1]}) across the requeue")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", default=None, help="also write the output to this file (results/slurm_check.txt)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (configuration, logs, runs)")
    p.add_argument("--optional", action="store_true",
                   help="(make test) when Slurm is missing and cannot be installed here: say so and exit 0")
    args = p.parse_args(argv)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    started = time.monotonic()
    try:
        ensure_installed()
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"slurm check {'skipped' if args.optional else 'not run'}: {err}", file=sys.stderr)
        return 0 if args.optional else 2
    work = Path(tempfile.mkdtemp(prefix="kfrtrl-slurm-check-"))
    cluster = LocalSlurm(work / "slurm")
    (work / "slurm").mkdir()
    code = 1
    try:
        version = subprocess.run(["slurmctld", "-V"], capture_output=True, text=True, check=False).stdout.strip()
        from .runs import git_commit

        say(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {(git_commit() or '?')[:7]}: one-node "
            f"Slurm on this machine ({version}, {cluster.cpus} CPUs, files in a temporary folder)")
        cluster.start()
        say("slurmctld, slurmd and munged started; node localhost idle")
        check(cluster, work, say)
        code = 0
    except (CheckFailed, RuntimeError) as err:
        say(f"FAILED: {err}")
        for log in sorted((work / "slurm").rglob("*.log")):
            print(f"--- {log} (last lines)\n" + "\n".join(log.read_text(errors='replace').splitlines()[-15:]),
                  file=sys.stderr)
    finally:
        cluster.stop()
        say(f"daemons stopped; {'PASSED' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.record:
        Path(args.record).write_text("\n".join(lines) + "\n")
    return code


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed check still stops its daemons
    sys.exit(main())
