"""Lesson 5 (char-PTB): the exercises' solutions pass their checkers, planted wrong answers fail."""

import math

import pytest
import torch

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson05

# -- 5.1 ------------------------------------------------------------------------------------------

def bits_per_character(model, ids, reset_every=None):
    cell = model.cell
    one_hot = torch.eye(model.input_size, dtype=cell.weight.dtype)
    state, total = cell.zero_state(1), 0.0
    with torch.no_grad():
        for t in range(len(ids) - 1):
            if reset_every and t % reset_every == 0:
                state = cell.zero_state(1)
            state = cell(one_hot[ids[t]][None], state)
            total += model.lane_losses(cell.hidden(state), ids[t + 1][None]).item()
    return total / (len(ids) - 1) / math.log(2)


def test_bpc_solution_passes():
    assert lesson05.check_bits_per_character(bits_per_character).startswith("✓")


def test_bpc_wrong_answers_fail():
    wrongs = [lambda m, ids: bits_per_character(m, ids) * math.log(2),  # nats
              lambda m, ids: bits_per_character(m, ids, reset_every=10),  # resets the state during evaluation
              lambda m, ids: bits_per_character(m, ids) * (len(ids) - 1) / len(ids)]  # divides by N, not N-1
    for wrong in wrongs:
        with pytest.raises(ExerciseFailed):
            lesson05.check_bits_per_character(wrong)


# -- 5.2 ------------------------------------------------------------------------------------------

def staggered_resets(length, batch_size, reset_every, steps):
    offsets = torch.arange(batch_size) * (length // batch_size)
    t = torch.arange(steps)[:, None]
    mask = (offsets[None, :] + t) % length % reset_every == 0
    mask[0] = True
    return mask


def test_staggered_solution_passes():
    assert lesson05.check_staggered_resets(staggered_resets).startswith("✓")


def test_staggered_wrong_answers_fail():
    def contiguous(length, B, R, steps):  # every lane resets together
        return (torch.arange(steps)[:, None] % R == 0).expand(steps, B)

    def no_first(length, B, R, steps):  # forgets the reset at the first step
        mask = staggered_resets(length, B, R, steps)
        mask[0] = (torch.arange(B) * (length // B)) % R == 0
        return mask

    def no_wrap(length, B, R, steps):  # positions not taken modulo N
        offsets = torch.arange(B) * (length // B)
        mask = (offsets[None, :] + torch.arange(steps)[:, None]) % R == 0
        mask[0] = True
        return mask

    for wrong in (contiguous, no_first, no_wrap):
        with pytest.raises(ExerciseFailed):
            lesson05.check_staggered_resets(wrong)


# -- 5.3 ------------------------------------------------------------------------------------------

def updates(method, steps, update_every):
    if method.startswith("tbptt-"):
        tau = int(method.split("-")[1])
        return steps // (tau * math.ceil(update_every / tau))
    return steps // update_every


def test_updates_solution_passes():
    assert lesson05.check_updates_made(updates).startswith("✓")


def test_updates_wrong_answers_fail():
    wrongs = [lambda m, n, u: n // u,  # TBPTT as if online
              lambda m, n, u: n // int(m.split("-")[1]) if m.startswith("tbptt-") else n // u,  # ignores u for TBPTT
              lambda m, n, u: n // max(u, int(m.split("-")[1])) if m.startswith("tbptt-") else n // u]  # max(u, τ)
    for wrong in wrongs:
        with pytest.raises(ExerciseFailed):
            lesson05.check_updates_made(wrong)


def test_unigram_bpc_is_the_entropy_of_the_frequencies():
    ids = torch.tensor([0, 0, 1, 1])  # add-one smoothed: 3/6 and 3/6 -> one bit
    assert ex.unigram_bpc(ids, ids, 2) == pytest.approx(1.0)
    assert ex.unigram_bpc(ids, torch.tensor([0, 0]), 3) == pytest.approx(-math.log2(3 / 7))


def test_staggered_mask_is_read_from_the_stream():
    mask = ex.staggered_reset_mask(1000, 4, 100, 260)
    assert mask[0].all() and mask.sum(0).tolist() == [3, 4, 3, 4]  # lanes 1 and 3 start mid-block
    assert mask[:, 1].nonzero().flatten().tolist() == [0, 50, 150, 250]  # lane 1 starts at 250


def test_gradient_horizon_stops_at_resets_and_windows():
    mask = torch.zeros(40, 2, dtype=torch.bool)
    mask[0] = True
    mask[10, 0] = True  # lane 0 resets again at step 10
    online = ex.gradient_horizon(mask)
    assert online[:, 1].tolist() == list(range(1, 41))  # no reset after the first: the horizon grows with t
    assert online[9, 0] == 10 and online[10, 0] == 1 and online[39, 0] == 30
    window = ex.gradient_horizon(mask, tau=16)
    assert window[:, 1].tolist() == [t % 16 + 1 for t in range(40)]
    assert window[12, 0] == 3 and window[16, 0] == 1  # the reset at 10, then the window starting at 16
