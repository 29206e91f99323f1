"""Issue 17: runs that cannot be lost or mixed, verdicts a script can read, and bad input answered
with exit 2 and one line naming the option or file."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kfrtrl_lab as kl
from kfrtrl_lab.__main__ import main
from kfrtrl_lab.runs import RunFolder
from kfrtrl_lab.train import Diverged, RunConfig, train

LOCK = "run.lock"  # what a run folder's lock file is called (kfrtrl_lab.runs.LOCK)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PTB_DIR = ROOT.parent.parent / "shared" / "data" / "ptb"
has_ptb = pytest.mark.skipif(not (PTB_DIR / "ptb.char.train.txt").exists(), reason="no local PTB copy")


def small(task="copy", **kw):
    base = dict(task=task, method="kf-rtrl", hidden=8, batch=4, steps=40, lr=1e-2, log_every=10, seed=3)
    return RunConfig(**{**base, **kw})


def cli(*args):
    """Train options for a tiny copy run, then ``args``."""
    return ["train", "copy", "--hidden", "8", "--batch", "2", "--steps", "20", "--log-every", "10", "--threads", "1",
            "--no-progress", *args]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    return err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- 1, 2: a run folder belongs to one run -------------------------------------------------------

def test_a_new_run_refuses_a_folder_with_files_even_without_a_checkpoint(tmp_path, capsys):
    done = tmp_path / "done"
    assert main(cli("--out", str(done))) == 0
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    (copy / "checkpoint.pt").unlink()
    before = snapshot(copy)
    capsys.readouterr()
    assert main(cli("--out", str(copy))) == 2
    err = error_line(capsys)
    assert str(copy) in err and "metrics.jsonl" in err and "--resume" in err and "another --out" in err
    assert snapshot(copy) == before  # metrics, run.json and summary untouched
    with pytest.raises(FileExistsError, match="not empty"):
        train(small(), copy, progress=False)


def test_two_runs_started_into_one_folder_one_is_refused(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kfrtrl_lab", "train", "copy", "--hidden", "8", "--batch", "2", "--steps", "3000",
           "--log-every", "100", "--threads", "1", "--no-progress", "--out", str(out)]
    procs = [subprocess.Popen(cmd + ["--seed", str(seed)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in (0, 1)]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, (_, err) in results if code == 2)
    assert str(out) in refused and ("in use by another run" in refused or "not empty" in refused)
    winner = next(i for i, (code, _) in enumerate(results) if code == 0)
    summary = json.loads((out / "summary.json").read_text())
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["config"]["seed"] == winner and steps == list(range(100, 3001, 100))  # one run's rows, once
    assert torch.load(out / "checkpoint.pt", weights_only=False)["config"]["seed"] == winner
    assert not (out / LOCK).exists()  # given back at the end


def test_the_lock_names_its_owner_and_stale_locks_are_taken_over(tmp_path, capsys):
    from kfrtrl_lab.runs import RunLock, RunLocked

    folder = tmp_path / "run"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK).write_text(json.dumps({"owner": "slurm-7", "host": socket.gethostname(),
                                               "pid": sleeper.pid, "since": "earlier"}))
        with pytest.raises(RunLocked, match=f"owner slurm-7, host {socket.gethostname()}, PID {sleeper.pid}"):
            RunLock(folder).acquire()
        assert main(cli("--out", str(folder))) == 2
        assert "in use by another run" in error_line(capsys)
        # a requeued job with the same owner id takes its folder back
        with RunLock(folder, owner="slurm-7") as lock:
            assert lock.holder()["pid"] == os.getpid()
        assert not (folder / LOCK).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    (folder / LOCK).write_text(json.dumps({"owner": "old", "host": socket.gethostname(), "pid": dead_pid()}))
    assert main(cli("--out", str(folder))) == 0  # a lock of a process that is gone is stale
    assert "no longer runs; taking the run folder over" in capsys.readouterr().err


def test_a_lock_file_left_empty_is_stale_only_once_it_is_old(tmp_path, capsys):
    from kfrtrl_lab.runs import RunLock, RunLocked

    lock_file = tmp_path / LOCK
    lock_file.write_text("")  # a process died between creating the lock and writing it (or is writing it now)
    with pytest.raises(RunLocked, match="a lock file being written"):
        RunLock(tmp_path).acquire()
    old = time.time() - 2 * RunLock.EMPTY_GRACE_S
    os.utime(lock_file, (old, old))
    with RunLock(tmp_path):
        assert "unreadable lock file" in capsys.readouterr().err
    assert not lock_file.exists()


def test_a_lock_of_this_process_is_refused_while_held_and_stale_once_forgotten(tmp_path, capsys):
    from kfrtrl_lab.runs import RunLock, RunLocked

    first = RunLock(tmp_path, owner="a").acquire()
    with pytest.raises(RunLocked):  # a second run of this process into the same folder
        RunLock(tmp_path, owner="b").acquire()
    first.held = False  # as if the run that took it had been dropped without giving it back
    type(first)._held_here.clear()
    with RunLock(tmp_path, owner="b"):
        assert "left by an earlier run of this process" in capsys.readouterr().err


def test_a_running_run_holds_its_lock_and_resume_is_refused_meanwhile(tmp_path, monkeypatch):
    from kfrtrl_lab import train as train_module
    from kfrtrl_lab.runs import RunLock, RunLocked

    out = tmp_path / "run"
    seen = []
    original = train_module.Run.step

    def step(self, stop):
        if not seen:
            seen.append(json.loads((out / LOCK).read_text()))
            with pytest.raises(RunLocked):  # a second process would be refused here
                RunLock(out, owner="someone-else").acquire()
        return original(self, stop)

    monkeypatch.setattr(train_module.Run, "step", step)
    train(small(), out, progress=False)
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (out / LOCK).exists()


# -- 3, 7: resume keeps what is there and refuses what is lost ------------------------------------

def test_resume_keeps_the_recorded_final_eval(tmp_path):
    train(small(steps=40), tmp_path, progress=False, stop_after=20)
    RunFolder(tmp_path).record_eval({"test_bpc": 1.5, "eval_step": 20})
    summary = train(small(steps=40), tmp_path, resume=True, progress=False)
    assert summary["final_eval"] == {"test_bpc": 1.5, "eval_step": 20}
    assert json.loads((tmp_path / "summary.json").read_text())["final_eval"]["test_bpc"] == 1.5


def test_resume_refuses_a_run_whose_metrics_were_lost(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli("--steps", "40", "--stop-after", "20", "--out", str(out))) == 0
    (out / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert main(["train", "copy", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = error_line(capsys)
    assert "metrics.jsonl is missing" in err and "step 20" in err
    (out / "metrics.jsonl").write_text(json.dumps({"step": 20, "loss_bits": 1.0}) + "\n")  # the row at 10 is gone
    assert main(["train", "copy", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "lacks the rows of 1 logged steps" in error_line(capsys)


def test_a_bad_metrics_line_names_the_file_and_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli("--steps", "40", "--stop-after", "20", "--out", str(out))) == 0
    with (out / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    capsys.readouterr()
    assert main(["train", "copy", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert f"{out / 'metrics.jsonl'}, line 3: not a JSON metrics row" in error_line(capsys)


# -- 4: certify's verdict is its exit status --------------------------------------------------------

BIASED_PLUGIN = '''
import kfrtrl_lab as kl
from kfrtrl_lab.estimators.kf_rtrl import KFRTRL


@kl.register_method
class ScaledKF(KFRTRL):
    """KF-RTRL's gradient times 1.1: biased."""

    name = "toy-scaled-kf"

    def recurrent_gradient(self, dl_ds, per_lane=False):
        return 1.1 * super().recurrent_gradient(dl_ds, per_lane=per_lane)


@kl.register_method
class NotExactRTRL(kl.RTRL):
    """Claims exactness (RTRL's class attribute) but adds a constant."""

    name = "toy-inexact-rtrl"

    def recurrent_gradient(self, dl_ds, per_lane=False):
        return super().recurrent_gradient(dl_ds, per_lane=per_lane) + 1e-3
'''


@pytest.mark.parametrize("method, outcome", [("toy-scaled-kf", "biased (z-test failed)"),
                                             ("toy-inexact-rtrl", "not exact, though it claims to be")])
def test_certify_exits_1_and_prints_the_verdict_of_a_failed_certificate(tmp_path, capsys, method, outcome):
    plugin = tmp_path / "biased.py"
    plugin.write_text(BIASED_PLUGIN)
    out = tmp_path / "certs"
    try:
        rc = main(["certify", method, "--plugin", str(plugin), "--cell", "tanh", "--profile", "quick",
                   "--out", str(out)])
    finally:
        for name in ("toy-scaled-kf", "toy-inexact-rtrl"):
            kl.estimators.registry.METHODS.pop(name, None)
    printed = capsys.readouterr().out
    assert rc == 1, printed
    assert f"CERTIFICATE {method} on tanh: {outcome}" in printed
    assert ("coordinates outside the z-bound" in printed) if "z-test" in outcome else ("relative error" in printed)
    verdict = json.loads((out / f"certificate-{method}-tanh.json").read_text())
    assert verdict["passed"] is False and verdict["outcome"] == outcome


# -- 5: compare counts each run once and keeps diverged runs apart ----------------------------------

def test_compare_counts_a_run_once_and_shows_diverged_runs_apart(tmp_path, capsys):
    train(small(steps=40), tmp_path / "a", progress=False)
    path = tmp_path / "a" / "summary.json"
    copy = tmp_path / "copy.json"
    shutil.copy(path, copy)
    diverged = json.loads(path.read_text())
    diverged["config"]["seed"] = 4
    diverged["status"] = "diverged"
    diverged["curve"] = [dict(r, t_max=99) for r in diverged["curve"]]
    (tmp_path / "div.json").write_text(json.dumps(diverged))
    capsys.readouterr()
    assert main(["compare", str(path), str(path), str(copy), str(tmp_path / "div.json")]) == 0
    table = capsys.readouterr().out
    assert "| kf-rtrl n=8 B=4 clip 1, lr 0.01 | 3 |" in table  # not "3, 3, 3"
    assert "| kf-rtrl n=8 B=4 clip 1, lr 0.01 [diverged] | 4 |" in table
    assert "99" not in table.split("[diverged]")[0]  # the diverged run is not in the finished row
    assert table.count("left out: the same run (seed 3)") == 2
    assert main(["compare", str(tmp_path / "a")]) == 0  # a folder: the summaries below it
    assert "| kf-rtrl n=8 B=4 clip 1, lr 0.01 | 3 |" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "copy.json"), str(tmp_path / "nothing-here")]) == 2
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "no summary.json below it" in error_line(capsys)


# -- 6, 8: divergence, and the metadata of a run ------------------------------------------------------

def test_a_loss_that_blows_up_but_stays_finite_is_divergence(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "copy", "--hidden", "16", "--steps", "3000", "--lr", "10", "--threads", "1",
               "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "the loss stayed above 20 bits" in err and "start a new run with another --out" in err
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "diverged" and summary["steps_done"] < 3000
    assert rows[-1]["step"] == summary["steps_done"] and "diverged" in rows[-1]
    assert all(r["loss_bits"] > 20 for r in rows[-4:-1])
    assert all(torch.isfinite(torch.tensor(r["loss_bits"])) for r in rows[:-1])


def test_a_diverged_run_records_the_step_it_diverged_at(tmp_path):
    config = small(steps=200, log_every=100)
    train(config, tmp_path, progress=False, stop_after=30)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    state["model"]["cell.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(Diverged, match="diverged at step 31"):
        train(config, tmp_path, resume=True, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps_done"] == 31


@pytest.mark.parametrize("args, message", [
    (["--stream-layout", "foo"], "--stream-layout is an option of the ptb task; the copy task does not use it"),
    (["--tokens", "official"], "--tokens is an option of the ptb task"),
    (["--update-every", "50"], "update_every (50) is larger than steps (20): the run would end before its first"),
    (["--stop-after", "0"], "stop_after must be a positive int, got 0"),
    (["--threads", "100000"], "threads must be at most"),
    (["--seed", "99999999999999999999"], "seed must be an int in [0, 2**63), got 99999999999999999999"),
    (["--batch", "1000000000"], "lower --hidden (8) or --batch (1000000000)"),
    (["--hidden", "100000"], "lower --hidden (100000) or --batch (2)"),
    (["--method", "ok-99999999999999999999"], "r in ok-<r> must be at most 2147483647"),
    (["--method", "ok-2000000000", "--hidden", "64"], "the r of --method ok-2000000000"),
])
def test_bad_settings_exit_2_with_one_line_and_leave_no_folder(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    started = time.perf_counter()
    assert main(cli("--out", str(out), *args)) == 2
    assert message in error_line(capsys)
    assert not out.exists()
    assert time.perf_counter() - started < 10  # refused from the sizes, nothing allocated


def test_resume_refuses_fewer_steps_than_were_done(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli("--steps", "40", "--out", str(out))) == 0
    capsys.readouterr()
    assert main(["train", "copy", "--out", str(out), "--resume", "--steps", "10", "--no-progress"]) == 2
    assert "--steps 10 is below the step the checkpoint is at (40)" in error_line(capsys)
    assert json.loads((out / "summary.json").read_text())["config"]["steps"] == 40


def test_memory_estimate_counts_the_state_model_and_task():
    from kfrtrl_lab.measure import run_memory, state_bytes

    need = run_memory("kf-rtrl", "rhn", 4, 4, 32, 8)
    torch.manual_seed(0)
    model = kl.RecurrentModel(kl.RHN(4, 32), 4)
    real = state_bytes(kl.make_estimator("kf-rtrl", model, 8, seed=0))
    assert need["estimator_state"] == 2 * real  # the meta layout measures what the real one holds
    assert need["model_and_adam"] == 4 * 4 * sum(p.numel() for p in model.parameters())
    assert need["total"] == sum(v for k, v in need.items() if k != "total")


def test_memory_estimate_holds_the_buffers_of_the_device_it_is_for():
    # OK-r's work block of A's is sized to a CPU's cache, but is the whole batch on a GPU; a CPU
    # also keeps a table of finiteness sums. The estimate for each device counts that device's buffers.
    from kfrtrl_lab.measure import run_memory, state_bytes

    torch.manual_seed(0)
    model = kl.RecurrentModel(kl.RHN(4, 128), 4)
    real = kl.make_estimator("ok-4", model, 16, seed=0)
    assert real._block < 16  # the CPU's block is part of the batch at this size
    cpu = run_memory("ok-4", "rhn", 4, 4, 128, 16)
    assert cpu["estimator_state"] == 2 * state_bytes(real)
    gpu = run_memory("ok-4", "rhn", 4, 4, 128, 16, device="cuda")
    pairs = real._M.numel() * real._M.element_size()  # the A's of all lanes
    block = real._A_block.numel() * real._A_block.element_size()
    table = real._finite_rows.numel() * real._finite_rows.element_size()
    assert gpu["estimator_state"] == cpu["estimator_state"] + 2 * (pairs - block - table)


# -- 9: plugins cannot replace a method ----------------------------------------------------------------

def test_a_plugin_cannot_take_the_name_of_an_existing_method():
    builtin = kl.estimators.registry.METHODS["kf-rtrl"]
    with pytest.raises(ValueError, match="method name 'kf-rtrl' is taken by kfrtrl_lab.estimators.kf_rtrl.KFRTRL"):
        @kl.register_method
        class Impostor(kl.RTRL):
            name = "kf-rtrl"
    assert kl.estimators.registry.METHODS["kf-rtrl"] is builtin


def test_train_takes_a_plugin_and_resume_loads_it_again(tmp_path, capsys):
    plugin = tmp_path / "mine.py"
    plugin.write_text('import kfrtrl_lab as kl\n\n\n@kl.register_method\nclass Mine(kl.RTRL):\n'
                      '    """RTRL under another name."""\n\n    name = "toy-mine"\n')
    out = tmp_path / "run"
    try:
        assert main(cli("--method", "toy-mine", "--plugin", str(plugin), "--steps", "40", "--stop-after", "20",
                        "--out", str(out))) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["config"]["method"] == "toy-mine" and summary["config"]["plugin"] == str(plugin)
        assert main(["train", "copy", "--out", str(out), "--resume", "--no-progress"]) == 0
        assert json.loads((out / "summary.json").read_text())["steps_done"] == 40
    finally:
        kl.estimators.registry.METHODS.pop("toy-mine", None)


# -- 11, 12, 14: files that are not what they should be ---------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_checkpoint_is_named_on_resume(tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert main(cli("--steps", "40", "--stop-after", "20", "--out", str(out))) == 0
    ckpt = out / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint"}[damage])
    capsys.readouterr()
    assert main(["train", "copy", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = error_line(capsys)
    assert f"{ckpt} is not a readable checkpoint" in err
    assert not (out / LOCK).exists()


def test_eval_names_a_file_that_is_not_a_checkpoint_and_takes_a_run_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["eval", "ptb", "--checkpoint", str(tmp_path / "notes.txt")]) == 2
    assert f"{tmp_path / 'notes.txt'} is not a readable checkpoint" in error_line(capsys)
    assert main(["eval", "ptb", "--checkpoint", str(tmp_path)]) == 2
    assert "is a folder without a checkpoint.pt" in error_line(capsys)
    run = tmp_path / "run"
    assert main(cli("--out", str(run))) == 0
    capsys.readouterr()
    assert main(["eval", "ptb", "--checkpoint", str(run)]) == 2  # the folder's checkpoint was read:
    assert "is a copy run" in error_line(capsys)
    if not torch.cuda.is_available():
        assert main(["eval", "ptb", "--checkpoint", str(run), "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in error_line(capsys)


def test_an_unwritable_run_folder_is_named(tmp_path, capsys, monkeypatch):
    from kfrtrl_lab import runs

    def refuse(path, *a, **k):  # as os.open in a folder without write permission (the tests may run as root)
        raise PermissionError(13, "Permission denied", str(path))

    out = tmp_path / "run"
    monkeypatch.setattr(runs.os, "open", refuse)
    assert main(cli("--out", str(out))) == 2
    assert error_line(capsys) == f"error: cannot write in the run folder {out} (Permission denied); choose another --out"
    assert list(out.iterdir()) == []


def test_a_failed_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(small(), out, progress=False)
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        Path(f).write_bytes(b"half")
        raise OSError(28, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        RunFolder(out).save_checkpoint({"step": 1})
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "run.json", "summary.json"]


def test_out_must_name_a_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(cli("--out", "")) == 2
    assert "--out is an empty string" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="empty string"):
        train(small(), "", progress=False)
    (tmp_path / "file").write_text("x")
    assert main(cli("--out", str(tmp_path / "file"))) == 2
    assert "is a file" in error_line(capsys)


def test_a_new_run_that_fails_to_start_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from kfrtrl_lab.tasks import ptb_data

    def offline(*a, **k):
        raise ptb_data.PTBNotFoundError("ptb.char.valid.txt missing (as offline)")

    monkeypatch.setattr("kfrtrl_lab.tasks.ptb.load_ptb", offline)
    out = tmp_path / "run"
    args = ["train", "ptb", "--hidden", "8", "--steps", "5", "--data-dir", str(tmp_path), "--out", str(out),
            "--no-progress"]
    assert main(args) == 2
    assert "ptb.char.valid.txt missing" in error_line(capsys)
    assert not out.exists()  # so the same command, once the data are there, is a new run again


# -- PTB data messages ---------------------------------------------------------------------------------

def test_ptb_data_dir_problems_are_named_before_anything_is_created(tmp_path, capsys):
    typo = tmp_path / "dta" / "ptb"
    assert main(["train", "ptb", "--data-dir", str(typo), "--steps", "5", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert f"--data-dir {typo}: no such folder" in error_line(capsys)
    assert not (tmp_path / "dta").exists() and not (tmp_path / "r").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["train", "ptb", "--data-dir", str(tmp_path / "afile"), "--steps", "5", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "is a file" in error_line(capsys)
    from kfrtrl_lab.tasks import ptb_data

    with pytest.raises(ptb_data.PTBNotFoundError, match="is a file, not a folder"):
        ptb_data.find_ptb(tmp_path / "afile", url="http://127.0.0.1:9/none.tgz")


def test_a_missing_ptb_file_is_named_alone(tmp_path):
    from kfrtrl_lab.tasks import ptb_data

    for name in ("ptb.char.train.txt", "ptb.char.test.txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(ptb_data.PTBNotFoundError) as err:
        ptb_data.find_ptb(tmp_path, url="http://127.0.0.1:9/none.tgz")
    msg = str(err.value)
    assert "ptb.char.valid.txt missing from" in msg and "ptb.char.train.txt" not in msg and "\n" not in msg


def test_an_unreadable_ptb_file_is_named(tmp_path, monkeypatch, capsys):
    from kfrtrl_lab.tasks import ptb_data

    for name in ptb_data.PTB_FILES.values():
        (tmp_path / name).write_text("x")

    def refuse(path, *a, **k):  # as a file without read permission (the tests may run as root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ptb_data, "open", refuse, raising=False)
    assert main(["train", "ptb", "--data-dir", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "ptb.char.train.txt cannot be read (Permission denied)" in error_line(capsys)


# -- Ctrl-C is answered within seconds ----------------------------------------------------------------

def test_ctrl_c_is_answered_within_seconds_whatever_the_log_interval(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kfrtrl_lab", "train", "copy", "--hidden", "48", "--batch", "4", "--steps", "10000000",
           "--log-every", "10000000", "--threads", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "run.json").exists():
        time.sleep(0.1)
    time.sleep(3)  # inside the first (only) log interval: the old loop ran it as one chunk
    proc.send_signal(signal.SIGINT)
    asked = time.time()
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert time.time() - asked < 15
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert 0 < saved["step"] < 10_000_000


def test_an_evaluation_stops_at_a_request():
    from kfrtrl_lab.tasks import EvaluationStopped
    from kfrtrl_lab.tasks.ptb import evaluate_bpc

    model = kl.RecurrentModel(kl.RHN(5, 8), 5)
    ids = torch.randint(0, 5, (4000,))
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(EvaluationStopped):
        evaluate_bpc(model, ids, batch_size=4, stop=stop)
    assert len(calls) == 4
    assert evaluate_bpc(model, ids, batch_size=4, stop=lambda: False) == evaluate_bpc(model, ids, batch_size=4)


@has_ptb
def test_a_stop_during_validation_is_resumed_with_the_same_rows(tmp_path, monkeypatch):
    from kfrtrl_lab import train as train_module
    from kfrtrl_lab.tasks import ptb as ptb_module

    config = small("ptb", hidden=8, batch=4, steps=60, reset_every=25, eval_every=30, eval_batch=256,
                   data_dir=str(PTB_DIR))
    train(config, tmp_path / "full", progress=False)

    class StopInEvaluation(train_module._StopFlag):
        @property
        def requested(self):
            return self._requested or ptb_module.evaluate_bpc.__dict__.get("running", False)

        @requested.setter
        def requested(self, value):
            self._requested = value

    real = ptb_module.evaluate_bpc

    def evaluate(*a, **k):  # a Ctrl-C arrives while the first validation pass runs
        evaluate.running = True
        return real(*a, **k)

    monkeypatch.setattr(ptb_module, "evaluate_bpc", evaluate)
    monkeypatch.setattr(train_module, "_StopFlag", StopInEvaluation)
    stopped = train(config, tmp_path / "split", progress=False)
    assert stopped["status"] == "interrupted" and stopped["steps_done"] == 30
    # the stop cut the validation short: no row at step 30 yet (it is owed to the resumed run)
    assert [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()] \
        == [10, 20]
    monkeypatch.undo()
    train(config, tmp_path / "split", resume=True, progress=False)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("steps_per_s", "wall_s")}  # noqa: E731
                       for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "split") == strip(tmp_path / "full")
