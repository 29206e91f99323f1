"""The CUDA-graph path of the fast trainer, checked on the CPU by imitating what a graph does.

A real capture runs the Python code of 16 steps once while no kernel executes; a real replay runs
those kernels again on the buffers they were captured with and runs no Python. The imitation below
does the same on the CPU (capture: run the code, then restore every tensor's contents; replay: run
the code on the captured buffers, then put every Python binding back), so the bookkeeping of
stepper.Stepper — warm-up steps, the commit of rebound tensors into the captured buffers, steps run
outside the graph between replays, host counters — must give exactly the eager run.
"""

import contextlib

import pytest
import torch

from kfrtrl_lab import stepper
from kfrtrl_lab.train import RunConfig, train


def objects(st):
    est, task = st.est, st.task
    return [o for o in (est, task, getattr(task, "stream", None)) if o is not None]


def tensors(st):
    """Every tensor a step reads or writes: what a capture must leave untouched."""
    found = []
    for obj in objects(st) + [st.est.random]:
        for v in vars(obj).values():
            found += [v] if isinstance(v, torch.Tensor) else [t for t in v if isinstance(t, torch.Tensor)] \
                if isinstance(v, tuple) else []
    for p in st.model.parameters():
        found += [p.data] + ([p.grad] if p.grad is not None else [])
    for state in st.opt.state.values():
        found += [t for t in state.values() if isinstance(t, torch.Tensor)]
    return found + [st.p.loss_sum]


class ImitatedGraph:
    stepper = None

    def replay(self):
        st = self.stepper
        bindings = [dict(vars(o)) for o in objects(st)]
        host = (st.est.steps, st.p.step, st.p.since_update, st.p.loss_count, st.est.gradient_ready)
        for _ in range(stepper.GRAPH_STEPS):  # the captured kernels, on the current (captured) buffers
            st._fast_step()
        stepper._commit(st.est, st._captured[0])
        stepper._commit(st.task, st._captured[1])
        for obj, before in zip(objects(st), bindings):  # a replay runs no Python: bindings stay
            for name in list(vars(obj)):
                if name not in before:
                    delattr(obj, name)
            vars(obj).update(before)
        st.est.steps, st.p.step, st.p.since_update, st.p.loss_count, st.est.gradient_ready = host


@contextlib.contextmanager
def imitated_capture(graph):
    graph.stepper = current["stepper"]
    contents = [(t, t.clone()) for t in tensors(graph.stepper)]
    yield
    for t, saved in contents:  # a capture executes no kernel
        t.copy_(saved)


current = {}


@pytest.fixture
def imitated_cuda(monkeypatch):
    class Stream:
        def wait_stream(self, other):
            pass

    original = stepper.Stepper.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.graphs = not self.eager and self.est.capturable  # as on a GPU
        current["stepper"] = self

    monkeypatch.setattr(stepper.Stepper, "__init__", init)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", ImitatedGraph)
    monkeypatch.setattr(torch.cuda, "graph", imitated_capture)


@pytest.mark.parametrize("method", ["kf-rtrl", "uoro", "rtrl", "snap-1", "kf-avg-2"])
def test_graph_replays_between_ordinary_steps_give_the_eager_run(tmp_path, imitated_cuda, method):
    # log_every = 50 is not a multiple of 16: every chunk mixes replays and ordinary steps
    base = dict(task="copy", method=method, hidden=8, batch=4, steps=300, lr=1e-2, log_every=50, seed=2)
    graphed = train(RunConfig(**base), tmp_path / "graphed", progress=False)
    graphed_stepper = current["stepper"]
    eager = train(RunConfig(**base, eager=True), tmp_path / "eager", progress=False)
    a = torch.load(tmp_path / "graphed" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda s: [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")} for r in s["curve"]]  # noqa: E731
    assert strip(graphed) == strip(eager)  # every metrics line, at the same steps
    assert graphed_stepper._graph is not None and not current["stepper"].graphs  # the graph path really ran
