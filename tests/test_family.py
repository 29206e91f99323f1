"""OK-r, KF-AVG-k and SnAp-1 (algorithms.md, section 5): exactness where claimed, unbiasedness by
the z-test of test_unbiasedness (with its power shown on planted bugs), variance claims, and the
closed forms of one OK step's error."""

import pytest
import torch

import kfrtrl_lab as kl
import kfrtrl_lab.estimators.ok as ok_module
import kfrtrl_lab.estimators.registry
from conftest import make_model, make_sequence, rel_err
from kfrtrl_lab.notebook import experiments as ex
from test_exactness import lane_gradients_at, run_lanes
from test_unbiasedness import SAMPLES, bias_violations, samples, shared_across_lanes

RESETS = {6: [0, 2], 11: torch.tensor([False, True, False, False]), 17: None}


# -- exactness ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scaling", ["", "-official"])
@pytest.mark.parametrize("extra", [0, 3])
def test_ok_with_r_at_least_a_is_exact_rtrl_over_a_sequence_with_resets(cell_name, scaling, extra):
    model = make_model(cell_name, m=2, n=5, k=3, seed=4)
    x, y = make_sequence(model, 23, batch=4, seed=5)
    r = model.cell.extended_size + extra  # r ≥ a: V = [u_1 … u_r, x̂] always has a dependent column
    g_ok, r_ok, _ = run_lanes(f"ok-{r}{scaling}", model, x, y, RESETS)
    g_rtrl, r_rtrl, _ = run_lanes("rtrl", model, x, y, RESETS)
    assert rel_err(g_ok, g_rtrl) <= 1e-9 and rel_err(r_ok, r_rtrl) <= 1e-12


@pytest.mark.parametrize("method", ["ok-3", "ok-3-official"])
def test_ok_is_exact_for_the_first_r_steps_after_a_reset(cell_name, method):
    """After a reset the influence has rank ≤ t at step t, so OK-r keeps it exactly while t ≤ r."""
    model = make_model(cell_name, m=3, n=6, k=4, seed=8)
    x, y = make_sequence(model, 9, batch=5, seed=9)
    resets = {5: [1, 3]}
    for at in (5, 6, 7):  # steps 1, 2, 3 after the reset
        got = lane_gradients_at(method, model, x, y, resets, at=at, seed=3)
        exact = lane_gradients_at("rtrl", model, x, y, resets, at=at)
        for b in (1, 3):
            assert rel_err(got[b], exact[b]) <= 1e-10
    late = lane_gradients_at(method, model, x, y, {0: None}, at=8, seed=3)  # 9 steps from the start
    exact = lane_gradients_at("rtrl", model, x, y, {0: None}, at=8)
    assert min(rel_err(late[b], exact[b]) for b in range(5)) > 1e-6  # beyond rank r it is an estimate


def test_kf_avg_1_is_kf_rtrl_with_the_same_signs(cell_name):
    model = make_model(cell_name, m=3, n=5, k=4, seed=2)
    x, y = make_sequence(model, 15, batch=3, seed=3)
    g_avg, _, _ = run_lanes("kf-avg-1", model, x, y, {7: [1]}, seed=11)
    g_kf, _, _ = run_lanes("kf-rtrl", model, x, y, {7: [1]}, seed=11)
    assert rel_err(g_avg, g_kf) <= 1e-10


def test_snap1_is_exact_when_H_is_diagonal_and_deterministic():
    """A tanh RNN whose recurrent block of W is diagonal has a diagonal H_t: SnAp-1 drops nothing."""
    model = make_model("tanh", m=3, n=6, k=4, seed=5)
    rows = model.cell.recurrent_rows
    with torch.no_grad():
        model.cell.weight[rows] = torch.diag(torch.diagonal(model.cell.weight[rows]))
    x, y = make_sequence(model, 19, batch=4, seed=6)
    g_snap, _, _ = run_lanes("snap-1", model, x, y, RESETS)
    assert rel_err(g_snap, run_lanes("rtrl", model, x, y, RESETS)[0]) <= 1e-12
    assert torch.equal(g_snap, run_lanes("snap-1", model, x, y, RESETS, seed=99)[0])


def test_snap1_is_biased_on_a_general_cell(cell_name):
    model = make_model(cell_name, m=3, n=6, k=4, seed=5)
    x, y = make_sequence(model, 9, seed=6)
    G = kl.gradient_samples(model, x, y, "snap-1", 3)
    assert torch.equal(G[0], G[1])  # deterministic
    assert rel_err(G[0], kl.true_gradient(model, x, y)) > 1e-3  # the dropped paths matter


# -- unbiasedness and the check's power --------------------------------------------------------

@pytest.mark.parametrize("method", ["ok-2", "ok-3-official", "kf-avg-3"])
def test_family_is_unbiased(cell_name, method):
    G, g = samples(cell_name, method, seed=0)
    assert G.std(dim=0).max() > 0 and bias_violations(G, g) == 0


class WrongMixingCoefficient(ok_module.OK):
    def _mix(self, s, kept, S, k_slots):
        coef_u, coef_a = super()._mix(s, kept, S, k_slots)
        mixed_rows = ~kept[:, : coef_u.shape[1]]
        return coef_u * torch.where(mixed_rows, 1.2, 1.0)[:, :, None], coef_a  # √(1.44 S/k) instead of √(S/k)


class DroppedSingularDirection(ok_module.OK):
    def _directions(self, V, G, eps):
        q, U, s, Wh, Rp_inv = super()._directions(V, G, eps)
        s = s.clone()
        s[:, -2] = 0.0  # forget the second-smallest direction of the target
        return q, U, s, Wh, Rp_inv


@pytest.mark.parametrize("bug", ["ok signs shared across lanes", "wrong mixing coefficient",
                                 "dropped singular direction"])
def test_the_check_catches_a_biased_ok(monkeypatch, bug):
    if bug == "ok signs shared across lanes":
        monkeypatch.setattr(ok_module, "rademacher", shared_across_lanes)
    elif bug == "wrong mixing coefficient":
        monkeypatch.setitem(kfrtrl_lab.estimators.registry.METHODS, "ok-<r>", WrongMixingCoefficient)
    else:
        monkeypatch.setitem(kfrtrl_lab.estimators.registry.METHODS, "ok-<r>", DroppedSingularDirection)
    G, g = samples("rhn", "ok-2")
    assert bias_violations(G, g) > 0


# -- variance -------------------------------------------------------------------------------------

def relative_error_with_error(G, g):
    """E‖ĝ − g‖²/‖g‖² and its standard error from the samples' spread."""
    e = ((G - g) ** 2).sum(dim=1) / (g * g).sum()
    return e.mean().item(), (e.std() / len(e) ** 0.5).item()


def random_rhn_problem(n=16, T=20, seed=0):
    """The setting of algorithms.md's table: RHN, one-hot inputs over 4 tokens, W ~ N(0, 1/a)."""
    a = 4 + n + 1
    torch.manual_seed(seed)
    model = kl.RecurrentModel(kl.RHN(4, n, init_std=a**-0.5), 4, init_std=a**-0.5).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (T,), generator=g), 4).double()
    y = torch.randint(0, 4, (T,), generator=g)
    return model, x, y, kl.true_gradient(model, x, y)


def test_kf_avg_k_divides_kf_rtrls_variance_by_k():
    model, x, y, g = random_rhn_problem(n=8, T=15)
    kf, se_kf = relative_error_with_error(kl.gradient_samples(model, x, y, "kf-rtrl", 4000, seed=1), g)
    for k in (2, 4):
        avg, se_avg = relative_error_with_error(kl.gradient_samples(model, x, y, f"kf-avg-{k}", 4000, seed=2), g)
        assert abs(avg - kf / k) <= 4 * (se_avg**2 + (se_kf / k) ** 2) ** 0.5, (k, avg, kf / k)


@pytest.mark.parametrize("r", [2, 4, 8])
def test_ok_has_less_variance_than_kf_avg_and_symmetric_no_more_than_official(r):
    """The OK paper's claim on a random RHN (n = 16, T = 20), measured on 200 samples each."""
    model, x, y, g = random_rhn_problem()
    var = {m: relative_error_with_error(kl.gradient_samples(model, x, y, m, 200, seed=3), g)
           for m in (f"ok-{r}", f"ok-{r}-official", f"kf-avg-{r}")}
    (ok, se_ok), (official, se_off), (avg, _) = var[f"ok-{r}"], var[f"ok-{r}-official"], var[f"kf-avg-{r}"]
    assert ok < avg
    assert ok <= official + 4 * (se_ok**2 + se_off**2) ** 0.5


# -- one OK step against its closed forms --------------------------------------------------------

@pytest.mark.parametrize("scaling", ["symmetric", "official"])
@pytest.mark.parametrize("r", [1, 2, 3])
def test_one_ok_step_has_the_closed_form_error(scaling, r):
    """Every sign pattern of one step run as its own lane from the same state: the mean of the
    estimates is the target T exactly, and the mean of ‖Ĝ − T‖² (the step's exact expected error)
    equals V_min (symmetric) or V_code (official), computed from T's singular values."""
    check = ex.ok_step_error(r, scaling)
    assert check["mean_error"] <= 1e-12
    assert check["v_min"] > 1e-6 * check["target_norm2"]  # the state is past rank r: the step mixes
    assert check["measured"] == pytest.approx(check["closed_form"], rel=1e-9)
    assert check["v_min"] <= check["v_code"] * (1 + 1e-12)
    if r == 1 and scaling == "official":  # the official scaling's error at r = 1 is exactly ‖T‖²
        assert check["measured"] == pytest.approx(check["target_norm2"], rel=1e-9)


def test_ok_stays_exact_in_float32_where_gram_schmidt_would_not():
    """With r ≥ a the target's u side is always rank-deficient (r + 1 vectors in R^a): the official
    code's Gram–Schmidt loop loses exactness there in float32 (relative errors 1.5–4.6, algorithms.md
    5a). Householder on the u side and a clamped eigendecomposition of M's Gram keep OK-r at float32
    rounding over a whole sequence with resets."""
    model = make_model("rhn", m=2, n=5, k=3, seed=4, dtype=torch.float32)
    x, y = make_sequence(model, 23, batch=4, seed=5)
    r = model.cell.extended_size + 2
    g_ok, _, _ = run_lanes(f"ok-{r}-official", model, x, y, RESETS)
    exact = run_lanes("rtrl", make_model("rhn", m=2, n=5, k=3, seed=4), x.double(), y, RESETS)[0]
    assert rel_err(g_ok.double(), exact) <= 1e-4
