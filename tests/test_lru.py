"""The LRU layer (kl.LRU) and its exact RTRL by traces (algorithms.md, section 5b).

The reference everywhere is torch's autograd through the LRU's complex forward pass
(``independent_gradients``: a loop over steps with masks for the resets, written here, not the
package's BPTT), in float64.
"""

import math

import pytest
import torch

import kfrtrl_lab as kl
from conftest import rel_err

PARAMS = ["nu", "theta", "gamma_log", "B_re", "B_im", "C_re", "C_im", "D", "readout"]


def make_lru_model(H=3, N=5, k=4, seed=0, dtype=torch.float64, **options):
    torch.manual_seed(seed)
    return kl.RecurrentModel(kl.LRU(H, N, **options), k).to(dtype)


def make_stream(model, T, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, model.input_size, generator=g, dtype=torch.float64)
    y = torch.randint(0, model.output_size, (T, B), generator=g)
    return x, y


#: lanes restarted before step t: lane 0 at 4, lanes 1 and 3 at 9, every lane at 13
RESETS = {4: [0], 9: [1, 3], 13: None}


def keep_mask(t, B):
    keep = torch.ones(B, dtype=torch.float64)
    if t in RESETS:
        keep[:] = 0 if RESETS[t] is None else keep
        if RESETS[t] is not None:
            keep[RESETS[t]] = 0
    return keep


def independent_gradients(model, x, y, resets=True):
    """{name: dL/dp} for L = Σ_t Σ_b ℓ_t,b by autograd through the complex recurrence, with the lanes
    of RESETS restarted from h = 0; written from the LRU's equations, not from the package."""
    c = model.cell
    T, B, _ = x.shape
    named = dict(c.named_parameters()) | {"readout": model.readout}
    with torch.enable_grad():
        lam = torch.exp(-torch.exp(c.nu) + 1j * torch.exp(c.theta))
        gamma = torch.exp(c.gamma_log)
        Bm = c.B_re + 1j * c.B_im
        Cm = c.C_re + 1j * c.C_im
        h = torch.zeros(B, c.hidden_size, dtype=torch.complex128)
        loss = 0.0
        for t in range(T):
            if resets:
                h = h * keep_mask(t, B)[:, None]
            h = lam * h + gamma * (x[t].to(torch.complex128) @ Bm.T)
            out = (h @ Cm.T).real + c.D * x[t]
            logits = out @ model.readout[:-1] + model.readout[-1]
            loss = loss + torch.nn.functional.cross_entropy(logits, y[t], reduction="sum")
        grads = torch.autograd.grad(loss, list(named.values()))
    return dict(zip(named, grads))


def run_estimator(method, model, x, y, resets=True):
    model.zero_grad(set_to_none=True)
    est = kl.make_estimator(method, model, x.shape[1], reduction="sum", seed=0)
    for t in range(x.shape[0]):
        if resets and t in RESETS:
            est.reset(RESETS[t])
        est.step(x[t], y[t])
    est.flush()
    named = dict(model.cell.named_parameters()) | {"readout": model.readout}
    return {k: p.grad.clone() for k, p in named.items()}, est


# -- the cell ----------------------------------------------------------------------------------
def test_initialisation_follows_the_official_ring():
    torch.manual_seed(3)
    c = kl.LRU(4, 2000, r_min=0.9, r_max=0.999, max_phase=math.pi / 10)
    lam = c.eigenvalues().detach()
    r, phase = lam.abs(), lam.angle()
    assert r.min() >= 0.9 - 1e-6 and r.max() <= 0.999 + 1e-6
    assert phase.min() >= 0 and phase.max() <= math.pi / 10 + 1e-6
    # |λ|² is uniform on [r_min², r_max²]: its mean is the midpoint
    assert abs((r**2).mean().item() - (0.9**2 + 0.999**2) / 2) < 0.01
    torch.testing.assert_close(c.input_scale().detach(), (1 - r**2).sqrt(), rtol=1e-4, atol=0)
    assert c.B_re.std().item() == pytest.approx(1 / math.sqrt(8), rel=0.1)
    assert c.C_re.std().item() == pytest.approx(1 / math.sqrt(2000), rel=0.1)


def test_step_and_output_match_complex_arithmetic():
    model = make_lru_model()
    c = model.cell
    x, _ = make_stream(model, 2, 3)
    h0 = torch.randn(3, 5, dtype=torch.complex128)
    h1 = c(x[0], h0)
    assert h1.dtype == torch.complex128 and h1.shape == (3, 5)
    lam = torch.polar(torch.exp(-torch.exp(c.nu)), torch.exp(c.theta))
    Bm = torch.complex(c.B_re, c.B_im)
    torch.testing.assert_close(h1, lam * h0 + torch.exp(c.gamma_log) * (x[0].to(Bm.dtype) @ Bm.T))
    Cm = torch.complex(c.C_re, c.C_im)
    torch.testing.assert_close(c.layer_output(x[0], h1), (h1 @ Cm.T).real + c.D * x[0])
    assert c.output_width == 3 and c.zero_state(7).shape == (7, 5) and c.zero_state(7).is_complex()


def test_output_backward_is_autograd_of_layer_output():
    model = make_lru_model()
    c = model.cell
    x, _ = make_stream(model, 1, 3)
    h = torch.randn(3, 5, dtype=torch.complex128, requires_grad=True)
    g = torch.randn(3, 3, dtype=torch.float64)
    with torch.enable_grad():
        (c.layer_output(x[0], h) * g).sum().backward()
    dl_ds, grads = c.output_backward(x[0], h.detach(), g)
    torch.testing.assert_close(dl_ds, h.grad, rtol=1e-12, atol=1e-14)
    for p, ours in zip(c.immediate_parameters(), grads):
        torch.testing.assert_close(ours, p.grad, rtol=1e-12, atol=1e-14)


# -- exact RTRL by traces --------------------------------------------------------------------------
def test_rtrl_name_builds_the_trace_form():
    model = make_lru_model()
    est = kl.make_estimator("rtrl", model, 2)
    assert isinstance(est, kl.LRURTRL) and est.name == "rtrl" and est.exact
    assert isinstance(kl.RTRL(model, 2), kl.LRURTRL)
    assert est.trace_B.shape == (2, 5, 3) and est.trace_lambda.is_complex()
    with pytest.raises(ValueError, match="diagonal cell"):
        kl.LRURTRL(kl.RecurrentModel(kl.RHN(3, 4), 4), 2)


@pytest.mark.parametrize("name", PARAMS)
def test_rtrl_equals_autograd_with_resets(name):
    """Every parameter's gradient, summed over a 17-step stream of 4 lanes that restart mid-stream."""
    model = make_lru_model(seed=2)
    x, y = make_stream(model, 17, 4)
    ref = independent_gradients(model, x, y)
    ours, _ = run_estimator("rtrl", model, x, y)
    assert rel_err(ours[name], ref[name]) <= 1e-10
    # the resets matter: the gradient without them differs
    if name != "D":  # (D's gradient reads no state: the resets do not touch it)
        assert rel_err(independent_gradients(model, x, y, resets=False)[name], ref[name]) > 1e-4


@pytest.mark.parametrize("method", ["bptt", "tbptt-17"])
def test_bptt_for_the_lru_is_the_reference(method):
    """bptt (and tbptt with a window as long as the stream) are the LRU's reference too."""
    model = make_lru_model(seed=5)
    x, y = make_stream(model, 17, 4, seed=6)
    ref = independent_gradients(model, x, y)
    ours, _ = run_estimator(method, model, x, y)
    for name in PARAMS:
        assert rel_err(ours[name], ref[name]) <= 1e-10, name


def test_truncated_bptt_is_biased_for_the_lru():
    model = make_lru_model(seed=5, r_min=0.9, r_max=0.99)
    x, y = make_stream(model, 17, 4, seed=6)
    ref = independent_gradients(model, x, y)
    ours, _ = run_estimator("tbptt-3", model, x, y)
    assert rel_err(ours["nu"], ref["nu"]) > 1e-3


def test_true_gradient_and_gradient_samples_cover_the_recurrent_parameters():
    model = make_lru_model(seed=7)
    x, y = make_stream(model, 11, 1, seed=8)
    x, y = x[:, 0], y[:, 0]
    g = kl.true_gradient(model, x, y)
    c = model.cell
    assert g.shape == (3 * c.hidden_size + 2 * c.hidden_size * c.input_size,)
    samples = kl.gradient_samples(model, x, y, "rtrl", samples=3)
    assert samples.shape == (3, g.numel())
    assert rel_err(samples[0], g) <= 1e-10
    # the per-lane path (step_lane_gradients) sums to the same
    est = kl.make_estimator("rtrl", model, 1, reduction="sum")
    total = sum(est.step_lane_gradients(x[t : t + 1], y[t : t + 1])[1][0] for t in range(len(x)))
    assert rel_err(total, g) <= 1e-10


@pytest.mark.parametrize("method", ["kf-rtrl", "uoro", "ok-2", "kf-avg-2", "snap-1"])
def test_kronecker_methods_refuse_the_lru_by_name(method):
    with pytest.raises(ValueError, match=r"Kronecker-class cell.*bptt, tbptt-<k>, rtrl"):
        kl.make_estimator(method, make_lru_model(), 2)


def test_state_dict_keeps_the_complex_state():
    model = make_lru_model()
    x, y = make_stream(model, 5, 2)
    est = kl.make_estimator("rtrl", model, 2, seed=0)
    for t in range(3):
        est.step(x[t], y[t])
    saved = est.state_dict()
    other = kl.make_estimator("rtrl", model, 2, seed=0)
    other.load_state_dict(saved)
    assert other.state.is_complex() and other.trace_B.is_complex()
    torch.testing.assert_close(other.trace_B, est.trace_B)
    torch.testing.assert_close(other.step(x[3], y[3]), est.step(x[3], y[3]))


def test_a_non_finite_state_is_reported():
    model = make_lru_model()
    with torch.no_grad():
        model.cell.B_re[0, 0] = float("inf")
    est = kl.make_estimator("rtrl", model, 2)
    x, y = make_stream(model, 1, 2)
    with pytest.raises(kl.NonFiniteError, match="non-finite state"):
        est.step(x[0], y[0])


# -- the layer contract ---------------------------------------------------------------------------
class _Layer(torch.nn.Module):
    """What the stack's kl.Layer is: a module holding .cell and no readout."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell


def test_step_with_cotangent_equals_the_model_path():
    """A layer stepped with δ_t = ∂L_t/∂h_t from autograd of a one-step loss through the same readout
    writes the same recurrent gradient, and the same states, as the model's own step."""
    model = make_lru_model(seed=9)
    x, y = make_stream(model, 15, 4, seed=10)
    ref, _ = run_estimator("rtrl", model, x, y)
    c = model.cell
    model.zero_grad(set_to_none=True)
    est = kl.make_estimator("rtrl", _Layer(c), 4, reduction="sum")
    for t in range(15):
        keep = keep_mask(t, 4)
        with torch.enable_grad():
            h_prev = est.state * keep[:, None]
            h = c(x[t], h_prev).detach().requires_grad_(True)
            loss = model.lane_losses(c.layer_output(x[t], h), y[t]).sum()
            (dl_ds,) = torch.autograd.grad(loss, h)
        est.step_with_cotangent(x[t], dl_ds, keep)
        torch.testing.assert_close(est.state, h.detach(), rtol=1e-14, atol=1e-15)
    for name in ["nu", "theta", "gamma_log", "B_re", "B_im"]:
        assert rel_err(getattr(c, name).grad, ref[name]) <= 1e-10, name
    assert c.C_re.grad is None and c.D.grad is None  # immediate: the stack's autograd pass writes them


def test_step_with_cotangent_checks_its_inputs():
    est = kl.make_estimator("rtrl", _Layer(kl.LRU(3, 5).double()), 2)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="complex tensor shaped like the state"):
        est.step_with_cotangent(x, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(batch=2"):
        est.step_with_cotangent(x[:, :2], torch.zeros(2, 5, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"keep must be None or a tensor of shape \(2,\)"):
        est.step_with_cotangent(x, torch.zeros(2, 5, dtype=torch.complex128), torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have the layer's dtype"):
        est.step_with_cotangent(x.float(), torch.zeros(2, 5, dtype=torch.complex128))


# -- training ------------------------------------------------------------------------------------
def _run(tmp_path, name, stop_after=None, resume=False, **kw):
    from kfrtrl_lab.train import RunConfig, train

    base = dict(task="copy", cell="lru", method="rtrl", hidden=8, batch=4, steps=120, lr=1e-2, log_every=20, seed=5)
    train(RunConfig(**{**base, **kw}), tmp_path / name, progress=False, stop_after=stop_after, resume=resume)
    state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)
    rows = [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")}
            for r in map(__import__("json").loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())]
    return state, rows


@pytest.mark.parametrize("method", ["rtrl", "bptt", "tbptt-4"])
def test_training_the_lru_fast_eager_and_resumed_are_one_run(tmp_path, method):
    fast, rows = _run(tmp_path, "fast", method=method)
    eager, rows_eager = _run(tmp_path, "eager", method=method, eager=True)
    _run(tmp_path, "split", method=method, stop_after=50)
    split, rows_split = _run(tmp_path, "split", method=method, resume=True)
    for k in fast["model"]:
        assert torch.equal(fast["model"][k], eager["model"][k]) and torch.equal(fast["model"][k], split["model"][k]), k
    assert rows == rows_eager == rows_split
    assert fast["estimator"]["tensors"]["state"].is_complex()
    model, _, step = __import__("kfrtrl_lab.train", fromlist=["load_model"]).load_model(tmp_path / "fast")
    assert isinstance(model.cell, kl.LRU) and step == 120


def test_a_kronecker_method_with_the_lru_is_refused_before_the_run(tmp_path):
    from kfrtrl_lab.train import RunConfig

    with pytest.raises(ValueError, match="--method kf-rtrl needs a Kronecker-class cell.*rtrl"):
        RunConfig(task="copy", cell="lru", method="kf-rtrl")


def test_train_sets_the_lru_rings_from_its_options(tmp_path, capsys):
    from kfrtrl_lab.__main__ import main
    from kfrtrl_lab.train import RunConfig, build

    for layers in (1, 2):
        config = RunConfig(task="copy", cell="lru", method="rtrl", hidden=64, batch=2, layers=layers,
                           lru_r_min=0.9, lru_r_max=0.999, lru_max_phase=0.314)
        model = build(config)[0]
        for cell in ([model.cell] if layers == 1 else list(model.cells)):
            lam = cell.eigenvalues()
            assert (lam.abs() >= 0.9 - 1e-6).all() and (lam.abs() <= 0.999 + 1e-6).all()
            assert (lam.angle().abs() <= 0.314 + 1e-6).all()
    with pytest.raises(ValueError, match="0 <= r_min < r_max <= 1, got r_min=0.99, r_max=0.9"):
        RunConfig(task="copy", cell="lru", method="rtrl", lru_r_min=0.99, lru_r_max=0.9)
    with pytest.raises(ValueError, match="--lru-r-min sets the LRU's initial eigenvalues; --cell rhn does not read it"):
        RunConfig(task="copy", cell="rhn", lru_r_min=0.5)
    out = tmp_path / "ring"
    args = ["train", "copy", "--cell", "lru", "--method", "rtrl", "--hidden", "8", "--batch", "2", "--steps", "20",
            "--lru-r-min", "0.5", "--lru-r-max", "0.6", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    saved = torch.load(out / "checkpoint.pt", weights_only=False)["config"]
    assert (saved["lru_r_min"], saved["lru_r_max"], saved["lru_max_phase"]) == (0.5, 0.6, 6.28)
    assert main(["train", "copy", "--out", str(out), "--resume", "--steps", "30", "--no-progress"]) == 0
    capsys.readouterr()


# -- the LRU paper's copy task (copy-pad) ------------------------------------------------------------
def test_padded_copy_sequences_follow_the_official_layout():
    from kfrtrl_lab.tasks import PaddedCopyTask

    task = PaddedCopyTask(batch_size=3, seed=1)  # the defaults: P = 20, 7 bits, pad 7
    assert task.sequence_length == 48 and (task.input_size, task.output_size) == (8, 129)
    P, pad, S = 20, 7, 48
    xs, ys, starts = zip(*(task.next() for _ in range(2 * S)))
    xs, ys, starts = torch.stack(xs), torch.stack(ys), torch.stack(starts)  # (2S, B, ·)
    assert starts[:, 0].nonzero().flatten().tolist() == [0, S] and starts.all(dim=1).equal(starts.any(dim=1))
    for k in range(2):
        x, y = xs[k * S : (k + 1) * S], ys[k * S : (k + 1) * S]
        symbols = (x[:P, :, :7] * 2 ** torch.arange(7)).sum(-1).long()  # (P, B) read from the bit channels
        assert (x[:P, :, 7] == 0).all() and (x[P:, :, :7] == 0).all()  # bits only while reading
        assert (x[:, :, 7].nonzero()[:, 0] == P + pad).all() and int(x[:, :, 7].sum()) == 3  # one stop token a lane
        assert (y[: P + pad + 1] == 128).all()  # blank until the recall
        assert torch.equal(y[P + pad + 1 :], symbols)  # recalled in order, S - P = 28 steps after being read
    assert not torch.equal(ys[S - P : S], ys[2 * S - P :])  # a new pattern each sequence
    assert not torch.equal(ys[S - P : S, 0], ys[S - P : S, 1])  # and each lane its own


def test_padded_copy_options_and_recall_metric():
    from kfrtrl_lab.tasks import PaddedCopyTask

    task = PaddedCopyTask(batch_size=2, pattern_length=3, pattern_bits=2, pad_length=0)
    assert task.sequence_length == 7 and (task.input_size, task.output_size) == (3, 5)
    for t in range(7):
        task.next()
        task.observe(torch.full((2,), float(t)) * math.log(2))  # a loss of t bits at step t
    assert task.metrics()["recall_bits"] == pytest.approx((4 + 5 + 6) / 3)  # steps 4, 5, 6 recall
    with pytest.raises(ValueError, match="pattern_bits must be at most 16"):
        PaddedCopyTask(batch_size=2, pattern_bits=17)
    with pytest.raises(ValueError, match="pad_length must be an int >= 0"):
        PaddedCopyTask(batch_size=2, pad_length=-1)


@pytest.mark.parametrize("method", ["rtrl", "bptt"])
def test_the_lru_trains_on_copy_pad(tmp_path, method):
    state, rows = _run(tmp_path, "pad", task="copy-pad", method=method, pattern_length=3, pattern_bits=2,
                       pad_length=1, steps=240, log_every=40, lr=3e-2)
    assert state["model"]["readout"].shape == (4, 5)  # [y_t, 1]: H = bits + 1 = 3, plus the bias; 2^2 + 1 classes
    assert rows[-1]["loss_bits"] < 0.8 * rows[0]["loss_bits"] and rows[-1]["recall_bits"] is not None


def test_ptb_scoring_and_sampling_read_the_lru_output():
    from kfrtrl_lab.tasks.ptb import evaluate_bpc, generate_text
    from kfrtrl_lab.tasks.ptb_data import Vocabulary

    model = make_lru_model(H=6, N=8, k=6)
    ids = torch.randint(0, 6, (200,), generator=torch.Generator().manual_seed(0))
    bpc = evaluate_bpc(model, ids, batch_size=4)
    assert 0 < bpc < 2 * math.log2(6)
    # against the sum of the per-step losses of the same streams, computed here
    streams = ids[: 200 // 4 * 4].view(4, -1)
    h, total = model.cell.zero_state(4), 0.0
    for t in range(streams.shape[1] - 1):
        x = torch.eye(6, dtype=torch.float64)[streams[:, t]]
        h = model.cell(x, h)
        total += model.lane_losses(model.cell.layer_output(x, h), streams[:, t + 1]).sum().item()
    assert bpc == pytest.approx(total / (4 * (streams.shape[1] - 1)) / math.log(2), rel=1e-9)
    assert generate_text(model, Vocabulary(list("abcde_")), length=5, prime="ab")[:2] == "ab"


@pytest.mark.parametrize("method", ["ok-2", "ok-3-official", "kf-avg-2", "kf-rtrl", "uoro", "snap-1"])
def test_kronecker_methods_refuse_the_lru_by_their_own_name(method):
    with pytest.raises(ValueError, match=rf"method '{method}' needs a Kronecker-class cell"):
        kl.make_estimator(method, kl.RecurrentModel(kl.LRU(3, 4), 3), 2)


def test_a_cell_of_neither_class_is_refused_clearly():
    class Odd(torch.nn.Module):  # the layer contract's methods, but neither a Kronecker nor a diagonal cell
        output_width = 2

        def zero_state(self, B):
            return torch.zeros(B, 2)

        def forward(self, x, s):
            return s

        def layer_output(self, x, s):
            return s

        def recurrent_parameters(self):
            return [torch.nn.Parameter(torch.zeros(2))]

    with pytest.raises(ValueError, match="Kronecker-class cell .* or a diagonal one"):
        kl.make_estimator("kf-rtrl", kl.Layer(Odd()), 2)
