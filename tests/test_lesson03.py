"""Lesson 3 (variance, UORO against KF-RTRL): the notebook's solutions pass their checkers, planted
wrong answers fail them, the one-step closed forms equal the package's estimators over every sign
pattern, the bootstrap and growth statistics behave, the trained RHN is committed with its record,
and every figure of the lesson draws without a kernel."""

import json
import math
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import notebook_cells

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson03

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_variance_uoro_vs_kf.ipynb"
TRAINED = ROOT / "results" / "trained" / "rhn-copy-n16.pt"


def solutions() -> dict:
    """The notebook's solution cells, executed: name -> function."""
    return notebook_cells(NOTEBOOK.name, namespace={"torch": torch, "math": math})


@pytest.fixture(scope="module")
def sol():
    return solutions()


# -- the exercises -------------------------------------------------------------------------------------

def test_solutions_pass_their_checkers(sol):
    assert "✓ Exercise 3.1" in lesson03.check_uoro_step(sol["uoro_step"])
    assert "✓ Exercise 3.2" in lesson03.check_kf_step_variance(sol["kf_step_variance"])
    assert "✓ Exercise 3.3" in lesson03.check_orthogonal_variances(sol["orthogonal_step_variances"])
    assert "✓ Exercise 3.4" in lesson03.check_bootstrap_interval(sol["bootstrap_interval"])


def test_stubs_raise_not_implemented():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    stubs = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    assert len(stubs) == 4
    checks = {"uoro_step": lesson03.check_uoro_step, "kf_step_variance": lesson03.check_kf_step_variance,
              "orthogonal_step_variances": lesson03.check_orthogonal_variances,
              "bootstrap_interval": lesson03.check_bootstrap_interval}
    for cell in stubs:
        scope = {"torch": torch, "math": math}
        exec(cell.source, scope)
        name = next(k for k in checks if k in scope)
        with pytest.raises(NotImplementedError):
            checks[name](scope[name])


def _uoro(s, theta, H, x_hat, D, nu, eps=1e-7, *, theta_times_rho0=False, no_sqrt_n=False, skip_H=False):
    s_fwd = s if skip_H else H @ s
    dtheta = torch.outer(x_hat, nu @ D)
    rho0 = math.sqrt((theta.norm() + eps) / (s_fwd.norm() + eps))
    rho1 = math.sqrt((dtheta.norm() + eps) / ((1.0 if no_sqrt_n else nu.norm()) + eps))
    return rho0 * s_fwd + rho1 * nu, (theta * rho0 if theta_times_rho0 else theta / rho0) + dtheta / rho1


@pytest.mark.parametrize("wrong", ["theta_times_rho0", "no_sqrt_n", "skip_H"])
def test_wrong_uoro_steps_fail(wrong):
    with pytest.raises(ExerciseFailed):
        lesson03.check_uoro_step(lambda *a: _uoro(*a, **{wrong: True}))


def test_uoro_step_with_the_factors_swapped_fails():
    def swapped(s, theta, H, x_hat, D, nu, eps=1e-7):
        s_new, theta_new = _uoro(s, theta, H, x_hat, D, nu, eps)
        return theta_new, s_new

    with pytest.raises(ExerciseFailed):
        lesson03.check_uoro_step(swapped)


def test_wrong_kf_step_variances_fail():
    def minus_inner(u, M, x_hat, D):  # the sign of the inner-product term flipped
        return float(2 * u.norm() * M.norm() * x_hat.norm() * D.norm() - 2 * (u @ x_hat) * (M * D).sum())

    def no_inner(u, M, x_hat, D):
        return float(2 * u.norm() * M.norm() * x_hat.norm() * D.norm())

    def target_norm(u, M, x_hat, D):  # ‖Γ_t‖², the error of a step that kept neither term's scale
        return float(((torch.outer(u, M.flatten()) + torch.outer(x_hat, D.flatten())) ** 2).sum())

    for wrong in (minus_inner, no_inner, target_norm):
        with pytest.raises(ExerciseFailed):
            lesson03.check_kf_step_variance(wrong)


def test_wrong_orthogonal_variances_fail():
    wrongs = [
        lambda n, hg, f: (2 * hg * f, 2 * math.sqrt(n) * hg * f),  # forgot (n − 1)‖F‖²
        lambda n, hg, f: (2 * hg * f, (n - 1) * f**2 + 2 * n * hg * f),  # n instead of √n
        lambda n, hg, f: (hg * f, (n - 1) * f**2 + 2 * math.sqrt(n) * hg * f),  # KF's factor 2 lost
        lambda n, hg, f: ((n - 1) * f**2 + 2 * math.sqrt(n) * hg * f, 2 * hg * f),  # swapped
    ]
    for wrong in wrongs:
        with pytest.raises(ExerciseFailed):
            lesson03.check_orthogonal_variances(wrong)


def test_wrong_bootstraps_fail():
    from statistics import NormalDist

    def normal_interval(values, resamples=2000, level=0.95, seed=0):
        z = NormalDist().inv_cdf((1 + level) / 2)
        se = values.std() / len(values) ** 0.5
        return (values.mean() - z * se).item(), (values.mean() + z * se).item()

    def without_replacement(values, resamples=2000, level=0.95, seed=0):
        g = torch.Generator().manual_seed(seed)
        idx = torch.stack([torch.randperm(len(values), generator=g) for _ in range(resamples)])
        means = values[idx].mean(1)
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=means.dtype)
        return tuple(torch.quantile(means, q).tolist())

    def one_sided_level(values, resamples=2000, level=0.95, seed=0):
        g = torch.Generator().manual_seed(seed)
        means = values[torch.randint(0, len(values), (resamples, len(values)), generator=g)].mean(1)
        q = torch.tensor([1 - level, level], dtype=means.dtype)
        return tuple(torch.quantile(means, q).tolist())

    for wrong in (normal_interval, without_replacement, one_sided_level):
        with pytest.raises(ExerciseFailed):
            lesson03.check_bootstrap_interval(wrong)


# -- the package side ------------------------------------------------------------------------------------

@pytest.mark.parametrize("orthogonal", [False, True])
def test_one_step_closed_forms_equal_the_estimators_over_every_sign_pattern(orthogonal):
    setup = ex.one_step_setup(6, warmup=3, seed=5, orthogonal=orthogonal)
    for method in ("kf-rtrl", "uoro"):
        r = ex.one_step_errors(setup, method)
        assert r["exact"] and r["patterns"] == (4 if method == "kf-rtrl" else 2**6)
        assert r["measured"] == pytest.approx(r["closed_form"], rel=1e-9)
        assert r["mean_miss"] < 1e-12  # the mean over all patterns is the target: unbiased
    if orthogonal:
        assert abs(float(setup["u"] @ setup["x_hat"])) < 1e-12


def test_one_step_uoro_minimum_and_sampled_patterns():
    setup = ex.one_step_setup(14, warmup=3, seed=2)
    r = ex.one_step_errors(setup, "uoro", lanes=3000, seed=1)
    assert not r["exact"] and r["patterns"] == 3000
    assert abs(r["measured"] - r["closed_form"]) < 4 * r["standard_error"]
    F, HG = setup["F"], setup["HG"]
    optimum = ex.uoro_step_variance_closed_form(14, HG.norm().item(), 1.0, F.norm().item(), (HG * F).sum().item())
    assert r["closed_form"] == pytest.approx(optimum, rel=1e-5)  # UORO's ρ's are the minimiser (up to ε)
    # the minimiser: any other β gives more
    s, theta = 0.7, HG.norm().item() / 0.7
    for beta2 in (0.5, 2.0):
        best = math.sqrt(14) * theta / (s * F.norm().item())
        assert ex.uoro_step_variance_closed_form(14, s, theta, F.norm().item(), 0.0, beta2=best * beta2) > \
            ex.uoro_step_variance_closed_form(14, s, theta, F.norm().item(), 0.0, beta2=best)


def test_one_step_sweep_rows():
    rows = ex.one_step_sweep([3, 5], lanes=200)
    assert {(r["method"], r["n"]) for r in rows} == {(m, n) for m in ("kf-rtrl", "uoro") for n in (3, 5)}
    assert all(r["ratio"] > 1 for r in rows)
    fig = figures.one_step_figure(rows)
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"


def test_bootstrap_intervals():
    g = torch.Generator().manual_seed(0)
    small, large = torch.randn(40, generator=g).double(), torch.randn(4000, generator=g).double()
    lo_s, hi_s = ex.bootstrap_interval(small, 500, seed=1)
    lo_l, hi_l = ex.bootstrap_interval(large, 500, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width shrinks like 1/√S: 10× more samples... here 100×
    assert ex.bootstrap_interval(small, 500, seed=1) == (lo_s, hi_s)  # seeded
    lo, hi = ex.bootstrap_ratio_interval(large.abs() * 3, large.abs(), 500, seed=2)
    assert lo < 3 < hi or abs(lo - 3) < 0.3


def test_variance_sweep_bootstrap_ratio_rows_and_figures():
    rows = ex.variance_sweep_bootstrap([4, 6], [4], samples=60, resamples=200)
    assert all(r["ci_low"] <= r["relative_error"] <= r["ci_high"] for r in rows)
    assert all(len(r["per_sample"]) == 60 for r in rows)
    ratios = ex.ratio_rows(rows, x="n", resamples=200)
    assert [r["n"] for r in ratios] == [4, 6] and all(r["ci_low"] <= r["ratio"] <= r["ci_high"] for r in ratios)
    fig = figures.variance_ci_figure(rows, x="n")
    assert len(fig.data) == 2 and all(t.error_y.array is not None for t in fig.data)
    fig = figures.ratio_figure(ratios, x="n")
    assert len(fig.data) == 2 and "not a fit" in fig.data[1].name
    assert fig.data[1].y[0] == pytest.approx(ratios[0]["ratio"])
    assert fig.data[1].y[1] == pytest.approx(ratios[0]["ratio"] * 6 / 4)  # slope 1 through the first point


def test_growth_ratio_tells_a_plateau_from_linear_growth():
    flat = [{"method": "m", "t": t, "per_sample": [1.0 + 0.01 * s for s in range(50)]} for t in range(1, 31)]
    linear = [{"method": "m", "t": t, "per_sample": [t * (1.0 + 0.01 * s) for s in range(50)]} for t in range(1, 31)]
    assert ex.growth_ratio(flat, "m")["ratio"] == pytest.approx(1.0)
    g = ex.growth_ratio(linear, "m")
    assert g["ratio"] == pytest.approx((sum(range(21, 31)) / 10) / (sum(range(11, 21)) / 10))
    assert g["ci_low"] <= g["ratio"] <= g["ci_high"]


def test_influence_error_over_time_and_its_figures():
    model = ex.random_model("rhn", 4, 5, 4, init_std=0.3)
    x, y = ex.random_sequence(model, 6, seed=1)
    rows = ex.influence_error_over_time(model, x, y, samples=50, resamples=100)
    kf1 = next(r for r in rows if r["method"] == "kf-rtrl" and r["t"] == 1)
    assert kf1["relative_influence_error"] < 1e-20  # KF-RTRL's first step from Ĝ_0 = 0 is exact: F_1
    uoro1 = next(r for r in rows if r["method"] == "uoro" and r["t"] == 1)
    assert uoro1["relative_influence_error"] > 0.5  # UORO's is not: (n − 1)‖F_1‖² on average
    fig = figures.influence_error_figure({"a": rows, "b": rows})
    assert len(fig.data) == 8
    norms = ex.state_jacobian_norms(model, x)
    assert len(norms) == 6 and all(v > 0 for v in norms)
    fig = figures.jacobian_norm_figure({"a": norms})
    assert fig.data[-1].y == (1.0, 1.0)


def test_sequence_unbiasedness_passes_kf_and_fails_snap():
    model = ex.random_model("rhn", 4, 4, 4, init_std=0.5)
    x, y = ex.random_sequence(model, 6, seed=3)
    rows = {r["method"]: r for r in ex.sequence_ztests(model, x, y, methods=("kf-rtrl", "snap-1"), samples=1500)}
    assert rows["kf-rtrl"]["violations"] == 0
    assert rows["snap-1"]["violations"] > 0


def test_lane_state_numbers_and_factor_shapes():
    n, m = 8, 4
    a, c = m + n + 1, 2 * n
    assert ex.lane_state_numbers("uoro", n, m) == n + a * c
    assert ex.lane_state_numbers("kf-rtrl", n, m) == a + n * c + 1  # + the stored scale σ of A
    fig = figures.factor_shapes_figure(n, m)
    assert len(fig.data) == 4 and str(n + a * c) in fig.layout.title.text


# -- the trained network ------------------------------------------------------------------------------------

def test_trained_rhn_is_committed_small_with_its_command_and_remembers():
    assert TRAINED.stat().st_size <= 1 << 20
    model, record = ex.load_trained_model(TRAINED)
    assert record["t_max"] >= 5
    assert record["command"].startswith("python -m kfrtrl_lab train copy")
    assert model.hidden_size == 16 and model.cell.weight.dtype == torch.float64
    sidecar = json.loads(TRAINED.with_suffix(".json").read_text())
    assert sidecar["t_max"] == record["t_max"] and sidecar["command"] == record["command"]
    assert ex.copy_recall_bits(model, 5, sequences=8) < 0.5  # it carries the bits over 6 steps
    untrained = ex.random_model("rhn", 4, 16, 4)
    assert ex.copy_recall_bits(untrained, 5, sequences=8) > 1.5  # ≈ 2 bits: uniform over 4 symbols


def test_save_trained_model_keeps_weights_record_and_command(tmp_path):
    model = ex.random_model("rhn", 4, 5, 4)
    config = {"task": "copy", "method": "rtrl", "cell": "rhn", "hidden": 5, "batch": 2, "lr": 1e-3, "steps": 10,
              "seed": 0}
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": config, "model": model.float().state_dict(), "optimizer": {}, "step": 10}, run / "checkpoint.pt")
    (run / "summary.json").write_text(json.dumps({"command": "python -m kfrtrl_lab train copy --out x",
                                                  "git_commit": "abc", "wall_s": 1.0,
                                                  "curve": [{"step": 10, "t_max": 2, "ema_bits": 0.5}]}))
    record = ex.save_trained_model(run, tmp_path / "kept" / "m.pt")
    assert record["t_max"] == 2 and record["command"].endswith("--out x")
    loaded, again = ex.load_trained_model(tmp_path / "kept" / "m.pt")
    assert torch.equal(loaded.cell.weight.float(), model.cell.weight.float()) and again["t_max"] == 2
    assert json.loads((tmp_path / "kept" / "m.json").read_text())["command"] == record["command"]
