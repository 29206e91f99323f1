"""Lesson 2 (the Kronecker factorisation): its experiments, figures and exercise checkers. Every
checker passes the notebook's own solution and fails a planted wrong answer."""

from pathlib import Path

import pytest
import torch
from conftest import notebook_cells

import kfrtrl_lab as kl
from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson02

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_kronecker_factorisation.ipynb"


def solutions() -> dict:
    """The notebook's solution cells, executed: name -> function."""
    return notebook_cells(NOTEBOOK.name, namespace={"torch": torch, "kl": kl, "ex": ex})


@pytest.fixture(scope="module")
def sol():
    return solutions()


# -- the experiments behind the claims -------------------------------------------------------------

@pytest.mark.parametrize("cell", ["tanh", "rhn", "lstm"])
def test_immediate_jacobian_is_the_row_vector_kronecker_product(cell):
    c = ex.kron_convention_check(cell)
    assert torch.allclose(c["F_autograd"], torch.kron(c["x_hat"][None], c["D"]), atol=1e-13)
    assert torch.allclose(c["H"], c["H_autograd"], atol=1e-13)
    # the other order of the factors is a different matrix: the convention matters
    assert not torch.allclose(c["F_autograd"], torch.kron(c["D"], c["x_hat"][None]))


def test_h_acts_on_the_state_side_only():
    c = ex.kron_closure_check()
    H, u, A = c["H"], c["u"], c["A"]
    assert torch.allclose(H @ torch.kron(u[None], A), torch.kron(u[None], H @ A), atol=1e-13)


def test_two_into_one_is_unbiased_for_any_p_and_biased_with_equal_signs():
    u, M, x_hat, D = ex.kron_step_terms(seed=1)
    target = ex.kron_step_target(u, M, x_hat, D)
    for p1, p2 in ((1.0, 1.0), (0.3, 2.0), (5.0, 0.1)):
        assert torch.allclose(ex.kron_step_mean(u, M, x_hat, D, p1, p2), target, atol=1e-12)
    one = torch.ones(2, dtype=torch.float64) * torch.tensor([1.0, -1.0], dtype=torch.float64)
    equal = ex.kron_step_draws(u, M, x_hat, D, 1.0, 1.0, one, one).mean(dim=0)  # c1 = c2 only
    assert (equal - target).norm() > 0.1 * target.norm()


def test_closed_form_variance_and_the_bowl():
    u, M, x_hat, D = ex.kron_step_terms(seed=2)
    for p in (0.1, 1.0, 7.0):
        assert ex.kron_step_variance_closed_form(u, M, x_hat, D, p) == pytest.approx(
            ex.kron_step_variance(u, M, x_hat, D, p), rel=1e-12)
    bowl = ex.variance_bowl(seed=2, points=31, draws=300)
    for m in bowl["measured"]:  # measured from draws: off the closed form by O(1/S) only
        assert m["relative_gap"] < 10 / m["draws"]
    best = min(bowl["measured"], key=lambda m: m["variance"])
    assert best["p"] == pytest.approx(bowl["p_star"])
    fig = figures.variance_vs_p_figure(bowl)
    assert len(fig.data) == 3 and "closed form" in fig.data[0].name and "measured" in fig.data[2].name
    assert list(fig.data[2].x) == [m["p"] for m in bowl["measured"]]


def test_harness_with_the_kf_step_is_unbiased_and_frozen_signs_are_not():
    model = ex.random_model("rhn", hidden_size=4, init_std=0.5, seed=0)
    x, y = ex.random_sequence(model, 6, seed=1)
    g = kl.true_gradient(model, x, y)
    G = ex.kf_gradient_samples_with_step(model, x, y, ex.kf_step, 3000, seed=2)
    assert kl.unbiasedness_test(G, g)["violations"] == 0 and G.std(dim=0).max() > 0
    frozen = ex.kf_gradient_samples_with_step(model, x, y, ex.kf_step, 3000, seed=2, fresh_signs=False)
    assert kl.unbiasedness_test(frozen, g)["violations"] > 0


def test_enumerated_kf_mean_is_exact_rtrl():
    model = ex.random_model("rhn", input_size=2, hidden_size=3, init_std=0.5, seed=0)
    x, _ = ex.random_sequence(model, 3, seed=1)
    terms = ex.kf_terms(model, x)
    assert torch.allclose(solutions()["enumerated_mean"](terms), ex.exact_influence(terms), atol=1e-12)


def test_sequence_unbiasedness_and_its_figures():
    r = ex.sequence_unbiasedness(hidden_size=4, T=8, samples=600, seed=0)
    assert r["test"]["violations"] == 0 and r["P"] == (4 + 4 + 1) * 8
    assert r["convergence"][-1]["S"] == 600
    frozen = ex.frozen_signs_unbiasedness(hidden_size=4, T=8, samples=600, seed=0)
    assert frozen["test"]["violations"] > 0
    z = figures.zscore_figure(r)
    assert z.data[0].type == "histogram" and len(z.data[0].x) == r["P"]
    assert any("critical" in t.name for t in z.data)
    conv = figures.mean_convergence_figure([r, frozen])
    assert len(conv.data) == 4 and conv.layout.xaxis.type == "log"
    assert [t.name.startswith("measured") for t in conv.data] == [True, False, True, False]


def test_structure_figures():
    c = ex.kron_convention_check("rhn", hidden_size=5)
    fig = figures.jacobian_blocks_figure(c["D"], c["H"], block_names=["z_c", "z_f"])
    D_shown = fig.data[0].z
    assert len(D_shown) == 5 and len(D_shown[0]) == 10
    assert D_shown[0][1] is None and D_shown[0][5] is not None  # off-diagonal blank, block 2's diagonal drawn
    assert all(v is not None for row in fig.data[1].z for v in row)  # H_t dense
    assert [a.text for a in fig.layout.annotations][-2:] == ["z_c", "z_f"]
    cl = ex.kron_closure_check(hidden_size=4, input_size=2)
    shapes = figures.kron_shapes_figure(cl["u"], cl["A"])
    assert len(shapes.data[0].z) == 4 and len(shapes.data[0].z[0]) == 7 * 8
    assert "224 numbers" in shapes.layout.annotations[0].text
    rows = ex.kron_memory_rows([8, 128])
    assert rows[1]["G"] == 128 * 133 * 256 and rows[1]["kron"] == 133 + 128 * 256
    mem = figures.kron_memory_figure(rows)
    assert len(mem.data) == 2 and mem.layout.yaxis.type == "log"


# -- the exercises: the solution passes, a planted wrong answer fails ------------------------------

def test_rhn_D(sol):
    assert "Exercise 2.1" in lesson02.check_rhn_D(sol["rhn_D"])

    def no_half(h_prev, z):
        return sol["rhn_D"](h_prev, z) * torch.cat([2 * torch.ones(z.shape[-1]), torch.ones(z.shape[-1])])

    def flipped(h_prev, z):
        c = 2 * torch.sigmoid(z[:, 0]) - 1
        return sol["rhn_D"](2 * c - h_prev, z)  # f(1−f)(c − h_{t-1}): the sign of ∂h/∂z_f flipped

    def dense(h_prev, z):
        D = sol["rhn_D"](h_prev, z)
        return D + 0.01

    for wrong in (no_half, flipped, dense):
        with pytest.raises(ExerciseFailed):
            lesson02.check_rhn_D(wrong)


def test_p_star(sol):
    assert "Exercise 2.2" in lesson02.check_p_star(sol["p_star"])
    with pytest.raises(ExerciseFailed):
        lesson02.check_p_star(lambda nM, nu, nD, nx: (nM / nu, nD / nx))  # no square root
    with pytest.raises(ExerciseFailed):
        lesson02.check_p_star(lambda nM, nu, nD, nx: ((nu / nM) ** 0.5, (nx / nD) ** 0.5))  # inverted
    with pytest.raises(ExerciseFailed, match="equal norms"):  # the right ratio, the wrong split
        lesson02.check_p_star(lambda nM, nu, nD, nx: ((nM * nx / (nu * nD)) ** 0.5, torch.ones_like(nM)))


def test_enumerated_mean(sol):
    assert "Exercise 2.3" in lesson02.check_enumerated_mean(sol["enumerated_mean"])

    def frozen(terms):  # one sign pair for the whole sequence: 4 sequences, not 4^T
        pairs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
        a, (n, cols) = terms[0]["x_hat"].numel(), terms[0]["D"].shape
        u, A = torch.zeros(4, a, dtype=torch.float64), torch.zeros(4, n, cols, dtype=torch.float64)
        for term in terms:
            u, A = ex.kf_step(u, term["H"] @ A, term["x_hat"].expand(4, -1), term["D"].expand(4, -1, -1),
                              pairs[:, 0], pairs[:, 1])
        return torch.einsum("sa,sic->iac", u, A) / 4

    def not_propagated(terms):  # M_t = A_{t-1}: H_t forgotten
        return sol["enumerated_mean"]([dict(t, H=torch.eye(t["H"].shape[0], dtype=t["H"].dtype)) for t in terms])

    for wrong in (frozen, not_propagated):
        with pytest.raises(ExerciseFailed):
            lesson02.check_enumerated_mean(wrong)


def test_shared_signs(sol):
    line = lesson02.check_shared_signs(sol["kf_step_shared"], sol["z_test_verdict"])
    assert "c1 = c2, fresh every step: passes" in line and "drawn once per lane: FAILS" in line

    def half_shared(u_prev, M, x_hat, D, c):  # c2 left at +1
        return ex.kf_step(u_prev, M, x_hat, D, c, torch.ones_like(c))

    with pytest.raises(ExerciseFailed):
        lesson02.check_shared_signs(half_shared, sol["z_test_verdict"])
    with pytest.raises(ExerciseFailed, match="says unbiased"):
        lesson02.check_shared_signs(sol["kf_step_shared"], lambda G, g: True)
    with pytest.raises(ExerciseFailed):  # a test with no tolerance from the spread: everything looks biased
        lesson02.check_shared_signs(sol["kf_step_shared"], lambda G, g: bool(torch.allclose(G.mean(0), g)))
