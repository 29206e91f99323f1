"""The online trainer: curriculum task, checkpoints, exact resume, divergence."""

import json
import math

import pytest
import torch

from kfrtrl_lab.__main__ import main
from kfrtrl_lab.tasks.copy import BLANK, MARKER, CopyTask
from kfrtrl_lab.train import Diverged, RunConfig, train


def test_copy_sequences_follow_the_official_layout():
    task = CopyTask(batch_size=3, seed=0)
    task.t_max.fill_(6)
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


@pytest.mark.parametrize("seed", [0, 5])
def test_copy_draws_are_a_function_of_seed_lane_and_sequence(seed):
    """Lane b's k-th sequence: T = low + h(TASK_LENGTHS; k, b) mod (T_max − low + 1), bit i =
    h(TASK_BITS; k, b·MAX_LENGTH + i) mod 2 — whatever else the batch holds, so a seed fixes a run."""
    from kfrtrl_lab.random import TASK_BITS, TASK_LENGTHS, hash_bits, stream_key

    def h(stream, k, index):
        return int(hash_bits(stream_key(seed, stream), torch.tensor(k), torch.tensor(index)))

    B = 3
    task = CopyTask(batch_size=B, seed=seed)
    task.t_max.fill_(6)
    task.ema.fill_(1e9)  # the curriculum holds T_max at 6
    inputs = torch.stack([task.next()[0].argmax(1) for _ in range(80)])  # (80, B)
    for b in range(B):
        t, k = 0, 0
        while True:
            T = 2 + h(TASK_LENGTHS, k, b) % 5
            if t + 2 * T + 2 > len(inputs):
                break
            bits = [h(TASK_BITS, k, b * CopyTask.MAX_LENGTH + i) % 2 for i in range(T)]
            assert inputs[t:t + 2 * T + 2, b].tolist() == [MARKER, *bits, *[BLANK] * (T + 1)], (b, k)
            t, k = t + 2 * T + 2, k + 1
        assert k >= 3


def test_curriculum_rule():
    task = CopyTask(batch_size=2, seed=0)
    task.next()
    assert task.metrics() == {"t_max": 1, "ema_bits": 1.0}
    task.observe(torch.tensor([0.5, 0.5]) * math.log(2))  # 0.5 bits
    assert float(task.ema) == pytest.approx(0.999 + 0.001 * 0.5)
    task.ema.fill_(0.1)
    while not task.next()[2].any():  # no change until a lane starts a sequence
        assert int(task.t_max) == 1
    assert int(task.t_max) == 2 and float(task.ema) == 0.3


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
    sample = json.loads((tmp_path / "split" / "summary.json").read_text())["sample_text"]
    assert len(sample["text"]) > 100 and sample["prime"] == "the_"  # written by the trainer, not by hand
    copy_run = tmp_path / "copy"
    train(small(steps=10), copy_run, progress=False)
    assert main(["eval", "ptb", "--checkpoint", str(copy_run / "checkpoint.pt"), "--data-dir", str(PTB_DIR)]) == 2
    assert "is a copy run" in capsys.readouterr().err


def test_compare_reads_summaries_against_the_reference(tmp_path, capsys):
    train(small(steps=40, log_every=10), tmp_path / "run", progress=False)
    from kfrtrl_lab.results import late_mean, load_summary, value_at

    s = load_summary(tmp_path / "run" / "summary.json")
    assert value_at(s, "t_max", 25) == [r for r in s["curve"] if r["step"] == 20][0]["t_max"]
    assert value_at(s, "t_max", 100_000) is None  # the run never got there
    assert late_mean(s, "loss_bits", fraction=0.5) == sum(r["loss_bits"] for r in s["curve"][-2:]) / 2
    assert main(["compare", str(tmp_path / "run" / "summary.json")]) == 0
    table = capsys.readouterr().out
    assert "| kf-rtrl n=8 B=4 clip 1, lr 0.01 | 3 |" in table
    # a curve is compared with its own estimator's reference only: KF-RTRL has no log, only the paper's text
    assert "reference: KF-RTRL, KF-RTRL paper's text" in table and "OK-16" not in table
    seeds = []
    for seed in (3, 4):
        train(small(steps=40, log_every=10, seed=seed, method="ok-16-official"), tmp_path / f"ok{seed}", progress=False)
        seeds.append(str(tmp_path / f"ok{seed}" / "summary.json"))
    assert main(["compare", *seeds]) == 0
    table = capsys.readouterr().out
    assert "| ok-16-official n=8 B=4 clip 1, lr 0.01 | 3, 4 |" in table  # the seeds are one row
    assert "| reference: OK-16 (official scaling), official OK code logs, 5 runs | | 4 | 11–12 | 15–17 |" in table
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
    assert proc.returncode == 130, stderr  # interrupted, as shells and schedulers expect
    assert "--resume" in stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "interrupted"
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert 0 < saved["step"] < 1_000_000
    target = saved["step"] + 30
    # the options of the run come from its checkpoint: only what changes is given again
    assert main(["train", "copy", "--steps", str(target), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == target
    assert json.loads((out / "summary.json").read_text())["config"]["hidden"] == 8


# -- names, cells, registries --------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--hidden", "0"], "hidden must be a positive int, got 0"),
    (["--threads", "0"], "threads must be a positive int, got 0"),
    (["--method", "tbptt-0"], "k in tbptt-<k> must be a positive int"),
    (["--method", "kfrtrl"], "unknown method 'kfrtrl'"),
    (["--cell", "gru"], "unknown cell 'gru'; known cells: rhn, tanh, lstm"),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "device 'cuda"),
    (["--device", "tpu"], "device must be cpu, cuda or cuda:<index>"),
    (["--lr", "-1"], "lr must be positive"),
])
def test_cli_refuses_bad_settings_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "copy", "--steps", "5", "--out", str(out), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was started


def test_ptb_names_are_checked_before_the_data_loads(tmp_path, monkeypatch, capsys):
    def no_download(*a, **k):
        raise AssertionError("the data were loaded for a run that cannot start")

    monkeypatch.setattr("kfrtrl_lab.tasks.ptb.load_ptb", no_download)
    assert main(["train", "ptb", "--method", "kfrtrl", "--steps", "5", "--out", str(tmp_path / "r")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["train", "ptb", "--method", "bptt", "--reset-every", "none", "--steps", "5",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--reset-every" in capsys.readouterr().err


def test_help_lists_every_option_once_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and text.count("(default:") >= 10
    for option in ("--seed", "--checkpoint-minutes", "--cell", "--method"):
        assert option in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "compare" in capsys.readouterr().out


@pytest.mark.parametrize("cell", ["lstm", "tanh"])
def test_every_cell_trains_from_the_command_line(tmp_path, capsys, cell):
    assert main(["train", "copy", "--cell", cell, "--method", "kf-rtrl", "--hidden", "8", "--batch", "2",
                 "--steps", "40", "--log-every", "20", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["cell"] == cell and summary["status"] == "finished"
    from kfrtrl_lab.train import load_model

    model, config, step = load_model(tmp_path / "run" / "checkpoint.pt")
    assert type(model.cell).__name__.lower().startswith(cell) and step == 40


def test_full_bptt_in_the_trainer_updates_at_each_sequence_end(tmp_path):
    """bptt on the copy task: lanes run synchronised sequences (one T per round) and Adam steps once
    at the end of each; the loss falls (before: the weights were never updated)."""
    config = small(method="bptt", steps=1500, hidden=16, lr=1e-2, log_every=100)
    summary = train(config, tmp_path, progress=False)
    losses = [r["loss_bits"] for r in summary["curve"]]
    assert losses[-1] < 0.7 * losses[0]
    torch.manual_seed(0)
    task = CopyTask(3, seed=0, synchronous=True)
    for _ in range(40):
        _, _, starts = task.next()
        assert starts.all() or not starts.any()


def test_a_toy_estimator_registered_here_trains(tmp_path):
    """A new estimator needs no edit elsewhere: defined and registered in this file, it is found by
    name by make_estimator, the trainer, and gradient_samples."""
    import kfrtrl_lab as kl

    @kl.register_method
    class ImmediateOnly(kl.Estimator):
        """Keeps only F_t (the influence of this step): a biased toy."""

        name = "toy-immediate"
        lane_state = ("x_hat", "D")

        def _init_influence(self):
            self.x_hat = self._zeros(self.cell.extended_size)
            self.D = self._zeros(self.cell.state_size, self.cell.weight.shape[1])

        def _advance(self, step):
            self.x_hat = step.x_hat
            self.D = step.D_dense()

        def recurrent_gradient(self, dl_ds, per_lane=False):
            per = self.x_hat[:, :, None] * torch.einsum("bj,bjc->bc", dl_ds, self.D)[:, None, :]
            return per if per_lane else per.sum(0)

    try:
        summary = train(small(method="toy-immediate", steps=30), tmp_path, progress=False)
        assert summary["status"] == "finished" and summary["config"]["method"] == "toy-immediate"
        from conftest import make_model, make_sequence

        model = make_model("rhn")
        x, y = make_sequence(model, 1)
        G = kl.gradient_samples(model, x, y, "toy-immediate", 2)
        torch.testing.assert_close(G[0], kl.true_gradient(model, x, y))  # one step: F_t is exact
    finally:
        del kl.estimators.registry.METHODS["toy-immediate"]


def test_summary_has_one_schema_and_ptb_runs_record_their_sample(tmp_path):
    from kfrtrl_lab.runs import RunSummary, load_summary

    train(small(steps=20), tmp_path / "a", progress=False)
    data = load_summary(tmp_path / "a" / "summary.json")
    assert set(data) == {f.name for f in __import__("dataclasses").fields(RunSummary)}
    assert data["sample_text"] is None
    bad = dict(data, extra_field=1)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="extra_field"):
        load_summary(tmp_path / "bad.json")


@pytest.mark.parametrize("method, update_every", [("rtrl", 3), ("bptt", 1)])
def test_resume_is_exact_when_gradients_wait_for_an_update(tmp_path, method, update_every):
    """A stop waits for a point that resumes exactly: Adam's step taken (update_every > 1 keeps a
    gradient in .grad between updates, which a checkpoint does not hold), and for full BPTT a
    sequence end (it can be stopped and resumed at all)."""
    config = small(method=method, update_every=update_every, steps=150, hidden=6)
    train(config, tmp_path / "full", progress=False)
    stopped = train(config, tmp_path / "split", progress=False, stop_after=40)
    assert stopped["status"] == "stopped" and 40 <= stopped["steps_done"] < 150
    train(config, tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_several_seeds_in_one_process_are_the_separate_runs(tmp_path, capsys):
    rc = main(["train", "copy", "--method", "kf-rtrl", "--hidden", "8", "--batch", "4", "--steps", "120",
               "--lr", "0.01", "--log-every", "40", "--seeds", "3-4", "--out", str(tmp_path / "pop"), "--no-progress"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["seed"] for line in lines] == [3, 4]
    for seed in (3, 4):
        alone = train(small(steps=120, log_every=40, seed=seed), tmp_path / f"alone-{seed}", progress=False)
        together = json.loads((tmp_path / "pop" / f"seed-{seed}" / "summary.json").read_text())
        assert together["config"]["seed"] == seed and together["status"] == "finished"
        a = torch.load(tmp_path / "pop" / f"seed-{seed}" / "checkpoint.pt", weights_only=False)["model"]
        b = torch.load(tmp_path / f"alone-{seed}" / "checkpoint.pt", weights_only=False)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
        drop = ("steps_per_s", "wall_s")  # the clocks differ; every logged value must not
        assert ([{k: v for k, v in r.items() if k not in drop} for r in together["curve"]]
                == [{k: v for k, v in r.items() if k not in drop} for r in alone["curve"]])
    with pytest.raises(SystemExit):  # argparse refuses it
        main(["train", "copy", "--seeds", "4-3x", "--out", str(tmp_path / "bad")])


def test_resuming_a_finished_run_takes_no_step(tmp_path):
    done = train(small(steps=60), tmp_path / "run", progress=False)
    before = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    again = train(small(steps=60), tmp_path / "run", resume=True, progress=False)
    after = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    assert again["steps_done"] == done["steps_done"] == 60 and again["status"] == "finished"
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_interrupted_seeds_print_a_command_that_continues_them(tmp_path, capsys, monkeypatch):
    import shlex

    import kfrtrl_lab.train as train_module

    class StopAtOnce(train_module._StopFlag):  # as if Ctrl-C came before the first step
        def __enter__(self):
            super().__enter__()
            self.requested = True
            return self

    out = tmp_path / "pop"
    args = ["train", "copy", "--method", "kf-rtrl", "--hidden", "8", "--batch", "4", "--steps", "30",
            "--lr", "0.01", "--log-every", "10", "--seeds", "0,2", "--out", str(out), "--no-progress"]
    with monkeypatch.context() as m:
        m.setattr(train_module, "_StopFlag", StopAtOnce)
        assert main(args) == 130
    hint = capsys.readouterr().err.split("continue with: ")[1].strip()
    assert "--seeds 0,2" in hint
    command = shlex.split(hint)[3:]  # after "python -m kfrtrl_lab"
    # the hint names what identifies the runs; the run's own settings come from its checkpoints
    assert main(command + ["--no-progress"]) == 0
    for seed in (0, 2):
        assert json.loads((out / f"seed-{seed}" / "summary.json").read_text())["steps_done"] == 30


def test_a_second_sigterm_while_runs_are_saved_loses_nothing(tmp_path, monkeypatch):
    import os
    import signal

    from kfrtrl_lab import runs as runs_module
    from kfrtrl_lab.train import train_seeds

    write = runs_module.RunFolder.write_summary
    sent = []

    def write_then_sigterm(self, *a, **k):
        result = write(self, *a, **k)
        if not sent:  # after the first run's save, before the second's
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
        return result

    monkeypatch.setattr(runs_module.RunFolder, "write_summary", write_then_sigterm)
    summaries = train_seeds(small(steps=20), [0, 1], tmp_path / "pop", progress=False)
    assert sent and len(summaries) == 2
    assert all((tmp_path / "pop" / f"seed-{s}" / "checkpoint.pt").exists() for s in (0, 1))


def test_thinned_curves_keep_the_round_steps_where_runs_are_compared():
    from kfrtrl_lab.results import value_at
    from kfrtrl_lab.runs import thin_curve

    rows = [{"step": 1000 * i, "t_max": i} for i in range(1, 1001)]  # 1M steps, a line every 1000
    curve = thin_curve(rows, log_every=1000, max_points=400)
    assert len(curve) <= 401 and curve[-1]["step"] == 1_000_000
    summary = {"curve": curve, "steps_done": 1_000_000}
    for step in (10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000):
        assert value_at(summary, "t_max", step) == step // 1000


def test_seed_bands_cover_the_seeds_that_reached_each_step():
    from kfrtrl_lab.results import comparison_table, seed_band, value_at

    def run(seed, steps, offset):
        return {"config": {"task": "copy", "method": "ok-16-official", "hidden": 128, "batch": 16, "clip": 16.0,
                           "seed": seed, "device": "cpu"}, "steps_done": steps, "wall_s": 1.0,
                "curve": [{"step": s, "t_max": s // 10_000 + offset} for s in range(10_000, steps + 1, 10_000)]}

    runs = [run(0, 50_000, 0), run(1, 50_000, 2), run(2, 20_000, 1)]  # seed 2 stopped at 20k
    assert value_at(runs[0], "t_max", 35_000) == 3  # the last line at or before the step
    band = {b["step"]: b for b in seed_band(runs, "t_max")}
    assert band[20_000] == {"step": 20_000, "median": 3, "low": 2, "high": 4, "seeds": 3}
    assert band[50_000] == {"step": 50_000, "median": 6, "low": 5, "high": 7, "seeds": 2}
    assert "6 (5–7; 2 of 3 seeds)" in comparison_table(runs, "copy")


def test_run_groups_name_only_settings_that_differ_from_the_defaults():
    from kfrtrl_lab.results import run_group

    config = {"task": "ptb", "method": "kf-rtrl", "hidden": 256, "batch": 32, "clip": 100.0, "lr": 0.00031623,
              "stream_layout": "staggered", "tokens": "official"}
    assert run_group({"config": config}) == "kf-rtrl n=256 B=32 clip 100, staggered, official tokens"
    assert run_group({"config": {**config, "lr": 1e-3}}).endswith("lr 0.001, staggered, official tokens")


def test_seeds_that_stopped_at_about_the_same_step_are_one_group():
    from kfrtrl_lab.notebook.figures import training_figure
    from kfrtrl_lab.results import comparison_table, steps_reached

    def run(seed, steps):
        return {"config": {"task": "copy", "method": "kf-rtrl", "hidden": 128, "batch": 16, "clip": 16.0,
                           "seed": seed, "device": "cpu"}, "steps_done": steps, "wall_s": 1.0,
                "curve": [{"step": s, "t_max": s // 10_000} for s in range(10_000, steps + 1, 10_000)]}

    runs = [run(0, 200_000), run(1, 50_026), run(2, 50_000), run(3, 50_211)]
    assert steps_reached(runs) == [(200_000, 1), (50_000, 3)]
    assert "| 200k (1), 50k (3) |" in comparison_table(runs, "copy")
    assert "| 50k |" in comparison_table(runs[1:], "copy")
    names = [t.name for t in training_figure(runs, "t_max", references=False).data]
    assert any(name.endswith("range over 4 seeds: 1 to 200k, 3 to 50k") for name in names), names
    names = [t.name for t in training_figure(runs[1:], "t_max", references=False).data]
    assert any(name.endswith("range over 3 seeds") for name in names), names
