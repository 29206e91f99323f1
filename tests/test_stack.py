"""Stacks of layers learned layer-wise online (kfrtrl_lab/stack.py; algorithms.md, section 5b).

* the layer contract: an estimator on kl.Layer(cell) stepped with ∂L_t/∂s_t gives what the same
  estimator on a RecurrentModel gives from its readout, and the s_t of cell.forward;
* L = 1: layer-wise online learning with exact RTRL is BPTT through the stack (float64, 1e-10) for
  every parameter from layer 1 up;
* L ≥ 2: it equals an independent construction of the layer-wise gradient (each layer's own
  recurrence with its inputs fixed, the layers above at the current step only), and differs from
  BPTT for the lower layers (the measured bias);
* a stochastic method per layer (KF-RTRL) is unbiased with respect to the layer-wise RTRL gradient.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import kfrtrl_lab as kl
from kfrtrl_lab.stack import layerwise_gradient_samples, parameter_groups

torch.set_num_threads(1)
ONLINE = ["rtrl", "kf-rtrl", "uoro", "ok-2", "ok-2-official", "kf-avg-2", "snap-1"]


def sequence(m, k, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.eye(m, dtype=torch.float64)[torch.randint(0, m, (T,), generator=g)]
    return x, torch.randint(0, k, (T,), generator=g)


def stack(cell="rhn", layers=2, m=5, k=5, width=6, hidden=4, seed=0, **kw):
    torch.manual_seed(seed)
    return kl.make_stack(cell, m, k, layers, width, hidden, **kw).double()


# -- the layer contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rhn", "lstm"])
@pytest.mark.parametrize("method", ONLINE)
def test_step_with_cotangent_is_the_readout_step(cell, method):
    """The readout's ∂L_t/∂s_t handed to step_with_cotangent on kl.Layer(cell) gives the gradient,
    state and influence that est.step gives on the RecurrentModel (same seed: same signs), and
    s_t = cell.forward(x, s_{t-1}); a reset and an extra keep mask act alike."""
    B, m, n, k = 3, 4, 5, 4
    torch.manual_seed(0)
    model = kl.RecurrentModel(kl.make_cell(cell, m, n), k).double()
    layer_model = copy.deepcopy(model)
    est = kl.make_estimator(method, model, B, seed=3)
    layer_est = kl.make_estimator(method, kl.Layer(layer_model.cell), B, seed=3)
    g = torch.Generator().manual_seed(1)
    for t in range(6):
        x = torch.randn(B, m, dtype=torch.float64, generator=g)
        y = torch.randint(0, k, (B,), generator=g)
        keep = None
        if t == 2:
            est.reset([1])
            layer_est.reset([1])
        if t == 4:  # lane 0 restarts through the keep argument instead of a reset
            est.reset([0])
            keep = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
        prev = layer_est.state if keep is None else layer_est.state * keep[:, None, None]
        with torch.no_grad():
            s_t = layer_model.cell(x, prev)
            _, dl_dh, _ = layer_model.readout_step(layer_model.cell.hidden(s_t), y, est._lane_weights)
            dl_ds = layer_model.cell.state_cotangent(dl_dh).view_as(s_t)
        est.step(x, y)
        layer_est.step_with_cotangent(x, dl_ds, keep)
        torch.testing.assert_close(layer_est.state, s_t, rtol=0, atol=0)
        torch.testing.assert_close(layer_est.state, est.state, rtol=0, atol=0)
    torch.testing.assert_close(layer_model.cell.weight.grad, model.cell.weight.grad, rtol=1e-12, atol=1e-14)
    assert layer_model.readout.grad is None  # a layer has no readout: nothing of it is touched


def test_layer_contract_errors():
    cell = kl.RHN(3, 4).double()
    with pytest.raises(ValueError, match="layer contract"):
        kl.Layer(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="module with a .cell"):
        kl.make_estimator("rtrl", torch.nn.Linear(3, 4), 2)
    est = kl.make_estimator("kf-rtrl", kl.Layer(cell), 2)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="step_with_cotangent"):
        est.step(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="state's shape"):
        est.step_with_cotangent(x, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape \\(batch=2"):
        est.step_with_cotangent(x[:1], torch.zeros(2, 1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="keep must be"):
        est.step_with_cotangent(x, torch.zeros(2, 1, 4, dtype=torch.float64), keep=torch.ones(3))
    with pytest.raises(ValueError, match="layer-wise online stack"):
        kl.make_estimator("bptt", kl.Layer(cell), 2).step_with_cotangent(x, torch.zeros(2, 1, 4, dtype=torch.float64))
    model = stack(layers=2)
    for bad in ("bptt", "tbptt-4"):
        with pytest.raises(ValueError, match="online method per layer"):
            kl.LayerwiseLearner(model, bad, 2)
    with pytest.raises(ValueError, match="list of 2"):
        kl.LayerwiseLearner(model, ["rtrl"] * 3, 2)
    with pytest.raises(ValueError, match="mixer"):
        kl.make_stack("rhn", 3, 3, 1, 4, 4, mixer="relu")
    with pytest.raises(ValueError, match="reads width"):
        kl.StackedModel([kl.RHN(5, 4)], 3, 3, width=4)
    learner = kl.LayerwiseLearner(model, "rtrl", 2)
    with pytest.raises(ValueError, match="input_size=5"):
        learner.step(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must lie"):
        learner.step(torch.zeros(2, 5, dtype=torch.float64), torch.full((2,), 9))


# -- the model -------------------------------------------------------------------------------------
def test_stack_step_is_the_block_equations():
    """One step written out: a^0 = enc(x); u = norm(a); s = cell(u, s_prev); a += GLU(h); logits."""
    model = stack(layers=2, norm=True)
    x, _ = sequence(5, 5, 3)
    states = [torch.randn(3, 1, 4, dtype=torch.float64) for _ in range(2)]
    logits, new_states, inputs = model.step(x, states)
    a = x @ model.encoder.weight.T + model.encoder.bias
    for l in range(2):
        u = F.layer_norm(a, (6,), model.norms[l].weight, model.norms[l].bias)
        s = model.cells[l](u, states[l])
        h = s[:, 0]
        glu = model.mixers[l]
        a = a + (h @ glu.value.weight.T + glu.value.bias) * torch.sigmoid(h @ glu.gate.weight.T + glu.gate.bias)
        torch.testing.assert_close(new_states[l], s)
        torch.testing.assert_close(inputs[l], u)
    torch.testing.assert_close(logits, a @ model.readout.weight.T + model.readout.bias)


# -- exactness for L = 1 ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell,mixer,norm", [("rhn", "glu", False), ("tanh", "mlp", False), ("lstm", "glu", True),
                                             ("rhn", "mlp", True)])
def test_one_layer_is_bptt(cell, mixer, norm):
    """L = 1 with exact RTRL: every parameter from layer 1 up (the cell's W, the mixer, the readout)
    gets BPTT's gradient through the stack to 1e-10; the parameters below layer 1's recurrence (the
    encoder, block 1's norm) get only their current-step path, so theirs differs from BPTT."""
    model = stack(cell, layers=1, mixer=mixer, norm=norm)
    x, y = sequence(5, 5, 12)
    exact = kl.stack_true_gradient(model, x, y)
    online = kl.layerwise_gradient(model, x, y, "rtrl")
    groups = parameter_groups(model)
    assert set(groups["layer 1 and up"]) >= {"cells.0.weight", "readout.weight", "readout.bias"}
    for name in groups["layer 1 and up"]:
        torch.testing.assert_close(online[name], exact[name], rtol=0, atol=1e-10, msg=name)
    assert (online["encoder.weight"] - exact["encoder.weight"]).abs().max() > 1e-6
    bias = kl.layerwise_bias(model, x, y, "rtrl")
    assert bias["layer 1 and up"] < 1e-20 and bias["recurrent 1"] < 1e-20
    assert bias["below layer 1"] > 1e-9


def test_one_layer_stack_is_the_single_layer_model():
    """A one-layer stack set up to compute the single-layer RecurrentModel exactly — width d = m + n,
    encoder a^0 = [x, 0], GLU a^1 = a^0 + [0, h] (gate σ(0) = 1/2, value 2h), readout of the h part —
    gets from layer-wise RTRL the cell gradient kl.true_gradient gives the single model (BPTT of the
    existing code), on the rows of W that read x, h and 1; the rows reading the zero part get 0."""
    m, n, k = 4, 5, 4
    d = m + n
    torch.manual_seed(0)
    single = kl.RecurrentModel(kl.RHN(m, n), k).double()
    model = kl.make_stack("rhn", m, k, 1, d, n).double()
    used_rows = torch.cat([torch.arange(m), torch.arange(d, d + n + 1)])  # x̂ = [u (d), h (n), 1]
    with torch.no_grad():
        model.encoder.weight.copy_(torch.eye(d, m))
        model.encoder.bias.zero_()
        model.cells[0].weight.zero_()
        model.cells[0].weight[used_rows] = single.cell.weight
        glu = model.mixers[0]
        glu.gate.weight.zero_()
        glu.gate.bias.zero_()
        glu.value.weight.zero_()
        glu.value.weight[m:] = 2 * torch.eye(n)
        glu.value.bias.zero_()
        model.readout.weight.zero_()
        model.readout.weight[:, m:] = single.readout[:n].T
        model.readout.bias.copy_(single.readout[n])
    x, y = sequence(m, k, 10)
    online = kl.layerwise_gradient(model, x, y, "rtrl")["cells.0.weight"]
    exact = kl.true_gradient(single, x, y).view_as(single.cell.weight)
    torch.testing.assert_close(online[used_rows], exact, rtol=0, atol=1e-10)
    assert online[m:d].abs().max() == 0


# -- L ≥ 2: the layer-wise gradient, and its bias against BPTT ------------------------------------
def layerwise_reference(model, x, y):
    """The layer-wise gradient of every layer's recurrent W, built independently of the learner:
    dL_t/dθ^l with θ^l reaching step t only through layer l's own recurrence run over its recorded
    inputs u^l_1..u^l_t (held fixed), and from s^l_t up through the blocks above at step t."""
    L, T = model.layers, x.shape[0]
    with torch.no_grad():
        states, inputs, trace = model.zero_states(1), [], [model.zero_states(1)]
        for t in range(T):
            _, states, u = model.step(x[t:t + 1], states)
            inputs.append(u)
            trace.append(states)
    grads = [torch.zeros_like(cell.weight) for cell in model.cells]
    for t in range(T):
        for l, cell in enumerate(model.cells):
            with torch.enable_grad():
                s = cell.zero_state(1)
                for tau in range(t + 1):
                    s = cell(inputs[tau][l], s)
                a = model.encoder(x[t:t + 1])
                for j in range(L):
                    u = model.norms[j](a)
                    s_j = s if j == l else model.cells[j](u, trace[t][j])
                    a = a + model.mixers[j](model.cells[j].layer_output(u, s_j))
                loss = F.cross_entropy(model.readout(a), y[t:t + 1])
                grads[l] += torch.autograd.grad(loss, cell.weight)[0]
    return grads


@pytest.mark.parametrize("cell,layers,norm", [("rhn", 2, False), ("lstm", 3, True), ("tanh", 3, False)])
def test_layerwise_rtrl_is_the_layerwise_gradient(cell, layers, norm):
    model = stack(cell, layers=layers, norm=norm, seed=1)
    x, y = sequence(5, 5, 8, seed=1)
    online = kl.layerwise_gradient(model, x, y, "rtrl")
    for l, g in enumerate(layerwise_reference(model, x, y)):
        torch.testing.assert_close(online[f"cells.{l}.weight"], g, rtol=0, atol=1e-10)


@pytest.mark.parametrize("layers", [2, 4])
def test_layerwise_bias_is_measured_for_deeper_stacks(layers):
    """L ≥ 2: the lower layers' recurrent gradients differ from BPTT (the dropped paths through the
    recurrences above), clearly above rounding; the top layer's stays exact (none above it)."""
    model = stack("rhn", layers=layers, seed=2)
    x, y = sequence(5, 5, 16, seed=2)
    bias = kl.layerwise_bias(model, x, y, "rtrl")
    for l in range(1, layers):
        assert bias[f"recurrent {l}"] > 1e-10, bias
    assert bias[f"recurrent {layers}"] < 1e-20, bias
    assert bias["all"] > 1e-10


def test_layerwise_kf_rtrl_is_unbiased_for_the_layerwise_gradient():
    """KF-RTRL in every layer: its samples' mean is the layer-wise RTRL gradient (z-test with the
    samples' own standard error, Bonferroni over the coordinates), and its samples vary."""
    model = stack("rhn", layers=2, m=4, k=4, width=4, hidden=3, seed=1)
    x, y = sequence(4, 4, 6, seed=3)
    exact = kl.layerwise_gradient(model, x, y, "rtrl")
    target = torch.cat([exact[f"cells.{l}.weight"].reshape(-1) for l in range(2)])
    samples = layerwise_gradient_samples(model, x, y, ["kf-rtrl", "uoro"], samples=4000, seed=0)
    assert samples.std(dim=0).max() > 1e-3  # a stochastic estimate
    result = kl.unbiasedness_test(samples, target)
    assert result["violations"] == 0, result


# -- the learner as an estimator -------------------------------------------------------------------
def test_fast_step_with_keep_is_reset_then_step():
    """fast_step(x, y, keep) restarts the lanes with keep = 0 exactly as reset(lanes) + step."""
    model = stack("rhn", layers=2, seed=3)
    twin = copy.deepcopy(model)
    eager = kl.LayerwiseLearner(model, ["kf-rtrl", "rtrl"], 3, seed=5)
    fast = kl.LayerwiseLearner(twin, ["kf-rtrl", "rtrl"], 3, seed=5)
    g = torch.Generator().manual_seed(0)
    for t in range(7):
        x = torch.eye(5, dtype=torch.float64)[torch.randint(0, 5, (3,), generator=g)]
        y = torch.randint(0, 5, (3,), generator=g)
        starts = torch.tensor([t == 3, False, t in (2, 5)])
        if starts.any():
            eager.reset(starts)
        eager.step(x, y)
        fast.fast_step(x, y, (~starts).to(torch.float64))
    fast.check_finite()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=name)
    state = eager.state_dict()
    again = kl.LayerwiseLearner(copy.deepcopy(model), ["kf-rtrl", "rtrl"], 3, seed=5)
    again.load_state_dict(state)
    for a, b in zip(again.states, eager.states):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_learner_raises_on_nonfinite():
    model = stack("rhn", layers=2)
    learner = kl.LayerwiseLearner(model, "kf-rtrl", 2)
    with torch.no_grad():
        model.readout.bias.fill_(float("nan"))
    x = torch.eye(5, dtype=torch.float64)[:2]
    with pytest.raises(kl.NonFiniteError, match="step 1"):
        learner.step(x, torch.zeros(2, dtype=torch.long))


# -- training a stack ------------------------------------------------------------------------------
PTB_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def stack_config(**kw):
    from kfrtrl_lab.train import RunConfig

    base = dict(task="copy", method="kf-rtrl", hidden=8, batch=4, steps=80, lr=1e-2, log_every=10, seed=3,
                layers=2, width=6)
    return RunConfig(**{**base, **kw})


def test_train_stack_resumes_bit_for_bit_and_fast_is_eager(tmp_path):
    """--layers 2: the run resumed from a checkpoint and the eager run are the uninterrupted fast run,
    bit for bit (the per-layer estimators' states and signs are in the checkpoint)."""
    import json

    from kfrtrl_lab.train import load_model, train

    config = stack_config(method="kf-rtrl")
    train(config, tmp_path / "full", progress=False)
    train(config, tmp_path / "split", progress=False, stop_after=30)
    train(config, tmp_path / "split", resume=True, progress=False)
    train(stack_config(method="kf-rtrl", eager=True), tmp_path / "eager", progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    rows = {}
    for run in ("split", "eager"):
        b = torch.load(tmp_path / run / "checkpoint.pt", weights_only=False)
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (run, k)
        rows[run] = [{k: v for k, v in json.loads(line).items() if k not in ("steps_per_s", "wall_s")}
                     for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert rows["split"] == rows["eager"]
    model, loaded, step = load_model(tmp_path / "full")
    assert isinstance(model, kl.StackedModel) and model.layers == 2 and model.width == 6 and step == 80
    assert any(k.startswith("cells.1.") for k in a["model"])


def test_train_layers_one_is_the_single_layer_model():
    from kfrtrl_lab.train import build

    model, _, est, _ = build(stack_config(layers=1, width=None))
    assert isinstance(model, kl.RecurrentModel) and isinstance(est, kl.KFRTRL)
    model, _, est, _ = build(stack_config(layers=3, method="uoro"))
    assert isinstance(model, kl.StackedModel) and isinstance(est, kl.LayerwiseLearner)
    assert [type(e).__name__ for e in est.estimators] == ["UORO"] * 3


def test_train_stack_option_errors():
    with pytest.raises(ValueError, match="--width is the residual width of a stack"):
        stack_config(layers=1, width=8)
    with pytest.raises(ValueError, match="backpropagates through time"):
        stack_config(method="tbptt-4")
    with pytest.raises(ValueError, match="layers must be a positive int"):
        stack_config(layers=0)


@pytest.mark.skipif(not (PTB_DIR / "ptb.char.train.txt").exists(), reason="no local PTB copy")
def test_train_stack_on_ptb_evaluates(tmp_path):
    import json

    from kfrtrl_lab.train import train

    train(stack_config(task="ptb", steps=30, reset_every=25, eval_every=30, eval_batch=256, data_dir=str(PTB_DIR)),
          tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 4 < rows[-1]["valid_bpc"] < 7  # barely trained: near log2(50) = 5.64
    assert len(json.loads((tmp_path / "summary.json").read_text())["sample_text"]["text"]) > 100


# -- LRU layers (the layer contract's other side: exact RTRL by traces in each layer) ---------------
def test_lru_stack_one_layer_is_bptt_and_deeper_ones_are_biased():
    """A stack of LRU layers learned online with `rtrl` (each layer's traces): L = 1 gives BPTT's
    gradient through the stack for every parameter from layer 1 up (ν, θ, γ_log, B, C, D, mixer,
    readout), L = 2 does not for layer 1's recurrent parameters (the path through layer 2's recurrence
    is dropped) while layer 2's stay exact."""
    x, y = sequence(5, 5, 12, seed=3)
    one = stack("lru", layers=1, seed=3)
    exact, online = kl.stack_true_gradient(one, x, y), kl.layerwise_gradient(one, x, y, "rtrl")
    names = parameter_groups(one)["layer 1 and up"]
    assert {"cells.0.nu", "cells.0.B_im", "cells.0.C_re", "cells.0.D"} <= set(names)
    for name in names:
        torch.testing.assert_close(online[name], exact[name], rtol=0, atol=1e-10, msg=name)
    two = stack("lru", layers=2, seed=3)
    bias = kl.layerwise_bias(two, x, y, "rtrl")
    assert bias["recurrent 1"] > 1e-10 and bias["recurrent 2"] < 1e-20, bias


def test_train_lru_stack_resumes_bit_for_bit(tmp_path):
    """--cell lru --layers 2 --method rtrl: the run resumed from its checkpoint is the uninterrupted
    one, bit for bit (each LRU layer's traces are in the checkpoint)."""
    from kfrtrl_lab.train import train

    config = stack_config(cell="lru", method="rtrl")
    train(config, tmp_path / "full", progress=False)
    train(config, tmp_path / "split", progress=False, stop_after=30)
    train(config, tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("cells.1.nu") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
