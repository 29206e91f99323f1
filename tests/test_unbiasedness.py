"""Unbiasedness of the stochastic estimators, by a z-test whose tolerance is the
samples' own standard error, and the variance claim of the KF-RTRL paper.

The check is shown to have power: deliberately broken estimators fail it."""

import pytest
import torch

import kfrtrl_lab as kl
import kfrtrl_lab.estimators.kf_rtrl
import kfrtrl_lab.estimators.registry
import kfrtrl_lab.estimators.uoro
from conftest import make_model, make_sequence

SAMPLES = 4000


def bias_violations(G: torch.Tensor, g: torch.Tensor, alpha: float = 1e-3) -> int:
    """Coordinates where |mean(G) − g| exceeds the two-sided z-bound of their standard error
    (kl.analysis.unbiasedness_test: Bonferroni over the coordinates; zero spread must match exactly)."""
    return kl.analysis.unbiasedness_test(G, g, alpha)["violations"]


def samples(cell_name, method, seed=0, S=SAMPLES):
    model = make_model(cell_name, m=3, n=6, k=4, std=0.5, seed=seed)
    x, y = make_sequence(model, 9, seed=seed + 1)
    return kl.gradient_samples(model, x, y, method, S, seed=seed + 2), kl.true_gradient(model, x, y)


@pytest.mark.parametrize("method", ["kf-rtrl", "uoro"])
@pytest.mark.parametrize("seed", [0, 1])
def test_mean_of_samples_is_the_true_gradient(cell_name, method, seed):
    G, g = samples(cell_name, method, seed)
    assert G.shape == (SAMPLES, g.numel())
    assert G.std(dim=0).max() > 0  # the estimates really are random
    assert bias_violations(G, g) == 0


def test_samples_are_reproducible_and_independent_across_lanes():
    G1, _ = samples("rhn", "kf-rtrl", S=50)
    G2, _ = samples("rhn", "kf-rtrl", S=50)
    assert torch.equal(G1, G2)
    assert (G1[1:] != G1[:1]).any(dim=1).all()  # no two lanes drew the same signs


# -- deliberate bugs that the test above must catch ------------------------------------------

class DroppedBiasRow(kfrtrl_lab.estimators.kf_rtrl.KFRTRL):
    def _advance(self, step):
        super()._advance(step)
        self.u[:, -1] = 0.0  # forget the bias entry of x̂ in the u factor


class MismatchedP(kfrtrl_lab.estimators.kf_rtrl.KFRTRL):
    def _advance(self, step):
        super()._advance(step)
        self.A_scale *= 1.1  # as if A were scaled by 1.1/p instead of 1/p: u_t ⊗ A_t no longer telescopes


def shared_across_lanes(shape, random, dtype):
    """A planted bug: one draw of signs, used by every lane."""
    one = random.signs((1, *shape[1:]), dtype)
    return one.expand(shape).clone()


@pytest.mark.parametrize("bug", ["dropped bias row", "mismatched p", "kf signs shared across lanes",
                                 "uoro signs shared across lanes"])
def test_the_check_catches_a_biased_estimator(monkeypatch, bug):
    method = "uoro" if bug.startswith("uoro") else "kf-rtrl"
    if bug == "dropped bias row":
        monkeypatch.setitem(kfrtrl_lab.estimators.registry.METHODS, "kf-rtrl", DroppedBiasRow)
    elif bug == "mismatched p":
        monkeypatch.setitem(kfrtrl_lab.estimators.registry.METHODS, "kf-rtrl", MismatchedP)
    elif bug == "kf signs shared across lanes":
        monkeypatch.setattr(kfrtrl_lab.estimators.kf_rtrl, "rademacher", shared_across_lanes)
    else:
        monkeypatch.setattr(kfrtrl_lab.estimators.uoro, "rademacher", shared_across_lanes)
    G, g = samples("rhn", method)
    assert bias_violations(G, g) > 0


# -- the paper's variance claim ---------------------------------------------------------------

def relative_error(G, g):
    """E‖ĝ − g‖² / ‖g‖²."""
    return (((G - g) ** 2).sum(dim=1).mean() / (g * g).sum()).item()


@pytest.mark.parametrize("n", [16, 32])
@pytest.mark.parametrize("init_std", [None, 0.3])  # None: the official N(0, 0.01²) init
def test_kf_rtrl_has_lower_variance_than_uoro(n, init_std):
    torch.manual_seed(n)
    model = kl.RecurrentModel(kl.RHN(4, n, init_std=init_std), 4, init_std=init_std).double()
    g_in = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, generator=g_in, dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=g_in)
    g = kl.true_gradient(model, x, y)
    kf = relative_error(kl.gradient_samples(model, x, y, "kf-rtrl", 300, seed=1), g)
    uoro = relative_error(kl.gradient_samples(model, x, y, "uoro", 300, seed=1), g)
    assert kf < uoro
