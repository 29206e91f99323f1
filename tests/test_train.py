"""The online trainer: curriculum task, checkpoints, exact resume, divergence."""

import json
import math

import pytest
import torch

from kfrtrl_lab.__main__ import main
from kfrtrl_lab.copy_task import BLANK, MARKER, CopyTask
from kfrtrl_lab.train import Diverged, RunConfig, train


def test_copy_sequences_follow_the_official_layout():
    task = CopyTask(batch_size=3, seed=0)
    task.t_max = 6
    seen = {b: ([], []) for b in range(3)}
    starts_at = {b: [] for b in range(3)}
    for t in range(60):
        x, y, starts = task.next()
        for b in range(3):
            if starts[b]:
                starts_at[b].append(t)
            seen[b][0].append(int(x[b].argmax()))
            seen[b][1].append(int(y[b]))
        assert torch.equal(x.sum(1), torch.ones(3))
    for b in range(3):
        xs, ys = seen[b]
        bounds = starts_at[b] + [None]
        for s, e in zip(bounds[:-2], bounds[1:-1]):  # complete sequences only
            inp, tgt = xs[s:e], ys[s:e]
            T = (len(inp) - 2) // 2
            assert len(inp) == 2 * T + 2 and 2 <= T <= 6  # T ~ U{max(1, T_max-4) .. T_max}
            bits = inp[1 : T + 1]
            assert inp == [MARKER, *bits, *[BLANK] * (T + 1)]
            assert tgt == [*[BLANK] * (T + 1), MARKER, *bits]
            assert set(bits) <= {0, 1}
    # lanes are independent streams: their sequence boundaries differ
    assert len({tuple(v) for v in starts_at.values()}) > 1


def test_curriculum_rule():
    task = CopyTask(batch_size=2, seed=0)
    task.next()
    assert task.t_max == 1 and task.ema == 1.0
    task.observe(torch.tensor([0.5, 0.5]) * math.log(2))  # 0.5 bits
    assert task.ema == pytest.approx(0.999 + 0.001 * 0.5)
    task.ema = 0.1
    while not task.next()[2].any():  # no change until a lane starts a sequence
        assert task.t_max == 1
    assert task.t_max == 2 and task.ema == 0.3


def small(task="copy", **kw):
    base = dict(task=task, method="kf-rtrl", hidden=8, batch=4, steps=120, lr=1e-2, log_every=10, seed=3)
    return RunConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["kf-rtrl", "uoro", "tbptt-4"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, method):
    config = small(method=method)
    train(config, tmp_path / "full", progress=False)
    train(config, tmp_path / "split", progress=False, stop_after=50)
    first = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert first["step"] == 52 if method == "tbptt-4" else first["step"] == 50  # tbptt stops between windows
    train(config, tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("steps_per_s", "wall_s")}  # noqa: E731
                       for line in p.read_text().splitlines()]
    assert strip(tmp_path / "full" / "metrics.jsonl") == strip(tmp_path / "split" / "metrics.jsonl")
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps_done"] == 120
    assert summary["config"]["method"] == method and summary["threads"] >= 1


def test_a_run_folder_is_not_overwritten_and_resume_checks_the_config(tmp_path):
    train(small(steps=20), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        train(small(steps=20), tmp_path, progress=False)
    with pytest.raises(ValueError, match="configuration differs"):
        train(small(steps=40, lr=0.5), tmp_path, resume=True, progress=False)
    train(small(steps=40), tmp_path, resume=True, progress=False)  # more steps is fine
    assert json.loads((tmp_path / "summary.json").read_text())["steps_done"] == 40


def test_divergence_stops_clearly_and_keeps_the_last_good_checkpoint(tmp_path):
    config = small(steps=200)
    train(config, tmp_path, progress=False, stop_after=30)
    good = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    with torch.no_grad():  # poison the saved weights as a diverging optimiser would
        poisoned = dict(good)
        poisoned["model"] = {k: v.clone() for k, v in good["model"].items()}
        poisoned["model"]["cell.weight"][0, 0] = float("nan")
    torch.save(poisoned, tmp_path / "checkpoint.pt")
    with pytest.raises(Diverged, match="diverged at step 31.*checkpoint"):
        train(config, tmp_path, resume=True, progress=False)
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert kept["step"] == 30  # the divergent state was not written over it
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_cli_trains_and_reports(tmp_path, capsys):
    rc = main(["train", "copy", "--method", "uoro", "--hidden", "8", "--batch", "2", "--steps", "30",
               "--log-every", "10", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 30 and "t_max" in out
    with pytest.raises(SystemExit):
        main(["train", "copy", "--method", "kf-rtrl", "--out", str(tmp_path / "x"), "--steps", "abc"])
    capsys.readouterr()
    rc = main(["train", "copy", "--method", "kfrtrl", "--out", str(tmp_path / "y"), "--steps", "5", "--no-progress"])
    assert rc == 2 and "unknown method 'kfrtrl'" in capsys.readouterr().err


PTB_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


@pytest.mark.skipif(not (PTB_DIR / "ptb.char.train.txt").exists(), reason="no local PTB copy")
def test_ptb_training_resumes_exactly_and_evaluates(tmp_path, capsys):
    config = small("ptb", hidden=8, batch=4, steps=60, reset_every=25, eval_every=30, eval_batch=256,
                   data_dir=str(PTB_DIR))
    train(config, tmp_path / "full", progress=False)
    train(config, tmp_path / "split", progress=False, stop_after=35)
    train(config, tmp_path / "split", resume=True, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid_bpc"] for r in rows if "valid_bpc" in r] == [r["valid_bpc"] for r in full if "valid_bpc" in r]
    assert len([r for r in rows if "valid_bpc" in r]) == 2
    assert 4 < rows[-1]["valid_bpc"] < 6  # barely trained: near log2(50) = 5.64
    capsys.readouterr()
    assert main(["eval", "ptb", "--checkpoint", str(tmp_path / "split" / "checkpoint.pt"), "--split", "test",
                 "--batch", "256", "--data-dir", str(PTB_DIR)]) == 0
    assert 4 < json.loads(capsys.readouterr().out)["test_bpc"] < 6


def test_compare_reads_summaries_against_the_reference(tmp_path, capsys):
    train(small(steps=40, log_every=10), tmp_path / "run", progress=False)
    from kfrtrl_lab.results import load_summary, value_at

    s = load_summary(tmp_path / "run" / "summary.json")
    assert value_at(s, "t_max", 25) == [r for r in s["curve"] if r["step"] == 20][0]["t_max"]
    assert value_at(s, "t_max", 100_000) is None  # the run never got there
    assert main(["compare", str(tmp_path / "run" / "summary.json")]) == 0
    table = capsys.readouterr().out
    assert "| reference (OK) | 16 | 20 | 28 | 32–37 | 38–45 |" in table and "kf-rtrl n=8 B=4" in table
    (tmp_path / "bad.json").write_text("{}")
    assert main(["compare", str(tmp_path / "bad.json")]) == 2


def test_ctrl_c_checkpoints_and_the_run_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kfrtrl_lab", "train", "copy", "--hidden", "8", "--batch", "2",
           "--steps", "1000000", "--log-every", "50", "--threads", "1", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "interrupted"
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert 0 < saved["step"] < 1_000_000
    target = saved["step"] + 30
    assert main(["train", "copy", "--hidden", "8", "--batch", "2", "--steps", str(target), "--log-every", "50",
                 "--threads", "1", "--out", str(out), "--no-progress", "--resume"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == target
