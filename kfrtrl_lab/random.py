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

import math

import torch

_MASK = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2^31: a product with a 32-bit value stays below 2^63

#: stream ids: independent uses of one seed
ESTIMATOR, TASK_LENGTHS, TASK_BITS = 1, 2, 3
#: steps of signs hashed at once on the CPU (:meth:`CounterRandom.signs`), and the most entries a
#: chunk holds (fewer steps when one step's draw is large: a large draw gains nothing from a chunk)
SIGN_CHUNK, CHUNK_ENTRIES = 64, 1 << 16


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
        # on the CPU, the signs of SIGN_CHUNK steps hashed at once: {(shape, dtype): (first counter, signs)}
        self._sign_chunks: dict = {}

    def _index_of(self, shape: tuple) -> torch.Tensor:
        index = self._index.get(shape)
        if index is None:
            index = self._index[shape] = torch.arange(math.prod(shape), device=self.device).view(shape)
        return index

    def _bits(self, shape) -> torch.Tensor:
        bits = hash_bits(self.key, self.counter, self._index_of(tuple(shape)))
        self.counter.add_(1)
        return bits

    @staticmethod
    def _bits_to_signs(bits: torch.Tensor, dtype) -> torch.Tensor:
        """±1 from bit 11 of each hash: 1 − 2·bit."""
        return (bits >> 11).bitwise_and_(1).to(dtype).mul_(-2).add_(1)

    def signs(self, shape, dtype=torch.float32) -> torch.Tensor:
        """Independent uniform ±1 entries of the given shape (a fresh tensor, the caller's to modify).

        On the CPU the signs of :data:`SIGN_CHUNK` consecutive counter values are hashed in one
        pass and handed out one step at a time: a draw is a pure function of (key, counter, index),
        so the chunk holds exactly the per-step draws, whatever the counter was set to since (a
        restored checkpoint lands inside or outside the chunk and is served the same numbers). The
        ~20 small integer operations of a hash cost ~0.1 ms a step at teaching sizes; a chunk pays
        them once. On a GPU every step hashes its own draw (the counter is read on the device, so
        the step stays capturable in a CUDA graph)."""
        shape = tuple(shape)
        if self.device.type != "cpu":
            return self._bits_to_signs(self._bits(shape), dtype)
        step = int(self.counter)  # the CPU's own memory: no synchronisation
        first, chunk = self._sign_chunks.get((shape, dtype), (0, None))
        if chunk is None or not first <= step < first + chunk.shape[0]:
            steps = max(1, min(SIGN_CHUNK, CHUNK_ENTRIES // max(1, math.prod(shape))))
            counters = (self.counter + torch.arange(steps)).view(steps, *(1,) * len(shape))
            first, chunk = step, self._bits_to_signs(hash_bits(self.key, counters, self._index_of(shape)), dtype)
            self._sign_chunks[(shape, dtype)] = (first, chunk)
        self.counter.add_(1)
        return chunk[step - first].clone()

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
