"""Lesson 7: the notebook's solutions pass their checkers, planted wrong answers fail them, and the
package functions the lesson adds (one OK step on one target under both scalings, bias² with its
sampling noise taken out, SnAp-1's dropped terms, the new figures)."""

from pathlib import Path

import nbformat
import pytest
import torch
from conftest import notebook_cells

import kfrtrl_lab as kl
from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson07

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "07_beyond_kf_rtrl.ipynb"


@pytest.fixture(scope="module")
def solutions():
    """The notebook's code solution cells, executed in order: {name: function}."""
    return notebook_cells(NOTEBOOK.name, namespace={"torch": torch})


def test_solutions_pass(solutions):
    lesson07.check_ok_split(solutions["ok_split"])
    lesson07.check_mixing_weights(solutions["mixing_weights"])
    lesson07.check_v_min(solutions["v_min"])
    lesson07.check_snap1_update(solutions["snap1_update"])


def test_stubs_raise_not_implemented():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sigma = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    args = {"ok_split": (sigma, 2), "mixing_weights": (sigma, 0, 2), "v_min": (sigma, 2),
            "snap1_update": (torch.zeros(3, 2), 0.5, torch.ones(3), torch.ones(2))}
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
    assert stubs == 4


def test_split_wrong_answers_fail():
    def off_by_one(sigma, r):  # (r − q + 1) slots instead of r − q
        return next((q for q in range(r) if (r - q + 1) * sigma[q] <= sigma[q:].sum() * (1 + 1e-12)), r - 1)

    def strict(sigma, r):  # < instead of ≤: fails on ties
        return next((q for q in range(r) if (r - q) * sigma[q] < sigma[q:].sum()), r - 1)

    for wrong in (lambda sigma, r: 0, lambda sigma, r: r - 1, off_by_one, strict):
        with pytest.raises(ExerciseFailed):
            lesson07.check_ok_split(wrong)


def test_mixing_weights_wrong_answers_fail():
    def r_slots(sigma, q, r):  # k = r instead of r − q
        d = r * sigma[q:] / sigma[q:].sum()
        return d, (1 - d).clamp_min(0).sqrt()

    def no_root(sigma, q, r):  # w = 1 − δ
        d = (r - q) * sigma[q:] / sigma[q:].sum()
        return d, (1 - d).clamp_min(0)

    def whole_sum(sigma, q, r):  # Σ over all directions, not over 𝓜
        d = (r - q) * sigma[q:] / sigma.sum()
        return d, (1 - d).clamp_min(0).sqrt()

    for wrong in (r_slots, no_root, whole_sum):
        with pytest.raises(ExerciseFailed):
            lesson07.check_mixing_weights(wrong)


def test_v_min_wrong_answers_fail(solutions):
    split = solutions["ok_split"]

    def no_subtraction(sigma, r):
        q = split(sigma, r)
        return (sigma[q:].sum() ** 2 / (r - q)).item()

    def k_is_r(sigma, r):
        q = split(sigma, r)
        return (sigma[q:].sum() ** 2 / r - (sigma[q:] ** 2).sum()).item()

    def v_code(sigma, r):
        return ex.ok_closed_forms(sigma, r)[1]

    for wrong in (no_subtraction, k_is_r, v_code):
        with pytest.raises(ExerciseFailed):
            lesson07.check_v_min(wrong)


def test_snap1_update_wrong_answers_fail():
    for wrong in (lambda J, h, x, d: J + torch.outer(x, d),  # forgets H_t[j, j]
                  lambda J, h, x, d: h * J,  # forgets the immediate term
                  lambda J, h, x, d: h * (J + torch.outer(x, d))):  # propagates F_t too
        with pytest.raises(ExerciseFailed):
            lesson07.check_snap1_update(wrong)


def test_ok_step_both_uses_one_target():
    rows = ex.ok_step_both(3, seed=1)
    sym, off = rows
    assert sym["target_norm2"] == off["target_norm2"] and sym["sigma"] == off["sigma"]
    assert sym["measured"] == pytest.approx(sym["v_min"], rel=1e-9)
    assert off["measured"] == pytest.approx(off["v_code"], rel=1e-9)
    assert sym["measured"] <= off["measured"]
    sigma, measured = ex.ok_step_target(2, seed=1)
    assert measured == pytest.approx(ex.ok_closed_forms(sigma, 2)[0], rel=1e-9)


def test_error_split_ci_removes_the_sampling_noise():
    torch.manual_seed(0)
    exact = torch.ones(50, dtype=torch.float64)
    noisy = exact + 3.0 * torch.randn(400, 50, dtype=torch.float64)  # unbiased, variance 9·50
    split = ex.error_split_ci(noisy, exact)
    assert split["bias2_naive"] == pytest.approx(split["spread"] / 400, rel=0.3)  # the naive one is noise
    assert abs(split["bias2"]) <= 3 * split["bias2_se"]
    assert abs(split["spread"] - 9.0) <= 3 * split["spread_se"]  # tr Σ / ‖g‖² = 9·50 / 50
    biased = ex.error_split_ci(noisy + 0.5, exact)
    assert biased["bias2_lo"] > 0 and abs(biased["bias2"] - 0.25) <= 3 * biased["bias2_se"]  # ‖b‖²/‖g‖² = 0.25
    fixed = ex.error_split_ci(exact.expand(5, -1) * 1.1, exact)
    assert fixed["spread"] == 0.0 and fixed["bias2"] == pytest.approx(0.01) == fixed["bias2_hi"]


def test_bias_variance_figure_bounds_unresolved_biases():
    model, x, y, g = ex.onehot_problem(6, 6, seed=0)
    rows = [{"method": m, **ex.error_split_ci(kl.gradient_samples(model, x, y, m, 30, seed=0), g)}
            for m in ("snap-1", "kf-rtrl")]
    fig = figures.bias_variance_figure(rows)
    bars, bound, variance = fig.data
    assert list(bars.x) == ["snap-1"] and list(bound.x) == ["kf-rtrl"]  # kf-rtrl's bias² interval reaches 0
    assert bound.y[0] == pytest.approx(rows[1]["bias2_hi"]) and list(variance.x) == ["kf-rtrl"]
    assert fig.layout.yaxis.type == "log"


def test_ok_split_figure():
    fig = figures.ok_split_figure([3.0, 1.0, 0.6, 0.4], 3)
    kept, mixed, level = fig.data
    assert list(kept.y) == [3.0] and list(mixed.y) == [1.0, 0.6, 0.4]  # q = 1: 2·1 ≤ 2.0
    assert level.y[0] == pytest.approx(2.0 / 2)


def test_snap_error_terms_split_the_bias():
    model, x, y, g = ex.onehot_problem(8, 12, seed=1)
    terms = ex.snap_error_terms(model, x, y)
    assert terms["package_max_diff"] < 1e-12
    assert terms["bias2"] == pytest.approx(terms["bias2_direct"], rel=1e-9)
    snap = kl.gradient_samples(model, x, y, "snap-1", 1)[0]
    assert terms["bias2"] == pytest.approx(((snap - g) ** 2).sum().item() / (g * g).sum().item(), rel=1e-9)
    assert terms["through_other_units"] > terms["come_back"]
    diagonal = ex.random_model("tanh", 3, 4, 3, init_std=0.5, seed=0)
    with torch.no_grad():  # a diagonal recurrent block: H_t is diagonal and SnAp-1 is exact
        rows = diagonal.cell.recurrent_rows
        block = diagonal.cell.weight[rows]
        diagonal.cell.weight[rows] = torch.diag(torch.diagonal(block))
    xs, ys = ex.random_sequence(diagonal, 6, seed=1)
    exact = ex.snap_error_terms(diagonal, xs, ys)
    assert exact["bias2"] < 1e-24 and exact["through_other_units"] < 1e-24
