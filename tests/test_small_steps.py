"""The bookkeeping of a small step made cheap without losing what it guarantees (issue 18, item 6):
signs hashed for a chunk of steps on the CPU are the per-step draws, and the finiteness record kept
as a table of per-step sums names the same first bad step and lanes as the per-step record."""

from __future__ import annotations

import pytest
import torch

import kfrtrl_lab as kl
from kfrtrl_lab.estimators import base as estimator_base
from kfrtrl_lab.random import SIGN_CHUNK, CounterRandom, hash_bits


def per_step_signs(random: CounterRandom, counter: int, shape, dtype):
    """1 − 2·(bit 11 of the hash) at this one counter value: the definition of a draw."""
    index = torch.arange(torch.Size(shape).numel()).view(shape)
    bit = (hash_bits(random.key, torch.tensor(counter), index) >> 11) & 1
    return (1 - 2 * bit).to(dtype)


@pytest.mark.parametrize("shape,dtype", [((16, 2), torch.float32), ((3, 5, 2), torch.float64),
                                         ((4, 40000), torch.float32)])  # the last: one step per chunk
def test_chunked_signs_are_the_per_step_draws(shape, dtype):
    random = CounterRandom(21, "cpu")
    for counter in range(2 * SIGN_CHUNK + 3):  # across chunk boundaries
        assert torch.equal(random.signs(shape, dtype), per_step_signs(random, counter, shape, dtype)), counter
    assert int(random.counter) == 2 * SIGN_CHUNK + 3


def test_chunked_signs_follow_the_counter_when_it_is_set():
    """A restored checkpoint moves the counter back into a chunk or far past it: the draws are those
    of the counter, and shapes drawn in turn from one stream do not disturb each other."""
    random = CounterRandom(5, "cpu")
    for _ in range(10):
        random.signs((8, 2)), random.signs((8, 3))
    for counter in (7, 3 * SIGN_CHUNK + 1, 0, 7):
        random.load_state_dict({"seed": 5, "stream": 1, "counter": counter})
        for k in range(3):
            assert torch.equal(random.signs((8, 2)), per_step_signs(random, counter + 2 * k, (8, 2), torch.float32))
            assert torch.equal(random.signs((8, 3)), per_step_signs(random, counter + 2 * k + 1, (8, 3), torch.float32))


def test_signs_are_the_callers_to_modify():
    random = CounterRandom(3, "cpu")
    first = random.signs((4, 2))
    first.mul_(0)  # a method may work in place on its draw
    random.load_state_dict({"seed": 3, "stream": 1, "counter": 0})
    assert torch.equal(random.signs((4, 2)), per_step_signs(random, 0, (4, 2), torch.float32))


# -- the finiteness record --------------------------------------------------------------------

def make(method="kf-rtrl", batch=4, table=True, seed=0):
    torch.manual_seed(0)
    model = kl.RecurrentModel(kl.TanhRNN(3, 5), 3).double()
    est = kl.make_estimator(method, model, batch, seed=seed)
    if not table:  # the GPU's per-step record, run on the CPU
        est._finite_rows = None
    return est


def data(steps, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (steps, batch), generator=g)
    return x, y


def fast_error(est, x, y, check_every):
    """Run fast steps, checking every ``check_every`` steps as the trainer does at chunk ends;
    the NonFiniteError's message (None if none)."""
    keep = torch.ones(est.batch_size, dtype=est.dtype)
    try:
        for t in range(len(x)):
            est.fast_step(x[t], y[t], keep)
            if (t + 1) % check_every == 0:
                est.check_finite()
        est.check_finite()
    except kl.NonFiniteError as err:
        return str(err), err.step
    return None


@pytest.mark.parametrize("method", ["kf-rtrl", "uoro", "rtrl", "tbptt-3"])
@pytest.mark.parametrize("check_every", [1, 7, 1000])
def test_table_names_the_first_bad_step_and_lanes(method, check_every):
    """NaN enters lane 2 at step 9 and lane 0 at step 12 (1-based); checked at every step, at
    chunk ends, or once at the end: lanes [2] at step 9, as the per-step record says."""
    x, y = data(20)
    x[8, 2, 0] = float("nan")
    x[11, 0, 1] = float("nan")
    message, step = fast_error(make(method), x, y, check_every)
    assert step == 9 and "non-finite state s_t at step 9 in lanes [2]" in message
    assert (message, step) == fast_error(make(method, table=False), x, y, check_every)


def test_table_names_a_bad_step_after_it_was_folded_when_full():
    """More steps than the table holds between two checks: it is folded when full, and the step is
    still named exactly, on either side of the fold."""
    rows = estimator_base.FINITE_ROWS
    for bad in (rows - 1, rows, rows + 1, rows + 5):  # 0-based step of the NaN
        x, y = data(rows + 10)
        x[bad, 1, 0] = float("nan")
        message, step = fast_error(make("snap-1"), x, y, check_every=10**6)
        assert step == bad + 1 and f"at step {bad + 1} in lanes [1]" in message


def test_table_names_a_gradient_that_alone_is_not_finite():
    """Only the influence estimate is broken (the state and loss stay finite): the gradient is named."""
    x, y = data(10)
    messages = []
    for table in (True, False):
        est = make("kf-rtrl", table=table)
        keep = torch.ones(4, dtype=est.dtype)
        for t in range(5):
            est.fast_step(x[t], y[t], keep)
        est.u[3, 0] = float("inf")  # lane 3's u: its gradient (and the estimate) go bad at step 6
        for t in range(5, 10):
            est.fast_step(x[t], y[t], keep)
        with pytest.raises(kl.NonFiniteError) as err:
            est.check_finite()
        messages.append((str(err.value), err.value.step))
    assert messages[0][1] == 6 and "recurrent gradient estimate (influence state) at step 6;" in messages[0][0]
    assert messages[0] == messages[1]


def test_a_failed_check_keeps_failing_on_the_same_step():
    x, y = data(12)
    x[4, 3, 0] = float("nan")
    est = make("uoro")
    keep = torch.ones(4, dtype=est.dtype)
    for t in range(8):
        est.fast_step(x[t], y[t], keep)
    for _ in range(2):  # also after more steps, whose rows are not finite either
        with pytest.raises(kl.NonFiniteError, match=r"at step 5 in lanes \[3\]"):
            est.check_finite()
        for t in range(8, 12):
            est.fast_step(x[t], y[t], keep)


def test_step_checks_each_step_at_once():
    """``est.step`` raises at the bad step itself, before ``.grad`` is touched."""
    x, y = data(6)
    x[3, 1, 0] = float("nan")
    x[5, 0, 0] = float("inf")  # tanh(inf) is finite: only the gradient goes bad
    for table in (True, False):
        est = make("kf-rtrl", table=table)
        for t in range(3):
            est.step(x[t], y[t])
        grad = est.cell.weight.grad.clone()
        with pytest.raises(kl.NonFiniteError, match=r"non-finite state s_t at step 4 in lanes \[1\]"):
            est.step(x[3], y[3])
        assert torch.equal(est.cell.weight.grad, grad)
        est = make("kf-rtrl", table=table)
        for t in (0, 1, 2, 4):
            est.step(x[t], y[t])
        with pytest.raises(kl.NonFiniteError, match=r"non-finite recurrent gradient estimate .* at step 5;"):
            est.step(x[5], y[5])


def test_table_and_per_step_record_give_the_same_run():
    """The record only watches: a run's numbers do not depend on how it is kept."""
    x, y = data(30)
    a, b = make("kf-rtrl"), make("kf-rtrl", table=False)
    for t in range(30):
        assert torch.equal(a.step(x[t], y[t]), b.step(x[t], y[t]))
    assert torch.equal(a.cell.weight.grad, b.cell.weight.grad)


@pytest.mark.parametrize("cell", ["tanh", "rhn", "lstm"])
def test_a_cell_without_direct_path_has_zero_direct_partials(cell):
    """``direct_path = False`` lets H_dense skip ∂φ/∂s_{t-1}: the generic derivatives of φ must be 0
    there; and H_dense is the same matrix either way."""
    torch.manual_seed(3)
    c = kl.make_cell(cell, 3, 5).double()
    x, state = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, c.slots, 5, dtype=torch.float64)
    step = c.step(x, state)
    generic_direct = c.pointwise_derivatives(c.preactivation(step.x_hat), state)[2]
    if not c.direct_path:
        assert torch.equal(generic_direct, torch.zeros_like(generic_direct))
    scale = torch.rand(4, dtype=torch.float64)
    c.direct_path = True
    with_direct = step.H_dense(scale)
    del c.direct_path  # the class's own value again
    torch.testing.assert_close(step.H_dense(scale), with_direct, rtol=0, atol=0)
