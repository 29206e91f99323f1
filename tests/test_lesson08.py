"""Lesson 8: the notebook's solutions pass their checkers, planted wrong answers fail them, and the
package functions the lesson adds (the diagonal cut and SnAp-1's exactness, the LRU's RTRL against
BPTT, the layer-wise bias by depth, the copy race and its bands, the figures and the explorer)."""

import json
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import notebook_cells

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures, widgets
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson08

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_when_rtrl_is_cheap.ipynb"


@pytest.fixture(scope="module")
def solutions():
    """The notebook's code solution cells, executed in order: {name: function}."""
    return notebook_cells(NOTEBOOK.name, namespace={"torch": torch})


def test_solutions_pass(solutions):
    lesson08.check_keep_diagonal(solutions["keep_diagonal"])
    lesson08.check_lru_traces(solutions["lru_traces"])
    lesson08.check_lambda_gradient(solutions["lambda_gradient"])


def test_stubs_raise_not_implemented():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    z = torch.zeros(2, 3, dtype=torch.complex128)
    args = {"keep_diagonal": (torch.ones(3, 6), 3),
            "lru_traces": (z, z, torch.zeros(2, 3, 2, dtype=torch.complex128), z[0], torch.ones(3), z, z,
                           torch.ones(2, 2)),
            "lambda_gradient": (z, z, z[0], torch.zeros(3), torch.zeros(3))}
    stubs = 0
    for cell in nb.cells:
        if "exercise" in cell.metadata.get("tags", []):
            namespace = {}
            exec(cell.source, namespace)  # noqa: S102
            for name, a in args.items():
                if name in namespace:
                    stubs += 1
                    with pytest.raises(NotImplementedError):
                        namespace[name](*a)
    assert stubs == 3


def test_keep_diagonal_wrong_answers_fail():
    def first_block_only(rows, n):  # the diagonal of block 0, the other blocks zeroed
        out = torch.zeros_like(rows)
        out[:, :n] = torch.diag(torch.diagonal(rows[:, :n]))
        return out

    def whole_matrix_diagonal(rows, n):  # the diagonal of the n × r_g·n matrix, not of each block
        return rows * torch.eye(n, rows.shape[1], dtype=rows.dtype)

    def untouched(rows, n):
        return rows

    for wrong in (first_block_only, whole_matrix_diagonal, untouched):
        with pytest.raises(ExerciseFailed):
            lesson08.check_keep_diagonal(wrong)


def test_lru_traces_wrong_answers_fail():
    def no_decay_on_B(e_lam, e_gam, E_B, lam, gamma, h_prev, bx, x):  # forgets λ ⊙ E^B_{t-1}
        return lam * e_lam + h_prev, lam * e_gam + bx, E_B + gamma[:, None] * x[:, None, :]

    def no_gamma(e_lam, e_gam, E_B, lam, gamma, h_prev, bx, x):  # F_t of B_in without γ
        return lam * e_lam + h_prev, lam * e_gam + bx, lam[:, None] * E_B + x[:, None, :]

    def conj_lambda(e_lam, e_gam, E_B, lam, gamma, h_prev, bx, x):  # λ̄ instead of λ
        lc = lam.conj()
        return lc * e_lam + h_prev, lc * e_gam + bx, lc[:, None] * E_B + gamma[:, None] * x[:, None, :]

    def gamma_in_e_gamma(e_lam, e_gam, E_B, lam, gamma, h_prev, bx, x):  # ∂h/∂γ is B x, not γ B x
        return lam * e_lam + h_prev, lam * e_gam + gamma * bx, lam[:, None] * E_B + gamma[:, None] * x[:, None, :]

    for wrong in (no_decay_on_B, no_gamma, conj_lambda, gamma_in_e_gamma):
        with pytest.raises(ExerciseFailed):
            lesson08.check_lru_traces(wrong)


def test_lambda_gradient_wrong_answers_fail():
    def no_conj(delta, e_lam, lam, nu, theta):  # δ instead of δ̄: the usual complex bug
        t = delta * e_lam * lam
        return t.real * -torch.exp(nu), t.imag * -torch.exp(theta)

    def plus_imag(delta, e_lam, lam, nu, theta):  # the sign of the imaginary part
        t = delta.conj() * e_lam * lam
        return t.real * -torch.exp(nu), t.imag * torch.exp(theta)

    def no_lambda(delta, e_lam, lam, nu, theta):  # drops ∂λ/∂ν = −e^ν λ's λ
        t = delta.conj() * e_lam
        return t.real * -torch.exp(nu), t.imag * -torch.exp(theta)

    for wrong in (no_conj, plus_imag, no_lambda):
        with pytest.raises(ExerciseFailed):
            lesson08.check_lambda_gradient(wrong)


def test_diagonal_recurrence_makes_snap_exact_and_leaves_the_dense_model_alone():
    rows = ex.snap_exactness(8, 12, seed=1)
    by = {r["recurrence"]: r for r in rows}
    assert by["diagonal"]["relative_error"] < 1e-20 and by["dense"]["relative_error"] > 1e-4
    assert all(r["rtrl_error"] < 1e-20 for r in rows)
    model = ex.random_model("rhn", 3, 4, 3, seed=0)
    before = model.cell.weight.detach().clone()
    diagonal = ex.diagonal_recurrence(model)
    assert torch.equal(model.cell.weight.detach(), before)  # a copy: the original keeps its dense blocks
    block = diagonal.cell.weight[diagonal.cell.recurrent_rows].view(4, 2, 4)  # (i, g, j)
    off = ~torch.eye(4, dtype=torch.bool)[:, None, :].expand(4, 2, 4)
    assert (block[off] == 0).all() and (block[~off] != 0).all()
    assert torch.equal(diagonal.cell.weight[: model.cell.recurrent_rows.start], before[: model.cell.recurrent_rows.start])
    with pytest.raises(ValueError, match="Kronecker-class model"):
        ex.diagonal_recurrence(ex.lru_model())


def test_lru_rtrl_is_bptt_and_the_layerwise_bias_grows_with_depth():
    assert ex.lru_rtrl_vs_bptt(hidden_size=4, input_size=3, T=12, seed=2)["relative_error"] < 1e-10
    rows = ex.layerwise_bias_by_depth((1, 2, 3), width=6, hidden=6, T=16, seed=1)
    bias = {(r["L"], r["group"]): r["relative_error"] for r in rows}
    assert bias[1, "layer 1 and up"] < 1e-20 and bias[1, "recurrent 1"] < 1e-20
    assert bias[1, "below layer 1"] > 1e-6  # the encoder acts below layer 1's recurrence: biased even at L = 1
    assert 1e-6 < bias[2, "layer 1 and up"] and bias[3, "recurrent 3"] < 1e-20  # the top layer stays exact
    fig = figures.depth_bias_figure(rows)
    assert [t.name for t in fig.data] == ["layer 1 and up", "recurrent 1", "below layer 1", "all"]
    assert 0 < fig.data[0].y[0] < 1e-30 and fig.layout.yaxis.type == "log"  # the exact point kept on the log axis
    with pytest.raises(ValueError, match="ring must be one of"):
        ex.stack_problem(1, ring="0.1-0.2")


def test_copy_race_runs_the_trainer_on_a_cpu_budget():
    result = ex.copy_race("lru2-rtrl", seed=3, cpu_seconds=0.3, log_every=20)
    curve = result["curve"]
    assert result["status"] == "budget spent" and result["cpu_s"] >= 0.3
    assert curve["step"][0] == 0 and all(b - a == 20 for a, b in zip(curve["step"], curve["step"][1:]))
    assert curve["cpu_s"] == sorted(curve["cpu_s"]) and curve["t_max"] == sorted(curve["t_max"])  # T_max only grows
    assert result["steps"] == curve["step"][-1] and result["settings"]["layers"] == 2
    json.dumps(result)  # what tools/copy_race.py writes
    with pytest.raises(ValueError, match="contestant must be one of"):
        ex.copy_race("lstm-uoro")
    with pytest.raises(ValueError, match="cpu_seconds must be positive"):
        ex.copy_race("lru2-rtrl", cpu_seconds=0)


def test_race_bands_and_table_read_step_functions():
    def run(name, seed, steps, cpu, t_max):
        return {"contestant": name, "seed": seed, "steps": steps[-1], "cpu_s": cpu[-1], "t_max": t_max[-1],
                "steps_per_cpu_s": steps[-1] / cpu[-1], "parameters": 10, "settings": {},
                "curve": {"step": steps, "cpu_s": cpu, "t_max": t_max}}

    runs = [run("a", 0, [0, 10, 20], [0.0, 1.0, 2.0], [1, 2, 3]), run("a", 1, [0, 10, 20, 30], [0.0, 1.0, 2.0, 3.0],
                                                                      [1, 1, 5, 6])]
    bands = ex.race_bands(runs, "cpu_s", points=3)["a"]
    assert [b["cpu_s"] for b in bands] == [0.0, 1.0, 2.0]  # up to the shorter seed's end
    assert [(b["low"], b["high"]) for b in bands] == [(1, 1), (1, 2), (3, 5)]
    steps = ex.race_bands(runs, "step", points=5)["a"]
    assert steps[1]["step"] == 5.0 and (steps[1]["low"], steps[1]["high"]) == (1, 1)  # before the first log row
    (row,) = ex.race_table(runs)
    assert row["t_max_mean"] == 4.5 and row["seeds"] == [0, 1] and row["t_max_per_1000_steps"] == pytest.approx(
        (150 + 200) / 2)
    fig = figures.race_figure({"a": bands}, "cpu_s")
    assert len(fig.data) == 2 and fig.data[1].line.shape == "hv"  # band and median, drawn as steps
    at = ex.race_bands(runs, "cpu_s", at=(1.5, 2.0, 2.5))["a"]  # 2.5 is past seed 0's end: left out
    assert [(b["cpu_s"], b["low"], b["high"]) for b in at] == [(1.5, 1, 2), (2.0, 3, 5)]
    with pytest.raises(ValueError, match="x must be"):
        ex.race_bands(runs, "wall_s")


def test_committed_race_has_five_seeds_a_contestant():
    results = ex.load_race(ROOT / "results" / "copy_race")
    table = {row["contestant"]: row for row in ex.race_table(results)}
    assert set(table) == set(ex.RACE_CONTESTANTS)
    assert all(row["seeds"] == [0, 1, 2, 3, 4] for row in table.values())
    for r in results:
        assert r["cpu_s"] >= r["cpu_seconds_budget"] and r["threads"] == 1 and r["commit"] and r["machine"]["cores"]


def test_depth_explorer_answers_its_controls():
    explorer = widgets.depth_explorer(depth_options=(1, 2), T=10, width=4, hidden=4, depth=2)
    assert "LRU" in explorer.figure.layout.title.text and list(explorer.figure.data[0].x) == [1, 2]
    explorer.controls["method"].value = "rhn + snap-1"
    assert "RHN" in explorer.figure.layout.title.text and "snap-1" in explorer.figure.layout.title.text
    explorer.controls["depth"].value = 1
    assert list(explorer.figure.data[0].x) == [1]
    static = explorer.static_figure()
    assert len(static.layout.sliders) == 3  # depth, ring and method, each its own slider in the static page
    with pytest.raises(ValueError, match="ring must be one of"):
        widgets.depth_explorer(ring="0–2")
