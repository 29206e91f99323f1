"""The training step — task data, estimator step, clipping and the optimiser step — and how a chunk
of them runs.

* **fast** (the default): the task and the estimator live on the device and read nothing back, so
  a chunk of steps runs with no host synchronisation; non-finite values are recorded with their
  step and reported at the end of the chunk. On a GPU, a method whose step is capturable runs as a
  CUDA graph of ``unit`` steps (captured once, replayed), which removes the launch overhead that
  otherwise dominates a small RNN's step.
* **eager** (``--eager``): every step checks its inputs and its results at once and reads back
  which lanes start a sequence. Full BPTT always runs eagerly: it must know, on the host, when the
  sequences end, to write their gradient.

Both execute the same operations in the same order, so on the CPU a fast run and an eager run of
one seed are the same run, bit for bit (tests/test_fast_path.py).
"""

from __future__ import annotations

import math

import torch

#: steps in one captured CUDA graph (a multiple of update_every)
GRAPH_STEPS = 16


class Stepper:
    """Runs training steps for (model, optimiser, estimator, task) and keeps the counters in
    ``progress`` (a train.Progress: step, since_update, loss_sum (device), loss_count)."""

    def __init__(self, config, model, opt, est, task, progress, eager: bool = False):
        self.config, self.model, self.opt, self.est, self.task, self.p = config, model, opt, est, task, progress
        # the gradient that --clip bounds: the cell's recurrent parameters (W; the LRU's ν, θ, γ_log, B)
        self.recurrent = model.cell.recurrent_parameters()
        self.eager = eager or est.flushes_at_sequence_end
        device = est.device
        self.graphs = not self.eager and device.type == "cuda" and est.capturable
        self._graph, self._captured = None, None

    @property
    def mode(self) -> str:
        return "eager" if self.eager else "fast, CUDA graph" if self.graphs else "fast"

    # -- one step ---------------------------------------------------------------------------
    def _update(self) -> None:
        if self.config.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.recurrent, self.config.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)
        self.p.since_update = 0

    def _fast_step(self) -> None:
        x, y, starts = self.task.next()
        losses = self.est.fast_step(x, y, (~starts).to(self.est.dtype))
        self.p.loss_sum += self.task.observe(losses)
        self._count()

    def _eager_step(self) -> None:
        est = self.est
        x, y, starts = self.task.next()
        if starts.any():
            est.reset(starts)
        self.p.loss_sum += self.task.observe(est.step(x, y))
        self._count()
        if est.flushes_at_sequence_end and self.task.sequences_end():
            # full BPTT: the sequences end with this step; their gradient gives the update, and the
            # run can be saved here (no window open)
            est.flush()
            if est.gradient_ready:
                self._update()

    def _count(self) -> None:
        p = self.p
        p.loss_count += 1
        p.since_update += 1
        p.step += 1
        if self.est.gradient_ready and not self.est.flushes_at_sequence_end and p.since_update >= self.config.update_every:
            self._update()

    @property
    def savable(self) -> bool:
        """A checkpoint here resumes exactly: no BPTT window open, no gradient waiting for Adam."""
        return self.est.resumable and self.p.since_update == 0

    # -- a chunk ----------------------------------------------------------------------------
    def run(self, steps: int) -> None:
        """``steps`` more steps; raises NonFiniteError (naming the first bad step) at the end of the
        chunk in fast mode, at once in eager mode."""
        if self.eager:
            for _ in range(steps):
                self._eager_step()
            return
        if self.graphs and GRAPH_STEPS % self.config.update_every == 0 and self.p.since_update == 0:
            if self._graph is None and steps >= self._warm_up_steps + GRAPH_STEPS:
                steps -= self._capture()
            while self._graph is not None and steps >= GRAPH_STEPS:
                self._replay()
                steps -= GRAPH_STEPS
        for _ in range(steps):
            self._fast_step()
        self.est.check_finite()

    # -- CUDA graphs --------------------------------------------------------------------------
    @property
    def _warm_up_steps(self) -> int:
        return self.config.update_every * math.ceil(3 / self.config.update_every)

    def _replay(self) -> None:
        # steps run outside the graph since its last replay rebound some tensors: the graph reads
        # the buffers it was captured with, so the current values go there first
        _commit(self.est, self._captured[0])
        _commit(self.task, self._captured[1])
        for name, tensor in self._captured[2].items():
            setattr(self.est, name, tensor)
        self._graph.replay()
        # the captured steps advance the device state; the host's counters follow here
        self.est.steps += GRAPH_STEPS
        self.p.step += GRAPH_STEPS
        self.p.loss_count += GRAPH_STEPS

    def _capture(self) -> int:
        """Capture GRAPH_STEPS fast steps (updates included) into one CUDA graph; returns the real
        steps run first. Those warm-up steps run on a side stream (CUDA's rule; they also create
        .grad and Adam's state); inside the capture, every persistent tensor that a step rebinds is
        copied back into the buffer it had when capture began, so that each replay starts from where
        the last one ended."""
        warm_up = self._warm_up_steps
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warm_up):
                self._fast_step()
        torch.cuda.current_stream().wait_stream(side)
        self.est.check_finite()
        self._captured = (_tensors(self.est), _tensors(self.task), _scratch(self.est))
        host = (self.est.steps, self.p.step, self.p.since_update, self.p.loss_count)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(GRAPH_STEPS):
                self._fast_step()
            _commit(self.est, self._captured[0])
            _commit(self.task, self._captured[1])
        for name, tensor in self._captured[2].items():
            setattr(self.est, name, tensor)
        self.est.steps, self.p.step, self.p.since_update, self.p.loss_count = host  # capture ran nothing
        self._graph = graph
        return warm_up


def _tensors(obj) -> dict:
    """The tensor attributes that hold an estimator's or a task's state between steps."""
    from .tasks import Task

    if isinstance(obj, Task):
        found = {k: v for k, v in vars(obj).items() if isinstance(v, torch.Tensor)}
        stream = getattr(obj, "stream", None)  # the PTB task keeps its position in its stream
        if stream is not None:
            found.update({f"stream.{k}": v for k, v in vars(stream).items() if isinstance(v, torch.Tensor)})
        return found
    names = obj.state_names + ("_keep", "_bad_step", "_bad_lanes", "_step_counter")
    return {name: getattr(obj, name) for name in names if isinstance(getattr(obj, name, None), torch.Tensor)}


def _scratch(est) -> dict:
    keep = set(_tensors(est))
    return {k: v for k, v in vars(est).items() if isinstance(v, torch.Tensor) and k not in keep}


def _commit(obj, originals: dict) -> None:
    for name, original in originals.items():
        owner, attr = (obj.stream, name[7:]) if name.startswith("stream.") else (obj, name)
        current = getattr(owner, attr)
        if current is not original:
            original.copy_(current)
            setattr(owner, attr, original)
