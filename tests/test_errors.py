"""Bad input gets a clear error that says what was expected."""

import pytest
import torch

import kfrtrl_lab as kl
from conftest import make_model, make_sequence

ALL = ["bptt", "tbptt-3", "rtrl", "kf-rtrl", "uoro"]


@pytest.fixture
def model():
    return make_model("rhn", m=3, n=5, k=4)


def test_unknown_method_lists_the_known_ones(model):
    with pytest.raises(ValueError, match=r"unknown method 'kfrtrl'.*bptt.*tbptt-<k>.*rtrl.*kf-rtrl.*uoro"):
        kl.make_estimator("kfrtrl", model, 2)
    for bad in ("tbptt-", "tbptt-x", "", None):
        with pytest.raises(ValueError, match="unknown method"):
            kl.make_estimator(bad, model, 2)
    with pytest.raises(ValueError, match=r"method 'tbptt-0': k in tbptt-<k> must be a positive int, got 0"):
        kl.make_estimator("tbptt-0", model, 2)
    x, y = make_sequence(model, 3)
    with pytest.raises(ValueError, match="known methods"):
        kl.gradient_samples(model, x, y, "snap-2", 4)


@pytest.mark.parametrize("method", ALL)
def test_step_input_shapes_and_dtypes(model, method):
    est = kl.make_estimator(method, model, 2)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(batch=2, input_size=3\), got \(2, 4\)"):
        est.step(torch.zeros(2, 4, dtype=torch.float64), y)
    with pytest.raises(ValueError, match=r"shape \(batch=2, input_size=3\), got \(3,\)"):
        est.step(torch.zeros(3, dtype=torch.float64), y)
    with pytest.raises(ValueError, match="model's dtype torch.float64, got torch.float32"):
        est.step(torch.zeros(2, 3), y)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"targets must be a tensor of shape \(batch=2,\), got \(2, 1\)"):
        est.step(x, y[:, None])
    with pytest.raises(ValueError, match="int64"):
        est.step(x, y.float())
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        est.step(x, torch.tensor([0, 4]))


def test_constructor_and_reset_arguments(model):
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            kl.make_estimator("kf-rtrl", model, bad)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        kl.make_estimator("uoro", model, 2, reduction="avg")
    with pytest.raises(ValueError, match="RecurrentModel"):
        kl.make_estimator("rtrl", model.cell, 2)
    est = kl.make_estimator("kf-rtrl", model, 3)
    with pytest.raises(ValueError, match=r"lane indices must lie in \[0, 3\)"):
        est.reset([3])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        est.reset(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="positive int"):
        kl.TanhRNN(0, 4)
    with pytest.raises(ValueError, match="output_size"):
        kl.RecurrentModel(kl.RHN(2, 3), 1)


def test_analysis_input_checks(model):
    x, y = make_sequence(model, 5)
    with pytest.raises(ValueError, match=r"inputs must be a float tensor of shape \(T, input_size=3\)"):
        kl.true_gradient(model, x[:, :2], y)
    with pytest.raises(ValueError, match=r"targets must be a tensor of shape \(T=5,\), got \(4,\)"):
        kl.true_gradient(model, x, y[:4])
    with pytest.raises(ValueError, match="int64"):
        kl.gradient_samples(model, x, y.int(), "kf-rtrl", 3)
    with pytest.raises(ValueError, match="dtype"):
        kl.true_gradient(model, x.float(), y)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        kl.gradient_samples(model, x, y, "kf-rtrl", 0)


@pytest.mark.parametrize("method", ALL)
def test_non_finite_state_names_the_step(model, method):
    est = kl.make_estimator(method, model, 2)
    x, y = make_sequence(model, 6, batch=2)
    x[3, 1, 0] = float("nan")  # enters the state at step 4 (1-based), in lane 1
    for t in range(3):
        est.step(x[t], y[t])
    with pytest.raises(kl.NonFiniteError, match=r"non-finite state s_t at step 4 in lanes \[1\]"):
        est.step(x[3], y[3])


def test_diverged_weights_are_reported(model):
    with torch.no_grad():
        model.cell.weight[0, 0] = float("nan")  # a weight the optimiser broke
    est = kl.make_estimator("kf-rtrl", model, 2)
    x, y = make_sequence(model, 1, batch=2)
    with pytest.raises(kl.NonFiniteError, match="step 1"):
        est.step(x[0], y[0])
