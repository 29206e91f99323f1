"""Counter-based random numbers: each draw is a pure function of (seed, stream, step, lane, index).

The random signs of the estimators and the copy task's data are drawn here instead of from a
``torch.Generator``, because a counter-based stream

* lives entirely on the device as integer arithmetic (a CUDA graph can capture and replay it; the
  step counter is a device tensor that the graph advances),
* gives the same numbers on every device (a CPU run and a GPU run of one seed draw the same signs),
* resumes from a checkpoint by restoring one counter, and
* keeps lanes and seeds independent by construction (a lane's draws do not depend on how many
  other lanes or seeds share the batch).

The mixing function is a 32-bit integer hash (two multiply–xorshift rounds; "hash prospector"
constants) applied in int64 with every intermediate below 2^63, so it never overflows.
"""

from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2^31: a product with a 32-bit value stays below 2^63

#: stream ids: independent uses of one seed
ESTIMATOR, TASK_LENGTHS, TASK_BITS = 1, 2, 3


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of x (int64 values in [0, 2^32)), in place on a fresh tensor."""
    x = x ^ (x >> 16)
    x.mul_(_MULT).bitwise_and_(_MASK)
    x.bitwise_xor_(x >> 16).mul_(_MULT).bitwise_and_(_MASK)
    return x.bitwise_xor_(x >> 16)


def _mix_int(x: int) -> int:
    """:func:`_mix` on a Python int (for the constant part of a key: no tensor operation)."""
    x &= _MASK
    for _ in range(2):
        x = ((x ^ (x >> 16)) * _MULT) & _MASK
    return x ^ (x >> 16)


def stream_key(seed: int, stream: int) -> int:
    """The constant part of every draw of ``stream`` of ``seed``."""
    return _mix_int(_mix_int(seed) ^ (stream * 0x9E3779B1 & _MASK))


def hash_bits(key: int | torch.Tensor, counter: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """32 pseudo-random bits for every entry of ``index`` (int64) at step ``counter`` of the stream
    with ``key`` (:func:`stream_key`; an int64 tensor of keys broadcasts, e.g. one per lane).

    The counter is mixed before it meets the key: combined linearly (key ^ counter), two streams
    whose keys differ in a few low bits would be the same sequence shifted by that difference."""
    return _mix(_mix(_mix(counter & _MASK) ^ key) ^ (index & _MASK))


class CounterRandom:
    """Draws for ``stream`` of ``seed``; each call to :meth:`signs` / :meth:`integers` is one step of
    the stream (the counter advances by one)."""

    def __init__(self, seed: int | None, device, stream: int = ESTIMATOR):
        if seed is None:
            seed = int(torch.randint(0, 2**31, ()).item())
        self.seed, self.stream, self.device = int(seed), stream, torch.device(device)
        self.key = stream_key(self.seed, stream)
        self.counter = torch.zeros((), dtype=torch.long, device=self.device)
        self._index: dict = {}  # arange per shape, made once

    def _bits(self, shape) -> torch.Tensor:
        shape = tuple(shape)
        index = self._index.get(shape)
        if index is None:
            count = 1
            for s in shape:
                count *= s
            index = self._index[shape] = torch.arange(count, device=self.device).view(shape)
        bits = hash_bits(self.key, self.counter, index)
        self.counter.add_(1)
        return bits

    def signs(self, shape, dtype=torch.float32) -> torch.Tensor:
        """Independent uniform ±1 entries of the given shape."""
        bits = (self._bits(shape) >> 11).bitwise_and_(1).to(dtype)
        return bits.mul_(-2).add_(1)

    def integers(self, low: torch.Tensor | int, high: torch.Tensor | int, shape) -> torch.Tensor:
        """Uniform integers in [low, high] (inclusive; tensors broadcast against ``shape``)."""
        span = torch.as_tensor(high, device=self.device) - low + 1
        return low + self._bits(shape) % span

    def state_dict(self) -> dict:
        return {"seed": self.seed, "stream": self.stream, "counter": int(self.counter)}

    def load_state_dict(self, state: dict) -> None:
        if (state["seed"], state["stream"]) != (self.seed, self.stream):
            raise ValueError(f"random state is for seed {state['seed']} stream {state['stream']}, "
                             f"this stream is seed {self.seed} stream {self.stream}")
        self.counter.fill_(state["counter"])
