"""Lesson 4 (the copy task): the exercises' solutions pass their checkers, planted wrong answers
fail them; the timeline figure is drawn from the task's own sequence; the scoreboard's verdicts
follow from the committed results."""

import math
from pathlib import Path

import pytest
import torch

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures, scoreboard
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson04
from kfrtrl_lab.tasks.copy import copy_sequence

ROOT = Path(__file__).resolve().parents[1]


# -- 4.1 ------------------------------------------------------------------------------------------

def copy_from_bits(bits):
    T = len(bits)
    return [2, *bits, *[3] * (T + 1)], [*[3] * (T + 1), 2, *bits]


def test_copy_sequence_solution_passes():
    assert lesson04.check_copy_sequence(copy_from_bits).startswith("✓")


@pytest.mark.parametrize("wrong", [
    lambda bits: ([2, *bits, *[3] * len(bits)], [*[3] * len(bits), 2, *bits]),  # a lag of T, not T+1
    lambda bits: ([2, *bits, *[3] * (len(bits) + 1)], [*[3] * (len(bits) + 1), 2, *bits[::-1]]),  # reversed
    lambda bits: ([2, *bits, *[3] * (len(bits) + 1)], [*[3] * (len(bits) + 2), *bits]),  # no marker target
])
def test_copy_sequence_wrong_answers_fail(wrong):
    with pytest.raises(ExerciseFailed):
        lesson04.check_copy_sequence(wrong)


def test_copy_sequence_stub_raises_not_implemented():
    def stub(bits):
        raise NotImplementedError("Exercise 4.1")
    with pytest.raises(NotImplementedError):
        lesson04.check_copy_sequence(stub)


# -- 4.2 ------------------------------------------------------------------------------------------

def recall_loss(model, inputs, targets):
    cell = model.cell
    state = cell.zero_state(1)
    T = (len(targets) - 2) // 2
    losses = []
    with torch.no_grad():
        for t in range(len(targets)):
            state = cell(inputs[t][None], state)
            if t >= T + 2:
                losses.append(model.lane_losses(cell.hidden(state), targets[t][None])[0] / math.log(2))
    return torch.stack(losses).mean()


def test_recall_loss_solution_passes():
    assert lesson04.check_recall_loss(recall_loss).startswith("✓")


def test_recall_loss_wrong_answers_fail():
    def every_step(model, x, y):
        return ex.copy_phase_losses(model, x, y)["mean_all"]

    def nats(model, x, y):
        return recall_loss(model, x, y) * math.log(2)

    def off_by_one(model, x, y):  # starts the recall phase at the marker
        T = (len(y) - 2) // 2
        return ex.copy_phase_losses(model, x, y)["bits"][T + 1:].mean()

    for wrong in (every_step, nats, off_by_one):
        with pytest.raises(ExerciseFailed):
            lesson04.check_recall_loss(wrong)


def test_format_loss_is_the_plateau_of_a_model_that_guesses_the_bits():
    # T unpredictable bits among 2T+2 steps: T=1 gives the 0.25-bit plateau of the quick runs
    assert ex.copy_format_loss(1) == 0.25 and ex.copy_format_loss(9) == pytest.approx(0.45)


# -- 4.3 ------------------------------------------------------------------------------------------

def curriculum(losses_bits, starts, decay=0.999, threshold=0.15, restart=0.3):
    t_max, ema, out_t, out_e = 1, 1.0, [], []
    for loss, start in zip(losses_bits, starts):
        if start and ema < threshold:
            t_max, ema = t_max + 1, restart
        ema = decay * ema + (1 - decay) * loss
        out_t.append(t_max)
        out_e.append(ema)
    return out_t, out_e


def test_curriculum_solution_passes():
    assert lesson04.check_curriculum(curriculum).startswith("✓")


def test_curriculum_wrong_answers_fail():
    def after_the_loss(losses, starts):  # applies the rule after the step's loss entered the average
        t_max, ema, out_t, out_e = 1, 1.0, [], []
        for loss, start in zip(losses, starts):
            ema = 0.999 * ema + 0.001 * loss
            if start and ema < 0.15:
                t_max, ema = t_max + 1, 0.3
            out_t.append(t_max)
            out_e.append(ema)
        return out_t, out_e

    def no_restart(losses, starts):  # forgets to restart the average at 0.3 after a growth
        t_max, ema, out_t, out_e = 1, 1.0, [], []
        for loss, start in zip(losses, starts):
            if start and ema < 0.15:
                t_max += 1
            ema = 0.999 * ema + 0.001 * loss
            out_t.append(t_max)
            out_e.append(ema)
        return out_t, out_e

    def any_step(losses, starts):  # grows whether or not a sequence starts
        return curriculum(losses, [True] * len(losses))

    for wrong in (after_the_loss, no_restart, any_step):
        with pytest.raises(ExerciseFailed):
            lesson04.check_curriculum(wrong)


# -- the package side of the lesson ----------------------------------------------------------------

def test_timeline_is_the_tasks_own_sequence_and_its_figure_draws_it():
    tl = ex.copy_timeline(5, seed=3)
    x, y = copy_sequence(5, seed=3)
    assert tl["inputs"] == x.argmax(dim=1).tolist() and tl["targets"] == y.tolist()
    assert tl["length"] == 12 and sum(tl["informative"]) == 5 and tl["phase"][6] == "delimiter"
    fig = figures.copy_timeline_figure(tl, t_max=7)
    cells = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(cells) == 3 * 12 + 1  # input, target, loss rows, and the recall phase's frame
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert [(a.ax, a.x) for a in arrows] == [(i + 1, i + 7) for i in range(5)]  # read at i+1, recalled T+1 later
    assert "T_max = 7" in "".join(a.text for a in fig.layout.annotations)


def test_progress_figure_moves_tbptt_to_its_updates():
    runs = [{"config": {"task": "copy", "method": m, "hidden": 8, "batch": 4, "clip": 1.0, "seed": 0},
             "steps_done": 320, "curve": [{"step": s, "t_max": s // 32, "wall_s": s / rate} for s in (32, 160, 320)]}
            for m, rate in (("kf-rtrl", 10.0), ("tbptt-16", 80.0))]
    by = {x: {t.name.split(" ")[0]: list(t.x) for t in figures.progress_figure(runs, "t_max", x=x).data}
          for x in ("step", "updates", "wall_s")}
    assert by["step"]["tbptt-16"] == [32, 160, 320]
    assert by["updates"]["tbptt-16"] == [2, 10, 20] and by["updates"]["kf-rtrl"] == [32, 160, 320]
    assert by["wall_s"]["tbptt-16"] == [0.4, 2.0, 4.0]
    with pytest.raises(ValueError):
        figures.progress_figure(runs, "t_max", x="epochs")


def test_updates_made_is_the_trainers_count(tmp_path, monkeypatch):
    from kfrtrl_lab.train import RunConfig, train

    count = {"n": 0}
    original = torch.optim.Adam.step

    def counting(self, *a, **k):
        count["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    for method, steps, u in (("tbptt-4", 50, 6), ("tbptt-4", 50, 1), ("kf-rtrl", 30, 7), ("tbptt-3", 40, 3)):
        count["n"] = 0
        train(RunConfig(task="copy", method=method, hidden=4, batch=2, steps=steps, update_every=u, seed=0,
                        log_every=steps, eager=True), tmp_path / f"{method}-{u}", progress=False)
        assert count["n"] == ex.updates_made(method, steps, u), (method, steps, u)


def test_scoreboard_verdicts_follow_the_committed_results():
    rows = scoreboard.build(ROOT / "results", live=scoreboard.measure_live(samples=300, noise_lengths=(5, 20),
                                                                          noise_samples=40))
    verdicts = {r["question"][:4].strip(): r["verdict"] for r in rows}
    assert set(verdicts.values()) <= set(scoreboard.VERDICTS)
    assert verdicts["(a)"] == "supported" and verdicts["(b)"] == "supported"
    assert verdicts["(c)"] == "partly"  # KF-RTRL ahead per step, TBPTT-16 ahead per update and per second
    assert verdicts["(d1)"] == verdicts["(d2)"] == "not shown at this size"
    assert verdicts["(d4)"] == "contradicted"
    html = scoreboard.to_html(rows)
    assert html.count("<tr>") == len(rows) + 1 and "not shown at this size" in html


def test_scoreboard_verdict_changes_when_the_evidence_does():
    kf = {"config": {"method": "kf-rtrl"}, "steps_done": 100,
          "curve": [{"step": 50, "valid_bpc": 3.0, "wall_s": 5.0}, {"step": 100, "valid_bpc": 2.0, "wall_s": 10.0}]}
    tb = {"config": {"method": "tbptt-16"}, "steps_done": 100, "curve": [{"step": 100, "valid_bpc": 2.5, "wall_s": 1.0}]}
    cmp = scoreboard.compare_to_tbptt(kf, tb, "valid_bpc", higher_is_better=False)
    assert cmp["kf_ok_steps"] and cmp["updates"] == 6
    assert cmp["kf_same_updates"] == (3.0, 50) and cmp["kf_ok_updates"] is False  # 3.0 > 2.5 + ALMOST_BPC
    fast = dict(kf, curve=[dict(r, valid_bpc=2.6) for r in kf["curve"]])
    assert scoreboard.compare_to_tbptt(fast, tb, "valid_bpc", higher_is_better=False)["kf_ok_wall"]


def test_the_trainers_task_streams_sequences_of_the_drawn_format():
    # the timeline draws copy_sequence; the trainer's on-device CopyTask must stream the same format
    from kfrtrl_lab.tasks.copy import CopyTask

    task = CopyTask(1, seed=2)
    task.t_max.fill_(6)  # lengths drawn from {2, ..., 6}
    xs, ys, starts = [], [], []
    for _ in range(60):
        x, y, start = task.next()
        xs.append(int(x[0].argmax()))
        ys.append(int(y[0]))
        starts.append(bool(start[0]))
    begins = [t for t, s in enumerate(starts) if s]
    assert len(begins) >= 4
    for a, b in zip(begins, begins[1:]):
        T = (b - a - 2) // 2
        assert b - a == 2 * T + 2 and 2 <= T <= 6 or a == 0  # the first sequence was drawn at T_max = 1
        bits = xs[a + 1:a + T + 1]
        assert (xs[a:b], ys[a:b]) == copy_from_bits(bits)
