"""The trainer's fast path (chunks of steps with no host synchronisation; CUDA graphs on a GPU)
computes what the eager path (every step checked at once) computes."""

import json
from pathlib import Path

import pytest
import torch

from kfrtrl_lab.train import RunConfig, train

PTB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def run(tmp_path, name, **kw):
    base = dict(task="copy", method="kf-rtrl", hidden=8, batch=4, steps=300, lr=1e-2, log_every=50, seed=5)
    config = RunConfig(**{**base, **kw})
    summary = train(config, tmp_path / name, progress=False)
    state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)
    return summary, state


def strip(summary):
    return [{k: v for k, v in row.items() if k not in ("steps_per_s", "wall_s")} for row in summary["curve"]]


@pytest.mark.parametrize("method", ["rtrl", "tbptt-3", "kf-rtrl", "uoro", "ok-2", "kf-avg-2", "snap-1"])
def test_fast_and_eager_runs_are_the_same_run(tmp_path, method):
    fast, state_fast = run(tmp_path, "fast", method=method)
    eager, state_eager = run(tmp_path, "eager", method=method, eager=True)
    for k in state_fast["model"]:
        assert torch.equal(state_fast["model"][k], state_eager["model"][k]), k
    assert strip(fast) == strip(eager)
    assert fast["curve"][-1]["loss_bits"] < 0.9 * fast["curve"][0]["loss_bits"]  # it learned: updates happened


def test_fast_path_in_float64_gives_the_eager_gradients_for_exact_methods():
    """The same online steps through est.fast_step (a keep mask per step) and through est.step
    (est.reset with index lists, checks every step), in float64."""
    import kfrtrl_lab as kl
    from conftest import make_model, make_sequence

    for method in ("rtrl", "tbptt-4"):
        model = make_model("rhn", m=3, n=5, k=4)
        x, y = make_sequence(model, 13, batch=3)
        grads = []
        for fast in (True, False):
            model.zero_grad(set_to_none=True)
            est = kl.make_estimator(method, model, 3, seed=0)
            for t in range(13):
                starts = torch.tensor([t == 5, t in (0, 9), False])
                if fast:
                    est.fast_step(x[t], y[t], (~starts).double())
                else:
                    est.reset(starts.nonzero().flatten().tolist())
                    est.step(x[t], y[t])
            est.flush()
            grads.append(model.cell.weight.grad.clone())
        assert ((grads[0] - grads[1]).norm() / grads[1].norm()).item() <= 1e-12


@pytest.mark.skipif(not (PTB_DIR / "ptb.char.train.txt").exists(), reason="no local PTB copy")
@pytest.mark.parametrize("layout", ["contiguous", "staggered"])
def test_fast_and_eager_agree_on_ptb(tmp_path, layout):
    kw = dict(task="ptb", hidden=8, batch=4, steps=60, reset_every=25, eval_every=60, eval_batch=256,
              data_dir=str(PTB_DIR), stream_layout=layout)
    fast, state_fast = run(tmp_path, "fast", **kw)
    eager, state_eager = run(tmp_path, "eager", eager=True, **kw)
    assert torch.equal(state_fast["model"]["cell.weight"], state_eager["model"]["cell.weight"])
    assert strip(fast) == strip(eager)


def test_a_nan_in_a_fast_chunk_names_its_step(tmp_path):
    """The fast path checks at the end of a chunk; the error still names the step where it began."""
    from kfrtrl_lab.train import Diverged

    config = RunConfig(task="copy", hidden=8, batch=4, steps=200, lr=1e-2, log_every=50, seed=1)
    train(config, tmp_path, progress=False, stop_after=50)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    saved["model"]["readout"][0, 0] = float("inf")  # step 51 is the first with a non-finite value
    torch.save(saved, tmp_path / "checkpoint.pt")
    with pytest.raises(Diverged, match=r"diverged at step 51: kf-rtrl: non-finite .* at step 51"):
        train(config, tmp_path, resume=True, progress=False)
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["step"] == 51 and "diverged" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
@pytest.mark.parametrize("method", ["kf-rtrl", "uoro", "rtrl", "ok-4", "tbptt-4"])
def test_gpu_fast_path_matches_the_gpu_eager_path(tmp_path, method):
    """On the GPU the fast path captures CUDA graphs (capturable methods); the random signs are the
    same counter-based stream, so the runs agree up to floating-point reduction order."""
    fast, state_fast = run(tmp_path, "fast", method=method, device="cuda", steps=400)
    eager, state_eager = run(tmp_path, "eager", method=method, device="cuda", steps=400, eager=True)
    torch.testing.assert_close(state_fast["model"]["cell.weight"], state_eager["model"]["cell.weight"],
                               rtol=1e-3, atol=1e-5)
    assert [r["t_max"] for r in fast["curve"]] == [r["t_max"] for r in eager["curve"]]
