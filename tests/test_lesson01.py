"""Lesson 1 (RTRL from scratch): its solutions pass their checkers, planted wrong answers fail them,
its lesson code agrees with the package, and its figures draw without a kernel."""

from pathlib import Path

import nbformat
import pytest
import torch
from conftest import notebook_cells

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson01
from kfrtrl_lab.notebook.student import tags

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_rtrl_from_scratch.ipynb"


@pytest.fixture(scope="module")
def lesson():
    """The notebook's solution and lesson-code cells, executed in one namespace (as the notebook does)."""
    return notebook_cells(NOTEBOOK.name, ("solution", "lesson-code"), {"torch": torch})


def test_solutions_pass_their_checkers(lesson):
    assert "Exercise 1.1" in lesson01.check_tanh_jacobians(lesson["tanh_jacobians"])
    assert "Exercise 1.2" in lesson01.check_influence_step(lesson["influence_step"])
    assert "Exercise 1.3" in lesson01.check_gradient_from_influence(lesson["gradient_from_influence"])
    assert "Exercise 1.4" in lesson01.check_costs(lesson["rtrl_bptt_costs"])


def test_stubs_raise_not_implemented():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    checks = {"tanh_jacobians": lesson01.check_tanh_jacobians, "influence_step": lesson01.check_influence_step,
              "gradient_from_influence": lesson01.check_gradient_from_influence, "rtrl_bptt_costs": lesson01.check_costs}
    stubs = [c for c in nb.cells if "exercise" in tags(c)]
    assert len(stubs) == 4
    for cell in stubs:
        namespace = {"torch": torch}
        exec(cell.source, namespace)
        name = next(k for k in checks if k in namespace)
        with pytest.raises(NotImplementedError):
            checks[name](namespace[name])


# -- Exercise 1.1: planted wrong Jacobians -------------------------------------------------------------

def _parts(x_t, h_prev, W):
    m, n = x_t.shape[0], h_prev.shape[0]
    x_hat = torch.cat([x_t, h_prev, torch.ones(1, dtype=W.dtype)])
    return m, n, x_hat, torch.tanh(x_hat @ W)


def test_transposed_H_fails(lesson):
    def wrong(x_t, h_prev, W):
        H, F = lesson["tanh_jacobians"](x_t, h_prev, W)
        return H.T, F
    with pytest.raises(ExerciseFailed, match="transposed"):
        lesson01.check_tanh_jacobians(wrong)


def test_derivative_at_the_old_state_fails(lesson):
    def wrong(x_t, h_prev, W):  # 1 − h_{t-1}² instead of 1 − h_t²
        m, n, x_hat, _ = _parts(x_t, h_prev, W)
        D = torch.diag(1 - h_prev**2)
        return D @ W[m:m + n].T, torch.einsum("i,jc->jic", x_hat, D)
    with pytest.raises(ExerciseFailed, match="H_t"):
        lesson01.check_tanh_jacobians(wrong)


def test_F_without_the_bias_entry_fails(lesson):
    def wrong(x_t, h_prev, W):  # x̂ with 0 in place of the constant 1
        H, F = lesson["tanh_jacobians"](x_t, h_prev, W)
        F = F.clone()
        F[:, -1, :] = 0
        return H, F
    with pytest.raises(ExerciseFailed, match="F_t"):
        lesson01.check_tanh_jacobians(wrong)


# -- Exercise 1.2: planted wrong influence steps ------------------------------------------------------

def test_influence_step_without_H_fails(lesson):
    def wrong(G_prev, x_t, h_prev, W):  # G_t = G_{t-1} + F_t: the state path not propagated
        return G_prev + lesson["tanh_jacobians"](x_t, h_prev, W)[1]
    with pytest.raises(ExerciseFailed, match="random G"):
        lesson01.check_influence_step(wrong)


def test_influence_step_contracting_the_wrong_index_fails(lesson):
    def wrong(G_prev, x_t, h_prev, W):  # (H_t G)[j] summed over H's first index
        H, F = lesson["tanh_jacobians"](x_t, h_prev, W)
        return torch.einsum("kj,kic->jic", H, G_prev) + F
    with pytest.raises(ExerciseFailed):
        lesson01.check_influence_step(wrong)


def test_influence_step_dropping_F_fails(lesson):
    def wrong(G_prev, x_t, h_prev, W):
        H, _ = lesson["tanh_jacobians"](x_t, h_prev, W)
        return torch.einsum("jk,kic->jic", H, G_prev)
    with pytest.raises(ExerciseFailed, match="G_1 = F_1"):
        lesson01.check_influence_step(wrong)


# -- Exercise 1.3: planted wrong read-offs --------------------------------------------------------------

def test_gradient_ignoring_dL_dh_fails():
    with pytest.raises(ExerciseFailed, match="dL_t/dW"):
        lesson01.check_gradient_from_influence(lambda dL_dh, G: G.sum(0))


def test_gradient_with_only_each_units_own_influence_fails():
    def wrong(dL_dh, G):  # keeps only G[j, :, c] with c the unit's own column: the paths through other units lost
        n = G.shape[0]
        own = torch.zeros_like(G)
        for j in range(n):
            own[j, :, j::n] = G[j, :, j::n]
        return torch.einsum("j,jic->ic", dL_dh, own)
    with pytest.raises(ExerciseFailed):
        lesson01.check_gradient_from_influence(wrong)


# -- Exercise 1.4: planted wrong counts -------------------------------------------------------------------

def _costs(**wrong):
    def costs(n, m, r_g, T):
        a = m + n + 1
        P = a * r_g * n
        right = {"P": P, "rtrl_memory": n * P, "rtrl_madds_per_step": n * n * P,
                 "bptt_memory": T * (a + n), "bptt_madds_per_sequence": 3 * T * P}
        right.update({k: f(n, m, r_g, T, P) for k, f in wrong.items()})
        return right
    return costs


@pytest.mark.parametrize("wrong, match", [
    (dict(P=lambda n, m, r_g, T, P: (m + n) * r_g * n), "P = "),  # the bias row forgotten
    (dict(rtrl_madds_per_step=lambda n, m, r_g, T, P: n * P), "multiply-adds per step"),  # a matrix-vector product
    (dict(rtrl_memory=lambda n, m, r_g, T, P: P), "memory"),
    (dict(bptt_madds_per_sequence=lambda n, m, r_g, T, P: T * P), "BPTT's multiply-adds"),  # the forward pass only
    (dict(bptt_memory=lambda n, m, r_g, T, P: T * n), "BPTT's memory"),  # the states but not x̂_t
])
def test_wrong_counts_fail(wrong, match):
    with pytest.raises(ExerciseFailed, match=match):
        lesson01.check_costs(_costs(**wrong))


def test_counts_accept_the_first_steps_missing_product():
    assert "Exercise 1.4" in lesson01.check_costs(
        _costs(bptt_madds_per_sequence=lambda n, m, r_g, T, P: (3 * T - 1) * P))


# -- the lesson code and the experiments behind the claims ---------------------------------------------

def test_lesson_code_agrees_with_the_package(lesson):
    check = ex.from_scratch_check(lesson["rtrl_from_scratch"], lesson["bptt_by_autograd"], input_size=2,
                                  hidden_size=4, T=7, seed=3)
    for key in ("scratch_vs_autograd", "scratch_vs_package_rtrl", "bptt_fn_vs_autograd", "package_rtrl_vs_autograd"):
        assert check[key] < 1e-10, key


def test_from_scratch_check_catches_a_wrong_rtrl(lesson):
    def no_state_path(W, W_out, xs, targets):  # G_t = F_t: the gradient of truncated BPTT with window 1
        a, n = W.shape
        m = xs.shape[1]
        h, grad = torch.zeros(n, dtype=W.dtype), torch.zeros(a, n, dtype=W.dtype)
        for t in range(len(xs)):
            x_hat = torch.cat([xs[t], h, torch.ones(1, dtype=W.dtype)])
            h = torch.tanh(x_hat @ W)
            y = torch.softmax(h @ W_out[:n] + W_out[n], dim=0)
            dL_dh = (y - torch.eye(len(y), dtype=W.dtype)[targets[t]]) @ W_out[:n].T
            grad += torch.outer(x_hat, dL_dh * (1 - h**2))
        return grad
    check = ex.from_scratch_check(no_state_path, T=8)
    assert check["scratch_vs_autograd"] > 1e-3 and check["package_rtrl_vs_autograd"] < 1e-10


def test_measured_counts_are_the_formulas():
    for cell, r_g in (("tanh", 1), ("rhn", 2)):
        c = ex.measured_counts(cell, 3, 6, 5)
        a = 3 + 6 + 1
        P = a * r_g * 6
        assert (c["P"], c["rtrl_memory"], c["rtrl_madds_per_step"]) == (P, 6 * P, 36 * P)
        assert c["bptt_madds_per_sequence"] == (3 * 5 - 1) * P  # no δ_1 W_hᵀ at the first step
    assert ex.measured_counts("tanh", 3, 6, 5)["bptt_memory"] == 5 * (a + 6)


def test_online_rtrl_drift_is_zero_only_with_fixed_parameters():
    rows = ex.online_rtrl_drift([0.0, 1e-3, 1e-2], hidden_size=5, T=12, seed=1)
    assert rows[0]["vs_current"] < 1e-12 and rows[0]["vs_initial"] < 1e-12 and rows[0]["parameter_change"] == 0
    assert all(r["vs_current"] > 1e-6 and r["vs_initial"] > 1e-6 and r["parameter_change"] > 0 for r in rows[1:])
    assert rows[1]["vs_current"] < rows[2]["vs_current"]


# -- figures -------------------------------------------------------------------------------------------------

def test_computation_graph_figure_draws_both_kinds_of_path():
    fig = figures.computation_graph_figure()
    legend = [t.name for t in fig.data if t.name]
    assert any("direct path" in name for name in legend) and any("through the state" in name for name in legend)
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    colors = [a.arrowcolor for a in arrows]
    for trace in fig.data:  # every legend entry is drawn: its edges' segments
        if trace.name:
            assert sum(v is not None for v in trace.x) >= 2
    assert colors.count(figures.DIRECT_COLOR) == 1  # one direct edge θ → h_t
    assert colors.count(figures.STATE_COLOR) == 2  # θ → h_{t-1} and h_{t-1} → h_t
    labels = " ".join(a.text for a in fig.layout.annotations)
    for text in ("H<sub>t</sub>", "F<sub>t</sub>", "F<sub>t−1</sub>"):
        assert text in labels
    nodes = next(tr for tr in fig.data if tr.mode == "markers+text").text
    assert {"h<sub>t</sub>", "h<sub>t−1</sub>", "h<sub>t−2</sub>", "θ"} <= set(nodes)


def test_rtrl_bptt_cost_figure():
    counted = [ex.measured_counts("tanh", 3, n, 6) for n in (4, 8)]
    timed = [{"method": m, "n": n, "ms_per_step": v} for m, k in (("rtrl", 3.0), ("tbptt-16", 1.0)) for n, v in
             ((4, 1.0 * k), (8, 2.0 * k))]
    fig = figures.rtrl_bptt_cost_figure(counted, timed, 6)
    names = [t.name for t in fig.data]
    assert any(name.startswith("RTRL: n²·P") for name in names)
    assert "measured RTRL (rtrl) (slope 1.00)" in names and "measured BPTT (tbptt-16) (slope 1.00)" in names
    assert any("n^4 reference (slope 4)" in name for name in names)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis3.type == "log"


def test_online_drift_figure():
    rows = [{"lr": lr, "T": 5, "vs_current": lr, "vs_initial": 2 * lr, "parameter_change": lr / 2}
            for lr in (0.0, 1e-3, 1e-2)]
    fig = figures.online_drift_figure(rows)
    assert len(fig.data) == 3 and list(fig.data[0].x) == [1e-3, 1e-2]  # η = 0 has no place on a log axis
    assert "θ^(T−1)" in fig.data[0].name and fig.layout.xaxis.type == "log"
